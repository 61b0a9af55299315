/** Progress over many images: a bar with ETA on a terminal, one line per image otherwise (logs, CI). */
import { SingleBar } from 'cli-progress'

/** An input that could not be processed, as the JSON outputs report it. */
export interface Failure {
  image: string
  code: string
  message: string
}

export class Progress {
  readonly #bar: SingleBar | null
  readonly #total: number
  #done = 0

  constructor(total: number, label: string) {
    this.#total = total
    this.#bar =
      process.stderr.isTTY && total > 1
        ? new SingleBar({ format: `${label} [{bar}] {value}/{total} | ETA {eta_formatted} | {item}`, stream: process.stderr, hideCursor: true })
        : null
    this.#bar?.start(total, 0, { item: '' })
  }

  /** One item finished; `note` says how (shown as a line when there is no bar). */
  tick(item: string, note: string): void {
    this.#done += 1
    if (this.#bar) this.#bar.update(this.#done, { item })
    else process.stderr.write(`[${this.#done}/${this.#total}] ${item}: ${note}\n`)
  }

  /** `path` failed with `err`: reported on stderr, counted as done, and returned for the report. */
  fail(path: string, item: string, err: unknown): Failure {
    const e = err as { code?: string; message: string }
    const failure = { image: path, code: e.code ?? 'ERROR', message: e.message }
    this.log(`${path}: ${failure.code} ${failure.message}`)
    this.tick(item, 'failed')
    return failure
  }

  /** A message that must not be drawn over by the bar. */
  log(message: string): void {
    if (this.#bar) {
      this.#bar.stop()
      process.stderr.write(`${message}\n`)
      this.#bar.start(this.#total, this.#done, { item: '' })
    } else {
      process.stderr.write(`${message}\n`)
    }
  }

  stop(): void {
    this.#bar?.stop()
  }
}
