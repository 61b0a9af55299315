/** The `ovseg` command line, run as users run it (node dist/cli/main.js): on the tiny random model, and on the shipped example with the default model. */
import { spawn, spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import sharp from 'sharp'

import { DEFAULT_MODEL_DIR, EXAMPLE_SCENE, loadModelSync, type Model } from '../ts'
import { PACKAGE_JSON, ROOT, TINY, tinyModelCopy } from './helpers'

const CLI = join(ROOT, 'dist', 'cli', 'main.js')
const CLASSES = ['grass', 'red car', 'sky']
let scratch: string
let model: Model

function ovseg(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: scratch, encoding: 'utf8', timeout: 120000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** A 96x64 gradient image. */
function gradient(seed: number): { data: Uint8Array; width: number; height: number } {
  const width = 96
  const height = 64
  const data = new Uint8Array(width * height * 3)
  for (let i = 0; i < width * height; i++) {
    data[i * 3] = (i % width) * 2 + seed
    data[i * 3 + 1] = Math.floor(i / width) * 3
    data[i * 3 + 2] = 100 + seed
  }
  return { data, width, height }
}

async function grey(path: string): Promise<{ data: Buffer; channels: number; width: number; height: number }> {
  const { data, info } = await sharp(path).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true })
  const meta = await sharp(path).metadata()
  return { data, channels: meta.channels as number, width: info.width, height: info.height }
}

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'ovseg-cli-'))
  mkdirSync(join(scratch, 'images'))
  for (const [name, seed] of [['one.png', 0], ['two.png', 40]] as const) {
    const g = gradient(seed)
    await sharp(g.data, { raw: { width: g.width, height: g.height, channels: 3 } }).png().toFile(join(scratch, 'images', name))
  }
  writeFileSync(join(scratch, 'classes.txt'), `# a comment\n${CLASSES.join('\n')}\n\n`)
  model = loadModelSync(TINY)
})
afterAll(() => model.dispose())

test.each([['ovseg', []], ['segment', ['segment']], ['eval', ['eval']], ['info', ['info']]])('--help of %s exits 0 with usage', (_name, command) => {
  const r = ovseg(...(command as string[]), '--help')
  expect(r.code).toBe(0)
  expect(r.stdout).toMatch(/^Usage: ovseg/)
})

test('segment writes an overlay, a label PNG and a JSON per image; labels equal the API result', async () => {
  const r = ovseg('segment', 'images', '--classes-file', 'classes.txt', '--out', 'out', '--model', TINY)
  expect(r.code).toBe(0)
  for (const name of ['one', 'two']) {
    const labels = await grey(join(scratch, 'out', `${name}.labels.png`))
    expect([labels.channels, labels.width, labels.height]).toEqual([1, 96, 64])
    const overlay = await sharp(join(scratch, 'out', `${name}.overlay.png`)).metadata()
    expect(overlay.width).toBe(96 + 260) // the image, then the legend
    expect(overlay.height).toBeGreaterThanOrEqual(64)
    const summary = JSON.parse(readFileSync(join(scratch, 'out', `${name}.json`), 'utf8'))
    expect(summary.classes.map((c: { name: string }) => c.name)).toEqual(CLASSES)
    expect(summary.classes.reduce((a: number, c: { pixels: number }) => a + c.pixels, 0)).toBe(96 * 64)
    const g = gradient(name === 'one' ? 0 : 40)
    const api = model.segmentSync({ ...g, channels: 3 }, CLASSES)
    expect(Buffer.from(labels.data).equals(Buffer.from(Uint8Array.from(api.labels)))).toBe(true)
    expect(summary.segments.length).toBe(api.segments.filter((s) => s.used).length)
  }
})

test('segment on the shipped example with the default model: outputs decode and the labels are the expected ones', async () => {
  const r = ovseg('segment', EXAMPLE_SCENE.image, '--classes-file', EXAMPLE_SCENE.classesFile, '--out', 'example')
  expect(r.code).toBe(0)
  expect(r.stderr).not.toMatch(/random weights/)
  const labels = await grey(join(scratch, 'example', 'world-scene.labels.png'))
  const expected = await grey(join(ROOT, 'examples', 'expected', 'world-scene.labels.png'))
  expect([labels.channels, labels.width, labels.height]).toEqual([1, expected.width, expected.height])
  let same = 0
  for (let i = 0; i < labels.data.length; i++) if (labels.data[i] === expected.data[i]) same++
  expect(same / labels.data.length).toBeGreaterThanOrEqual(0.999) // a near-tie pixel may flip on another CPU
  const overlay = await sharp(join(scratch, 'example', 'world-scene.overlay.png')).metadata()
  expect(overlay.width).toBe(expected.width + 260)
  const summary = JSON.parse(readFileSync(join(scratch, 'example', 'world-scene.json'), 'utf8'))
  const names = readFileSync(EXAMPLE_SCENE.classesFile, 'utf8').trim().split('\n')
  expect(summary.classes.map((c: { name: string }) => c.name)).toEqual(names)
})

test('--json prints the results and writes no files without --out', () => {
  const r = ovseg('segment', join('images', '*.png'), '-c', CLASSES.join(','), '--json', '--mode', 'demo', '--model', TINY)
  expect(r.code).toBe(0)
  const out = JSON.parse(r.stdout)
  expect(out.results).toHaveLength(2)
  expect(out.failed).toEqual([])
  expect(out.results[0].classes.map((c: { name: string }) => c.name)).toEqual(CLASSES)
  expect(existsSync(join(scratch, 'ovseg-out'))).toBe(false)
})

test('an unreadable image is reported, the batch goes on, the exit code says so', () => {
  mkdirSync(join(scratch, 'mixed'))
  copyFileSync(join(scratch, 'images', 'one.png'), join(scratch, 'mixed', 'a.png'))
  writeFileSync(join(scratch, 'mixed', 'b.png'), 'not a png')
  const r = ovseg('segment', 'mixed', '-c', 'grass,sky', '-o', 'mixed-out', '--model', TINY)
  expect(r.code).toBe(1)
  expect(r.stderr).toMatch(/b\.png: INVALID_IMAGE/)
  expect(existsSync(join(scratch, 'mixed-out', 'a.labels.png'))).toBe(true)
  expect(existsSync(join(scratch, 'mixed-out', 'b.labels.png'))).toBe(false)
})

test.each([
  ['an unknown flag', ['segment', 'images', '-c', 'a', '--bogus'], /unknown option '--bogus'/],
  ['no classes', ['segment', 'images'], /exactly one of --classes/],
  ['an empty class list', ['segment', 'images', '-c', ' , '], /EMPTY_INPUT/],
  ['a missing image', ['segment', 'missing.png', '-c', 'a'], /no file, directory or glob match/],
  ['a missing classes file', ['segment', 'images', '--classes-file', 'nope.txt'], /does not exist/],
  ['a bad threshold', ['segment', 'images', '-c', 'a', '--threshold', '1'], /expected a number in \[0, 1\)/],
  ['a bad provider', ['segment', 'images', '-c', 'a', '--provider', 'tpu'], /Allowed choices are cpu, cuda, auto/],
  ['a missing model', ['segment', 'images', '-c', 'a', '--model', 'nowhere'], /MODEL_NOT_FOUND/],
  ['eval without --labels', ['eval', '--images', 'images', '--classes', 'classes.txt'], /required option '--labels <dir>'/],
])('%s: exit code 2 and a message', (_what, args, message) => {
  const r = ovseg(...args)
  expect(r.code).toBe(2)
  expect(r.stderr).toMatch(message)
})

describe('eval', () => {
  beforeAll(async () => {
    // Ground truth: the CLI's own label maps (so the expected metrics are exact), one with a
    // band of ignored pixels, and an image without a label map.
    mkdirSync(join(scratch, 'ds', 'images'), { recursive: true })
    mkdirSync(join(scratch, 'ds', 'labels'))
    for (const name of ['one', 'two']) {
      copyFileSync(join(scratch, 'images', `${name}.png`), join(scratch, 'ds', 'images', `${name}.png`))
      const g = gradient(name === 'one' ? 0 : 40)
      const labels = Uint8Array.from(model.segmentSync({ ...g, channels: 3 }, CLASSES).labels)
      if (name === 'two') labels.fill(255, 0, 96 * 10)
      await sharp(labels, { raw: { width: 96, height: 64, channels: 1 } }).toColourspace('b-w').png().toFile(join(scratch, 'ds', 'labels', `${name}.png`))
    }
  })

  test('its own predictions as ground truth give 100 mIoU; the report is saved', () => {
    const r = ovseg('eval', '--images', join('ds', 'images'), '--labels', join('ds', 'labels'), '--classes', 'classes.txt', '-o', 'report.json', '--model', TINY)
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/mIoU 100\.00 {2}pixel accuracy 100\.00/)
    const report = JSON.parse(readFileSync(join(scratch, 'report.json'), 'utf8'))
    expect(report.mIoU).toBe(1)
    expect(report.pixels).toBe(2 * 96 * 64 - 96 * 10)
    expect(report.classes.map((c: { name: string }) => c.name)).toEqual(CLASSES)
    // Every labeled pixel on the diagonal, each class's row summing to its support.
    const { counts, unpredicted } = report.confusion as { counts: number[][]; unpredicted: number[] }
    expect(counts.length).toBe(CLASSES.length)
    counts.forEach((row, t) => {
      expect(row.length).toBe(CLASSES.length)
      row.forEach((n, p) => { if (p !== t) expect(n).toBe(0) })
      expect(row[t]).toBe(report.classes[t].support)
    })
    expect(unpredicted).toEqual(CLASSES.map(() => 0))
    expect(counts.flat().reduce((a, b) => a + b, 0)).toBe(report.pixels)
  })

  test('a missing label map and a colour label map are reported; the exit code says so', async () => {
    copyFileSync(join(scratch, 'images', 'one.png'), join(scratch, 'ds', 'images', 'three.png'))
    copyFileSync(join(scratch, 'images', 'one.png'), join(scratch, 'ds', 'images', 'four.png'))
    copyFileSync(join(scratch, 'images', 'one.png'), join(scratch, 'ds', 'labels', 'four.png'))
    const r = ovseg('eval', '--images', join('ds', 'images'), '--labels', join('ds', 'labels'), '--classes', 'classes.txt', '-o', 'report2.json', '--model', TINY)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/no label map .*three\.png/)
    expect(r.stderr).toMatch(/four\.png has 3 channels/)
    const report = JSON.parse(readFileSync(join(scratch, 'report2.json'), 'utf8'))
    expect([report.images, report.evaluated, report.mIoU]).toEqual([4, 2, 1])
  })
})

test('info describes the model, the providers and the versions', () => {
  const r = ovseg('info', '--json', '--model', TINY)
  expect(r.code).toBe(0)
  const info = JSON.parse(r.stdout)
  expect(info.model.name).toBe('tiny-random')
  expect(info.model.generator.file).toBe('mask_generator.onnx')
  expect(['cpu', 'cuda']).toContain(info.executionProvider.name)
  expect(info.versions.onnxRuntime).toBe(PACKAGE_JSON.ovseg.onnxruntime)
  expect(info.model.precisions).toEqual(['float32'])
})

test('info lists the precisions a model has; --precision loads them', () => {
  const { model: variants } = JSON.parse(readFileSync(join(ROOT, 'build', 'variants', 'index.json'), 'utf8')) as { model: string }
  expect(ovseg('info', '--model', variants).stdout).toMatch(/^precisions +float32, int8, float16 \(--precision\)$/m)
  const image = join(scratch, 'images', 'one.png')
  for (const precision of ['int8', 'float16']) {
    const r = ovseg('segment', image, '-c', 'sky,grass', '--json', '--model', variants, '--precision', precision)
    expect([precision, r.code]).toEqual([precision, 0])
  }
  const refused = ovseg('segment', image, '-c', 'sky', '--model', TINY, '--precision', 'int8')
  expect(refused.code).toBe(2) // the model does not load: fatal
  expect(refused.stderr).toMatch(/INVALID_ARGUMENT.*no int8 encoders/)
})

test("info and segment follow a version-2 manifest's defaults", () => {
  const dir = tinyModelCopy(scratch, 'demo-defaults', (m) => {
    m.version = 2
    m.defaults = { mode: 'demo', demo: { threshold: 0.5 } }
    m.processing = { shortSide: 512, maxSize: 2048 }
  })
  const info = JSON.parse(ovseg('info', '--json', '--model', dir).stdout)
  expect(info.model.defaults).toEqual({ mode: 'demo', semantic: { threshold: 0.4, lambda: 0.7 }, demo: { threshold: 0.5, lambda: 0 } })
  expect(info.model.processing).toEqual({ shortSide: 512, maxSize: 2048 })
  expect(ovseg('info', '--model', dir).stdout).toMatch(/^processing +short side 512, long side at most 2048$/m)
  expect(ovseg('info', '--model', TINY).stdout).toMatch(/^processing +short side 640, long side at most 2560 \(OVSeg's: the manifest sets none\)$/m)
  expect(ovseg('info', '--model', dir).stdout).toMatch(/^defaults +mode demo; semantic: threshold 0.4, lambda 0.7; demo: threshold 0.5, lambda 0$/m)
  expect(ovseg('info', '--model', TINY).stdout).toMatch(/^defaults +mode semantic; .* \(OVSeg's: the manifest sets none\)$/m)
  // Without --mode the model's mode (demo appends "others" to a single class); --mode overrides it.
  const classes = (...args: string[]) => {
    const r = ovseg('segment', join('images', 'one.png'), '-c', 'sky', '--json', '--model', dir, ...args)
    expect(r.code).toBe(0)
    return (JSON.parse(r.stdout).results[0].classes as { name: string }[]).map((c) => c.name)
  }
  expect(classes()).toEqual(['sky', 'others'])
  expect(classes('--mode', 'semantic')).toEqual(['sky'])
})

test('serve listens, answers /health, and exits 0 on SIGTERM', async () => {
  // A vocabulary saved by the default model, loaded at start.
  const vocabulary = join(scratch, 'vocabulary.bin')
  using maker = loadModelSync(DEFAULT_MODEL_DIR)
  maker.saveClassEmbeddingsSync(vocabulary, ['sky', 'grass', 'water'])
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--concurrency', '2', '--class-embeddings', vocabulary], { cwd: scratch })
  let stderr = ''
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not say where it listens: ${stderr}`)), 30000)
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString()
      const m = /serving world-ovseg on (http:\/\/\S+)/.exec(stderr)
      if (m) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)))
  })
  expect(stderr).toContain(`class embeddings: 3 classes from ${vocabulary}`)
  const health = await fetch(`${address}/health`)
  expect(health.status).toBe(200)
  expect(await health.json()).toMatchObject({ model: 'world-ovseg', queue: { concurrency: 2 } }) // the default model
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  child.kill('SIGTERM')
  expect(await exited).toBe(0)
})
