/**
 * The baseline: the same image-encoder graph through onnxruntime-node's JS API, with the
 * pre/post-processing a competent TS developer would write (normalize, keep mask, prompts, L2).
 */
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'

import * as ort from 'onnxruntime-node'

/** onnxruntime-node's own ONNX Runtime library: ovseg loads the same one, so both sides run one runtime version. */
export const ONNXRUNTIME_NODE_LIBRARY = join(
  dirname(require.resolve('onnxruntime-node/package.json')),
  'bin', 'napi-v6', process.platform, process.arch,
  { linux: 'libonnxruntime.so.1', darwin: 'libonnxruntime.1.dylib', win32: 'onnxruntime.dll' }[process.platform as string] ?? '',
)

interface Clip {
  imageSize: number
  patchSize: number
  visionWidth: number
  visionLayers: number
  embedDim: number
}

/** A float32 .npy file (the model directory's prompts). */
export function readNpyF32(path: string): { shape: number[]; data: Float32Array } {
  const buf = readFileSync(path)
  const headerLen = buf.readUInt16LE(8)
  const header = buf.subarray(10, 10 + headerLen).toString('latin1')
  const shape = (/'shape': \(([^)]*)\)/.exec(header)?.[1] ?? '').split(',').map((s) => s.trim()).filter(Boolean).map(Number)
  const bytes = buf.subarray(10 + headerLen)
  return { shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) }
}

export class BaselineImageEncoder {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly clip: Clip,
    private readonly mean: number[],
    private readonly std: number[],
    private readonly prompts: Float32Array,
    private readonly gate: Float32Array,
  ) {}

  static async load(dir: string): Promise<BaselineImageEncoder> {
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'))
    const clip: Clip = manifest.clip
    const session = await ort.InferenceSession.create(join(dir, manifest.graphs.imageEncoder), { graphOptimizationLevel: 'all' })
    const patches = (clip.imageSize / clip.patchSize) ** 2
    const prompts = new Float32Array(clip.visionLayers * patches * clip.visionWidth)
    const gate = new Float32Array(clip.visionLayers)
    if (manifest.maskPrompts) {
      const p = readNpyF32(join(dir, manifest.maskPrompts.file))
      const [depth, rows, width] = p.shape
      for (let d = 0; d < depth; d++) {
        for (let i = 0; i < patches; i++) {
          const src = (d * rows + (rows === 1 ? 0 : i)) * width
          prompts.set(p.data.subarray(src, src + width), (d * patches + i) * width)
        }
        gate[d] = 1
      }
    }
    return new BaselineImageEncoder(session, clip, manifest.pixelMean, manifest.pixelStd, prompts, gate)
  }

  /** `pixels`: [B, S, S, 3] RGB bytes; `masks`: [B, S, S]. Returns L2-normalized [B, E] features. */
  async encode(pixels: Uint8Array, masks: Uint8Array): Promise<Float32Array> {
    const { imageSize: s, patchSize: patch, visionLayers: l, visionWidth: w, embedDim } = this.clip
    const batch = pixels.length / (s * s * 3)
    const plane = s * s
    const chw = new Float32Array(batch * 3 * plane)
    for (let b = 0; b < batch; b++) {
      for (let c = 0; c < 3; c++) {
        const m = this.mean[c] * 255
        const sd = this.std[c] * 255
        const out = (b * 3 + c) * plane
        for (let i = 0; i < plane; i++) chw[out + i] = (pixels[(b * plane + i) * 3 + c] - m) / sd
      }
    }
    const grid = s / patch
    const keep = new Float32Array(batch * grid * grid)
    for (let b = 0; b < batch; b++) {
      for (let y = 0; y < s; y++) {
        for (let x = 0; x < s; x++) {
          if (masks[b * plane + y * s + x] !== 0) keep[b * grid * grid + Math.floor(y / patch) * grid + Math.floor(x / patch)] = 1
        }
      }
    }
    const outputs = await this.session.run({
      pixels: new ort.Tensor('float32', chw, [batch, 3, s, s]),
      keep: new ort.Tensor('float32', keep, [batch, grid * grid]),
      prompts: new ort.Tensor('float32', this.prompts, [l, grid * grid, w]),
      prompt_gate: new ort.Tensor('float32', this.gate, [l]),
    })
    const features = outputs.image_features.data as Float32Array
    for (let r = 0; r < batch; r++) {
      const row = features.subarray(r * embedDim, (r + 1) * embedDim)
      let norm = 0
      for (const v of row) norm += v * v
      norm = Math.sqrt(norm)
      for (let i = 0; i < embedDim; i++) row[i] /= norm
    }
    return features
  }

  async release(): Promise<void> {
    await this.session.release()
  }
}
