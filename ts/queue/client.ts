/** The producer's side of the Redis queue: add segmentation jobs, wait for their results, read their state. */
import './dependencies'

import { Job, Queue, QueueEvents } from 'bullmq'

import { OvsegError, type ErrorCode } from '../errors'
import { DEFAULT_QUEUE_NAME, DEFAULT_QUEUE_SETTINGS, errorOfReason, type SegmentJobData, type SegmentJobResult } from './jobs'

export interface QueueConnection {
  /** `redis://[user:password@]host:port[/db]` (`rediss://` for TLS). */
  redis: string
  /** The queue's name (default `'ovseg'`); workers and producers of one queue use the same. */
  queue?: string
}

export interface AddOptions {
  /** Adding a job whose id is in the queue (waiting, running, or kept after it finished) adds nothing: re-runs of a batch do not duplicate work. Default: a random id. */
  jobId?: string
  /** Jobs with a priority wait behind those without; 1 (highest) to 2097152. Batch jobs (`ovseg enqueue`) use one so that interactive requests go first. */
  priority?: number
  /** Default `DEFAULT_QUEUE_SETTINGS.attempts`. */
  attempts?: number
  /** Default `DEFAULT_QUEUE_SETTINGS.resultTtlS`. */
  resultTtlS?: number
}

export type JobState = 'waiting' | 'prioritized' | 'delayed' | 'active' | 'completed' | 'failed' | 'waiting-children' | 'unknown'

export interface JobStatus {
  id: string
  state: JobState
  /** 0 to 100. */
  progress: number
  /** Runs started, retries included. */
  attempts: number
  result?: SegmentJobResult
  error?: { code: string; message: string }
}

/** A job finished or not, checked on this period too, in case its event was missed (a reconnect, a trimmed event stream). */
const RECHECK_MS = 2000
const RECHECK_BATCH = 100

interface Waiter {
  resolve: (result: SegmentJobResult) => void
  reject: (err: Error) => void
}

/** Errors of the Redis connection, as a coded error the HTTP API answers with 503. */
export function unavailable(err: unknown): OvsegError {
  if (err instanceof OvsegError) return err
  return new OvsegError('QUEUE_UNAVAILABLE', `the Redis queue is unavailable: ${(err as Error).message}`)
}

/** `redis://` or `rediss://` URLs only: anything else is refused before a connection is tried. */
export function checkRedisUrl(url: unknown): void {
  let protocol: string | undefined
  try {
    protocol = new URL(String(url)).protocol
  } catch {
    // not a URL
  }
  if (typeof url !== 'string' || (protocol !== 'redis:' && protocol !== 'rediss:')) {
    throw new OvsegError('INVALID_ARGUMENT', `Expected a Redis URL (redis://[user:password@]host:port[/db], or rediss:// for TLS) but received ${JSON.stringify(String(url).replace(/\/\/[^@/]*@/, '//***@'))}`)
  }
}

export class SegmentQueue {
  readonly name: string
  readonly #queue: Queue
  readonly #redis: string
  #events: QueueEvents | undefined
  readonly #waiters = new Map<string, Waiter[]>()
  #recheck: NodeJS.Timeout | undefined

  private constructor(redis: string, name: string) {
    this.#redis = redis
    this.name = name
    // Producers fail fast while Redis is down (an HTTP request gets 503) rather than queueing commands.
    this.#queue = new Queue(name, { connection: { url: redis, enableOfflineQueue: false, maxRetriesPerRequest: 1 } })
    this.#queue.on('error', () => {}) // reconnects on its own; each call reports its own failure
  }

  /** Connects to the queue: `QUEUE_UNAVAILABLE` when Redis cannot be reached within `connectTimeoutMs` (default 10 s). */
  static async connect(o: QueueConnection & { connectTimeoutMs?: number }): Promise<SegmentQueue> {
    checkRedisUrl(o.redis)
    const q = new SegmentQueue(o.redis, o.queue ?? DEFAULT_QUEUE_NAME)
    let lastError: Error | undefined
    const onError = (err: Error) => (lastError = err)
    q.#queue.on('error', onError)
    let timer: NodeJS.Timeout | undefined
    try {
      const timeoutMs = o.connectTimeoutMs ?? 10000
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no connection within ${timeoutMs} ms${lastError ? ` (${lastError.message})` : ''}`)), timeoutMs)
      })
      await Promise.race([q.#queue.waitUntilReady(), timeout])
    } catch (err) {
      await q.close()
      throw unavailable(err)
    } finally {
      clearTimeout(timer)
      q.#queue.off('error', onError)
    }
    return q
  }

  /** Adds a job and returns its id. */
  async add(data: SegmentJobData, o: AddOptions = {}): Promise<string> {
    const s = DEFAULT_QUEUE_SETTINGS
    try {
      const job = await this.#queue.add('segment', data, {
        jobId: o.jobId,
        priority: o.priority,
        attempts: o.attempts ?? s.attempts,
        backoff: { type: 'exponential', delay: s.backoffMs },
        removeOnComplete: { age: o.resultTtlS ?? s.resultTtlS },
        removeOnFail: { age: s.failedTtlS },
      })
      return job.id as string
    } catch (err) {
      throw unavailable(err)
    }
  }

  /** The job's result once it completes; rejects with the job's error code when it fails for good, with `ABORTED` when `signal` fires. */
  async result(id: string, signal?: AbortSignal): Promise<SegmentJobResult> {
    await this.#listen()
    return new Promise<SegmentJobResult>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (r) => {
          signal?.removeEventListener('abort', abort)
          resolve(r)
        },
        reject: (err) => {
          signal?.removeEventListener('abort', abort)
          reject(err)
        },
      }
      const abort = () => {
        this.#drop(id, waiter)
        const why = (signal?.reason as Error | undefined)?.name === 'TimeoutError' ? 'timed out' : 'was cancelled'
        reject(new OvsegError('ABORTED', `waiting for job ${id} ${why} (its result stays available at GET /jobs/${id} until it expires)`))
      }
      if (signal?.aborted) return abort()
      signal?.addEventListener('abort', abort, { once: true })
      this.#waiters.set(id, [...(this.#waiters.get(id) ?? []), waiter])
      // Registered first, then checked: a job that finished before the listener started is not missed.
      void this.#settle(id)
    })
  }

  /** The job's state, progress and (when it has finished) its result or error; undefined for a job Redis does not hold (never added, or expired). */
  async status(id: string): Promise<JobStatus | undefined> {
    let job: Job | undefined
    let state: string
    try {
      // The state first: a job read after it finished holds its result or reason (read before, it might not).
      state = await this.#queue.getJobState(id)
      job = await Job.fromId(this.#queue, id)
      if (!job) return undefined
    } catch (err) {
      throw unavailable(err)
    }
    const progress = typeof job.progress === 'number' ? job.progress : 0
    const status: JobStatus = { id, state: state as JobState, progress: state === 'completed' ? 100 : progress, attempts: job.attemptsStarted ?? job.attemptsMade }
    if (state === 'completed') status.result = job.returnvalue as SegmentJobResult
    if (state === 'failed') {
      const e = errorOfReason(job.failedReason)
      status.error = { code: e.code, message: e.message }
    }
    return status
  }

  /** Jobs waiting without a priority: the HTTP API's backpressure counts these. */
  async waiting(): Promise<number> {
    try {
      return await this.#queue.getWaitingCount()
    } catch (err) {
      throw unavailable(err)
    }
  }

  /** Jobs per state, and the workers connected. */
  async counts(): Promise<{ waiting: number; prioritized: number; delayed: number; active: number; completed: number; failed: number; workers: number }> {
    try {
      const c = await this.#queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed')
      const workers = await this.#queue.getWorkersCount()
      return { waiting: c.waiting ?? 0, prioritized: c.prioritized ?? 0, delayed: c.delayed ?? 0, active: c.active ?? 0, completed: c.completed ?? 0, failed: c.failed ?? 0, workers }
    } catch (err) {
      throw unavailable(err)
    }
  }

  /** Removes a job that has not started (a request whose client went away); a running one goes on. */
  async cancel(id: string): Promise<void> {
    try {
      const job = await Job.fromId(this.#queue, id)
      if (job && ['waiting', 'prioritized', 'delayed'].includes(await job.getState())) await job.remove()
    } catch {
      // Started meanwhile, or Redis is away: the job runs and its result expires.
    }
  }

  /** Removes a completed job and its result once they have been delivered (Redis's memory); others are kept. */
  async forget(id: string): Promise<void> {
    try {
      const job = await Job.fromId(this.#queue, id)
      if (job && (await job.getState()) === 'completed') await job.remove()
    } catch {
      // Redis is away: the result expires on its own.
    }
  }

  /** The BullMQ queue underneath, for what this class does not cover (admin tools, bulk operations). */
  get bullQueue(): Queue {
    return this.#queue
  }

  async close(): Promise<void> {
    clearInterval(this.#recheck)
    for (const [id, waiters] of this.#waiters) for (const w of waiters) w.reject(new OvsegError('ABORTED', `the queue was closed while waiting for job ${id}`))
    this.#waiters.clear()
    await Promise.allSettled([this.#events?.close(), this.#queue.close()])
  }

  async #listen(): Promise<void> {
    if (this.#events) return
    const events = new QueueEvents(this.name, { connection: { url: this.#redis } })
    this.#events = events
    events.on('error', () => {}) // reconnects on its own; the recheck covers what it misses
    events.on('completed', ({ jobId }) => void this.#settle(jobId))
    events.on('failed', ({ jobId }) => void this.#settle(jobId))
    this.#recheck = setInterval(() => {
      // A bounded number per period, oldest first, each then moved to the back: thousands of waits cost Redis little.
      for (const id of [...this.#waiters.keys()].slice(0, RECHECK_BATCH)) {
        const waiters = this.#waiters.get(id) as Waiter[]
        this.#waiters.delete(id)
        this.#waiters.set(id, waiters)
        void this.#settle(id)
      }
    }, RECHECK_MS)
    this.#recheck.unref()
    await events.waitUntilReady()
  }

  /** Resolves the waiters of a job that has finished for good (a failed run with retries left is not). */
  async #settle(id: string): Promise<void> {
    if (!this.#waiters.has(id)) return
    let status: JobStatus | undefined
    try {
      status = await this.status(id)
    } catch {
      return // Redis is away: the next recheck tries again
    }
    const waiters = this.#waiters.get(id)
    if (!waiters) return
    if (status === undefined) {
      this.#waiters.delete(id)
      for (const w of waiters) w.reject(new OvsegError('JOB_NOT_FOUND', `job ${id} is not in the queue (never added, removed, or its result expired)`))
    } else if (status.state === 'completed') {
      this.#waiters.delete(id)
      for (const w of waiters) w.resolve(status.result as SegmentJobResult)
    } else if (status.state === 'failed') {
      this.#waiters.delete(id)
      const e = status.error as { code: string; message: string }
      for (const w of waiters) w.reject(new OvsegError(e.code as ErrorCode, e.message))
    }
  }

  #drop(id: string, waiter: Waiter): void {
    const rest = (this.#waiters.get(id) ?? []).filter((w) => w !== waiter)
    if (rest.length > 0) this.#waiters.set(id, rest)
    else this.#waiters.delete(id)
  }
}
