/** Class matrices saved to a file and loaded by another model instance: a warm start with no text-encoder run. */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { DEFAULT_MODEL_DIR, loadModelSync } from '../ts'
import { maxAbsDiff, ROOT, TINY } from './helpers'

const W = 96
const H = 64
const image = { data: new Uint8Array(W * H * 3).map((_, i) => (i * 7919 + (i >> 7) * 31) % 251), width: W, height: H, channels: 3 as const }
const CLASSES = ['grass', 'red car', 'building, edifice', 'sky']
const TEMPLATES = ['a photo of a {}.', 'There is a {} in the scene.']
let scratch: string

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'ovseg-class-embeddings-'))
})

test('a saved vocabulary loads into a fresh model: same matrix, same segmentation, no text-encoder run', async () => {
  const file = join(scratch, 'vocabulary.bin')
  using maker = loadModelSync(TINY)
  await maker.saveClassEmbeddings(file, CLASSES, { templates: TEMPLATES })
  const want = maker.segmentSync(image, CLASSES, { templates: TEMPLATES, scores: true })

  using fresh = loadModelSync(TINY)
  expect(await fresh.loadClassEmbeddings(file)).toEqual({ classes: CLASSES, templates: TEMPLATES })
  // Loading ran the text encoder once, on the probe text that tells whose file it is.
  expect(fresh.stats().textEncoderRuns).toBe(1)
  const got = await fresh.segment(image, CLASSES, { templates: TEMPLATES, scores: true })
  expect(fresh.stats()).toMatchObject({ textEncoderRuns: 1, classCacheHits: 1, classCacheMisses: 0 })
  expect(Buffer.from(got.labels.buffer).equals(Buffer.from(want.labels.buffer))).toBe(true)
  expect(maxAbsDiff(got.probabilities, want.probabilities)).toBe(0)
  expect(maxAbsDiff(fresh.classEmbeddingsSync(CLASSES, { templates: TEMPLATES }).data, maker.classEmbeddingsSync(CLASSES, { templates: TEMPLATES }).data)).toBe(0)
  expect(fresh.stats().textEncoderRuns).toBe(1)
  // Other templates are another vocabulary: computed, not taken from the file.
  await fresh.segment(image, CLASSES)
  expect(fresh.stats().textEncoderRuns).toBeGreaterThan(1)
  // The sync pair writes and reads the same file format.
  maker.saveClassEmbeddingsSync(join(scratch, 'sync.bin'), ['sky'], { overflow: 'truncate' })
  expect(fresh.loadClassEmbeddingsSync(join(scratch, 'sync.bin')).classes).toEqual(['sky'])
})

test('a file of another model, a damaged or a missing file is CLASS_EMBEDDINGS_INVALID', async () => {
  const file = join(scratch, 'tiny.bin')
  using tiny = loadModelSync(TINY)
  await tiny.saveClassEmbeddings(file, CLASSES)
  using other = loadModelSync(DEFAULT_MODEL_DIR)
  await expect(other.loadClassEmbeddings(file)).rejects.toMatchObject({ code: 'CLASS_EMBEDDINGS_INVALID', message: expect.stringMatching(/another model/) })
  // Same geometry, tokenizer and file names, other weights (as a retrained model): refused too;
  // so are the same model's int8 and float16 text encoders (a file belongs to one precision).
  const { model: variants } = JSON.parse(readFileSync(join(ROOT, 'build', 'variants', 'index.json'), 'utf8')) as { model: string }
  using retrained = loadModelSync(variants)
  expect(retrained.manifest.clip).toEqual(tiny.manifest.clip)
  await expect(retrained.loadClassEmbeddings(file)).rejects.toMatchObject({ code: 'CLASS_EMBEDDINGS_INVALID' })
  await retrained.saveClassEmbeddings(join(scratch, 'variants.bin'), CLASSES)
  using int8 = loadModelSync(variants, { precision: 'int8' })
  await expect(int8.loadClassEmbeddings(join(scratch, 'variants.bin'))).rejects.toMatchObject({ code: 'CLASS_EMBEDDINGS_INVALID' })
  using float16 = loadModelSync(variants, { precision: 'float16' })
  await expect(float16.loadClassEmbeddings(join(scratch, 'variants.bin'))).rejects.toMatchObject({ code: 'CLASS_EMBEDDINGS_INVALID' })
  using again = loadModelSync(variants)
  expect((await again.loadClassEmbeddings(join(scratch, 'variants.bin'))).classes).toEqual(CLASSES)
  const bytes = readFileSync(file)
  writeFileSync(join(scratch, 'cut.bin'), bytes.subarray(0, bytes.length - 4))
  await expect(tiny.loadClassEmbeddings(join(scratch, 'cut.bin'))).rejects.toMatchObject({ code: 'CLASS_EMBEDDINGS_INVALID' })
  await expect(tiny.loadClassEmbeddings(join(scratch, 'missing.bin'))).rejects.toMatchObject({ code: 'CLASS_EMBEDDINGS_INVALID' })
  await expect(tiny.loadClassEmbeddings('')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
  await expect(tiny.saveClassEmbeddings(join(scratch, 'no-such-dir', 'x.bin'), CLASSES)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
})
