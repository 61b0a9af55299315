import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

import { loadModel, loadModelSync, runtimeInfo, TINY_RANDOM_MODEL_DIR, type Model } from '../ts'
import { native } from '../ts/native'
import { maxAbsDiff, PACKAGE_JSON, ROOT, tag, TINY } from './helpers'

let model: Model
const S = 64

beforeAll(async () => {
  model = await loadModel(TINY)
})
afterAll(() => model.dispose())

function normalizeRows(data: Float32Array, dim: number): Float32Array {
  const out = new Float32Array(data)
  for (let r = 0; r < out.length / dim; r++) {
    const row = out.subarray(r * dim, (r + 1) * dim)
    const norm = Math.hypot(...row)
    row.forEach((v, i) => (row[i] = v / norm))
  }
  return out
}

test('the package points at its tiny model, and loading reports runtime and provider', () => {
  expect(TINY_RANDOM_MODEL_DIR).toBe(TINY)
  // scripts/test-all.sh points ORT_DYLIB_PATH at the staged ovseg-onnxruntime package: the runtime users get.
  expect(runtimeInfo()).toEqual({ libraryPath: process.env.ORT_DYLIB_PATH, version: PACKAGE_JSON.ovseg.onnxruntime })
  expect(model.executionProvider).toEqual({ name: 'cpu', reason: 'requested' })
  expect(model.promptDepth).toBe(3)
  expect(model.manifest.templates).toHaveLength(14)
  expect(model.manifest.templates[1]).toBe('This is a photo of a {}')
  expect([model.imageSize, model.embedDim]).toEqual([64, 16])
})

test('tokenize returns [n, 77] ids as an Int32Array', () => {
  const ids = model.tokenize(['a photo of a cat', 'dog'])
  expect(tag(ids)).toBe('Int32Array')
  expect(ids.length).toBe(2 * 77)
  expect(Array.from(ids.subarray(77, 80))).toEqual([49406, 1929, 49407])
})

test('results are views over Rust-owned memory: the JS array sits at the address Rust handed over', async () => {
  const calls = [
    async () => model.encodeTextSync(['a', 'b', 'c']),
    () => model.encodeText(['a', 'b']),
    async () => model.encodeImageSync({ pixels: new Uint8Array(2 * S * S * 3) }),
    () => model.classEmbeddings(['cat', 'dog']),
  ]
  for (const call of calls) {
    const result = await call()
    expect(tag(result.data)).toBe('Float32Array')
    expect(native().__dataAddress(result.data)).toBe(native().__lastHandoffAddress())
    expect(result.data.byteOffset).toBe(0)
    expect(result.data.buffer.byteLength).toBe(result.rows * result.dim * 4)
  }
})

test('V8 accounts the native result memory as external (so the GC sees it)', () => {
  // In a fresh process with a forced GC around each reading; Node itself may move `external` by a
  // few KB in between (Node 24 does), far less than the result's size.
  const dist = join(ROOT, 'dist', 'index.js')
  const script = `const o = require(${JSON.stringify(dist)}); const m = o.loadModelSync(o.TINY_RANDOM_MODEL_DIR);
    const texts = Array.from({ length: 10000 }, (_, i) => 't' + (i % 10));
    gc(); const before = process.memoryUsage().external;
    const r = m.encodeTextSync(texts);
    gc(); const held = process.memoryUsage().external - before;
    console.log(JSON.stringify({ bytes: r.data.byteLength, held }));`
  const run = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' })
  expect(run.status).toBe(0)
  const { bytes, held } = JSON.parse(run.stdout.trim().split('\n').pop() as string)
  expect(bytes).toBe(10000 * 16 * 4)
  expect(held).toBeGreaterThan(bytes - 16384)
  expect(held).toBeLessThan(bytes * 1.5)
})

test('async calls leave the event loop free; sync twins block it', async () => {
  const pixels = new Uint8Array(1024 * S * S * 3).fill(90)
  let ticks = 0
  const timer = setInterval(() => ticks++, 1)
  const t0 = Date.now()
  const result = await model.encodeImage({ pixels })
  const asyncMs = Date.now() - t0
  const asyncTicks = ticks
  ticks = 0
  model.encodeImageSync({ pixels })
  const syncTicks = ticks
  clearInterval(timer)
  expect(result.rows).toBe(1024)
  expect(asyncMs).toBeGreaterThan(20)
  expect(asyncTicks).toBeGreaterThanOrEqual(5)
  expect(syncTicks).toBe(0)
})

test('features are L2-normalized by default, raw on request', () => {
  const raw = model.encodeTextSync(['a photo of a cat'], { normalize: false })
  const unit = model.encodeTextSync(['a photo of a cat'])
  expect(Math.hypot(...unit.data)).toBeCloseTo(1, 5)
  expect(Math.hypot(...raw.data)).not.toBeCloseTo(1, 2)
  expect(maxAbsDiff(unit.data, normalizeRows(raw.data, raw.dim))).toBeLessThan(1e-6)
})

test('class embeddings ensemble the templates: normalize, mean, normalize', async () => {
  const classes = ['grass', 'building, edifice']
  const templates = model.manifest.templates
  const got = await model.classEmbeddings(classes)
  expect([got.rows, got.dim]).toEqual([2, 16])
  const prompts = classes.flatMap((c) => templates.map((t) => t.replace('{}', c)))
  const each = normalizeRows(model.encodeTextSync(prompts, { normalize: false }).data, 16)
  const want = new Float32Array(2 * 16)
  for (let c = 0; c < 2; c++) {
    for (let t = 0; t < templates.length; t++) {
      for (let d = 0; d < 16; d++) want[c * 16 + d] += each[(c * templates.length + t) * 16 + d] / templates.length
    }
  }
  expect(maxAbsDiff(got.data, normalizeRows(want, 16))).toBeLessThan(1e-6)

  const custom = model.classEmbeddingsSync(['grass'], { templates: ['{}'] })
  expect(maxAbsDiff(custom.data, model.encodeTextSync(['grass']).data)).toBeLessThan(1e-6)
})

test('the no-object embedding is appended, normalized, as the last row', () => {
  const m = model.classEmbeddingsSync(['cat', 'dog'], { includeNoObject: true })
  expect(m.rows).toBe(3)
  expect(Math.hypot(...m.data.subarray(32, 48))).toBeCloseTo(1, 5)
  expect(maxAbsDiff(m.data.subarray(0, 32), model.classEmbeddingsSync(['cat', 'dog']).data)).toBe(0)
})

test("names past the context: 'error' by default, 'truncate' on request", () => {
  const long = Array(100).fill('cat').join(' ')
  expect(() => model.encodeTextSync([long])).toThrow(expect.objectContaining({ code: 'TEXT_TOO_LONG' }))
  const ids = model.tokenize([long], { overflow: 'truncate' })
  expect(ids[76]).toBe(49407)
  expect(model.encodeTextSync([long], { overflow: 'truncate' }).rows).toBe(1)
})

test('dispose frees the model, is idempotent, and Symbol.dispose works with `using`', async () => {
  const m = loadModelSync(TINY)
  const pending = m.encodeText(['still running'])
  m.dispose()
  expect((await pending).rows).toBe(1) // a call already started keeps its own reference
  expect(m.disposed).toBe(true)
  expect(() => m.dispose()).not.toThrow()
  expect(() => m.tokenize(['x'])).toThrow(expect.objectContaining({ code: 'DISPOSED' }))
  await expect(m.encodeText(['x'])).rejects.toMatchObject({ code: 'DISPOSED' })

  let escaped: Model
  {
    using scoped = loadModelSync(TINY)
    escaped = scoped
    expect(scoped.disposed).toBe(false)
  }
  expect(escaped.disposed).toBe(true)
})

test('an AbortSignal stops a call that has not started', async () => {
  const controller = new AbortController()
  controller.abort()
  await expect(model.encodeText(['x'], { signal: controller.signal })).rejects.toMatchObject({ code: 'ABORTED' })
  await expect(loadModel(TINY, { signal: controller.signal })).rejects.toMatchObject({ code: 'ABORTED' })
  // Queued behind a busy libuv pool: the native task is cancelled before it runs.
  const poolSize = Number(process.env.UV_THREADPOOL_SIZE ?? 4)
  const pixels = new Uint8Array(1024 * S * S * 3)
  const busy = Array.from({ length: poolSize }, () => model.encodeImage({ pixels }))
  const queued = new AbortController()
  const cancelled = model.encodeImage({ pixels }, { signal: queued.signal })
  queued.abort()
  await expect(cancelled).rejects.toMatchObject({ code: 'ABORTED' })
  await Promise.all(busy)
  // Aborting after the call finished changes nothing.
  const late = new AbortController()
  const result = await model.encodeText(['x'], { signal: late.signal })
  late.abort()
  expect(result.rows).toBe(1)
})

test('an AbortSignal stops a segment() that is already running', async () => {
  // Most of this call's time is aggregation after the text encoder (200 score maps of 1024x1024).
  const side = 1024
  const image = { data: new Uint8Array(side * side * 3).map((_, i) => (i * 7919) % 251), width: side, height: side, channels: 3 as const }
  const names = (prefix: string) => Array.from({ length: 200 }, (_, i) => `${prefix} ${i}`)
  let started = performance.now()
  await model.segment(image, names('first'))
  const full = performance.now() - started

  // Other names, so that the text encoder runs again: once it has, the call is in progress.
  const runs = model.stats().textEncoderRuns
  const controller = new AbortController()
  const call = model.segment(image, names('second'), { signal: controller.signal })
  const settled = call.then(
    () => 'finished',
    (e: { code?: string }) => e.code,
  )
  while (model.stats().textEncoderRuns === runs) await new Promise((resolve) => setTimeout(resolve, 1))
  started = performance.now()
  controller.abort()
  expect(await settled).toBe('ABORTED')
  // Before, the call ran to its end and was only then reported as aborted.
  expect(performance.now() - started).toBeLessThan(full / 2)
}, 60_000)

test('async errors are Errors with a code, the Rust message and the caller in the stack', async () => {
  const err = (await model.encodeImage({ pixels: new Float32Array(7) }).then(
    () => undefined,
    (e: unknown) => e,
  )) as Error & { code: string }
  expect(tag(err)).toBe('Error') // an Error from the addon's realm (jest: not `instanceof` this realm's Error)
  expect(err.code).toBe('INVALID_IMAGE')
  expect(err.message).toMatch(/64x64x3 values per image/)
  expect(err.stack).toMatch(/called from[\s\S]*api\.test\.ts/)
})

test('concurrent calls on one model all complete', async () => {
  const results = await Promise.all(Array.from({ length: 16 }, (_, i) => model.encodeText([`call ${i}`])))
  expect(results.every((r) => r.rows === 1)).toBe(true)
  expect(maxAbsDiff(results[3].data, model.encodeTextSync(['call 3']).data)).toBe(0)
})
