/**
 * The consumer's side of the Redis queue: a BullMQ worker that segments each job with one loaded
 * model. At-least-once: a job whose worker dies is run again by another (BullMQ's stalled-job
 * check), so every write a job makes is idempotent (whole files through a rename; a result in Redis
 * replaces nothing).
 */
import './dependencies'

import { mkdirSync, readFileSync } from 'node:fs'
import { hostname } from 'node:os'

import { UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq'

import { OvsegError } from '../errors'
import type { Model } from '../model'
import { resultFiles, writeFileAtomic } from '../results'
import { DEFAULT_SERVER_LIMITS, type WorkLimits } from '../server/limits'
import { segmentBytes } from '../server/work'
import { checkJobData, DEFAULT_QUEUE_NAME, DEFAULT_QUEUE_SETTINGS, failedReason, isFinal, sharedPath, type SegmentJobData, type SegmentJobResult } from './jobs'
import { checkRedisUrl, type QueueConnection } from './client'

export interface WorkerOptions extends QueueConnection {
  /** Jobs this worker runs at once (segment() calls; on CUDA their crops share encoder runs). Default 1. */
  concurrency?: number
  /** The same limits as the HTTP server's (`DEFAULT_SERVER_LIMITS`): a job over them fails with `LIMIT_EXCEEDED`. */
  limits?: Partial<WorkLimits>
  /** Jobs may read images from and write results to paths under this directory (storage the workers share); without it, only jobs with image bytes are run. */
  sharedDir?: string
  /** `DEFAULT_QUEUE_SETTINGS.stallTimeoutMs`: this worker's lock on a job; another worker runs the job again about this long after this one dies. */
  stallTimeoutMs?: number
  /** `DEFAULT_QUEUE_SETTINGS.maxStalls`. */
  maxStalls?: number
  /** The worker's name in the jobs it runs (`processedBy`). Default host name and process id. */
  name?: string
}

export class SegmentWorker {
  readonly name: string
  readonly #worker: Worker<SegmentJobData, SegmentJobResult>
  #stopping = false
  /** Jobs completed by this worker. */
  completed = 0

  /** @internal use `startWorker` */
  constructor(model: Model, o: WorkerOptions) {
    const limits = { ...DEFAULT_SERVER_LIMITS, ...o.limits }
    const stallTimeoutMs = o.stallTimeoutMs ?? DEFAULT_QUEUE_SETTINGS.stallTimeoutMs
    this.name = o.name ?? `${hostname()}:${process.pid}`
    this.#worker = new Worker<SegmentJobData, SegmentJobResult>(o.queue ?? DEFAULT_QUEUE_NAME, (job, token, signal) => this.#process(model, limits, o.sharedDir, job, token, signal), {
      connection: { url: o.redis },
      name: this.name,
      concurrency: o.concurrency ?? 1,
      lockDuration: stallTimeoutMs,
      stalledInterval: Math.max(100, Math.round(stallTimeoutMs / 2)),
      maxStalledCount: o.maxStalls ?? DEFAULT_QUEUE_SETTINGS.maxStalls,
      autorun: false,
    })
    this.#worker.on('error', () => {}) // connection errors: ioredis reconnects and the worker resumes
    this.#worker.on('completed', () => {
      this.completed += 1
    })
  }

  /** Starts taking jobs; resolves once connected. */
  async start(): Promise<void> {
    void this.#worker.run()
    await this.#worker.waitUntilReady()
  }

  /**
   * Takes no new jobs; waits up to `graceMs` for the running ones to finish, then stops them and
   * puts them back in the queue for another worker (no attempt is counted). Resolves when closed.
   */
  async close(graceMs = 30000): Promise<void> {
    this.#stopping = true
    const timer = setTimeout(() => this.#worker.cancelAllJobs('the worker is shutting down'), graceMs)
    try {
      await this.#worker.close()
    } finally {
      clearTimeout(timer)
    }
  }

  async #process(model: Model, limits: WorkLimits, sharedDir: string | undefined, job: Job<SegmentJobData, SegmentJobResult>, token: string | undefined, signal: AbortSignal | undefined): Promise<SegmentJobResult> {
    const timeoutMs = (job.data as Partial<SegmentJobData>)?.timeoutMs ?? DEFAULT_QUEUE_SETTINGS.timeoutMs
    const timeout = AbortSignal.timeout(typeof timeoutMs === 'number' && timeoutMs > 0 ? timeoutMs : DEFAULT_QUEUE_SETTINGS.timeoutMs)
    const stop = signal ? AbortSignal.any([signal, timeout]) : timeout
    try {
      const data = checkJobData(job.data)
      const image = 'base64' in data.image ? Buffer.from(data.image.base64, 'base64') : readImage(sharedPath(data.image.path, sharedDir, 'image.path'))
      const output = data.output && { dir: sharedPath(data.output.dir, sharedDir, 'output.dir'), stem: data.output.stem }
      await job.updateProgress(10)
      const { summary, pictures } = await segmentBytes(model, image, data, { name: data.name, limits, confidence: data.confidence === true && !output, signal: stop })
      await job.updateProgress(90)
      if (output) {
        mkdirSync(output.dir, { recursive: true })
        const files = resultFiles(output.dir, output.stem, summary, pictures)
        for (const [path, content] of files) writeFileAtomic(path, content)
        return { summary, files: files.map(([path]) => path) }
      }
      const base64 = (b: Buffer | undefined) => b?.toString('base64')
      return { summary, png: { overlay: base64(pictures.overlay) as string, labels: base64(pictures.labels) as string, confidence: base64(pictures.confidence) } }
    } catch (err) {
      if (this.#stopping && signal?.aborted && !timeout.aborted) {
        // Shutting down: back to the queue, for another worker, without using up an attempt.
        await job.moveToWait(token)
        throw new WaitingError()
      }
      if (timeout.aborted) throw new Error(failedReason('JOB_TIMEOUT', `the job ran over its ${timeoutMs} ms`))
      const code = (err as { code?: string }).code ?? 'INTERNAL'
      const reason = failedReason(code, (err as Error).message)
      throw isFinal(code) ? new UnrecoverableError(reason) : new Error(reason)
    }
  }
}

function readImage(path: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    throw new OvsegError('INVALID_IMAGE', `cannot read the image file ${path}: ${(err as Error).message}`)
  }
}

/** A worker on `model`, connected and taking jobs. */
export async function startWorker(model: Model, o: WorkerOptions): Promise<SegmentWorker> {
  checkRedisUrl(o.redis)
  const worker = new SegmentWorker(model, o)
  await worker.start()
  return worker
}
