/**
 * The Rust core's text and image features equal the PyTorch reference (tools/ovseg_tools/clip_reference.py,
 * itself checked bit-for-bit against OpenAI's CLIP) within 1e-4, max abs, fp32 — on random weights with a
 * tiny geometry and the real ViT-B/16 and ViT-L/14 ones, prompt depth 0, 1, 3 (per-patch and shared prompts),
 * varied masks.
 */
import { join } from 'node:path'

import { loadModelSync, type Model } from '../ts'
import { fixture, float32s, maxAbsDiff, PARITY_DIR } from './helpers'

interface ParityCase {
  name: string
  dir: string
  batch: number
  maskKinds: string[]
  texts: string[]
  inputs: { pixelsF32: string; pixelsU8: string; masks: string }
  promptFiles: { depth1: string; shared3: string }
  expected: Record<string, string>
}

const TOLERANCE = 1e-4
const index = JSON.parse(fixture(join(PARITY_DIR, 'index.json')).toString()) as { cases: ParityCase[] }
const figures: string[] = []

afterAll(() => {
  // The closing note quotes these.
  console.log(`parity max abs differences:\n${figures.join('\n')}`)
})

test('fixtures cover the tiny, the ViT-B/16 and the ViT-L/14 geometry', () => {
  expect(index.cases.map((c) => c.name)).toEqual(['tiny', 'vit-b-16', 'vit-l-14'])
})

describe.each(index.cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
  const file = (name: string) => fixture(join(c.dir, name))
  const pixelsF32 = float32s(file(c.inputs.pixelsF32))
  const pixelsU8 = new Uint8Array(file(c.inputs.pixelsU8))
  const masks = new Uint8Array(file(c.inputs.masks))
  const expected = (key: string) => float32s(file(c.expected[key]))
  const models: Record<string, Model> = {}

  beforeAll(() => {
    const dir = join(c.dir, 'model')
    models.depth3 = loadModelSync(dir)
    models.none = loadModelSync(dir, { prompts: 'none' })
    models.depth1 = loadModelSync(dir, { prompts: join(c.dir, c.promptFiles.depth1) })
    models.shared3 = loadModelSync(dir, { prompts: join(c.dir, c.promptFiles.shared3) })
  })
  afterAll(() => Object.values(models).forEach((m) => m.dispose()))

  const check = (label: string, got: Float32Array, want: Float32Array) => {
    const diff = maxAbsDiff(got, want)
    figures.push(`  ${c.name} ${label}: ${diff.toExponential(2)}`)
    expect(diff).toBeLessThanOrEqual(TOLERANCE)
  }

  test('text features (tokenizer + text graph)', () => {
    const got = models.depth3.encodeTextSync(c.texts, { normalize: false })
    expect([got.rows, got.dim]).toEqual([c.texts.length, models.depth3.embedDim])
    check('text', got.data, expected('text'))
  })

  test('prompt depths are what the loads asked for', () => {
    expect([models.none.promptDepth, models.depth1.promptDepth, models.depth3.promptDepth, models.shared3.promptDepth]).toEqual([0, 1, 3, 3])
  })

  test('image features without prompts (depth 0) ignore masks', async () => {
    const got = await models.none.encodeImage({ pixels: pixelsF32, masks }, { normalize: false })
    check('image depth 0', got.data, expected('image_plain_f32'))
    const usePromptsOff = models.depth3.encodeImageSync({ pixels: pixelsF32, masks }, { normalize: false, usePrompts: false })
    check('image depth 0 (usePrompts: false)', usePromptsOff.data, expected('image_plain_f32'))
  })

  test.each(['depth1', 'depth3', 'shared3'])('image features with %s prompts and varied masks', async (set) => {
    const got = await models[set].encodeImage({ pixels: pixelsF32, masks }, { normalize: false })
    expect([got.rows, got.dim]).toEqual([c.batch, models[set].embedDim])
    check(`image ${set} (float32 pixels)`, got.data, expected(`image_${set}_f32`))
    const fromBytes = models[set].encodeImageSync({ pixels: pixelsU8, masks }, { normalize: false })
    check(`image ${set} (RGB bytes)`, fromBytes.data, expected(`image_${set}_u8`))
  })

  test('prompts change the features of partly masked crops, not of the full mask', async () => {
    const withPrompts = await models.depth3.encodeImage({ pixels: pixelsF32, masks })
    const without = await models.none.encodeImage({ pixels: pixelsF32, masks })
    const row = (f: Float32Array, i: number) => f.subarray(i * withPrompts.dim, (i + 1) * withPrompts.dim)
    const full = c.maskKinds.indexOf('full')
    const box = c.maskKinds.indexOf('box')
    expect(maxAbsDiff(row(withPrompts.data, full), row(without.data, full))).toBeLessThan(1e-5)
    expect(maxAbsDiff(row(withPrompts.data, box), row(without.data, box))).toBeGreaterThan(1e-3)
  })
})
