/** segment(): parity with the PyTorch pipeline through the TS API (generator, caller masks, both; semantic and demo), image inputs, cache, bad input. */
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import sharp from 'sharp'

import { loadModelSync, UNLABELED, type Model, type Segmentation, type SegmentOptions } from '../ts'
import { codeOf, fixture, float32s, maxAbsDiff, ROOT, tag, TINY, tinyModelCopy } from './helpers'

interface PipelineCase {
  name: string
  model: string
  dir: string
  size: [number, number]
  generator: boolean
  callerMasks: boolean
  inputClasses: string[]
  classes: string[]
  valid: boolean[]
  used: number[]
  options: { mode?: 'semantic' | 'demo'; lambda?: number; threshold?: number }
}

const index = JSON.parse(fixture(join(ROOT, 'build', 'pipeline', 'index.json')).toString()) as { cases: PipelineCase[] }
const mixed = index.cases.find((c) => c.name === 'tiny/mixed') as PipelineCase
const [H, W] = mixed.size
const image = { data: new Uint8Array(fixture(join(mixed.dir, 'image_u8.bin'))), width: W, height: H, channels: 3 as const }
const masks = float32s(fixture(join(mixed.dir, 'masks_f32.bin')))
let model: Model
let scratch: string

beforeAll(() => {
  model = loadModelSync(mixed.model)
  scratch = mkdtempSync(join(tmpdir(), 'ovseg-segment-'))
})
afterAll(() => model.dispose())

const tinyCases = index.cases.filter((c) => c.name.startsWith('tiny/'))

test.each(tinyCases.map((c) => [c.name, c] as const))('%s matches the PyTorch pipeline through the TS API', async (_name, c) => {
  const m = c.model === mixed.model ? model : loadModelSync(c.model)
  const [h, w] = c.size
  const input = { data: new Uint8Array(fixture(join(c.dir, 'image_u8.bin'))), width: w, height: h, channels: 3 as const }
  const options: SegmentOptions = { ...c.options, generator: c.generator, scores: true }
  if (c.callerMasks) options.masks = float32s(fixture(join(c.dir, 'masks_f32.bin')))
  const got = await m.segment(input, c.inputClasses, options)
  const labels = new Uint16Array(new Uint8Array(fixture(join(c.dir, 'expected_labels.bin'))).buffer)
  expect(tag(got.labels)).toBe('Uint16Array')
  expect(Buffer.from(got.labels.buffer).equals(Buffer.from(labels.buffer))).toBe(true)
  expect(maxAbsDiff(got.probabilities, float32s(fixture(join(c.dir, 'expected_probabilities.bin'))))).toBeLessThanOrEqual(1e-4)
  expect(maxAbsDiff(got.scores as Float32Array, float32s(fixture(join(c.dir, 'expected_scores.bin'))))).toBeLessThanOrEqual(1e-4)
  expect(got.segments.map((s) => s.valid)).toEqual(c.valid)
  expect(got.segments.flatMap((s, i) => (s.used ? [i] : []))).toEqual(c.used)
  expect(got.classes).toEqual(c.classes)
})

test('generator masks come first, then the caller\'s; timings account for ONNX Runtime', () => {
  const r = model.segmentSync(image, mixed.classes, { masks, scores: false })
  const callers = masks.length / (W * H)
  expect(r.segments.map((s) => `${s.source}:${s.index}`)).toEqual([
    ...Array.from({ length: 16 }, (_, i) => `generator:${i}`),
    ...Array.from({ length: callers }, (_, i) => `caller:${i}`),
  ])
  const t = r.timings
  expect(t.generatorMs).toBeGreaterThan(0)
  expect(t.onnxRuntimeMs).toBeGreaterThan(0)
  expect(t.onnxRuntimeMs).toBeLessThanOrEqual(t.nativeMs)
  expect(t.nativeMs).toBeLessThanOrEqual(t.totalMs)
  const off = model.segmentSync(image, mixed.classes, { masks, generator: false })
  expect(off.segments.every((s) => s.source === 'caller')).toBe(true)
  expect(off.timings.generatorMs).toBe(0)
})

test('demo mode: the best mask per class, uncovered pixels unlabeled, "others" for a single class', () => {
  const r = model.segmentSync(image, ['red car'], { mode: 'demo', masks: [new Uint8Array(W * H).fill(0).fill(1, 0, W * 10)], generator: false })
  expect(r.classes).toEqual(['red car', 'others'])
  expect(r.segments.filter((s) => s.used)).toHaveLength(1)
  expect(r.labels.slice(0, W * 10).every((l) => l === 0 || l === 1)).toBe(true)
  expect(r.labels.slice(W * 12).every((l) => l === UNLABELED)).toBe(true)
  expect(r.classPixels.reduce((a, b) => a + b, 0)).toBe(W * 10)
})

test("a model's manifest can set the processing size", () => {
  const dir = join(scratch, 'processing-96')
  cpSync(TINY, dir, { recursive: true })
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown>
  manifest.processing = { shortSide: 96, maxSize: 400 }
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest))
  const m = loadModelSync(dir)
  const small = { data: new Uint8Array(80 * 60 * 3).fill(100), width: 80, height: 60, channels: 3 as const }
  expect(m.segmentSync(small, ['sky']).processingSize).toEqual({ width: 128, height: 96 })
  expect(model.segmentSync(small, ['sky']).processingSize).toEqual({ width: 853, height: 640 }) // OVSeg's
  m.dispose()
})

describe("a version-2 manifest's defaults are what segment() runs with where a call sets nothing", () => {
  const classes = ['sky', 'grass', 'red car']
  // The tiny model as it ships (version 1: OVSeg's defaults), and copies rewritten to version 2.
  // 0.995: the random generator's masks saturate (all 16 pass 0.9, 12 pass 0.995).
  let v1: Model
  let v2: Model
  let demo: Model
  beforeAll(() => {
    v1 = loadModelSync(TINY)
    v2 = loadModelSync(tinyModelCopy(scratch, 'defaults-semantic', (m) => {
      m.version = 2
      m.defaults = { semantic: { threshold: 0.995, lambda: 0 } }
    }))
    demo = loadModelSync(tinyModelCopy(scratch, 'defaults-demo', (m) => {
      m.version = 2
      m.defaults = { mode: 'demo', demo: { threshold: 0.5 } }
    }))
  })
  afterAll(() => [v1, v2, demo].forEach((m) => m.dispose()))

  const bytes = (view: unknown) => {
    expect(ArrayBuffer.isView(view)).toBe(true)
    const v = view as ArrayBufferView
    return Buffer.from(v.buffer, v.byteOffset, v.byteLength)
  }
  /** Same model, same settings, same machine: the same computation, so equal to the bit. */
  const expectSame = (a: Segmentation, b: Segmentation) => {
    expect(a.classes).toEqual(b.classes)
    expect(a.segments).toEqual(b.segments)
    expect(bytes(a.labels).equals(bytes(b.labels))).toBe(true)
    expect(bytes(a.probabilities).equals(bytes(b.probabilities))).toBe(true)
    expect(bytes(a.scores).equals(bytes(b.scores))).toBe(true)
  }

  test('the model describes its defaults, the built-in ones filling the gaps', () => {
    expect(v1.manifest.defaults).toBeUndefined()
    expect(v1.defaults).toEqual({ mode: 'semantic', semantic: { threshold: 0.4, lambda: 0.7 }, demo: { threshold: 0.35, lambda: 0 } })
    expect(v2.manifest).toMatchObject({ version: 2, defaults: { semantic: { threshold: 0.995, lambda: 0 } } })
    expect(v2.defaults).toEqual({ mode: 'semantic', semantic: { threshold: 0.995, lambda: 0 }, demo: { threshold: 0.35, lambda: 0 } })
    expect(demo.defaults).toEqual({ mode: 'demo', semantic: { threshold: 0.4, lambda: 0.7 }, demo: { threshold: 0.5, lambda: 0 } })
  })

  test("the manifest's threshold and lambda, unless the call sets them", async () => {
    const v2Default = await v2.segment(image, classes, { scores: true })
    const v1Default = await v1.segment(image, classes, { scores: true })
    // As the v1 model with the same settings given explicitly.
    expectSame(v2Default, await v1.segment(image, classes, { threshold: 0.995, lambda: 0, scores: true }))
    // Not as the v1 model's defaults: fewer masks pass 0.995 than 0.4, and with lambda 0 (CLIP
    // alone) only those are used.
    const count = (r: Segmentation, key: 'valid' | 'used') => r.segments.filter((s) => s[key]).length
    expect(count(v2Default, 'valid')).toBeLessThan(count(v1Default, 'valid'))
    expect(v2Default.segments.every((s) => s.used === s.valid)).toBe(true)
    expect(count(v2Default, 'used')).toBeLessThan(count(v1Default, 'used'))
    // The call's settings win, each on its own.
    expectSame(v2.segmentSync(image, classes, { threshold: 0.4, lambda: 0.7, scores: true }), v1Default)
    expectSame(v2.segmentSync(image, classes, { lambda: 0.7, scores: true }), v1.segmentSync(image, classes, { threshold: 0.995, scores: true }))
  })

  test("the manifest's mode, and that mode's settings, unless the call sets the mode", async () => {
    const r = await demo.segment(image, ['sky'], { scores: true })
    expectSame(r, await v1.segment(image, ['sky'], { mode: 'demo', threshold: 0.5, scores: true }))
    expect(r.classes).toEqual(['sky', 'others']) // demo mode's "others"
    // A call in semantic mode gets semantic's settings (here the built-in ones).
    expectSame(demo.segmentSync(image, ['sky'], { mode: 'semantic', scores: true }), v1.segmentSync(image, ['sky'], { scores: true }))
  })
})

test('crops for debugging: one normalized S x S crop per valid mask', () => {
  const r = model.segmentSync(image, mixed.classes, { masks, generator: false, crops: true })
  const size = model.manifest.clip.imageSize
  expect(r.crops?.length).toBe(r.segments.filter((s) => s.valid).length * 3 * size * size)
})

test('the result describes every mask, class and pixel', () => {
  const r = model.segmentSync(image, mixed.classes, { masks, generator: false })
  expect([r.width, r.height, r.labels.length]).toEqual([W, H, W * H])
  expect(r.classPixels.reduce((a, b) => a + b, 0)).toBe(W * H)
  expect(r.classes).toEqual(mixed.classes)
  expect(r.processingSize).toEqual({ width: 853, height: 640 })
  expect(r.segments).toHaveLength(masks.length / (W * H))
  for (const s of r.segments) {
    if (s.valid) {
      expect(mixed.classes).toContain(s.class)
      expect(s.score).toBeGreaterThan(0)
      expect(s.area).toBeGreaterThan(0)
      expect(s.box?.[2]).toBeGreaterThan(s.box?.[0] as number)
    } else {
      expect([s.class, s.classIndex, s.box, s.area]).toEqual([null, null, null, 0])
    }
  }
  expect(r.probabilities.length).toBe(r.segments.filter((s) => s.used).length * mixed.classes.length)
  expect(r.executionProvider).toBe('cpu')
  expect(r.timings.totalMs).toBeGreaterThan(0)
})

test('a repeated vocabulary runs no text encoder', () => {
  const m = loadModelSync(TINY)
  const small = { data: new Uint8Array(32 * 24 * 3).fill(120), width: 32, height: 24, channels: 3 as const }
  const mask = new Uint8Array(32 * 24).fill(1)
  m.segmentSync(small, ['cat', 'dog'], { masks: mask })
  const first = m.stats()
  m.segmentSync(small, ['cat', 'dog'], { masks: mask })
  const second = m.stats()
  expect(first.textEncoderRuns).toBeGreaterThan(0)
  expect(second.textEncoderRuns).toBe(first.textEncoderRuns)
  expect(second.classCacheHits).toBe(first.classCacheHits + 1)
  m.segmentSync(small, ['cat', 'bird'], { masks: mask })
  expect(m.stats().textEncoderRuns).toBeGreaterThan(second.textEncoderRuns)
  m.dispose()
})

describe('encoded images (decoded with sharp)', () => {
  test('a PNG path and a PNG Buffer give the raw image result', async () => {
    const png = await sharp(Buffer.from(image.data), { raw: { width: W, height: H, channels: 3 } }).png().toBuffer()
    const path = join(scratch, 'image.png')
    writeFileSync(path, png)
    const raw = model.segmentSync(image, mixed.classes, { masks })
    for (const input of [path, png]) {
      const r = await model.segment(input, mixed.classes, { masks })
      expect(Buffer.from(r.labels.buffer).equals(Buffer.from(raw.labels.buffer))).toBe(true)
    }
  })

  test('EXIF orientation is applied (a rotated JPEG swaps width and height)', async () => {
    const jpeg = await sharp(Buffer.from(image.data), { raw: { width: W, height: H, channels: 3 } }).jpeg().withMetadata({ orientation: 6 }).toBuffer()
    const r = await model.segment(jpeg, mixed.classes, { masks: new Uint8Array(W * H).fill(1) })
    expect([r.width, r.height]).toEqual([H, W])
  })

  test.each([
    ['greyscale', (s: sharp.Sharp) => s.greyscale().png()],
    ['RGBA', (s: sharp.Sharp) => s.ensureAlpha().png()],
    ['16-bit', (s: sharp.Sharp) => s.toColourspace('rgb16').png()],
  ])('%s PNG', async (_what, encode) => {
    const buf = await encode(sharp(Buffer.from(image.data), { raw: { width: W, height: H, channels: 3 } })).toBuffer()
    const r = await model.segment(buf, mixed.classes, { masks })
    expect([r.width, r.height, r.labels.length]).toEqual([W, H, W * H])
  })

  test('raw greyscale and RGBA pixels are converted', () => {
    const grey = { data: new Uint8Array(W * H).fill(90), width: W, height: H, channels: 1 as const }
    const rgba = { data: new Uint8Array(W * H * 4).fill(90), width: W, height: H, channels: 4 as const }
    const rgb = { data: new Uint8Array(W * H * 3).fill(90), width: W, height: H, channels: 3 as const }
    const want = model.segmentSync(rgb, mixed.classes, { masks }).probabilities
    expect(model.segmentSync(grey, mixed.classes, { masks }).probabilities).toEqual(want)
    expect(model.segmentSync(rgba, mixed.classes, { masks }).probabilities).toEqual(want)
  })
})

describe('bad input is a coded error', () => {
  const small = { data: new Uint8Array(4 * 3 * 3), width: 4, height: 3, channels: 3 as const }
  const mask = new Uint8Array(12).fill(1)
  test.each([
    ['no mask source', () => model.segmentSync(small, ['a'], { generator: false }), 'INVALID_ARGUMENT'],
    ['a bad lambda', () => model.segmentSync(small, ['a'], { lambda: 1.5 }), 'INVALID_ARGUMENT'],
    ['a bad mode', () => model.segmentSync(small, ['a'], { mode: 'panoptic' as never }), 'INVALID_ARGUMENT'],
    ['an empty class list', () => model.segmentSync(small, [], { masks: mask }), 'EMPTY_INPUT'],
    ['a duplicate class', () => model.segmentSync(small, ['a', 'a'], { masks: mask }), 'INVALID_ARGUMENT'],
    ['an empty class name', () => model.segmentSync(small, ['a', ''], { masks: mask }), 'INVALID_ARGUMENT'],
    ['more than 65535 classes', () => model.segmentSync(small, Array.from({ length: 65536 }, (_, i) => `c${i}`), { masks: mask }), 'INVALID_ARGUMENT'],
    ['masks of another size', () => model.segmentSync(small, ['a'], { masks: new Uint8Array(13) }), 'INVALID_MASK'],
    ['a mask list entry of another size', () => model.segmentSync(small, ['a'], { masks: [mask, new Uint8Array(5)] }), 'INVALID_MASK'],
    ['masks with NaN', () => model.segmentSync(small, ['a'], { masks: new Float32Array(12).fill(NaN) }), 'INVALID_MASK'],
    ['masks of another dtype', () => model.segmentSync(small, ['a'], { masks: new Int8Array(12) as never }), 'INVALID_MASK'],
    ['an image of 0 pixels', () => model.segmentSync({ ...small, data: new Uint8Array(0), width: 0 }, ['a'], { masks: mask }), 'INVALID_IMAGE'],
    ['an image over the pixel limit', () => model.segmentSync(small, ['a'], { masks: mask, maxPixels: 11 }), 'INVALID_IMAGE'],
    ['raw data of the wrong length', () => model.segmentSync({ ...small, data: new Uint8Array(5) }, ['a'], { masks: mask }), 'INVALID_IMAGE'],
    ['a bad threshold', () => model.segmentSync(small, ['a'], { masks: mask, threshold: 1.5 }), 'INVALID_ARGUMENT'],
  ])('%s', (_what, call, code) => {
    expect(codeOf(call)).toBe(code)
  })

  test('corrupt, truncated, missing and oversized image files', async () => {
    const png = await sharp(Buffer.from(image.data), { raw: { width: W, height: H, channels: 3 } }).png().toBuffer()
    const truncated = join(scratch, 'truncated.png')
    writeFileSync(truncated, png.subarray(0, png.length / 2))
    const corrupt = join(scratch, 'corrupt.jpg')
    writeFileSync(corrupt, Buffer.from('definitely not a jpeg'))
    for (const input of [truncated, corrupt, join(scratch, 'missing.png'), Buffer.from('nope')]) {
      await expect(model.segment(input, ['a'], { masks })).rejects.toMatchObject({ code: 'INVALID_IMAGE' })
    }
    await expect(model.segment(png, ['a'], { masks, maxPixels: 100 })).rejects.toMatchObject({ code: 'INVALID_IMAGE' })
  })

  test('an aborted call, and calls after dispose', async () => {
    const controller = new AbortController()
    controller.abort()
    await expect(model.segment(image, mixed.classes, { masks, signal: controller.signal })).rejects.toMatchObject({ code: 'ABORTED' })
    const m = loadModelSync(TINY)
    m.dispose()
    await expect(m.segment(small, ['a'], { masks: mask })).rejects.toMatchObject({ code: 'DISPOSED' })
    expect(codeOf(() => m.segmentSync(small, ['a'], { masks: mask }))).toBe('DISPOSED')
  })

  test('concurrent calls on one model all complete with the same result', async () => {
    const results = await Promise.all(Array.from({ length: 4 }, () => model.segment(image, mixed.classes, { masks })))
    for (const r of results) expect(Buffer.from(r.labels.buffer).equals(Buffer.from(results[0].labels.buffer))).toBe(true)
  })
})
