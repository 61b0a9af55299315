/**
 * SAM proposal models: Segment Anything's automatic masks (docs/model-format.md, "SAM proposal
 * models"), on their own (`generate`) or as proposals of `segment()` (option `sam`), where CLIP
 * classifies them as it does the caller's masks.
 */
import { resolve } from 'node:path'

import { abortedError, expected, withCallerStack } from './errors'
import { DEFAULT_SAM_OPTIONS, EXECUTION_PROVIDERS, SAM_LIMITS } from './generated'
import { native, type NativeAmgOptions, type NativeSamModel } from './native'
import { checkOneOf, checkOptionsObject, checkSignal, checkThreads } from './options'
import { initRuntime, withRuntimeHint } from './runtime'
import { decodeImage, DEFAULT_MAX_PIXELS, type ImageInput } from './segment'

/** segment-anything's `SamAutomaticMaskGenerator` options (its defaults), and how many masks `segment()` classifies. */
export interface SamOptions {
  /** Points per side of the prompt grid. Default 32 (1024 prompts). */
  pointsPerSide?: number
  /** Prompts per decoder run. Default 64. */
  pointsPerBatch?: number
  /** Masks whose predicted IoU is not above this are dropped. Default 0.88. */
  predIouThresh?: number
  /** Masks whose stability score is below this are dropped. Default 0.95. */
  stabilityScoreThresh?: number
  /** The logit offset of the stability score. Default 1. */
  stabilityScoreOffset?: number
  /** Box IoU above which the mask with the lower predicted IoU is dropped. Default 0.7. */
  boxNmsThresh?: number
  /** Layers of crops run beside the whole image (layer i: 2^i x 2^i crops, one encoder run each). Default 0. */
  cropNLayers?: number
  /** Box IoU above which a mask from a larger crop is dropped for one from a smaller crop. Default 0.7. */
  cropNmsThresh?: number
  /** Overlap of neighbouring crops, a fraction of the image's short side (at layer 1). Default 512 / 1500. */
  cropOverlapRatio?: number
  /** The point grid's side is divided by this on each crop layer. Default 1. */
  cropNPointsDownscaleFactor?: number
  /** Holes and islands of fewer pixels than this are removed from each mask (8-connected). Default 0: none. */
  minMaskRegionArea?: number
  /** `segment()` only: at most this many masks, the highest predicted IoU first, go on to CLIP. Default 100. */
  maxMasks?: number
  /** `segment()` only: also return those masks (`result.samMasks`). Default false. */
  returnMasks?: boolean
}

export { DEFAULT_SAM_OPTIONS, SAM_LIMITS } from './generated'

/** The options with their defaults, checked (the core checks them again). */
export function checkSamOptions(options: unknown): NativeAmgOptions {
  const o: Required<SamOptions> = { ...DEFAULT_SAM_OPTIONS, returnMasks: false, ...(checkOptionsObject(options, 'samOptions') as SamOptions) }
  if (typeof o.returnMasks !== 'boolean') throw expected('INVALID_ARGUMENT', 'a boolean', 'returnMasks', o.returnMasks)
  const integer = (name: keyof SamOptions, most: number) => {
    const v = o[name]
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > most) throw expected('INVALID_ARGUMENT', `an integer in 1..${most}`, name, v)
  }
  integer('pointsPerSide', SAM_LIMITS.pointsPerSide)
  integer('pointsPerBatch', SAM_LIMITS.pointsPerBatch)
  integer('maxMasks', 65535)
  integer('cropNPointsDownscaleFactor', SAM_LIMITS.pointsPerSide)
  const count = (name: 'cropNLayers' | 'minMaskRegionArea', most: number) => {
    const v = o[name]
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > most) throw expected('INVALID_ARGUMENT', `an integer in 0..${most}`, name, v)
  }
  count('cropNLayers', SAM_LIMITS.cropNLayers)
  count('minMaskRegionArea', Number.MAX_SAFE_INTEGER)
  for (const name of ['predIouThresh', 'stabilityScoreThresh', 'boxNmsThresh', 'cropNmsThresh'] as const) {
    if (typeof o[name] !== 'number' || !(o[name] >= 0 && o[name] <= 1)) throw expected('INVALID_ARGUMENT', 'a number in [0, 1]', name, o[name])
  }
  if (typeof o.cropOverlapRatio !== 'number' || !(o.cropOverlapRatio >= 0 && o.cropOverlapRatio < 1)) {
    throw expected('INVALID_ARGUMENT', 'a number in [0, 1)', 'cropOverlapRatio', o.cropOverlapRatio)
  }
  if (typeof o.stabilityScoreOffset !== 'number' || !(o.stabilityScoreOffset >= 0 && Number.isFinite(o.stabilityScoreOffset))) {
    throw expected('INVALID_ARGUMENT', 'a finite number >= 0', 'stabilityScoreOffset', o.stabilityScoreOffset)
  }
  return o
}

export interface SamLoadOptions {
  /** `'cpu'` (default), `'cuda'` or `'auto'`, as `loadModel`'s. */
  executionProvider?: (typeof EXECUTION_PROVIDERS)[number]
  /** ONNX Runtime intra-op threads per session. Default: ONNX Runtime's. */
  threads?: number
  /** ONNX Runtime library. Default: `resolveRuntimeLibrary()`. */
  runtimeLibraryPath?: string
  signal?: AbortSignal
}

/** One generated mask's record. */
export interface SamMaskRecord {
  /** `[x0, y0, x1, y1]`, inclusive pixel coordinates (SAM's `batched_mask_to_box`). */
  box: [number, number, number, number]
  area: number
  predictedIou: number
  stabilityScore: number
  /** The prompt point `[x, y]` in image pixels. */
  point: [number, number]
}

export interface SamMasks {
  width: number
  height: number
  /** `[records.length, height, width]`, 1 inside, in the generator's order (highest predicted IoU first). */
  masks: Uint8Array
  records: SamMaskRecord[]
  /** Time inside ONNX Runtime (encoder and decoder runs). */
  onnxRuntimeMs: number
}

export class SamModel {
  /** @internal */
  readonly native: NativeSamModel
  readonly dir: string
  readonly name: string
  /** The encoder's input side (the image's longest side is resized to it). */
  readonly imageSize: number

  /** @internal use `loadSamModel` */
  constructor(handle: NativeSamModel) {
    this.native = handle
    const info = handle.info()
    this.dir = info.dir
    this.name = info.name
    this.imageSize = info.imageSize
  }

  /** SAM's automatic masks of an image (a path, encoded bytes, or raw pixels), off the event loop. */
  async generate(image: ImageInput, options?: Omit<SamOptions, 'maxMasks' | 'returnMasks'> & { maxPixels?: number; signal?: AbortSignal }): Promise<SamMasks> {
    const caller = new Error()
    const signal = checkSignal(options?.signal)
    const { maxPixels, signal: _signal, ...rest } = options ?? {}
    const amg = checkSamOptions(rest)
    if (signal?.aborted) throw abortedError(signal)
    const decoded = await decodeImage(image, maxPixels ?? DEFAULT_MAX_PIXELS)
    const out = await withCallerStack(
      this.native.generate(decoded.rgb, decoded.width, decoded.height, amg, signal).catch((err: unknown) => {
        throw signal?.aborted ? abortedError(signal) : err
      }),
      caller,
    )
    const records: SamMaskRecord[] = Array.from({ length: out.count }, (_, k) => ({
      box: out.boxes.slice(4 * k, 4 * k + 4) as [number, number, number, number],
      area: out.areas[k],
      predictedIou: out.predictedIou[k],
      stabilityScore: out.stabilityScore[k],
      point: out.points.slice(2 * k, 2 * k + 2) as [number, number],
    }))
    return { width: decoded.width, height: decoded.height, masks: out.masks, records, onnxRuntimeMs: out.sessionMs }
  }

  /** Releases the model's sessions (after the calls in flight). Idempotent. */
  dispose(): void {
    this.native.dispose()
  }
}

function samLoadArgs(dir: string, options: unknown) {
  if (typeof dir !== 'string' || dir === '') throw expected('INVALID_ARGUMENT', 'a directory path', 'dir', dir)
  const o = checkOptionsObject(options, 'options') as SamLoadOptions
  return {
    dir: resolve(dir),
    native: { executionProvider: checkOneOf(o.executionProvider, 'executionProvider', EXECUTION_PROVIDERS, 'cpu'), threads: checkThreads(o.threads) },
    runtimeLibraryPath: o.runtimeLibraryPath,
    signal: checkSignal(o.signal),
  }
}

/** Loads a SAM proposal-model directory (`python -m ovseg_tools.export.sam`) off the event loop. */
export async function loadSamModel(dir: string, options?: SamLoadOptions): Promise<SamModel> {
  const caller = new Error()
  const args = samLoadArgs(dir, options)
  initRuntime(args.runtimeLibraryPath)
  if (args.signal?.aborted) throw abortedError(args.signal)
  const handle = await withCallerStack(
    native().loadSamModelAsync(args.dir, args.native, args.signal).catch((err: unknown) => {
      throw args.signal?.aborted ? abortedError(args.signal) : withRuntimeHint(err)
    }),
    caller,
  )
  return new SamModel(handle)
}

/** Loads a SAM proposal-model directory on the calling thread. */
export function loadSamModelSync(dir: string, options?: Omit<SamLoadOptions, 'signal'>): SamModel {
  const args = samLoadArgs(dir, options)
  initRuntime(args.runtimeLibraryPath)
  try {
    return new SamModel(native().loadSamModelSync(args.dir, args.native))
  } catch (err) {
    throw withRuntimeHint(err)
  }
}
