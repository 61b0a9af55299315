/** The core's hardening: hostile manifests, model files, options and arrays are coded errors. */
import { mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'

import { loadModel, loadModelSync, type Model } from '../ts'
import { native } from '../ts/native'
import { codeOf, npy, TINY, tinyModelCopy } from './helpers'

const S = 64
let model: Model
let scratch: string

const modelWith = (name: string, edit: (m: Record<string, any>) => void, files?: Record<string, Buffer | string>) =>
  tinyModelCopy(scratch, name, edit, files)

beforeAll(() => {
  model = loadModelSync(TINY)
  scratch = mkdtempSync(join(tmpdir(), 'ovseg-hardening-'))
})
afterAll(() => {
  model.dispose()
  rmSync(scratch, { recursive: true, force: true })
})

/** Loads `dir` both ways and returns the (equal) error of the sync load. */
async function loadError(dir: string): Promise<{ code?: string; message: string }> {
  let syncError: { code?: string; message: string } | undefined
  try {
    loadModelSync(dir).dispose()
  } catch (err) {
    syncError = err as { code?: string; message: string }
  }
  expect(syncError).toBeDefined()
  await expect(loadModel(dir)).rejects.toMatchObject({ code: syncError!.code })
  return syncError!
}

describe('manifests with absurd sizes are MANIFEST_INVALID', () => {
  test.each([
    ['imageSize 8388608 with no prompts', (m: any) => { m.clip.imageSize = 8388608; m.maskPrompts = null }],
    ['visionLayers 1e12', (m: any) => (m.clip.visionLayers = 1e12)],
    ['generator.sizeDivisibility 2^40', (m: any) => (m.generator.sizeDivisibility = 2 ** 40)],
    ['generator.sizeDivisibility 65536', (m: any) => (m.generator.sizeDivisibility = 65536)],
    ['processing.shortSide 100000', (m: any) => (m.processing = { shortSide: 100000, maxSize: 100000 })],
    ['processing.maxSize 100000', (m: any) => (m.processing = { shortSide: 640, maxSize: 100000 })],
    ['clip.contextLength 1e6', (m: any) => (m.clip.contextLength = 1e6)],
    ['clip.embedDim 1e6', (m: any) => (m.clip.embedDim = 1e6)],
  ])('%s', async (name, edit) => {
    const error = await loadError(modelWith(name.replace(/\W+/g, '-'), edit))
    expect(error.code).toBe('MANIFEST_INVALID')
  })
})

describe('manifest values are blamed on the manifest', () => {
  test('pixelStd 1e-45 is MANIFEST_INVALID (not the image)', async () => {
    const error = await loadError(modelWith('tiny-std', (m) => (m.pixelStd = [1e-45, 0.26, 0.27])))
    expect(error.code).toBe('MANIFEST_INVALID')
    expect(error.message).toContain('pixelStd')
  })

  test('a manifest that is not UTF-8 is MANIFEST_INVALID', async () => {
    const dir = modelWith('latin1', () => {})
    const text = readFileSync(join(dir, 'manifest.json'), 'utf8').replace('"tiny-random"', '"tiny-\u00e9"')
    writeFileSync(join(dir, 'manifest.json'), Buffer.from(text, 'latin1'))
    const error = await loadError(dir)
    expect(error.code).toBe('MANIFEST_INVALID')
    expect(error.message).toContain('UTF-8')
  })
})

describe('threads', () => {
  const most = 4 * availableParallelism()

  test('is bounded to 4x the available cores', () => {
    expect(codeOf(() => loadModelSync(TINY, { threads: most + 1 }))).toBe('INVALID_ARGUMENT')
    expect(codeOf(() => loadModelSync(TINY, { threads: 2000 }))).toBe('INVALID_ARGUMENT')
    expect(codeOf(() => loadModelSync(TINY, { threads: 0 }))).toBe('INVALID_ARGUMENT')
    const ok = loadModelSync(TINY, { threads: most })
    expect(ok.disposed).toBe(false)
    ok.dispose()
  })

  test('does not wrap around 2^32', () => {
    expect(() => loadModelSync(TINY, { threads: 2 ** 32 + 2 })).toThrow('received number 4294967298')
    expect(() => loadModelSync(TINY, { threads: 2 ** 32 })).toThrow('received number 4294967296')
  })

  test('the core checks the same bounds when TypeScript is bypassed', () => {
    const load = (threads: number) => native().loadModelSync(TINY, { executionProvider: 'cpu', threads, prompts: 'manifest', precision: 'float32' })
    for (const threads of [2 ** 32 + 2, 2 ** 32, most + 1, 0]) {
      let error: { code?: string; message: string } | undefined
      try {
        load(threads)
      } catch (err) {
        error = err as { code?: string; message: string }
      }
      expect(error?.code).toBe('INVALID_ARGUMENT')
      expect(error?.message).toContain(`received ${threads}`)
    }
    expect(codeOf(() => load(1.5))).toBe('INVALID_ARGUMENT')
    expect(codeOf(() => load(2 ** 60))).toBe('INVALID_ARGUMENT')
  })
})

describe('non-finite values', () => {
  test('a NaN no-object embedding is NO_OBJECT_INVALID', async () => {
    const error = await loadError(modelWith('noobj-nan', () => {}, { 'no_object.npy': npy([1, 16], [1, NaN]) }))
    expect(error.code).toBe('NO_OBJECT_INVALID')
    expect(error.message).toContain('non-finite')
  })

  test('a no-object embedding with no direction (all zeros, or a norm past float32) is NO_OBJECT_INVALID', async () => {
    expect((await loadError(modelWith('noobj-zero', () => {}, { 'no_object.npy': npy([1, 16]) }))).code).toBe('NO_OBJECT_INVALID')
    expect((await loadError(modelWith('noobj-huge', () => {}, { 'no_object.npy': npy([1, 16], [3e38, 3e38]) }))).code).toBe('NO_OBJECT_INVALID')
  })

  test('infinite mask prompts are PROMPTS_INVALID', async () => {
    const error = await loadError(modelWith('prompts-inf', () => {}, { 'mask_prompts.npy': npy([3, 16, 32], [0, -Infinity]) }))
    expect(error.code).toBe('PROMPTS_INVALID')
  })

  test('encodeImage on finite pixels of 3e38 is INFERENCE_FAILED, not NaN features', async () => {
    const pixels = new Float32Array(3 * S * S).fill(3e38)
    expect(codeOf(() => model.encodeImageSync({ pixels }))).toBe('INFERENCE_FAILED')
    await expect(model.encodeImage({ pixels })).rejects.toMatchObject({ code: 'INFERENCE_FAILED', message: expect.stringContaining('non-finite') })
  })

  test('±Infinity masks are INVALID_MASK reported as non-finite', async () => {
    const image = { data: new Uint8Array(4 * 3 * 3), width: 4, height: 3, channels: 3 as const }
    for (const bad of [Infinity, -Infinity]) {
      const masks = new Float32Array(12).fill(0.5)
      masks[5] = bad
      let error: { code?: string; message: string } | undefined
      try {
        model.segmentSync(image, ['a', 'b'], { masks, generator: false })
      } catch (err) {
        error = err as { code?: string; message: string }
      }
      expect(error?.code).toBe('INVALID_MASK')
      expect(error?.message).toContain(`non-finite value (${bad === Infinity ? 'inf' : '-inf'}) at pixel 5`)
      await expect(model.segment(image, ['a', 'b'], { masks, generator: false })).rejects.toMatchObject({ code: 'INVALID_MASK' })
    }
  })
})

describe('sparse class arrays are INVALID_ARGUMENT', () => {
  // eslint-disable-next-line no-sparse-arrays
  const sparse = ['sky', , 'grass'] as string[]
  const image = { data: new Uint8Array(4 * 3 * 3), width: 4, height: 3, channels: 3 as const }

  test.each([
    ['tokenize', () => model.tokenize(sparse)],
    ['encodeTextSync', () => model.encodeTextSync(sparse)],
    ['classEmbeddingsSync', () => model.classEmbeddingsSync(sparse)],
    ['classEmbeddingsSync templates', () => model.classEmbeddingsSync(['a'], { templates: sparse })],
    ['segmentSync', () => model.segmentSync(image, sparse)],
  ])('%s', (_name, call) => {
    expect(call).toThrow('Expected a string for `')
    expect(codeOf(call)).toBe('INVALID_ARGUMENT')
  })

  test('async calls reject the same way', async () => {
    await expect(model.encodeText(sparse)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    await expect(model.classEmbeddings(sparse)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    await expect(model.segment(image, sparse)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
  })
})

describe('the model loader stays in the model directory', () => {
  test.each([
    ['a ../ name', (m: any) => (m.tokenizer.vocab = '../tiny-random/bpe_simple_vocab_16e6.txt.gz')],
    ['an absolute name', (m: any) => (m.graphs.textEncoder = join(TINY, 'text_encoder.onnx'))],
    ['an absolute /etc/passwd', (m: any) => (m.tokenizer.vocab = '/etc/passwd')],
    ['a nested escape', (m: any) => (m.noObjectEmbedding = 'sub/../../x.npy')],
  ])('%s is MANIFEST_INVALID', async (name, edit) => {
    const error = await loadError(modelWith(`escape-${name.replace(/\W+/g, '-')}`, edit))
    expect(error.code).toBe('MANIFEST_INVALID')
    expect(error.message).toContain('inside the model directory')
  })

  test('a symlink pointing outside is MANIFEST_INVALID and nothing of its target is quoted', async () => {
    const secret = join(scratch, 'secret.txt')
    writeFileSync(secret, '#header\nroot:x:0:0:root:/root:/bin/bash\n')
    const dir = modelWith('symlink-out', (m) => (m.tokenizer.vocab = 'vocab.txt'))
    symlinkSync(secret, join(dir, 'vocab.txt'))
    const error = await loadError(dir)
    expect(error.code).toBe('MANIFEST_INVALID')
    expect(error.message).toContain('outside the model directory')
    expect(error.message).not.toContain('root:')
  })

  test('a symlink inside the directory is followed', () => {
    const dir = modelWith('symlink-in', (m) => (m.noObjectEmbedding = 'alias.npy'))
    symlinkSync('no_object.npy', join(dir, 'alias.npy'))
    const ok = loadModelSync(dir)
    expect(ok.manifest.noObjectEmbedding).toBe('alias.npy')
    ok.dispose()
  })

  test('a vocabulary that is not one is VOCAB_INVALID without quoting it', async () => {
    const error = await loadError(modelWith('passwd', (m) => (m.tokenizer.vocab = 'v.txt'), { 'v.txt': '#x\nroot:x:0:0:root:/root:/bin/bash\n' }))
    expect(error.code).toBe('VOCAB_INVALID')
    expect(error.message).not.toContain('root:')
  })

  test('a gzip bomb vocabulary stops at the decompression cap', async () => {
    const bomb = gzipSync(Buffer.alloc(65 * 2 ** 20, 0x61), { level: 9 })
    const error = await loadError(modelWith('bomb', () => {}, { 'bpe_simple_vocab_16e6.txt.gz': bomb }))
    expect(error.code).toBe('VOCAB_INVALID')
    expect(error.message).toContain('decompresses to more than')
  })

  test('a no-object file larger than its shape allows is refused before reading', async () => {
    const error = await loadError(modelWith('noobj-big', () => {}, { 'no_object.npy': npy([1, 16 * 1024 * 64]) }))
    expect(error.code).toBe('NO_OBJECT_INVALID')
    expect(error.message).toContain('over the limit')
  })

  test('a graph over 8 GiB is refused from its size (a sparse file)', async () => {
    const dir = modelWith('graph-big', () => {})
    truncateSync(join(dir, 'text_encoder.onnx'), 8 * 2 ** 30 + 1)
    const error = await loadError(dir)
    expect(error.code).toBe('GRAPH_MISMATCH')
    expect(error.message).toContain('over the limit')
  })

  test('a symlink to /dev/zero is refused', async () => {
    const dir = modelWith('device', (m) => (m.tokenizer.vocab = 'zero'))
    symlinkSync('/dev/zero', join(dir, 'zero'))
    expect((await loadError(dir)).code).toBe('MANIFEST_INVALID')
  })
})
