/**
 * SAM as a proposal source through the API: `loadSamModel`, `generate` (the same masks as
 * segment-anything's generator on the tiny random SAM of the `build/sam` fixture, which
 * crates/ovseg-core/tests/parity_sam.rs checks in depth), and `segment(..., { sam })`, where CLIP
 * classifies SAM's masks as it does the caller's; coded errors for bad SAM directories and options.
 */
import { spawnSync } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import sharp from 'sharp'

import { DEFAULT_SAM_OPTIONS, loadModelSync, loadSamModel, loadSamModelSync, type Model, type SamModel } from '../ts'
import { codeOf, fixture, ROOT, TINY } from './helpers'

const DIR = join(ROOT, 'build', 'sam')
let index: {
  graphOptions: Record<string, number>
  cases: Array<{ name: string; height: number; width: number; graph: Array<{ box: number[]; area: number; predictedIou: number }> }>
}
let model: Model
let sam: SamModel

/** The fixture's generator options under their API names (segment-anything's snake_case). */
function apiOptions(o: Record<string, number>) {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k.replace(/_(\w)/g, (_, c: string) => c.toUpperCase()), v]))
}

function image(name: string, width: number, height: number) {
  return { data: new Uint8Array(fixture(join(DIR, `${name}.rgb`))), width, height, channels: 3 as const }
}

beforeAll(async () => {
  index = JSON.parse(fixture(join(DIR, 'index.json')).toString())
  model = loadModelSync(TINY)
  sam = await loadSamModel(join(DIR, 'model'))
})
afterAll(() => {
  model.dispose()
  sam.dispose()
})

test('generate gives segment-anything\'s masks for the fixture\'s images', async () => {
  expect(sam.name).toBe('sam-tiny-random')
  expect(sam.imageSize).toBe(256)
  for (const c of index.cases) {
    const out = await sam.generate(image(c.name, c.width, c.height), apiOptions(index.graphOptions))
    expect(out.records).toHaveLength(c.graph.length)
    expect(out.masks.length).toBe(c.graph.length * c.width * c.height)
    const want = fixture(join(DIR, `${c.name}.graph.masks.u8`))
    let same = 0
    for (let i = 0; i < want.length; i++) same += out.masks[i] === want[i] ? 1 : 0
    expect(same / want.length).toBeGreaterThan(0.99)
    out.records.forEach((r, k) => {
      expect(r.predictedIou).toBeCloseTo(c.graph[k].predictedIou, 4)
      expect(r.box[2]).toBeLessThan(c.width)
      expect(r.box[3]).toBeLessThan(c.height)
    })
    expect(out.onnxRuntimeMs).toBeGreaterThan(0)
  }
})

test('segment with SAM: its masks are classified by CLIP and named as SAM\'s, alone or beside the generator\'s', async () => {
  const c = index.cases[0]
  const img = image(c.name, c.width, c.height)
  // Every mask kept (no crops: the NMS across crops would merge the whole-image masks).
  const samOptions = { ...apiOptions(index.graphOptions), predIouThresh: 0, stabilityScoreThresh: 0, boxNmsThresh: 1, cropNLayers: 0 }
  const alone = await model.segment(img, ['sky', 'grass'], { sam, samOptions, generator: false })
  const masks = (await sam.generate(img, { ...samOptions })).records.length
  expect(masks).toBeGreaterThan(1)
  expect(alone.segments.map((s) => s.source)).toEqual(Array(Math.min(masks, DEFAULT_SAM_OPTIONS.maxMasks)).fill('sam'))
  expect(alone.segments.map((s) => s.index)).toEqual([...Array(alone.segments.length).keys()])
  expect(alone.timings.samMs).toBeGreaterThan(0)
  expect(alone.labels.every((l) => l < 2)).toBe(true)

  const capped = await model.segment(img, ['sky', 'grass'], { sam, samOptions: { ...samOptions, maxMasks: 1 }, generator: false })
  expect(capped.segments.map((s) => s.source)).toEqual(['sam'])

  const both = await model.segment(img, ['sky', 'grass'], { sam, samOptions: { ...samOptions, maxMasks: 3 } })
  const sources = both.segments.map((s) => s.source)
  expect(sources.filter((s) => s === 'sam')).toHaveLength(3)
  expect(sources.indexOf('sam')).toBe(sources.lastIndexOf('generator') + 1) // the generator's first

  const sync = model.segmentSync(img, ['sky', 'grass'], { sam, samOptions, generator: false })
  expect(Array.from(sync.labels)).toEqual(Array.from(alone.labels))

  // returnMasks: the masks CLIP classified, in the SAM segments' order: the generator's first ones.
  expect(alone.samMasks).toBeUndefined()
  const withMasks = await model.segment(img, ['sky', 'grass'], { sam, samOptions: { ...samOptions, maxMasks: 3, returnMasks: true }, generator: false })
  const plane = c.width * c.height
  const generated = await sam.generate(img, samOptions)
  expect(withMasks.samMasks?.length).toBe(3 * plane)
  expect(Buffer.from(withMasks.samMasks as Uint8Array).equals(Buffer.from(generated.masks.subarray(0, 3 * plane)))).toBe(true)
  await expect(model.segment(img, ['a'], { sam, samOptions: { returnMasks: 'yes' as unknown as boolean } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
})

test('bad SAM directories and options get coded errors', async () => {
  const scratch = mkdtempSync(join(tmpdir(), 'ovseg-sam-'))
  // A CLIP model directory is not a SAM one.
  await expect(loadSamModel(TINY)).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' })
  const copy = (name: string, edit: (m: Record<string, unknown>) => void) => {
    const dir = join(scratch, name)
    cpSync(join(DIR, 'model'), dir, { recursive: true })
    const manifest = JSON.parse(readFileSync(join(dir, 'sam.json'), 'utf8'))
    edit(manifest)
    writeFileSync(join(dir, 'sam.json'), JSON.stringify(manifest))
    return dir
  }
  expect(codeOf(() => loadSamModelSync(copy('v2', (m) => (m.version = 2))))).toBe('MANIFEST_VERSION')
  expect(codeOf(() => loadSamModelSync(copy('size', (m) => (m.imageSize = 512))))).toBe('GRAPH_MISMATCH')
  expect(codeOf(() => loadSamModelSync(copy('escape', (m) => ((m.graphs as Record<string, string>).maskDecoder = '../x.onnx'))))).toBe('MANIFEST_INVALID')
  expect(codeOf(() => loadSamModelSync(copy('unknown', (m) => (m.extra = 1))))).toBe('MANIFEST_INVALID')
  expect(codeOf(() => loadSamModelSync(DIR + '/model', { threads: 0 }))).toBe('INVALID_ARGUMENT')

  const img = image(index.cases[0].name, index.cases[0].width, index.cases[0].height)
  await expect(model.segment(img, ['a'], { sam: {} as SamModel })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
  await expect(model.segment(img, ['a'], { samOptions: { pointsPerSide: 4 } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
  for (const bad of [
    { pointsPerSide: 0 },
    { pointsPerBatch: 1.5 },
    { predIouThresh: 2 },
    { stabilityScoreOffset: -1 },
    { maxMasks: 0 },
    { cropNLayers: 4 },
    { cropNmsThresh: -0.1 },
    { cropOverlapRatio: 1 },
    { cropNPointsDownscaleFactor: 0 },
    { minMaskRegionArea: -1 },
    { minMaskRegionArea: 0.5 },
    { pointsPerSide: 4, cropNLayers: 3, cropNPointsDownscaleFactor: 2 }, // 4 / 2^3 points per side: none (the core's check)
  ]) {
    await expect(model.segment(img, ['a'], { sam, samOptions: bad })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
  }
  // Crops of a 3 x 2 image on 3 layers would be empty.
  const tiny = { data: new Uint8Array(18), width: 3, height: 2, channels: 3 as const }
  await expect(sam.generate(tiny, { cropNLayers: 3 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('too small') })
  await expect(sam.generate(img, { boxNmsThresh: Number.NaN })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
  const gone = loadSamModelSync(join(DIR, 'model'))
  gone.dispose()
  await expect(gone.generate(img)).rejects.toMatchObject({ code: 'DISPOSED' })
  await expect(model.segment(img, ['a'], { sam: gone })).rejects.toMatchObject({ code: 'DISPOSED' })
})

test('the CLI: --proposals sam --sam-model DIR in segment and eval; coded errors for missing or bad SAM directories', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'ovseg-sam-cli-'))
  const cli = (...args: string[]) => spawnSync(process.execPath, [join(ROOT, 'dist', 'cli', 'main.js'), ...args], { cwd: scratch, encoding: 'utf8', timeout: 120000 })
  const scene = join(ROOT, 'examples', 'world-scene.png')
  const samArgs = ['--sam-model', join(DIR, 'model'), '--sam-points', '6']
  const run = cli('segment', scene, '--model', TINY, '--classes', 'sky,grass', '--proposals', 'generator,sam', ...samArgs, '--sam-crop-layers', '1', '--sam-min-region-area', '50', '--out', 'out')
  expect(run.status).toBe(0)
  const summary = JSON.parse(readFileSync(join(scratch, 'out', 'world-scene.json'), 'utf8'))
  expect(summary.timings.samMs).toBeGreaterThan(0)
  expect(summary.segments.some((s: { source: string }) => s.source === 'generator')).toBe(true)
  for (const [args, code] of [
    [['--proposals', 'sam'], 'INVALID_ARGUMENT'], // no --sam-model
    [['--sam-model', join(DIR, 'model')], 'INVALID_ARGUMENT'], // --proposals leaves SAM out
    [['--proposals', 'sam,clip', ...samArgs], 'INVALID_ARGUMENT'],
    [['--proposals', 'sam', '--sam-model', TINY], 'MODEL_NOT_FOUND'], // a CLIP directory
    [['--proposals', 'sam', ...samArgs, '--sam-crop-layers', '4'], 'INVALID_ARGUMENT'],
  ] as const) {
    const bad = cli('segment', scene, '--model', TINY, '--classes', 'sky', ...args)
    expect([bad.status, bad.stderr]).toEqual([2, expect.stringContaining(code)])
  }
  // eval with SAM alone: CLIP classifies SAM's masks.
  mkdirSync(join(scratch, 'images'))
  mkdirSync(join(scratch, 'labels'))
  cpSync(scene, join(scratch, 'images', 'a.png'))
  cpSync(join(ROOT, 'examples', 'world-scene.truth.png'), join(scratch, 'labels', 'a.png'))
  const ev = cli('eval', '--images', 'images', '--labels', 'labels', '--classes', join(ROOT, 'examples', 'world-classes.txt'), '--model', TINY, '--proposals', 'sam', ...samArgs)
  expect(ev.status).toBe(0)
  expect(JSON.parse(readFileSync(join(scratch, 'ovseg-eval.json'), 'utf8'))).toHaveProperty('mIoU')
})

test('the server with SAM proposals answers with SAM\'s segments', async () => {
  const { createApp } = await import('../ts/server/app')
  const c = index.cases[0]
  const png = await sharp(new Uint8Array(fixture(join(DIR, `${c.name}.rgb`))), { raw: { width: c.width, height: c.height, channels: 3 } }).png().toBuffer()
  const samOptions = { ...apiOptions(index.graphOptions), predIouThresh: 0, stabilityScoreThresh: 0, boxNmsThresh: 1, maxMasks: 4 }
  const app = await createApp(model, { proposals: { generator: false, sam, samOptions } })
  try {
    const base = await app.listen({ port: 0, host: '127.0.0.1' })
    const post = (extra: object) => fetch(`${base}/segment`, { method: 'POST', body: JSON.stringify({ image: png.toString('base64'), classes: ['sky', 'grass'], ...extra }), headers: { 'content-type': 'application/json' } })
    const r = await post({})
    expect(r.status).toBe(200)
    const body = await r.json()
    expect(body.segments.length).toBeGreaterThan(0)
    expect(body.segments.every((s: { source: string; mask?: unknown }) => s.source === 'sam' && s.mask === undefined)).toBe(true)
    expect(body.timings.samMs).toBeGreaterThan(0)

    // masks=true: each SAM segment's mask as runs in its box, SAM's mask exactly.
    const withMasks = await (await post({ masks: true })).json()
    const { masks } = await sam.generate(image(c.name, c.width, c.height), samOptions)
    const plane = c.width * c.height
    expect(withMasks.segments.length).toBeGreaterThan(0)
    for (const s of withMasks.segments as Array<{ index: number; mask: { box: number[]; counts: number[] } }>) {
      const [x0, y0, x1, y1] = s.mask.box
      const decoded = new Uint8Array(plane)
      let at = 0
      s.mask.counts.forEach((n, i) => {
        for (let k = at; k < at + n; k++) if (i % 2) decoded[(y0 + Math.floor(k / (x1 - x0))) * c.width + x0 + (k % (x1 - x0))] = 1
        at += n
      })
      expect(at).toBe((x1 - x0) * (y1 - y0))
      expect(Buffer.from(decoded).equals(Buffer.from(masks.subarray(s.index * plane, (s.index + 1) * plane)))).toBe(true)
    }
    expect((await post({ masks: 'maybe' })).status).toBe(400)
  } finally {
    await app.close()
  }
})
