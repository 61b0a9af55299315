/** Cross-request batching: concurrent segment() calls share encoder runs and get exactly their own results. */
import { loadModelSync, BATCH_LIMITS, DEFAULT_BATCH, type Model, type Segmentation } from '../ts'
import { native } from '../ts/native'
import { codeOf, maxAbsDiff, TINY } from './helpers'

const W = 96
const H = 64
const image = { data: new Uint8Array(W * H * 3).map((_, i) => (i * 7919 + (i >> 7) * 31) % 251), width: W, height: H, channels: 3 as const }
const VOCABULARY = ['grass', 'red car', 'building', 'sky', 'water', 'wall', 'road']

/** `count` rectangles of call `call` (a different set per call, so that misrouted rows show). */
function rectangles(call: number, count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const mask = new Uint8Array(W * H)
    const seed = call * 131 + i * 17
    const [x0, y0] = [seed % (W - 16), (seed * 7) % (H - 12)]
    const [w, h] = [8 + ((seed * 3) % 24), 6 + ((seed * 5) % 20)]
    for (let y = y0; y < Math.min(H, y0 + h); y++) mask.fill(1, y * W + x0, y * W + Math.min(W, x0 + w))
    return mask
  })
}

/** Each call's classes: a rotation of the vocabulary, so that class indices differ between calls. */
function classesOf(call: number): string[] {
  return VOCABULARY.slice(call % 5).concat(VOCABULARY.slice(0, call % 5)).slice(0, 3 + (call % 4))
}

/** The same result up to float rounding: probabilities within 1e-4, labels equal except near ties. */
function expectSame(got: Segmentation, want: Segmentation): void {
  expect(got.classes).toEqual(want.classes)
  expect(got.segments.map((s) => [s.valid, s.used])).toEqual(want.segments.map((s) => [s.valid, s.used]))
  expect(maxAbsDiff(got.probabilities, want.probabilities)).toBeLessThanOrEqual(1e-4)
  const scores = want.scores as Float32Array
  const plane = W * H
  const classes = want.classes.length
  let differing = 0
  for (let p = 0; p < plane; p++) {
    if (got.labels[p] === want.labels[p]) continue
    const gap = Math.abs(scores[got.labels[p] * plane + p] - scores[want.labels[p] * plane + p])
    if (gap > 1e-3 || got.labels[p] >= classes) differing++
  }
  expect(differing).toBe(0)
}

let batched: Model
let alone: Model

beforeAll(() => {
  // A batch waits up to 1 s for every call that has started: concurrent calls always share runs.
  batched = loadModelSync(TINY, { batch: { maxCrops: 64, maxWaitMs: 1000, onCpu: true } })
  alone = loadModelSync(TINY, { batch: false })
})
afterAll(() => {
  batched.dispose()
  alone.dispose()
})

test('load options: defaults (off on the CPU), limits and off', () => {
  expect(DEFAULT_BATCH.onCpu).toBe(false)
  using model = loadModelSync(TINY)
  expect(model.batch).toBeNull()
  using asked = loadModelSync(TINY, { batch: { maxCrops: 16 } })
  expect(asked.batch).toBeNull()
  using onCpu = loadModelSync(TINY, { batch: { onCpu: true } })
  expect(onCpu.batch).toEqual({ ...DEFAULT_BATCH, onCpu: true })
  expect(alone.batch).toBeNull()
  expect(batched.batch).toEqual({ maxCrops: 64, maxWaitMs: 1000, onCpu: true })
  for (const batch of [0, true, null, { maxCrops: 0 }, { maxCrops: 1.5 }, { maxCrops: BATCH_LIMITS.maxCrops + 1 }, { maxWaitMs: -1 }, { maxWaitMs: Number.NaN }, { maxWaitMs: '2' }, { onCpu: 1 }]) {
    expect([batch, codeOf(() => loadModelSync(TINY, { batch: batch as never }))]).toEqual([batch, 'INVALID_ARGUMENT'])
  }
  // The core checks the same bounds when TypeScript is bypassed.
  const load = (maxCrops: number, maxWaitMs: number) =>
    codeOf(() => native().loadModelSync(TINY, { executionProvider: 'cpu', prompts: 'manifest', precision: 'float32', batch: { maxCrops, maxWaitMs, onCpu: true } }))
  for (const [crops, wait] of [[0, 1], [1.5, 1], [BATCH_LIMITS.maxCrops + 1, 1], [2 ** 32 + 2, 1], [8, -1], [8, Number.NaN], [8, BATCH_LIMITS.maxWaitMs + 1]]) {
    expect([crops, wait, load(crops, wait)]).toEqual([crops, wait, 'INVALID_ARGUMENT'])
  }
  expect(load(8, 0)).toBeUndefined()
})

test('concurrent calls give the results of the same calls made one by one, in fewer encoder runs', async () => {
  const calls = Array.from({ length: 8 }, (_, call) => ({ classes: classesOf(call), masks: rectangles(call, 3 + call * 2) }))
  const want = calls.map(({ classes, masks }) => alone.segmentSync(image, classes, { masks, generator: false, scores: true }))
  const before = batched.stats().cropBatches
  const got = await Promise.all(calls.map(({ classes, masks }) => batched.segment(image, classes, { masks, generator: false, scores: true })))
  got.forEach((g, i) => expectSame(g, want[i]))
  const runs = batched.stats().cropBatches - before
  expect(runs).toBeGreaterThan(0)
  expect(runs).toBeLessThan(calls.length)
  // With the generator too (its masks first, then the caller's).
  const mixed = await Promise.all(calls.slice(0, 4).map(({ classes, masks }) => batched.segment(image, classes, { masks, scores: true })))
  mixed.forEach((g, i) => expectSame(g, alone.segmentSync(image, calls[i].classes, { masks: calls[i].masks, scores: true })))
})

test('a call aborted while its crops wait leaves the batch; the others finish with their own results', async () => {
  // Two crops per run: the calls' 4 x 40 crops take about 80 runs, so a call aborted after the first is mid-way.
  using model = loadModelSync(TINY, { batch: { maxCrops: 2, maxWaitMs: 1000, onCpu: true } })
  const calls = Array.from({ length: 4 }, (_, call) => ({ classes: classesOf(call), masks: rectangles(call, 40) }))
  const controller = new AbortController()
  const promises = calls.map(({ classes, masks }, i) =>
    model.segment(image, classes, { masks, generator: false, scores: true, signal: i === 2 ? controller.signal : undefined }),
  )
  const settled = Promise.allSettled(promises)
  while (model.stats().cropBatches === 0) await new Promise((resolve) => setTimeout(resolve, 1))
  controller.abort()
  const results = await settled
  expect(results[2]).toMatchObject({ status: 'rejected', reason: { code: 'ABORTED' } })
  for (const i of [0, 1, 3]) {
    const r = results[i]
    expect(r.status).toBe('fulfilled')
    if (r.status === 'fulfilled') expectSame(r.value, alone.segmentSync(image, calls[i].classes, { masks: calls[i].masks, generator: false, scores: true }))
  }
  // The model goes on serving after the abort.
  expectSame(await model.segment(image, calls[2].classes, { masks: calls[2].masks, generator: false, scores: true }), alone.segmentSync(image, calls[2].classes, { masks: calls[2].masks, generator: false, scores: true }))
}, 60_000)
