/** One image's bytes to a result with pictures, within the server's limits: what `ovseg serve` and the queue workers run per request. */
import type { Model } from '../model'
import { drawPictures, summarize, type Pictures, type Summary } from '../results'
import { decodeImage, type SegmentMode, type SegmentOptions } from '../segment'
import { checkWork, headerSize, type WorkLimits } from './limits'

/** A request's fields, already parsed. */
export interface SegmentFields {
  classes: string[]
  mode?: SegmentMode
  threshold?: number
  lambda?: number
  /** With SAM proposals: each SAM segment of the answer carries its mask (`mask`). */
  masks?: boolean
}

export interface SegmentBytesOptions {
  /** The `image` field of the summary (a file name). */
  name: string
  limits: WorkLimits
  /** Draw the confidence PNG (needs the score maps). */
  confidence: boolean
  /** Stops the work at its next step (segment() and the per-pixel drawing). */
  signal?: AbortSignal
  /** Runs the segment() call: the server passes its queue, so that only checked, decoded requests wait. */
  run?: <T>(job: () => Promise<T>) => Promise<T>
  /** Proposal sources (`--proposals`, `--sam-model`). */
  proposals?: Pick<SegmentOptions, 'generator' | 'sam' | 'samOptions'>
}

/**
 * Checks the image against the limits from its header (before decoding: decompression bombs are
 * refused), decodes it, checks the decoded size again, segments and draws.
 */
export async function segmentBytes(model: Model, image: Buffer, fields: SegmentFields, o: SegmentBytesOptions): Promise<{ summary: Summary; pictures: Pictures }> {
  const mode = fields.mode ?? model.defaults.mode
  const declared = await headerSize(image)
  checkWork(fields.classes, mode, declared.width, declared.height, o.limits)
  const decoded = await decodeImage(image, o.limits.maxPixels)
  checkWork(fields.classes, mode, decoded.width, decoded.height, o.limits)
  const pixels = { data: decoded.rgb, width: decoded.width, height: decoded.height, channels: 3 as const }
  const proposals = fields.masks && o.proposals?.sam ? { ...o.proposals, samOptions: { ...o.proposals.samOptions, returnMasks: true } } : o.proposals
  const segment = () => model.segment(pixels, fields.classes, { mode: fields.mode, threshold: fields.threshold, lambda: fields.lambda, scores: o.confidence, signal: o.signal, ...proposals })
  const r = await (o.run ? o.run(segment) : segment())
  return { summary: summarize(o.name, r), pictures: await drawPictures(decoded.rgb, r, o.signal) }
}
