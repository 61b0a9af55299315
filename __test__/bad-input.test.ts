/** Every bad input is a coded error; nothing crashes. */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'

import { loadModel, loadModelSync, resolveRuntimeLibrary, type Model } from '../ts'
import { codeOf, npy, ROOT, TINY, tinyModelCopy } from './helpers'

const S = 64
let model: Model
let scratch: string

const brokenModel = (name: string, edit: (m: Record<string, any>) => void, files?: Record<string, Buffer | string>) =>
  tinyModelCopy(scratch, name, edit, files)

beforeAll(() => {
  model = loadModelSync(TINY)
  scratch = mkdtempSync(join(tmpdir(), 'ovseg-bad-'))
})
afterAll(() => model.dispose())

describe('model directory', () => {
  test.each([
    ['a missing directory', () => join(scratch, 'nope'), 'MODEL_NOT_FOUND'],
    [
      'an unreadable manifest',
      () => {
        const dir = join(scratch, 'unreadable')
        mkdirSync(join(dir, 'manifest.json'), { recursive: true })
        return dir
      },
      'MODEL_NOT_FOUND',
    ],
    ['a manifest that is not JSON', () => brokenModel('json', () => {}, { 'manifest.json': '{ nope' }), 'MANIFEST_INVALID'],
    ['an unknown manifest version', () => brokenModel('version', (m) => (m.version = 4)), 'MANIFEST_VERSION'],
    ['defaults in a version-1 manifest', () => brokenModel('v1-defaults', (m) => { m.version = 1; m.defaults = { mode: 'demo' } }), 'MANIFEST_INVALID'],
    ['a bad default', () => brokenModel('bad-default', (m) => { m.version = 2; m.defaults = { semantic: { lambda: 2 } } }), 'MANIFEST_INVALID'],
    ['a missing field', () => brokenModel('missing', (m) => delete m.clip), 'MANIFEST_INVALID'],
    ['a missing nested field', () => brokenModel('nested', (m) => delete m.clip.embedDim), 'MANIFEST_INVALID'],
    ['a field of the wrong type', () => brokenModel('type', (m) => (m.templates = 'a {}')), 'MANIFEST_INVALID'],
    ['a missing graph file', () => brokenModel('nograph', (m) => (m.graphs.imageEncoder = 'gone.onnx')), 'MODEL_NOT_FOUND'],
    ['graphs swapped', () => brokenModel('swap', (m) => (m.graphs.imageEncoder = 'text_encoder.onnx')), 'GRAPH_MISMATCH'],
    ['a context length the text graph does not have', () => brokenModel('ctx', (m) => (m.clip.contextLength = 78)), 'GRAPH_MISMATCH'],
    ['an embedding size the graphs do not have', () => brokenModel('dim', (m) => { m.clip.embedDim = 32; m.noObjectEmbedding = null }), 'GRAPH_MISMATCH'],
    ['a corrupt graph', () => brokenModel('corrupt', () => {}, { 'image_encoder.onnx': 'not onnx' }), 'GRAPH_MISMATCH'],
    ['prompts of the wrong shape', () => brokenModel('pshape', () => {}, { 'mask_prompts.npy': npy([3, 15, 32]) }), 'PROMPTS_INVALID'],
    ['prompts of the wrong dtype', () => brokenModel('pdtype', () => {}, { 'mask_prompts.npy': npy([3, 16, 32], [], '<f8') }), 'PROMPTS_INVALID'],
    ['prompts deeper than the ViT', () => brokenModel('pdeep', (m) => (m.maskPrompts.depth = 1), { 'mask_prompts.npy': npy([4, 16, 32]) }), 'PROMPTS_INVALID'],
    ['a prompt depth that disagrees with the file', () => brokenModel('pdepth', (m) => (m.maskPrompts.depth = 2)), 'PROMPTS_INVALID'],
    ['a prompt file that is not .npy', () => brokenModel('pgarbage', () => {}, { 'mask_prompts.npy': 'garbage' }), 'PROMPTS_INVALID'],
    ['a no-object embedding of the wrong shape', () => brokenModel('noobj', () => {}, { 'no_object.npy': npy([2, 16]) }), 'NO_OBJECT_INVALID'],
    ['a corrupt vocabulary', () => brokenModel('vocab', () => {}, { 'bpe_simple_vocab_16e6.txt.gz': Buffer.from([0x1f, 0x8b, 1, 2]) }), 'VOCAB_INVALID'],
    ['a vocabulary that disagrees with vocabSize', () => brokenModel('vsize', (m) => (m.tokenizer.merges = null)), 'MANIFEST_INVALID'],
    ['merges that disagree with vocabSize', () => brokenModel('merges', (m) => (m.tokenizer.merges = 100)), 'MANIFEST_INVALID'],
  ])('%s', async (_what, makeDir, code) => {
    const dir = makeDir()
    expect(codeOf(() => loadModelSync(dir))).toBe(code)
    await expect(loadModel(dir)).rejects.toMatchObject({ code })
  })

  test('a prompts option naming a bad file', () => {
    const bad = join(scratch, 'bad-prompts.npy')
    writeFileSync(bad, npy([2, 16, 31]))
    expect(codeOf(() => loadModelSync(TINY, { prompts: bad }))).toBe('PROMPTS_INVALID')
    expect(codeOf(() => loadModelSync(TINY, { prompts: join(scratch, 'absent.npy') }))).toBe('MODEL_NOT_FOUND')
  })

  test('load options are validated with sharp-style messages', () => {
    expect(() => loadModelSync(TINY, { threads: -1 })).toThrow(/^Expected an integer in 1\.\.\d+ \(4x the available cores\) for `threads` but received number -1$/)
    expect(codeOf(() => loadModelSync(TINY, { threads: 1.5 }))).toBe('INVALID_ARGUMENT')
    expect(codeOf(() => loadModelSync(TINY, { executionProvider: 'tpu' as never }))).toBe('INVALID_ARGUMENT')
    expect(codeOf(() => loadModelSync('' as string))).toBe('INVALID_ARGUMENT')
    expect(codeOf(() => loadModelSync(TINY, 'fast' as never))).toBe('INVALID_ARGUMENT')
  })

  test("executionProvider 'cuda' without the CUDA libraries is PROVIDER_UNAVAILABLE, with install help; 'auto' falls back", () => {
    const cudaShipped = existsSync(join(dirname(resolveRuntimeLibrary()), 'libonnxruntime_providers_cuda.so'))
    const auto = loadModelSync(TINY, { executionProvider: 'auto' })
    if (cudaShipped) {
      expect(auto.executionProvider.name).toMatch(/cpu|cuda/)
    } else {
      expect(() => loadModelSync(TINY, { executionProvider: 'cuda' })).toThrow(
        expect.objectContaining({ code: 'PROVIDER_UNAVAILABLE', message: expect.stringContaining('npm install onnxruntime-node') }),
      )
      expect(auto.executionProvider).toEqual({ name: 'cpu', reason: expect.stringMatching(/^auto: CUDA unavailable/) })
    }
    auto.dispose()
  })
})

describe('calls', () => {
  test.each([
    ['an empty text list', () => model.encodeTextSync([]), 'EMPTY_INPUT'],
    ['a non-string entry', () => model.encodeTextSync(['ok', 5 as never]), 'INVALID_ARGUMENT'],
    ['texts that are not an array', () => model.tokenize('cat' as never), 'INVALID_ARGUMENT'],
    ['an empty class list', () => model.classEmbeddingsSync([]), 'EMPTY_INPUT'],
    ['a template without a slot', () => model.classEmbeddingsSync(['cat'], { templates: ['a photo'] }), 'INVALID_ARGUMENT'],
    ['an empty template list', () => model.classEmbeddingsSync(['cat'], { templates: [] }), 'EMPTY_INPUT'],
    ['an unknown overflow policy', () => model.tokenize(['cat'], { overflow: 'cut' as never }), 'INVALID_ARGUMENT'],
    ['options that are not an object', () => model.encodeTextSync(['cat'], 3 as never), 'INVALID_ARGUMENT'],
    ['an image of the wrong size', () => model.encodeImageSync({ pixels: new Uint8Array(S * S * 3 - 3) }), 'INVALID_IMAGE'],
    ['an empty image batch', () => model.encodeImageSync({ pixels: new Float32Array(0) }), 'INVALID_IMAGE'],
    ['an image of the wrong dtype', () => model.encodeImageSync({ pixels: new Int16Array(S * S * 3) as never }), 'INVALID_IMAGE'],
    ['a clamped byte array', () => model.encodeImageSync({ pixels: new Uint8ClampedArray(S * S * 3) as never }), 'INVALID_IMAGE'],
    ['a plain array of pixels', () => model.encodeImageSync({ pixels: Array(S * S * 3).fill(0) as never }), 'INVALID_IMAGE'],
    ['NaN pixels', () => model.encodeImageSync({ pixels: new Float32Array(S * S * 3).fill(NaN) }), 'INVALID_IMAGE'],
    ['no image batch at all', () => model.encodeImageSync(undefined as never), 'INVALID_ARGUMENT'],
    ['masks of the wrong shape', () => model.encodeImageSync({ pixels: new Uint8Array(S * S * 3), masks: new Uint8Array(S * S - 1) }), 'INVALID_MASK'],
    ['masks for another batch size', () => model.encodeImageSync({ pixels: new Uint8Array(S * S * 3), masks: new Uint8Array(2 * S * S) }), 'INVALID_MASK'],
    ['masks of the wrong dtype', () => model.encodeImageSync({ pixels: new Uint8Array(S * S * 3), masks: new Float32Array(S * S) as never }), 'INVALID_MASK'],
    ['a no-object row the model lacks', () => loadModelSync(brokenModel('no-noobj', (m) => { m.noObjectEmbedding = null; delete m.generator })).classEmbeddingsSync(['cat'], { includeNoObject: true }), 'INVALID_ARGUMENT'],
    ['a generator without a no-object embedding', () => loadModelSync(brokenModel('gen-no-noobj', (m) => (m.noObjectEmbedding = null))), 'MANIFEST_INVALID'],
    ['segment() without masks on a model without a generator', () => loadModelSync(brokenModel('no-gen', (m) => delete m.generator)).segmentSync({ data: new Uint8Array(12), width: 2, height: 2, channels: 3 }, ['a']), 'INVALID_ARGUMENT'],
    ['a generator with a bad stride', () => loadModelSync(brokenModel('gen-stride', (m) => (m.generator.maskStride = 5))), 'MANIFEST_INVALID'],
    ['a generator graph that is not one', () => loadModelSync(brokenModel('gen-graph', (m) => (m.generator.file = 'text_encoder.onnx'))), 'GRAPH_MISMATCH'],
  ])('%s', (_what, call, code) => {
    expect(codeOf(call)).toBe(code)
  })

  test('async twins reject with the same codes', async () => {
    await expect(model.encodeText([])).rejects.toMatchObject({ code: 'EMPTY_INPUT' })
    await expect(model.encodeImage({ pixels: new Uint8Array(5) })).rejects.toMatchObject({ code: 'INVALID_IMAGE' })
    await expect(model.encodeImage({ pixels: new Uint8Array(S * S * 3), masks: new Uint8Array(3) })).rejects.toMatchObject({ code: 'INVALID_MASK' })
    await expect(model.classEmbeddings(['x'.repeat(1000) + ' y'.repeat(100)])).rejects.toMatchObject({ code: 'TEXT_TOO_LONG' })
  })

  test('after dispose every call is DISPOSED; dispose twice is a no-op', async () => {
    const m = loadModelSync(TINY)
    m.dispose()
    m.dispose()
    for (const call of [() => m.tokenize(['a']), () => m.encodeTextSync(['a']), () => m.encodeImageSync({ pixels: new Uint8Array(S * S * 3) }), () => m.classEmbeddingsSync(['a'])]) {
      expect(codeOf(call)).toBe('DISPOSED')
    }
    await expect(m.encodeImage({ pixels: new Uint8Array(S * S * 3) })).rejects.toMatchObject({ code: 'DISPOSED' })
    await expect(m.classEmbeddings(['a'])).rejects.toMatchObject({ code: 'DISPOSED' })
  })
})

describe('ONNX Runtime library (each case in its own process: a process loads one ONNX Runtime)', () => {
  const DIST = join(ROOT, 'dist', 'index.js')

  function loadIn(env: Record<string, string>, options = '{}'): { code?: string; message?: string; ok?: boolean } {
    if (!existsSync(DIST)) throw new Error('dist/ is missing: run `npm run build` first')
    const script = `const o = require(${JSON.stringify(DIST)});
      try { o.loadModelSync(${JSON.stringify(TINY)}, ${options}); console.log(JSON.stringify({ ok: true })) }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`
    const run = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' })
    expect(run.status).toBe(0) // no crash
    return JSON.parse(run.stdout.trim().split('\n').pop() as string)
  }

  test('a missing library', () => {
    const result = loadIn({ ORT_DYLIB_PATH: join(scratch, 'libonnxruntime.so.1') })
    expect(result).toMatchObject({ code: 'RUNTIME_NOT_FOUND', message: expect.stringContaining('does not exist') })
  })

  test('a library that is not ONNX Runtime', () => {
    const notOrt = join(scratch, 'libnotort.so')
    const built = spawnSync('cc', ['-shared', '-fPIC', '-x', 'c', '-', '-o', notOrt], { input: 'int nothing(void) { return 0; }\n' })
    expect(built.status).toBe(0)
    expect(loadIn({ ORT_DYLIB_PATH: notOrt })).toMatchObject({ code: 'RUNTIME_NOT_FOUND', message: expect.stringContaining('OrtGetApiBase') })
  })

  test('a library that is too old', () => {
    const old = join(scratch, 'libonnxruntime-old.so')
    const source = `#include <stddef.h>
      static const void* get_api(unsigned v) { (void)v; return NULL; }
      static const char* version(void) { return "1.10.0"; }
      static struct { const void* (*get_api)(unsigned); const char* (*version)(void); } base = { get_api, version };
      const void* OrtGetApiBase(void) { return &base; }\n`
    const built = spawnSync('cc', ['-shared', '-fPIC', '-x', 'c', '-', '-o', old], { input: source })
    expect(built.status).toBe(0)
    expect(loadIn({ ORT_DYLIB_PATH: old })).toMatchObject({ code: 'RUNTIME_VERSION', message: expect.stringContaining('1.10.0') })
  })

  test('the runtimeLibraryPath option wins over ORT_DYLIB_PATH', () => {
    const good = resolveRuntimeLibrary()
    const result = loadIn({ ORT_DYLIB_PATH: join(scratch, 'absent.so') }, JSON.stringify({ runtimeLibraryPath: good }))
    expect(result).toEqual({ ok: true })
  })
})
