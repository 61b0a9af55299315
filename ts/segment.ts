import { existsSync } from 'node:fs'

import { expected, OvsegError, tagOf } from './errors'
import { DEFAULT_MAX_PIXELS, MASK_SOURCES, OVERFLOW_POLICIES, SEGMENT_MODES } from './generated'
import type { NativeAmgOptions, NativeSegmentation } from './native'
import { checkBoolean, checkOneOf, checkOptionsObject, checkPositiveInteger, checkSignal, checkStrings } from './options'
import { checkSamOptions, SamModel, type SamOptions } from './sam'

export { DEFAULT_MAX_PIXELS, SEGMENT_MODES, UNLABELED } from './generated'

/** Raw pixels, as sharp gives them: `data` is `[height, width, channels]` bytes. */
export interface RawImage {
  data: Uint8Array
  width: number
  height: number
  /** 1 (grey), 3 (RGB) or 4 (RGBA; alpha is dropped). */
  channels: 1 | 3 | 4
}

/** A file path, a Buffer of an encoded image (JPEG, PNG, WebP, TIFF, ...: decoded with sharp), or raw pixels. */
export type ImageInput = string | Buffer | RawImage

/** Caller masks at the image's size: `[masks, height, width]` (soft Float32Array or binary Uint8Array), or one array per mask. */
export type MaskList = Float32Array | Uint8Array | Array<Float32Array | Uint8Array>

export type SegmentMode = (typeof SEGMENT_MODES)[number]

/** `mode`, `threshold` and `lambda` left out take the model's defaults (`model.defaults`: its manifest's, else OVSeg's evaluation settings). */
export interface SegmentOptions {
  /** `'semantic'` (OVSeg's evaluation path: every pixel gets a class) or `'demo'` (OVSeg's demo path: binarized masks, the best mask per class, uncovered pixels are `UNLABELED`, a single class gets "others" appended). Default: the model's (`'semantic'` unless its manifest says otherwise). */
  mode?: SegmentMode
  /** The caller's masks (SAM or any other source), at the image's size. Added to the generator's masks. */
  masks?: MaskList
  /** Run the model's mask generator (when it has one). Default true. */
  generator?: boolean
  /** SAM's automatic masks as proposals too (a `loadSamModel` model), classified by CLIP alone as the caller's masks are. */
  sam?: SamModel
  /** The automatic mask generator's options with `sam` (`DEFAULT_SAM_OPTIONS`). */
  samOptions?: SamOptions
  /** A mask pixel is foreground for cropping when strictly greater. Default: the model's for the mode (OVSeg's 0.4 semantic / 0.35 demo unless its manifest says otherwise). */
  threshold?: number
  /** Ensemble weight in [0, 1]: `p = p_gen^(1 - lambda) * p_clip^lambda`; 0 = CLIP only. Default: the model's for the mode (OVSeg's 0.7 semantic / 0 demo unless its manifest says otherwise). */
  lambda?: number
  /** Prompt templates with a `{}`. Default: the manifest's (OVSeg's 14). */
  templates?: string[]
  /** Class names past the text context: `'error'` (default) or `'truncate'`. */
  overflow?: (typeof OVERFLOW_POLICIES)[number]
  /** Images with more pixels are refused (`INVALID_IMAGE`). Default 268402689, as sharp. */
  maxPixels?: number
  /** Also return the per-class score maps `[classes, height, width]`. Default false. */
  scores?: boolean
  /** Also return the CLIP crops `[valid masks, 3, size, size]` (normalized), for debugging. Default false. */
  crops?: boolean
  signal?: AbortSignal
}

export interface SegmentRecord {
  /** Where the mask came from: the model's generator, the caller's `masks`, or SAM (option `sam`). */
  source: (typeof MASK_SOURCES)[number]
  /** Index of the mask within its source. */
  index: number
  /** Whether any pixel passed the threshold; only valid masks are cropped for CLIP. */
  valid: boolean
  /** Whether the mask contributes to the label map. */
  used: boolean
  /** The best class of the mask's final probabilities and that probability (null / 0 for unused masks). */
  class: string | null
  classIndex: number | null
  score: number
  /** `[x0, y0, x1, y1]` (x1, y1 exclusive) of the mask's foreground, measured at the processing size and scaled to the image. */
  box: [number, number, number, number] | null
  /** Foreground pixels, measured at the processing size and scaled to the image. */
  area: number
}

export interface Segmentation {
  /** `[height * width]` class index per pixel, over Rust-owned memory. `UNLABELED` in demo mode where no selected mask covers a pixel; all 0 when no mask is used. */
  labels: Uint16Array
  width: number
  height: number
  /** The classes `labels` index: the caller's, plus "others" in demo mode with a single class. */
  classes: string[]
  /** Pixels per class, in `classes` order. */
  classPixels: number[]
  /** Generator masks first, then the caller's. */
  segments: SegmentRecord[]
  /** `[used masks, classes]` final probabilities, in `segments` order of the used masks. */
  probabilities: Float32Array
  /** `[classes, height, width]` score maps, when `scores: true`. */
  scores?: Float32Array
  /** `[valid masks, 3, size, size]` CLIP crops, when `crops: true`. */
  crops?: Float32Array
  /** `[SAM segments, height, width]`, 1 inside: the SAM masks in the order of the `'sam'` segments, when `samOptions.returnMasks`. */
  samMasks?: Uint8Array
  /** The size the image was processed at (OVSeg's: short side 640, long side at most 2560, unless the model's manifest sets `processing`). */
  processingSize: { width: number; height: number }
  /** Milliseconds per stage; `onnxRuntimeMs` is the time inside ONNX Runtime's session runs. */
  timings: {
    decodeMs: number
    resizeMs: number
    generatorMs: number
    /** SAM's automatic mask generation (option `sam`), its network runs included; 0 without. */
    samMs: number
    cropMs: number
    textMs: number
    imageEncoderMs: number
    aggregateMs: number
    onnxRuntimeMs: number
    nativeMs: number
    totalMs: number
  }
  executionProvider: 'cpu' | 'cuda'
}

/** Largest score-map buffer (`scores: true`): the addon cannot hand a larger one to JS (ERR_BUFFER_TOO_LARGE would escape every catch). */
export const MAX_SCORE_BYTES = 2 ** 32 - 1

/** Classes a label map indexes: the caller's, plus "others" in demo mode with a single class. */
export function resultClassCount(classes: number, mode: string | undefined): number {
  return classes + (mode === 'demo' && classes === 1 ? 1 : 0)
}

/** Refuses, before any work, a call whose score maps (result classes x pixels, float32) could not be returned. */
export function checkScoreSize(classes: string[], width: number, height: number, o: { mode?: string; scores: boolean }): void {
  const count = resultClassCount(classes.length, o.mode)
  const bytes = count * width * height * 4
  if (o.scores && bytes > MAX_SCORE_BYTES) {
    throw new OvsegError(
      'INVALID_ARGUMENT',
      `the score maps of ${count} classes over ${width}x${height} pixels would take ${bytes} bytes, over the limit of ${MAX_SCORE_BYTES} (option scores)`,
    )
  }
}

export interface CheckedSegmentOptions {
  masks: unknown
  sam: { model: SamModel; options: NativeAmgOptions } | undefined
  native: {
    mode?: SegmentMode
    threshold?: number
    lambda?: number
    generator: boolean
    templates?: string[]
    overflow: string
    maxPixels: number
    scores: boolean
    crops: boolean
  }
  signal: AbortSignal | undefined
}

export function checkSegmentOptions(options: unknown): CheckedSegmentOptions {
  const o = checkOptionsObject(options, 'options') as SegmentOptions
  const { threshold, lambda } = o
  if (threshold !== undefined && (typeof threshold !== 'number' || !Number.isFinite(threshold) || threshold < 0 || threshold >= 1)) {
    throw expected('INVALID_ARGUMENT', 'a number in [0, 1)', 'threshold', threshold)
  }
  if (lambda !== undefined && (typeof lambda !== 'number' || !(lambda >= 0 && lambda <= 1))) {
    throw expected('INVALID_ARGUMENT', 'a number in [0, 1]', 'lambda', lambda)
  }
  if (o.sam !== undefined && !(o.sam instanceof SamModel)) throw expected('INVALID_ARGUMENT', 'a SamModel (loadSamModel)', 'sam', o.sam)
  if (o.sam === undefined && o.samOptions !== undefined) throw new OvsegError('INVALID_ARGUMENT', '`samOptions` without `sam`: give the SAM model too')
  return {
    masks: o.masks,
    sam: o.sam === undefined ? undefined : { model: o.sam, options: checkSamOptions(o.samOptions) },
    native: {
      mode: checkOneOf(o.mode, 'mode', SEGMENT_MODES),
      threshold,
      lambda,
      generator: checkBoolean(o.generator, 'generator', true),
      templates: o.templates === undefined ? undefined : checkStrings(o.templates, 'templates'),
      overflow: checkOneOf(o.overflow, 'overflow', OVERFLOW_POLICIES, 'error'),
      maxPixels: checkPositiveInteger(o.maxPixels, 'maxPixels') ?? DEFAULT_MAX_PIXELS,
      scores: checkBoolean(o.scores, 'scores', false),
      crops: checkBoolean(o.crops, 'crops', false),
    },
    signal: checkSignal(o.signal),
  }
}

function isRawImage(input: unknown): input is RawImage {
  return typeof input === 'object' && input !== null && !ArrayBuffer.isView(input) && 'data' in input
}

/** Raw pixels -> `[height, width, 3]` RGB bytes (grey replicated, alpha dropped). */
export function rawToRgb(image: unknown, maxPixels: number): { rgb: Uint8Array; width: number; height: number } {
  if (!isRawImage(image)) throw expected('INVALID_IMAGE', 'a path, a Buffer or { data, width, height, channels }', 'image', image)
  const { data, width, height, channels } = image
  if (tagOf(data) !== 'Uint8Array') throw expected('INVALID_IMAGE', 'a Uint8Array', 'image.data', data)
  for (const [name, v] of [['image.width', width], ['image.height', height]] as const) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw expected('INVALID_IMAGE', 'a positive integer', name, v)
  }
  if (channels !== 1 && channels !== 3 && channels !== 4) throw expected('INVALID_IMAGE', '1, 3 or 4', 'image.channels', channels)
  if (width * height > maxPixels) {
    throw new OvsegError('INVALID_IMAGE', `the image has ${width * height} pixels, over the limit of ${maxPixels} (option maxPixels)`)
  }
  if (data.length !== width * height * channels) {
    throw new OvsegError('INVALID_IMAGE', `Expected ${width * height * channels} bytes for a ${width}x${height}x${channels} image but received ${data.length}`)
  }
  if (channels === 3) return { rgb: data, width, height }
  const rgb = new Uint8Array(width * height * 3)
  for (let i = 0, n = width * height; i < n; i++) {
    const src = i * channels
    rgb[i * 3] = data[src]
    rgb[i * 3 + 1] = data[channels === 1 ? src : src + 1]
    rgb[i * 3 + 2] = data[channels === 1 ? src : src + 2]
  }
  return { rgb, width, height }
}

/** Decodes a path or an encoded Buffer with sharp (EXIF orientation applied, any depth/colour -> 8-bit sRGB). */
export async function decodeImage(input: ImageInput, maxPixels: number): Promise<{ rgb: Uint8Array; width: number; height: number }> {
  if (typeof input !== 'string' && !Buffer.isBuffer(input)) return rawToRgb(input, maxPixels)
  if (typeof input === 'string' && !existsSync(input)) throw new OvsegError('INVALID_IMAGE', `image file ${input} does not exist`)
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const sharp = require('sharp') as typeof import('sharp')
  try {
    const { data, info } = await sharp(input, { limitInputPixels: maxPixels, failOn: 'error' })
      .rotate()
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true })
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`)
    return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height }
  } catch (err) {
    throw new OvsegError('INVALID_IMAGE', `cannot decode the image: ${(err as Error).message}`)
  }
}

/** Caller masks as one buffer `[masks, height, width]`. */
export function checkMasks(masks: unknown, width: number, height: number): Float32Array | Uint8Array {
  const plane = width * height
  const one = (m: unknown, name: string): Float32Array | Uint8Array => {
    const tag = tagOf(m)
    if (tag !== 'Float32Array' && tag !== 'Uint8Array') {
      throw expected('INVALID_MASK', 'a Float32Array (soft) or a Uint8Array (binary)', name, m)
    }
    return m as Float32Array | Uint8Array
  }
  if (Array.isArray(masks)) {
    if (masks.length === 0) throw new OvsegError('EMPTY_INPUT', 'Expected at least one mask in `masks` but received an empty array')
    const list = masks.map((m, i) => one(m, `masks[${i}]`))
    list.forEach((m, i) => {
      if (m.length !== plane) throw new OvsegError('INVALID_MASK', `Expected ${plane} values (${width}x${height}) for \`masks[${i}]\` but received ${m.length}`)
    })
    const soft = list.some((m) => tagOf(m) === 'Float32Array')
    const out = soft ? new Float32Array(list.length * plane) : new Uint8Array(list.length * plane)
    list.forEach((m, i) => out.set(soft && tagOf(m) === 'Uint8Array' ? Float32Array.from(m, (v) => (v ? 1 : 0)) : m, i * plane))
    return out
  }
  const all = one(masks, 'masks')
  if (all.length === 0 || all.length % plane !== 0) {
    throw new OvsegError('INVALID_MASK', `Expected a whole number of ${width}x${height} masks (${plane} values each) in \`masks\` but received ${all.length} values`)
  }
  return all
}

export function shapeSegmentation(native: NativeSegmentation, provider: 'cpu' | 'cuda', decodeMs: number, startedAt: number): Segmentation {
  const t = native.timings
  const classes = native.classes
  return {
    labels: native.labels,
    width: native.width,
    height: native.height,
    classes,
    classPixels: native.classPixels,
    segments: native.segments.map((s) => ({
      source: s.source as SegmentRecord['source'],
      index: s.index,
      valid: s.valid,
      used: s.used,
      class: s.classIndex == null ? null : classes[s.classIndex],
      classIndex: s.classIndex ?? null,
      score: s.score,
      box: s.bbox ? (s.bbox as [number, number, number, number]) : null,
      area: s.area,
    })),
    probabilities: native.probabilities,
    ...(native.scores ? { scores: native.scores } : {}),
    ...(native.crops ? { crops: native.crops } : {}),
    ...(native.samMasks ? { samMasks: native.samMasks } : {}),
    processingSize: { width: native.processingWidth, height: native.processingHeight },
    timings: {
      decodeMs,
      resizeMs: t.resizeMs,
      generatorMs: t.generatorMs,
      samMs: t.samMs,
      cropMs: t.cropMs,
      textMs: t.textMs,
      imageEncoderMs: t.imageEncoderMs,
      aggregateMs: t.aggregateMs,
      onnxRuntimeMs: t.sessionMs,
      nativeMs: t.totalMs,
      totalMs: performance.now() - startedAt,
    },
    executionProvider: provider,
  }
}
