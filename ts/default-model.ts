import { join } from 'node:path'

/** Directory of the tiny random-weight test model shipped with the package (real CLIP vocabulary; its outputs mean nothing). */
export const TINY_RANDOM_MODEL_DIR: string = join(__dirname, '..', 'models', 'tiny-random')

/** The model the CLI uses without `--model`. Until a trained model ships, the tiny random one. */
export const DEFAULT_MODEL_DIR: string = TINY_RANDOM_MODEL_DIR
