/**
 * `ovseg enqueue`: a folder of images as jobs for `ovseg worker` processes on other machines, with
 * one progress bar over all of them and a result folder a re-run resumes (images whose JSON is
 * there are skipped; jobs still in the queue are not added twice).
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'

import { OvsegError } from '../errors'
import type { SegmentQueue } from '../queue/client'
import type { SegmentJobData } from '../queue/jobs'
import { resultFiles, writeFileAtomic } from '../results'
import type { SegmentMode } from '../segment'
import { type Failure, Progress } from './progress'
import { outputStems } from './segment-command'

export interface EnqueueOptions {
  out: string
  /** The workers read the images and write the results themselves (paths the same on every machine); otherwise the bytes and the results travel through Redis. */
  shared: boolean
  mode?: SegmentMode
  threshold?: number
  lambda?: number
  /** Job priority: batch jobs wait behind the HTTP API's. */
  priority: number
  /** Without `shared`: most jobs in the queue at once (their image bytes are in Redis). */
  inFlight: number
}

/** Default priority of batch jobs (lower runs first; jobs without one, the HTTP API's, run before all). */
export const BATCH_PRIORITY = 10

/** A job id from what decides the result: a re-run with the same inputs names the same job. */
function jobId(file: string, classes: string[], o: EnqueueOptions, out: string, stem: string): string {
  const { size, mtimeMs } = statSync(file)
  const key = JSON.stringify({ file, size, mtimeMs, classes, mode: o.mode, threshold: o.threshold, lambda: o.lambda, out, stem, shared: o.shared })
  return `ovseg-${createHash('sha256').update(key).digest('hex').slice(0, 40)}`
}

/** Enqueues every image not done yet and waits for all; returns the number that failed. */
export async function enqueueCommand(queue: SegmentQueue, files: string[], classes: string[], o: EnqueueOptions): Promise<number> {
  const out = resolve(o.out)
  mkdirSync(out, { recursive: true })
  const stems = outputStems(files)
  const todo = files.map((file, k) => ({ file, stem: stems[k] })).filter(({ stem }) => !existsSync(join(out, `${stem}.json`)))
  if (todo.length < files.length) process.stderr.write(`${files.length - todo.length} of ${files.length} images already have results in ${out}\n`)
  const progress = new Progress(todo.length, 'enqueue')
  const failed: Failure[] = []
  let written = 0
  const waits: Array<Promise<void>> = []
  // Image bytes wait in Redis's memory: a bounded number of jobs at a time. Paths cost nothing.
  const limit = o.shared ? Infinity : o.inFlight
  let inFlight = 0
  const freed: Array<() => void> = []
  /** One image: its job's result written (or the job's error reported). Only a lost Redis connection while adding stops the command. */
  const image = async (file: string, stem: string, id: string) => {
    try {
      const result = await queue.result(id)
      if (result.png) {
        const pictures = { overlay: Buffer.from(result.png.overlay, 'base64'), labels: Buffer.from(result.png.labels, 'base64') }
        for (const [path, content] of resultFiles(out, stem, result.summary, pictures)) {
          writeFileAtomic(path, content)
          written += 1
        }
        await queue.forget(id) // written here: the PNGs need not wait in Redis for their expiry
      } else {
        written += result.files?.length ?? 0
      }
      progress.tick(basename(file), `${Math.round(result.summary.timings.totalMs)} ms`)
    } catch (err) {
      failed.push(progress.fail(file, basename(file), err))
    } finally {
      inFlight -= 1
      freed.shift()?.()
    }
  }
  for (const { file, stem } of todo) {
    if (inFlight >= limit) await new Promise<void>((resolve) => freed.push(resolve))
    let bytes: Buffer | undefined
    let id: string
    try {
      id = jobId(file, classes, o, out, stem)
      bytes = o.shared ? undefined : readFileSync(file)
    } catch (err) {
      failed.push(progress.fail(file, basename(file), new OvsegError('INVALID_IMAGE', `cannot read ${file}: ${(err as Error).message}`)))
      continue
    }
    const data: SegmentJobData = {
      image: bytes ? { base64: bytes.toString('base64') } : { path: file },
      name: file,
      classes,
      mode: o.mode,
      threshold: o.threshold,
      lambda: o.lambda,
      output: o.shared ? { dir: out, stem } : undefined,
    }
    inFlight += 1
    waits.push(image(file, stem, await queue.add(data, { jobId: id, priority: o.priority })))
  }
  await Promise.all(waits)
  progress.stop()
  process.stderr.write(`${written} files in ${out}${failed.length ? `; ${failed.length} of ${todo.length} images failed` : ''}\n`)
  return failed.length
}
