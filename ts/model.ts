import { resolve } from 'node:path'

import { abortedError, expected, tagOf, withCallerStack } from './errors'
import { BATCH_LIMITS, DEFAULT_BATCH, EXECUTION_PROVIDERS, OVERFLOW_POLICIES, PRECISIONS } from './generated'
import { native, type NativeFeatures, type NativeModel } from './native'
import { checkBoolean, checkOneOf, checkOptionsObject, checkSignal, checkStrings, checkThreads } from './options'
import { initRuntime, withRuntimeHint } from './runtime'
import {
  checkMasks,
  checkScoreSize,
  checkSegmentOptions,
  decodeImage,
  rawToRgb,
  shapeSegmentation,
  type ImageInput,
  type SegmentMode,
  type Segmentation,
  type SegmentOptions,
} from './segment'

export type ExecutionProviderName = (typeof EXECUTION_PROVIDERS)[number]
export type Overflow = (typeof OVERFLOW_POLICIES)[number]
export type Precision = (typeof PRECISIONS)[number]

export interface LoadOptions {
  /** `'cpu'` (default), `'cuda'` (coded error `PROVIDER_UNAVAILABLE` when it cannot run), or `'auto'` (CUDA if it can be created, else CPU). */
  executionProvider?: ExecutionProviderName
  /** ONNX Runtime intra-op threads per session, 1 to 4x the available cores. Default: ONNX Runtime's (one per physical core). */
  threads?: number
  /** Mask prompts for the image encoder: `'manifest'` (default), `'none'`, or the path of another prompt `.npy`. */
  prompts?: string
  /**
   * CLIP encoders to load: `'float32'` (default), or `'int8'` (for CPUs) / `'float16'` (for GPUs)
   * when the manifest names such encoders (`python -m ovseg_tools.export.int8 DIR` / `.fp16 DIR`
   * add them); otherwise `INVALID_ARGUMENT`. The mask generator stays float32.
   */
  precision?: Precision
  /** ONNX Runtime library. Default: `resolveRuntimeLibrary()` (`ORT_DYLIB_PATH`, else the installed runtime package). */
  runtimeLibraryPath?: string
  /**
   * Cross-request batching: concurrent `segment()` calls on this model share image-encoder runs.
   * `maxCrops` caps the crops of one run (one call's crops beyond it are split over runs);
   * `maxWaitMs` is how long a run waits for the crops of calls still on their way to the encoder
   * (it never waits when no other call is in flight); `onCpu: false` leaves a model that runs on
   * the CPU unbatched (a CPU encoder's cost per crop hardly depends on the batch: batching pays on
   * GPUs). `false`: every call runs its own crops. Default `DEFAULT_BATCH`
   * (`{ maxCrops: 128, maxWaitMs: 2, onCpu: false }`).
   */
  batch?: false | BatchOptions
  /** Aborts the load if it has not started yet. */
  signal?: AbortSignal
}

export interface BatchOptions {
  /** Crops per image-encoder run, 1 to `BATCH_LIMITS.maxCrops`. */
  maxCrops?: number
  /** Milliseconds, 0 to `BATCH_LIMITS.maxWaitMs`. */
  maxWaitMs?: number
  /** Batch when the model runs on the CPU too. Default `false`. */
  onCpu?: boolean
}

/** Row-major `[rows, dim]` features over Rust-owned memory (no copy was made). */
export interface Features {
  data: Float32Array
  rows: number
  dim: number
}

export interface TextOptions {
  /** Names longer than the context: `'error'` (default, code `TEXT_TOO_LONG`) or `'truncate'` (keep the start, end with the end-of-text token). */
  overflow?: Overflow
}

export interface EncodeTextOptions extends TextOptions {
  /** L2-normalize each row. Default `true`. */
  normalize?: boolean
  signal?: AbortSignal
}

export interface ImageBatch {
  /**
   * `Float32Array`: `[batch, 3, size, size]`, normalized with the model's pixel mean/std.
   * `Uint8Array`: `[batch, size, size, 3]` RGB bytes, normalized by ovseg.
   * `size` is the model's `imageSize`.
   */
  pixels: Float32Array | Uint8Array
  /** `[batch, size, size]`, nonzero = foreground. A patch with any foreground pixel is kept; the others get mask prompts. Default: keep all. */
  masks?: Uint8Array
}

export interface EncodeImageOptions {
  /** Substitute the model's mask prompts for background patches. Default `true` (no effect without prompts or masks). */
  usePrompts?: boolean
  /** L2-normalize each row. Default `true`. */
  normalize?: boolean
  signal?: AbortSignal
}

export interface ClassEmbeddingOptions extends TextOptions {
  /** Prompt templates with a `{}` for the class name. Default: the manifest's (OVSeg's 14). */
  templates?: string[]
  /** Append the model's normalized no-object embedding as the last row. Default `false`. */
  includeNoObject?: boolean
  signal?: AbortSignal
}

/** The parts of `manifest.json` a user reads (see docs/model-format.md). */
export interface Manifest {
  format: 'ovseg-model'
  version: number
  name: string
  clip: {
    imageSize: number
    patchSize: number
    visionWidth: number
    visionLayers: number
    embedDim: number
    contextLength: number
    vocabSize: number
  }
  pixelMean: [number, number, number]
  pixelStd: [number, number, number]
  graphs: {
    imageEncoder: string
    textEncoder: string
    /** int8 / float16 CLIP encoders beside the float32 ones (format version 3; the `precision` load option). */
    int8?: { imageEncoder: string; textEncoder: string }
    float16?: { imageEncoder: string; textEncoder: string }
  }
  tokenizer: { vocab: string; merges: number | null }
  maskPrompts: { file: string; depth: number } | null
  noObjectEmbedding: string | null
  templates: string[]
  /** The class-agnostic mask generator (absent: masks come from the caller only). */
  generator?: { file: string; pixelMean: [number, number, number]; pixelStd: [number, number, number]; sizeDivisibility: number; maskStride: number }
  /** The size segment() processes images at (absent: OVSeg's, short side 640, long side at most 2560). */
  processing?: { shortSide: number; maxSize: number }
  /** segment()'s defaults as the model was exported (format version 2); a piece left out is OVSeg's (see `Model.defaults`). */
  defaults?: {
    mode?: SegmentMode
    semantic?: { threshold?: number; lambda?: number }
    demo?: { threshold?: number; lambda?: number }
  }
  source?: unknown
}

/** What segment() runs with for the options a call leaves out: the manifest's `defaults`, OVSeg's where it has none. */
export interface SegmentDefaults {
  mode: SegmentMode
  semantic: { threshold: number; lambda: number }
  demo: { threshold: number; lambda: number }
}

function loadArgs(dir: unknown, options: unknown) {
  if (typeof dir !== 'string' || dir.length === 0) throw expected('INVALID_ARGUMENT', 'a model directory path', 'dir', dir)
  const o = checkOptionsObject(options, 'options') as LoadOptions
  if (o.runtimeLibraryPath !== undefined && typeof o.runtimeLibraryPath !== 'string') {
    throw expected('INVALID_ARGUMENT', 'a file path', 'runtimeLibraryPath', o.runtimeLibraryPath)
  }
  if (o.prompts !== undefined && (typeof o.prompts !== 'string' || o.prompts.length === 0)) {
    throw expected('INVALID_ARGUMENT', "'manifest', 'none' or a .npy path", 'prompts', o.prompts)
  }
  const prompts = o.prompts ?? 'manifest'
  const batch = checkBatch(o.batch)
  return {
    dir: resolve(dir),
    runtimeLibraryPath: o.runtimeLibraryPath,
    signal: checkSignal(o.signal),
    native: {
      executionProvider: checkOneOf(o.executionProvider, 'executionProvider', EXECUTION_PROVIDERS, 'cpu'),
      threads: checkThreads(o.threads),
      prompts: prompts === 'manifest' || prompts === 'none' ? prompts : resolve(prompts),
      batch,
      precision: checkOneOf(o.precision, 'precision', PRECISIONS, 'float32'),
    },
  }
}

function checkBatch(value: unknown): Required<BatchOptions> | undefined {
  if (value === false) return undefined
  if (value !== undefined && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    throw expected('INVALID_ARGUMENT', 'false or an object { maxCrops?, maxWaitMs?, onCpu? }', 'batch', value)
  }
  const o = (value ?? {}) as BatchOptions
  const maxCrops = o.maxCrops ?? DEFAULT_BATCH.maxCrops
  if (typeof maxCrops !== 'number' || !Number.isInteger(maxCrops) || maxCrops < 1 || maxCrops > BATCH_LIMITS.maxCrops) {
    throw expected('INVALID_ARGUMENT', `an integer in 1..${BATCH_LIMITS.maxCrops}`, 'batch.maxCrops', maxCrops)
  }
  const maxWaitMs = o.maxWaitMs ?? DEFAULT_BATCH.maxWaitMs
  if (typeof maxWaitMs !== 'number' || !(maxWaitMs >= 0 && maxWaitMs <= BATCH_LIMITS.maxWaitMs)) {
    throw expected('INVALID_ARGUMENT', `a number of milliseconds in [0, ${BATCH_LIMITS.maxWaitMs}]`, 'batch.maxWaitMs', maxWaitMs)
  }
  return { maxCrops, maxWaitMs, onCpu: checkBoolean(o.onCpu, 'batch.onCpu', DEFAULT_BATCH.onCpu) }
}

/** Loads a model directory off the event loop. */
export async function loadModel(dir: string, options?: LoadOptions): Promise<Model> {
  const caller = new Error()
  const args = loadArgs(dir, options)
  initRuntime(args.runtimeLibraryPath)
  if (args.signal?.aborted) throw abortedError(args.signal)
  const handle = await withCallerStack(
    native().loadModelAsync(args.dir, args.native, args.signal).catch((err: unknown) => {
      throw args.signal?.aborted ? abortedError(args.signal) : withRuntimeHint(err)
    }),
    caller,
  )
  return new Model(handle)
}

/** Loads a model directory on the calling thread (blocks the event loop for the duration). */
export function loadModelSync(dir: string, options?: Omit<LoadOptions, 'signal'>): Model {
  const args = loadArgs(dir, options)
  initRuntime(args.runtimeLibraryPath)
  try {
    return new Model(native().loadModelSync(args.dir, args.native))
  } catch (err) {
    throw withRuntimeHint(err)
  }
}

function checkImageBatch(batch: unknown): { pixels: Float32Array | Uint8Array; masks: Uint8Array | null } {
  if (typeof batch !== 'object' || batch === null) throw expected('INVALID_ARGUMENT', 'an object { pixels, masks? }', 'images', batch)
  const { pixels, masks } = batch as ImageBatch
  const tag = tagOf(pixels)
  if (tag !== 'Float32Array' && tag !== 'Uint8Array') {
    throw expected('INVALID_IMAGE', 'a Float32Array (normalized NCHW) or a Uint8Array (RGB NHWC)', 'pixels', pixels)
  }
  if (masks !== undefined && masks !== null && tagOf(masks) !== 'Uint8Array') {
    throw expected('INVALID_MASK', 'a Uint8Array ([batch, size, size], nonzero = foreground)', 'masks', masks)
  }
  return { pixels, masks: masks ?? null }
}

/** A loaded model. Free it with `dispose()` (or `using model = ...`). */
export class Model {
  readonly #native: NativeModel
  /** The parsed manifest.json. */
  readonly manifest: Manifest
  /** Absolute path of the model directory. */
  readonly dir: string
  /** The execution provider the sessions run on (`'cpu'` or `'cuda'`) and why it was chosen. */
  readonly executionProvider: { name: 'cpu' | 'cuda'; reason: string }
  /** Depth of the mask prompts in use (0 = none). */
  readonly promptDepth: number
  /** What segment() runs with for the options a call leaves out. */
  readonly defaults: SegmentDefaults
  /** Cross-request batching of `segment()`'s crops as it runs (`null`: off, e.g. on the CPU by default). */
  readonly batch: Readonly<Required<BatchOptions>> | null
  /** The precision of the CLIP encoders it loaded. */
  readonly precision: Precision

  /** @internal Use `loadModel` / `loadModelSync`. */
  constructor(handle: NativeModel) {
    this.#native = handle
    const info = handle.info()
    this.manifest = JSON.parse(info.manifest) as Manifest
    this.dir = info.dir
    this.executionProvider = { name: info.executionProvider as 'cpu' | 'cuda', reason: info.executionProviderReason }
    this.promptDepth = info.promptDepth
    this.defaults = JSON.parse(info.defaults) as SegmentDefaults
    this.batch = info.batch ?? null
    this.precision = info.precision as Precision
  }

  /** The CLIP input size (pixels per side) the image encoder takes. */
  get imageSize(): number {
    return this.manifest.clip.imageSize
  }

  /** Length of each feature row. */
  get embedDim(): number {
    return this.manifest.clip.embedDim
  }

  get disposed(): boolean {
    return this.#native.disposed
  }

  /** Token ids `[texts.length, contextLength]` (row-major), exactly as CLIP's tokenizer gives them. */
  tokenize(texts: string[], options?: TextOptions): Int32Array {
    const o = checkOptionsObject(options, 'options') as TextOptions
    return this.#native.tokenize(checkStrings(texts, 'texts'), overflowOf(o))
  }

  /** Text features of each text, off the event loop. */
  async encodeText(texts: string[], options?: EncodeTextOptions): Promise<Features> {
    const caller = new Error()
    const o = checkOptionsObject(options, 'options') as EncodeTextOptions
    const list = checkStrings(texts, 'texts')
    const signal = checkSignal(o.signal)
    return this.#run(caller, signal, () => this.#native.encodeText(list, overflowOf(o), checkBoolean(o.normalize, 'normalize', true), signal))
  }

  encodeTextSync(texts: string[], options?: Omit<EncodeTextOptions, 'signal'>): Features {
    const o = checkOptionsObject(options, 'options') as EncodeTextOptions
    return this.#native.encodeTextSync(checkStrings(texts, 'texts'), overflowOf(o), checkBoolean(o.normalize, 'normalize', true))
  }

  /**
   * Image features, off the event loop. `images.pixels` and `images.masks` are read in place:
   * do not modify them until the promise settles.
   */
  async encodeImage(images: ImageBatch, options?: EncodeImageOptions): Promise<Features> {
    const caller = new Error()
    const { pixels, masks } = checkImageBatch(images)
    const o = checkOptionsObject(options, 'options') as EncodeImageOptions
    const usePrompts = checkBoolean(o.usePrompts, 'usePrompts', true)
    const normalize = checkBoolean(o.normalize, 'normalize', true)
    const signal = checkSignal(o.signal)
    return this.#run(caller, signal, () => this.#native.encodeImage(pixels, masks, usePrompts, normalize, signal))
  }

  encodeImageSync(images: ImageBatch, options?: Omit<EncodeImageOptions, 'signal'>): Features {
    const { pixels, masks } = checkImageBatch(images)
    const o = checkOptionsObject(options, 'options') as EncodeImageOptions
    return this.#native.encodeImageSync(pixels, masks, checkBoolean(o.usePrompts, 'usePrompts', true), checkBoolean(o.normalize, 'normalize', true))
  }

  /**
   * OVSeg's class matrix `[classes (+1), dim]`: for each class, every template filled with the name
   * (verbatim), encoded, L2-normalized, averaged, normalized again.
   */
  async classEmbeddings(classes: string[], options?: ClassEmbeddingOptions): Promise<Features> {
    const caller = new Error()
    const o = checkOptionsObject(options, 'options') as ClassEmbeddingOptions
    const list = checkStrings(classes, 'classes')
    const templates = o.templates === undefined ? null : checkStrings(o.templates, 'templates')
    const includeNoObject = checkBoolean(o.includeNoObject, 'includeNoObject', false)
    const signal = checkSignal(o.signal)
    return this.#run(caller, signal, () => this.#native.classEmbeddings(list, templates, overflowOf(o), includeNoObject, signal))
  }

  classEmbeddingsSync(classes: string[], options?: Omit<ClassEmbeddingOptions, 'signal'>): Features {
    const o = checkOptionsObject(options, 'options') as ClassEmbeddingOptions
    const templates = o.templates === undefined ? null : checkStrings(o.templates, 'templates')
    return this.#native.classEmbeddingsSync(checkStrings(classes, 'classes'), templates, overflowOf(o), checkBoolean(o.includeNoObject, 'includeNoObject', false))
  }

  /**
   * Saves the class matrix of `classes` (as `classEmbeddings` computes it, without the no-object
   * row) to a file, so that a later process can `loadClassEmbeddings` it instead of running the
   * text encoder. Written whole or not at all (through a temporary file beside it).
   */
  async saveClassEmbeddings(path: string, classes: string[], options?: Omit<ClassEmbeddingOptions, 'includeNoObject'>): Promise<void> {
    const caller = new Error()
    const a = saveArgs(path, classes, options)
    if (a.signal?.aborted) throw abortedError(a.signal)
    await withCallerStack(
      this.#native.saveClassEmbeddings(a.path, a.classes, a.templates, a.overflow, a.signal).catch((err: unknown) => {
        throw a.signal?.aborted ? abortedError(a.signal) : err
      }),
      caller,
    )
  }

  saveClassEmbeddingsSync(path: string, classes: string[], options?: Omit<ClassEmbeddingOptions, 'includeNoObject' | 'signal'>): void {
    const a = saveArgs(path, classes, options)
    this.#native.saveClassEmbeddingsSync(a.path, a.classes, a.templates, a.overflow)
  }

  /**
   * Loads a file of `saveClassEmbeddings` into the model's class-embedding cache: `segment()` and
   * `classEmbeddings()` with the same classes, templates and `overflow` then run no text encoder.
   * `CLASS_EMBEDDINGS_INVALID` when the file is missing, damaged or was saved by another model.
   * The cache keeps the 32 most recently used vocabularies.
   */
  async loadClassEmbeddings(path: string, options?: { signal?: AbortSignal }): Promise<{ classes: string[]; templates: string[] }> {
    const caller = new Error()
    const file = checkPath(path)
    const signal = checkSignal((checkOptionsObject(options, 'options') as { signal?: AbortSignal }).signal)
    if (signal?.aborted) throw abortedError(signal)
    return withCallerStack(
      this.#native.loadClassEmbeddings(file, signal).catch((err: unknown) => {
        throw signal?.aborted ? abortedError(signal) : err
      }),
      caller,
    )
  }

  loadClassEmbeddingsSync(path: string): { classes: string[]; templates: string[] } {
    return this.#native.loadClassEmbeddingsSync(checkPath(path))
  }

  /**
   * OVSeg's segmentation of `image` into `classes`: the image is resized as OVSeg does (short side
   * 640); masks come from the model's generator and/or the caller (`options.masks`); each mask is
   * cropped and classified by the mask-prompted CLIP (ensembled with the generator's scores), and
   * the probability-weighted masks give the label map. Off the event loop.
   */
  async segment(image: ImageInput, classes: string[], options?: SegmentOptions): Promise<Segmentation> {
    const caller = new Error()
    const startedAt = performance.now()
    const list = checkStrings(classes, 'classes')
    const o = checkSegmentOptions(options)
    if (o.signal?.aborted) throw abortedError(o.signal)
    const decoded = await decodeImage(image, o.native.maxPixels)
    checkScoreSize(list, decoded.width, decoded.height, { mode: o.native.mode ?? this.defaults.mode, scores: o.native.scores })
    const decodeMs = performance.now() - startedAt
    const masks = o.masks === undefined ? null : checkMasks(o.masks, decoded.width, decoded.height)
    const native = await withCallerStack(
      this.#native.segment(decoded.rgb, decoded.width, decoded.height, masks, list, o.native, o.sam?.model.native, o.sam?.options, o.signal).catch((err: unknown) => {
        throw o.signal?.aborted ? abortedError(o.signal) : err
      }),
      caller,
    )
    return shapeSegmentation(native, this.executionProvider.name, decodeMs, startedAt)
  }

  /** `segment` on the calling thread, for raw pixels only (decoding encoded images is asynchronous). */
  segmentSync(image: Exclude<ImageInput, string | Buffer>, classes: string[], options?: Omit<SegmentOptions, 'signal'>): Segmentation {
    const startedAt = performance.now()
    const list = checkStrings(classes, 'classes')
    const o = checkSegmentOptions(options)
    const decoded = rawToRgb(image, o.native.maxPixels)
    checkScoreSize(list, decoded.width, decoded.height, { mode: o.native.mode ?? this.defaults.mode, scores: o.native.scores })
    const masks = o.masks === undefined ? null : checkMasks(o.masks, decoded.width, decoded.height)
    const native = this.#native.segmentSync(decoded.rgb, decoded.width, decoded.height, masks, list, o.native, o.sam?.model.native, o.sam?.options)
    return shapeSegmentation(native, this.executionProvider.name, 0, startedAt)
  }

  /**
   * Work counters: text-encoder graph runs, class-embedding cache hits/misses (a repeated
   * vocabulary runs no text encoder) and the image-encoder runs cross-request batching made.
   */
  stats(): { textEncoderRuns: number; classCacheHits: number; classCacheMisses: number; cropBatches: number } {
    return this.#native.stats()
  }

  /** Frees the native model. Calls afterwards fail with `DISPOSED`; calling it again does nothing. */
  dispose(): void {
    this.#native.dispose()
  }

  [Symbol.dispose](): void {
    this.dispose()
  }

  async #run(caller: Error, signal: AbortSignal | undefined, start: () => Promise<NativeFeatures>): Promise<Features> {
    if (signal?.aborted) throw abortedError(signal)
    const promise = start().catch((err: unknown) => {
      throw signal?.aborted ? abortedError(signal) : err
    })
    return withCallerStack(promise, caller)
  }
}

function checkPath(path: unknown): string {
  if (typeof path !== 'string' || path.length === 0) throw expected('INVALID_ARGUMENT', 'a file path', 'path', path)
  return resolve(path)
}

function saveArgs(path: unknown, classes: unknown, options: unknown) {
  const o = checkOptionsObject(options, 'options') as ClassEmbeddingOptions
  return {
    path: checkPath(path),
    classes: checkStrings(classes, 'classes'),
    templates: o.templates === undefined ? null : checkStrings(o.templates, 'templates'),
    overflow: overflowOf(o),
    signal: checkSignal(o.signal),
  }
}

function overflowOf(o: TextOptions): Overflow {
  return checkOneOf(o.overflow, 'overflow', OVERFLOW_POLICIES, 'error')
}

