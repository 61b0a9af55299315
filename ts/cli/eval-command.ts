/** `ovseg eval`: segments a dataset laid out as images + label PNGs and prints the standard metrics. */
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import { basename, extname, join } from 'node:path'

import sharp from 'sharp'

import { OvsegError } from '../errors'
import { ConfusionMatrix, readLabelPng, type SegmentationMetrics } from '../metrics'
import type { Model } from '../model'
import { decodeImage, DEFAULT_MAX_PIXELS, type SegmentOptions } from '../segment'
import { IMAGE_EXTENSIONS } from './inputs'
import { type Failure, Progress } from './progress'

export interface EvalCommandOptions {
  images: string
  labels: string
  ignoreIndex: number
  /** ADE20K's convention: label 0 is "other" (ignored), class k is stored as k + 1. */
  reduceZeroLabel: boolean
  out: string
  threshold?: number
  lambda?: number
  /** Proposal sources (`--proposals`, `--sam-model`). */
  proposals?: Pick<SegmentOptions, 'generator' | 'sam' | 'samOptions'>
}

export function formatMetrics(classes: string[], m: SegmentationMetrics): string {
  const pct = (v: number | null) => (v === null ? '   n/a' : (100 * v).toFixed(2).padStart(6))
  const width = Math.max(5, ...classes.map((c) => c.length))
  const lines = [`${'class'.padEnd(width)}    IoU    Acc  pixels`]
  classes.forEach((name, i) => {
    const c = m.perClass[i]
    lines.push(`${name.padEnd(width)} ${pct(c.iou)} ${pct(c.accuracy)}  ${c.support}`)
  })
  lines.push('', `mIoU ${pct(m.mIoU)}  pixel accuracy ${pct(m.pixelAccuracy)}  mean accuracy ${pct(m.meanAccuracy)}  fwIoU ${pct(m.frequencyWeightedIoU)}  (${m.pixels} labeled pixels)`)
  return lines.join('\n')
}

/** Returns the number of images that could not be evaluated. */
export async function evalCommand(model: Model, classes: string[], o: EvalCommandOptions): Promise<number> {
  for (const dir of [o.images, o.labels]) if (!existsSync(dir)) throw new OvsegError('INVALID_ARGUMENT', `directory ${dir} does not exist`)
  const images = readdirSync(o.images).filter((n) => IMAGE_EXTENSIONS.has(extname(n).toLowerCase())).sort()
  if (images.length === 0) throw new OvsegError('EMPTY_INPUT', `no images in ${o.images}`)
  const matrix = new ConfusionMatrix(classes.length, o.ignoreIndex)
  const progress = new Progress(images.length, 'eval')
  const failed: Failure[] = []
  for (const name of images) {
    const imagePath = join(o.images, name)
    try {
      const labelPath = join(o.labels, `${basename(name, extname(name))}.png`)
      if (!existsSync(labelPath)) throw new OvsegError('INVALID_ARGUMENT', `no label map ${labelPath}`)
      const truth = await readLabelPng(labelPath, o.reduceZeroLabel, o.ignoreIndex)
      const decoded = await decodeImage(imagePath, DEFAULT_MAX_PIXELS)
      if (truth.width !== decoded.width || truth.height !== decoded.height) {
        throw new OvsegError('INVALID_IMAGE', `label map is ${truth.width}x${truth.height}, the image ${decoded.width}x${decoded.height}`)
      }
      const r = await model.segment({ data: decoded.rgb, width: decoded.width, height: decoded.height, channels: 3 }, classes, { threshold: o.threshold, lambda: o.lambda, ...o.proposals })
      matrix.add(r.labels, truth.labels)
      progress.tick(name, `${Math.round(r.timings.totalMs)} ms`)
    } catch (err) {
      failed.push(progress.fail(imagePath, name, err))
    }
  }
  progress.stop()
  const metrics = matrix.metrics()
  process.stdout.write(`${formatMetrics(classes, metrics)}\n`)
  const report = {
    model: model.manifest.name,
    images: images.length,
    evaluated: images.length - failed.length,
    failed,
    ignoreIndex: o.ignoreIndex,
    reduceZeroLabel: o.reduceZeroLabel,
    classes: classes.map((name, i) => ({ name, ...metrics.perClass[i] })),
    mIoU: metrics.mIoU,
    pixelAccuracy: metrics.pixelAccuracy,
    meanAccuracy: metrics.meanAccuracy,
    frequencyWeightedIoU: metrics.frequencyWeightedIoU,
    pixels: metrics.pixels,
    // Which class each class's pixels went to: the per-class IoU alone does not say.
    confusion: {
      rows: 'ground truth',
      columns: 'prediction',
      counts: classes.map((_, t) => Array.from(matrix.counts.subarray(t * classes.length, (t + 1) * classes.length))),
      unpredicted: Array.from(matrix.unpredicted),
    },
  }
  writeFileSync(o.out, `${JSON.stringify(report, null, 2)}\n`)
  process.stderr.write(`wrote ${o.out}\n`)
  return failed.length
}
