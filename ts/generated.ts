// Generated from crates/ovseg-core by its test `typescript` (OVSEG_WRITE_GENERATED=1 cargo test
// -p ovseg-core --test typescript); do not edit.

/** The codes the native core gives its errors. */
export const CORE_ERROR_CODES = ['MODEL_NOT_FOUND', 'MANIFEST_INVALID', 'MANIFEST_VERSION', 'GRAPH_MISMATCH', 'PROMPTS_INVALID', 'NO_OBJECT_INVALID', 'VOCAB_INVALID', 'RUNTIME_NOT_FOUND', 'RUNTIME_VERSION', 'PROVIDER_UNAVAILABLE', 'INVALID_ARGUMENT', 'EMPTY_INPUT', 'TEXT_TOO_LONG', 'INVALID_IMAGE', 'INVALID_MASK', 'DISPOSED', 'INFERENCE_FAILED', 'INTERNAL', 'ABORTED', 'CLASS_EMBEDDINGS_INVALID'] as const

/** `segment()` modes. */
export const SEGMENT_MODES = ['semantic', 'demo'] as const

/** What to do with a text past the context. */
export const OVERFLOW_POLICIES = ['error', 'truncate'] as const

/** CLIP encoder precisions a model can be loaded with (the manifest names the non-float32 ones). */
export const PRECISIONS = ['float32', 'int8', 'float16'] as const

/** Execution providers a model can ask for. */
export const EXECUTION_PROVIDERS = ['cpu', 'cuda', 'auto'] as const

/** Where a `segment()` mask came from. */
export const MASK_SOURCES = ['generator', 'caller', 'sam'] as const

/** SAM's automatic mask generator's defaults (segment-anything's), and how many masks `segment()` classifies. */
export const DEFAULT_SAM_OPTIONS = { pointsPerSide: 32, pointsPerBatch: 64, predIouThresh: 0.88, stabilityScoreThresh: 0.95, stabilityScoreOffset: 1, boxNmsThresh: 0.7, cropNLayers: 0, cropNmsThresh: 0.7, cropOverlapRatio: 0.3413333333333333, cropNPointsDownscaleFactor: 1, minMaskRegionArea: 0, maxMasks: 100 } as const

/** The largest SAM point grid side, decoder batch and number of crop layers. */
export const SAM_LIMITS = { pointsPerSide: 256, pointsPerBatch: 4096, cropNLayers: 3 } as const

/** Label of pixels no selected mask covers (demo mode). */
export const UNLABELED = 65535

/** Default pixel limit of `segment()` (sharp's `limitInputPixels`, 0x3FFF * 0x3FFF). */
export const DEFAULT_MAX_PIXELS = 268402689

/** The processing size of a model whose manifest sets none (OVSeg's). */
export const DEFAULT_PROCESSING = { shortSide: 640, maxSize: 2560 } as const

/** Cross-request batching of `segment()`'s crops when a load leaves `batch` out (on CUDA only). */
export const DEFAULT_BATCH = { maxCrops: 128, maxWaitMs: 2, onCpu: false } as const

/** The largest `batch.maxCrops` and `batch.maxWaitMs` a load accepts. */
export const BATCH_LIMITS = { maxCrops: 4096, maxWaitMs: 1000 } as const
