/**
 * Standard semantic-segmentation metrics over label maps, as published tables compute them
 * (mmsegmentation's `intersect_and_union`): ground-truth pixels equal to `ignoreIndex` are left
 * out; a predicted label outside the classes (e.g. `UNLABELED`) counts for no class, so it only
 * costs recall; a class that appears in neither prediction nor ground truth has no IoU and is left
 * out of the means.
 */
import sharp from 'sharp'

import { expected, OvsegError } from './errors'

export interface ClassMetrics {
  /** Intersection over union; `null` when the class is in neither prediction nor ground truth. */
  iou: number | null
  /** Recall: correct pixels / ground-truth pixels; `null` without ground-truth pixels. */
  accuracy: number | null
  /** Ground-truth pixels. */
  support: number
}

export interface SegmentationMetrics {
  perClass: ClassMetrics[]
  /** Mean IoU over the classes that have one. */
  mIoU: number
  /** Correct pixels / labeled (not ignored) pixels. */
  pixelAccuracy: number
  /** Mean of the per-class accuracies that exist. */
  meanAccuracy: number
  /** Frequency-weighted IoU: Σ (support_c / labeled) · IoU_c. */
  frequencyWeightedIoU: number
  /** Labeled (not ignored) pixels. */
  pixels: number
}

/** Accumulates a `[truth, prediction]` confusion matrix over any number of label maps. */
export class ConfusionMatrix {
  readonly classes: number
  readonly ignoreIndex: number
  /** `[classes, classes]`, row = ground truth, column = prediction. */
  readonly counts: Float64Array
  /** Ground-truth pixels predicted as no class. */
  readonly unpredicted: Float64Array

  constructor(classes: number, ignoreIndex = 255) {
    if (!Number.isInteger(classes) || classes <= 0) throw expected('INVALID_ARGUMENT', 'a positive integer', 'classes', classes)
    if (!Number.isInteger(ignoreIndex)) throw expected('INVALID_ARGUMENT', 'an integer', 'ignoreIndex', ignoreIndex)
    this.classes = classes
    this.ignoreIndex = ignoreIndex
    this.counts = new Float64Array(classes * classes)
    this.unpredicted = new Float64Array(classes)
  }

  /** Adds one image: `prediction` and `truth` are label maps of the same length. */
  add(prediction: ArrayLike<number>, truth: ArrayLike<number>): this {
    for (const [name, v] of [['prediction', prediction], ['truth', truth]] as const) {
      if (!ArrayBuffer.isView(v) && !Array.isArray(v)) throw expected('INVALID_ARGUMENT', 'a label map (typed array)', name, v)
    }
    if (prediction.length !== truth.length) {
      throw new OvsegError('INVALID_ARGUMENT', `prediction has ${prediction.length} pixels but the ground truth ${truth.length}`)
    }
    const n = this.classes
    for (let i = 0; i < truth.length; i++) {
      const t = truth[i]
      if (t === this.ignoreIndex) continue
      if (!(t >= 0 && t < n)) throw new OvsegError('INVALID_ARGUMENT', `ground-truth label ${t} at pixel ${i} is neither a class (0..${n - 1}) nor the ignore index ${this.ignoreIndex}`)
      const p = prediction[i]
      if (p >= 0 && p < n) this.counts[t * n + p] += 1
      else this.unpredicted[t] += 1
    }
    return this
  }

  metrics(): SegmentationMetrics {
    const n = this.classes
    const perClass: ClassMetrics[] = []
    let labeled = 0
    let correct = 0
    for (let c = 0; c < n; c++) {
      let support = this.unpredicted[c]
      let predicted = 0
      for (let k = 0; k < n; k++) {
        support += this.counts[c * n + k]
        predicted += this.counts[k * n + c]
      }
      const intersection = this.counts[c * n + c]
      const union = support + predicted - intersection
      perClass.push({ iou: union > 0 ? intersection / union : null, accuracy: support > 0 ? intersection / support : null, support })
      labeled += support
      correct += intersection
    }
    const mean = (xs: (number | null)[]) => {
      const present = xs.filter((x): x is number => x !== null)
      return present.length ? present.reduce((a, b) => a + b, 0) / present.length : 0
    }
    return {
      perClass,
      mIoU: mean(perClass.map((c) => c.iou)),
      pixelAccuracy: labeled > 0 ? correct / labeled : 0,
      meanAccuracy: mean(perClass.map((c) => c.accuracy)),
      frequencyWeightedIoU: labeled > 0 ? perClass.reduce((a, c) => a + (c.support / labeled) * (c.iou ?? 0), 0) : 0,
      pixels: labeled,
    }
  }
}

/** A label PNG as class indices: single-channel 8- or 16-bit. */
export async function readLabelPng(path: string, reduceZeroLabel: boolean, ignoreIndex: number): Promise<{ labels: Uint16Array; width: number; height: number }> {
  const image = sharp(path)
  const meta = await image.metadata()
  if (meta.channels !== 1) {
    throw new OvsegError('INVALID_IMAGE', `${path} has ${meta.channels} channels: label maps must be single-channel PNGs of class indices (convert palette PNGs first)`)
  }
  const wide = meta.depth === 'ushort'
  const { data, info } = await image
    .toColourspace(wide ? 'grey16' : 'b-w')
    .raw(wide ? { depth: 'ushort' } : {})
    .toBuffer({ resolveWithObject: true })
  const labels = wide ? new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2).slice() : Uint16Array.from(data)
  if (reduceZeroLabel) for (let i = 0; i < labels.length; i++) labels[i] = labels[i] === 0 ? ignoreIndex : labels[i] - 1
  return { labels, width: info.width, height: info.height }
}
