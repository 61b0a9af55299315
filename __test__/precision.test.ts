/** The `precision` load option: int8 and float16 CLIP encoders beside the float32 ones (export --quantize int8 --fp16). */
import { join } from 'node:path'

import { loadModelSync, PRECISIONS, type Model } from '../ts'
import { native } from '../ts/native'
import { codeOf, fixture, ROOT, TINY } from './helpers'

const { model: DIR } = JSON.parse(fixture(join(ROOT, 'build', 'variants', 'index.json')).toString()) as { model: string }
const W = 96
const H = 64
const image = { data: new Uint8Array(W * H * 3).map((_, i) => (i * 7919 + (i >> 7) * 31) % 251), width: W, height: H, channels: 3 as const }
const CLASSES = ['grass', 'red car', 'building', 'sky']

/** Smallest cosine between matching rows. */
function minCosine(a: Float32Array, b: Float32Array, dim: number): number {
  let least = 1
  for (let r = 0; r < a.length / dim; r++) {
    let [ab, aa, bb] = [0, 0, 0]
    for (let i = r * dim; i < (r + 1) * dim; i++) {
      ab += a[i] * b[i]
      aa += a[i] * a[i]
      bb += b[i] * b[i]
    }
    least = Math.min(least, ab / Math.sqrt(aa * bb))
  }
  return least
}

const models = new Map<string, Model>()
beforeAll(() => {
  for (const precision of PRECISIONS) models.set(precision, loadModelSync(DIR, { precision }))
})
afterAll(() => models.forEach((m) => m.dispose()))

test('each precision loads its own encoders, close to float32, and segments', async () => {
  const float32 = models.get('float32') as Model
  expect(float32.manifest.graphs.int8?.imageEncoder).toBe('image_encoder.int8.onnx')
  const pixels = new Uint8Array(4 * 64 * 64 * 3).map((_, i) => (i * 31) % 256)
  const reference = { text: float32.encodeTextSync(CLASSES).data, image: float32.encodeImageSync({ pixels }).data }
  // The least cosine each precision must keep (int8 on this 16-d tiny model is the coarsest case).
  const floor = { int8: 0.9, float16: 0.999 }
  for (const precision of ['int8', 'float16'] as const) {
    const m = models.get(precision) as Model
    expect(m.precision).toBe(precision)
    const text = m.encodeTextSync(CLASSES).data
    const crops = m.encodeImageSync({ pixels }).data
    // Other graphs, not the float32 ones again: the features differ, but only a little.
    expect(text).not.toEqual(reference.text)
    expect(minCosine(text, reference.text, m.embedDim)).toBeGreaterThan(floor[precision])
    expect(minCosine(crops, reference.image, m.embedDim)).toBeGreaterThan(floor[precision])
    const r = await m.segment(image, CLASSES)
    expect(r.labels).toHaveLength(W * H)
    expect(r.segments.some((s) => s.used)).toBe(true)
  }
  expect(float32.precision).toBe('float32')
})

test('a precision the manifest does not name, or an unknown one, is refused', () => {
  expect(codeOf(() => loadModelSync(TINY, { precision: 'int8' }))).toBe('INVALID_ARGUMENT')
  expect(() => loadModelSync(TINY, { precision: 'float16' })).toThrow(/ovseg_tools\.export\.fp16/)
  expect(codeOf(() => loadModelSync(DIR, { precision: 'fp8' as never }))).toBe('INVALID_ARGUMENT')
  // The core checks the name when TypeScript is bypassed.
  expect(codeOf(() => native().loadModelSync(DIR, { executionProvider: 'cpu', prompts: 'manifest', precision: 'fp8' }))).toBe('INVALID_ARGUMENT')
})
