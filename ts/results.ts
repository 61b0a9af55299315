/**
 * One result, three consumers: the CLI's files, the HTTP API's answer and a queue job's result
 * are all made here, so that a request served locally, by a worker or by `ovseg segment` gives
 * the same pictures and numbers.
 */
import { renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { classColor, forSlices, greyPng, labelPng, overlayPng } from './render'
import type { Segmentation } from './segment'

/**
 * A binary mask as runs inside its box: `box` `[x0, y0, x1, y1]` (exclusive) of its pixels, and
 * `counts`, the lengths of alternating runs of 0s and 1s (0s first) over the box's pixels row by
 * row. `plane` is the mask's `[height * width]` slice.
 */
export function maskRuns(plane: Uint8Array, width: number, height: number): { box: [number, number, number, number]; counts: number[] } {
  let [x0, y0, x1, y1] = [width, height, 0, 0]
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (plane[y * width + x]) {
        if (x < x0) x0 = x
        if (x >= x1) x1 = x + 1
        if (y < y0) y0 = y
        y1 = y + 1
      }
    }
  }
  if (x1 === 0) return { box: [0, 0, 0, 0], counts: [] }
  const counts: number[] = []
  let value = 0
  let run = 0
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const v = plane[y * width + x] ? 1 : 0
      if (v !== value) {
        counts.push(run)
        value = v
        run = 0
      }
      run++
    }
  }
  counts.push(run)
  return { box: [x0, y0, x1, y1], counts }
}

/** What the JSON output holds per image: areas per class and the scores of the masks that count (with `samMasks`, each SAM segment's mask as runs). */
export function summarize(image: string, r: Segmentation) {
  const pixels = r.width * r.height
  return {
    image,
    width: r.width,
    height: r.height,
    classes: r.classes.map((name, i) => ({ name, pixels: r.classPixels[i], share: r.classPixels[i] / pixels })),
    unlabeledPixels: pixels - r.classPixels.reduce((a, b) => a + b, 0),
    segments: r.segments
      .filter((s) => s.used)
      .map((s) => ({
        source: s.source,
        index: s.index,
        class: s.class,
        score: s.score,
        box: s.box,
        area: s.area,
        ...(s.source === 'sam' && r.samMasks ? { mask: maskRuns(r.samMasks.subarray(s.index * pixels, (s.index + 1) * pixels), r.width, r.height) } : {}),
      })),
    processingSize: r.processingSize,
    timings: r.timings,
    executionProvider: r.executionProvider,
  }
}

export type Summary = ReturnType<typeof summarize>

/** The pictures of a result: overlay and label map, and the confidence map when the result has `scores`. */
export interface Pictures {
  overlay: Buffer
  labels: Buffer
  confidence?: Buffer
}

/** Per pixel, how much of the summed class score the winning class holds, as 0..255. */
async function confidence(scores: Float32Array, classes: number, labels: Uint16Array, signal?: AbortSignal): Promise<Uint8Array> {
  const plane = labels.length
  const out = new Uint8Array(plane)
  await forSlices(plane, signal, (start, end) => {
    for (let p = start; p < end; p++) {
      let sum = 0
      for (let c = 0; c < classes; c++) sum += scores[c * plane + p]
      const l = labels[p]
      out[p] = l < classes && sum > 0 ? Math.round((255 * scores[l * plane + p]) / sum) : 0
    }
  }, classes + 1)
  return out
}

/** Draws the pictures of `r` over the decoded image `rgb` (per-pixel work in slices, stopping when `signal` fires). */
export async function drawPictures(rgb: Uint8Array, r: Segmentation, signal?: AbortSignal): Promise<Pictures> {
  const [overlay, labels, conf] = await Promise.all([
    overlayPng(rgb, r.width, r.height, r.labels, r.classes, signal),
    labelPng(r.labels, r.width, r.height, r.classes.length, signal),
    r.scores ? confidence(r.scores, r.classes.length, r.labels, signal).then((c) => greyPng(c, r.width, r.height)) : undefined,
  ])
  return { overlay, labels, confidence: conf }
}

/** The body of the HTTP API's answer to `POST /segment` (README: `ovseg serve`). */
export function httpAnswer(summary: Summary, png: { overlay: string; labels: string; confidence?: string }) {
  return {
    width: summary.width,
    height: summary.height,
    classes: summary.classes.map((c, i) => ({ name: c.name, index: i, color: classColor(i), pixels: c.pixels, share: c.share })),
    segments: summary.segments,
    timings: summary.timings,
    executionProvider: summary.executionProvider,
    png,
  }
}

/** The files `ovseg segment` writes for one image: `<stem>.overlay.png`, `<stem>.labels.png`, `<stem>.json`. */
export function resultFiles(dir: string, stem: string, summary: Summary, pictures: Pictures): Array<[string, Buffer | string]> {
  const base = join(dir, stem)
  return [[`${base}.overlay.png`, pictures.overlay], [`${base}.labels.png`, pictures.labels], [`${base}.json`, `${JSON.stringify(summary, null, 2)}\n`]]
}

/** Writes through a temporary file and a rename: readers never see half a file, and writing the same result twice (a retried job) leaves one whole copy. */
export function writeFileAtomic(path: string, content: Buffer | string): void {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
  writeFileSync(tmp, content)
  renameSync(tmp, path)
}
