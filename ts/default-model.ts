import { join } from 'node:path'

/** Directory of the tiny random-weight test model shipped with the package (real CLIP vocabulary; its outputs mean nothing). */
export const TINY_RANDOM_MODEL_DIR: string = join(__dirname, '..', 'models', 'tiny-random')

/** The trained default model shipped with the package (docs/recipe.md): it knows the synthetic world's 15 classes, not photos. */
export const DEFAULT_MODEL_DIR: string = join(__dirname, '..', 'models', 'world-ovseg')

/** The example scene shipped with the package, its class list and its ground truth (examples/). */
export const EXAMPLE_SCENE = {
  image: join(__dirname, '..', 'examples', 'world-scene.png'),
  classesFile: join(__dirname, '..', 'examples', 'world-classes.txt'),
  truth: join(__dirname, '..', 'examples', 'world-scene.truth.png'),
}
