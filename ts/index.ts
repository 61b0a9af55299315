/**
 * ovseg: open-vocabulary semantic segmentation (OVSeg's mask-adapted CLIP) for Node.js.
 * This module is the public API; see README.md.
 */
export { OvsegError, type ErrorCode } from './errors'
export {
  loadModel,
  loadModelSync,
  Model,
  type BatchOptions,
  type ClassEmbeddingOptions,
  type EncodeImageOptions,
  type EncodeTextOptions,
  type ExecutionProviderName,
  type Features,
  type ImageBatch,
  type LoadOptions,
  type Manifest,
  type Overflow,
  type Precision,
  type SegmentDefaults,
  type TextOptions,
} from './model'
export { BATCH_LIMITS, DEFAULT_BATCH, PRECISIONS } from './generated'
export { initRuntime, resolveRuntimeLibrary, runtimeInfo, type RuntimeInfo } from './runtime'
export {
  DEFAULT_MAX_PIXELS,
  UNLABELED,
  type ImageInput,
  type MaskList,
  type RawImage,
  type SegmentMode,
  type SegmentOptions,
  type SegmentRecord,
  type Segmentation,
} from './segment'

export { DEFAULT_SAM_OPTIONS, SAM_LIMITS, loadSamModel, loadSamModelSync, SamModel, type SamLoadOptions, type SamMaskRecord, type SamMasks, type SamOptions } from './sam'
export { DEFAULT_MODEL_DIR, EXAMPLE_SCENE, TINY_RANDOM_MODEL_DIR } from './default-model'
export { ConfusionMatrix, readLabelPng, type ClassMetrics, type SegmentationMetrics } from './metrics'
export { classColor, labelPng, overlayPng } from './render'
