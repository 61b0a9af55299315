/** `ovseg segment`: per image an overlay PNG, a label-map PNG and a JSON summary (or JSON on stdout). */
import { mkdirSync } from 'node:fs'
import { basename, extname, join } from 'node:path'

import type { Model } from '../model'
import { drawPictures, resultFiles, summarize, writeFileAtomic } from '../results'
import { decodeImage, DEFAULT_MAX_PIXELS, type SegmentOptions } from '../segment'
import { type Failure, Progress } from './progress'

export interface SegmentCommandOptions {
  out?: string
  json: boolean
  threshold?: number
  lambda?: number
  mode?: SegmentOptions['mode']
  /** Proposal sources (`--proposals`, `--sam-model`). */
  proposals?: Pick<SegmentOptions, 'generator' | 'sam' | 'samOptions'>
}

/** Output names from the images' base names, made unique. */
export function outputStems(files: string[]): string[] {
  const seen = new Map<string, number>()
  return files.map((f) => {
    const stem = basename(f, extname(f))
    const n = seen.get(stem) ?? 0
    seen.set(stem, n + 1)
    return n === 0 ? stem : `${stem}-${n}`
  })
}

/** Segments every image; a failing image is reported and the rest go on. Returns the number that failed. */
export async function segmentCommand(model: Model, files: string[], classes: string[], o: SegmentCommandOptions): Promise<number> {
  const writeFiles = o.out !== undefined || !o.json
  const out = o.out ?? 'ovseg-out'
  if (writeFiles) mkdirSync(out, { recursive: true })
  const stems = outputStems(files)
  const progress = new Progress(files.length, 'segment')
  const results: object[] = []
  const failed: Failure[] = []
  // Counted as each file is written: a failure part-way reports only what is on disk.
  let written = 0
  const options: SegmentOptions = { mode: o.mode, threshold: o.threshold, lambda: o.lambda, ...o.proposals }
  for (const [k, file] of files.entries()) {
    try {
      // Decoded once here, in the same function segment() uses, for the pictures too.
      const decoded = await decodeImage(file, DEFAULT_MAX_PIXELS)
      const r = await model.segment({ data: decoded.rgb, width: decoded.width, height: decoded.height, channels: 3 }, classes, options)
      const summary = summarize(file, r)
      if (writeFiles) {
        for (const [path, content] of resultFiles(out, stems[k], summary, await drawPictures(decoded.rgb, r))) {
          writeFileAtomic(path, content)
          written += 1
        }
      }
      results.push(summary)
      const top = summary.classes.filter((c) => c.pixels > 0).sort((a, b) => b.pixels - a.pixels)[0]
      progress.tick(basename(file), `${Math.round(r.timings.totalMs)} ms, largest: ${top ? `${top.name} ${(100 * top.share).toFixed(1)}%` : 'none'}`)
    } catch (err) {
      failed.push(progress.fail(file, basename(file), err))
    }
  }
  progress.stop()
  if (o.json) process.stdout.write(`${JSON.stringify({ results, failed }, null, 2)}\n`)
  if (writeFiles) process.stderr.write(`wrote ${written} files to ${out}${failed.length ? `; ${failed.length} of ${files.length} images failed` : ''}\n`)
  return failed.length
}
