/** A bounded queue in front of the model: at most `concurrency` jobs run, at most `capacity` wait. */
import { OvsegError } from '../errors'

export class WorkQueue {
  running = 0
  readonly #waiting: Array<() => void> = []

  constructor(
    readonly concurrency: number,
    readonly capacity: number,
  ) {}

  get waiting(): number {
    return this.#waiting.length
  }

  /** Runs `job` when a slot is free. Throws `QUEUE_FULL` when `capacity` jobs already wait, and `ABORTED` when `signal` fires first (the job is dropped). */
  async run<T>(job: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw abortedWhileWaiting(signal)
    if (this.running >= this.concurrency) {
      if (this.#waiting.length >= this.capacity) throw new OvsegError('QUEUE_FULL', `the queue is full (${this.capacity} requests waiting)`)
      await new Promise<void>((resolve, reject) => {
        const start = () => {
          signal?.removeEventListener('abort', abort)
          resolve()
        }
        const abort = () => {
          this.#waiting.splice(this.#waiting.indexOf(start), 1)
          reject(abortedWhileWaiting(signal as AbortSignal))
        }
        signal?.addEventListener('abort', abort, { once: true })
        this.#waiting.push(start)
      })
      // The finishing job handed its slot over: `running` already counts this one.
    } else {
      this.running += 1
    }
    try {
      return await job()
    } finally {
      const next = this.#waiting.shift()
      if (next) next()
      else this.running -= 1
    }
  }
}

function abortedWhileWaiting(signal: AbortSignal): OvsegError {
  const why = (signal.reason as Error | undefined)?.name === 'TimeoutError' ? 'the request timed out' : 'the request was cancelled (the client went away)'
  return new OvsegError('ABORTED', `${why} while waiting for the model`)
}
