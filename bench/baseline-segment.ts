/**
 * The baseline for the segment() benchmark: OVSeg's inference written in plain TypeScript over
 * onnxruntime-node, as a competent TS developer would (sharp for the resize, typed arrays,
 * precomputed interpolation taps, one batched encoder run), on the same ONNX graphs. It
 * records the time spent inside `session.run` so the bench can compare the time outside it.
 *
 * The class matrix (tokenizer + text encoder) is computed once by the caller and passed in: both
 * sides cache it, and the timed calls run no text encoder.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import * as ort from 'onnxruntime-node'
import sharp from 'sharp'

import { readNpyF32 } from './baseline-ort-js'

interface Manifest {
  clip: { imageSize: number; patchSize: number; visionWidth: number; visionLayers: number; embedDim: number }
  pixelMean: number[]
  pixelStd: number[]
  graphs: { imageEncoder: string }
  maskPrompts: { file: string } | null
  generator: { file: string; pixelMean: number[]; pixelStd: number[]; sizeDivisibility: number; maskStride: number }
}

/** Bilinear taps (align_corners=False): source indices and weights per output index. The two
 * bilinear loops below use them fused with what follows (sigmoid; argmax), as one pass each. */
function linearTaps(input: number, output: number): { i0: Int32Array; i1: Int32Array; w1: Float32Array } {
  const i0 = new Int32Array(output)
  const i1 = new Int32Array(output)
  const w1 = new Float32Array(output)
  const scale = input / output
  for (let d = 0; d < output; d++) {
    const src = Math.max(0, (d + 0.5) * scale - 0.5)
    const a = Math.min(Math.floor(src), input - 1)
    i0[d] = a
    i1[d] = Math.min(a + 1, input - 1)
    w1[d] = src - a
  }
  return { i0, i1, w1 }
}

/** Bicubic taps (a = -0.75, half-pixel centres, clamped borders, no antialias): 4 indices and weights per output index. */
function cubicTaps(input: number, output: number): { idx: Int32Array; w: Float32Array } {
  const idx = new Int32Array(output * 4)
  const w = new Float32Array(output * 4)
  const a = -0.75
  const k = (x: number) => {
    x = Math.abs(x)
    if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1
    if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0
  }
  const scale = input / output
  for (let d = 0; d < output; d++) {
    const src = (d + 0.5) * scale - 0.5
    const f = Math.floor(src)
    const t = src - f
    for (let j = 0; j < 4; j++) {
      idx[d * 4 + j] = Math.min(Math.max(f - 1 + j, 0), input - 1)
      w[d * 4 + j] = k(t - (j - 1))
    }
  }
  return { idx, w }
}

function softmaxRows(x: Float32Array, width: number): void {
  for (let r = 0; r < x.length / width; r++) {
    let max = -Infinity
    for (let i = 0; i < width; i++) max = Math.max(max, x[r * width + i])
    let sum = 0
    for (let i = 0; i < width; i++) sum += x[r * width + i] = Math.exp(x[r * width + i] - max)
    for (let i = 0; i < width; i++) x[r * width + i] /= sum
  }
}

/** `100 * normalize(a) @ b^T` for `a` [n, dim] and unit rows `b` [k, dim]. */
function cosineLogits(a: Float32Array, b: Float32Array, dim: number): Float32Array {
  const n = a.length / dim
  const k = b.length / dim
  const out = new Float32Array(n * k)
  for (let i = 0; i < n; i++) {
    let norm = 0
    for (let d = 0; d < dim; d++) norm += a[i * dim + d] ** 2
    norm = Math.sqrt(norm)
    for (let j = 0; j < k; j++) {
      let dot = 0
      for (let d = 0; d < dim; d++) dot += a[i * dim + d] * b[j * dim + d]
      out[i * k + j] = (100 * dot) / norm
    }
  }
  return out
}

export interface BaselineResult {
  labels: Uint16Array
  sessionMs: number
}

export class BaselineSegmenter {
  private constructor(
    private readonly m: Manifest,
    private readonly generator: ort.InferenceSession,
    private readonly encoder: ort.InferenceSession,
    private readonly prompts: Float32Array,
    private readonly gate: Float32Array,
  ) {}

  static async load(dir: string): Promise<BaselineSegmenter> {
    const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest
    const opts: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all' }
    const generator = await ort.InferenceSession.create(join(dir, m.generator.file), opts)
    const encoder = await ort.InferenceSession.create(join(dir, m.graphs.imageEncoder), opts)
    const { imageSize, patchSize, visionLayers, visionWidth } = m.clip
    const patches = (imageSize / patchSize) ** 2
    const prompts = new Float32Array(visionLayers * patches * visionWidth)
    const gate = new Float32Array(visionLayers)
    if (m.maskPrompts) {
      const p = readNpyF32(join(dir, m.maskPrompts.file))
      const [depth, rows, width] = p.shape
      for (let d = 0; d < depth; d++) {
        for (let i = 0; i < patches; i++) prompts.set(p.data.subarray((d * rows + (rows === 1 ? 0 : i)) * width, (d * rows + (rows === 1 ? 0 : i) + 1) * width), (d * patches + i) * width)
        gate[d] = 1
      }
    }
    return new BaselineSegmenter(m, generator, encoder, prompts, gate)
  }

  /**
   * OVSeg's semantic path with the generator: `rgb` [h, w, 3]; `classMatrix` [C + 1, E] unit rows
   * (the no-object row last).
   */
  async segment(rgb: Uint8Array, width: number, height: number, classMatrix: Float32Array, classes: number, lambda = 0.7, threshold = 0.4): Promise<BaselineResult> {
    let sessionMs = 0
    const timedRun = async (session: ort.InferenceSession, feeds: Record<string, ort.Tensor>) => {
      const t0 = performance.now()
      const out = await session.run(feeds)
      sessionMs += performance.now() - t0
      return out
    }
    const { clip, generator: g } = this.m
    const dim = clip.embedDim
    // 1. Resize (short side 640, long side at most 2560).
    const scale = Math.min(640 / Math.min(height, width), 2560 / Math.max(height, width))
    const rh = Math.floor(height * scale + 0.5)
    const rw = Math.floor(width * scale + 0.5)
    const resized = new Uint8Array(await sharp(rgb, { raw: { width, height, channels: 3 } }).resize(rw, rh, { fit: 'fill', kernel: 'linear' }).raw().toBuffer())
    const plane = rh * rw

    // 2. Generator: normalize, zero-pad, run, upsample to the padded size, crop, sigmoid.
    const div = g.sizeDivisibility
    const ph = Math.ceil(rh / div) * div
    const pw = Math.ceil(rw / div) * div
    const input = new Float32Array(3 * ph * pw)
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < rh; y++) {
        for (let x = 0; x < rw; x++) input[(c * ph + y) * pw + x] = (resized[(y * rw + x) * 3 + c] - g.pixelMean[c]) / g.pixelStd[c]
      }
    }
    const gen = await timedRun(this.generator, { image: new ort.Tensor('float32', input, [1, 3, ph, pw]) })
    const logits = gen.mask_logits.data as Float32Array
    const [, queries, sh, sw] = gen.mask_logits.dims as number[]
    const embeddings = gen.query_embeddings.data as Float32Array
    const rows = linearTaps(sh, ph)
    const cols = linearTaps(sw, pw)
    const masks = new Float32Array(queries * plane)
    for (let q = 0; q < queries; q++) {
      const src = q * sh * sw
      for (let y = 0; y < rh; y++) {
        const r0 = src + rows.i0[y] * sw
        const r1 = src + rows.i1[y] * sw
        const wy = rows.w1[y]
        for (let x = 0; x < rw; x++) {
          const a = cols.i0[x]
          const b = cols.i1[x]
          const wx = cols.w1[x]
          const top = logits[r0 + a] * (1 - wx) + logits[r0 + b] * wx
          const bottom = logits[r1 + a] * (1 - wx) + logits[r1 + b] * wx
          masks[q * plane + y * rw + x] = 1 / (1 + Math.exp(-(top * (1 - wy) + bottom * wy)))
        }
      }
    }

    // 3. Mask cropping: threshold, tight box, CLIP-mean fill, normalize, bicubic stretch; keep masks.
    const s = clip.imageSize
    const grid = s / clip.patchSize
    const mean = this.m.pixelMean.map((v) => v * 255)
    const std = this.m.pixelStd.map((v) => v * 255)
    const valid: number[] = []
    const crops: Float32Array[] = []
    const keeps: Float32Array[] = []
    for (let q = 0; q < queries; q++) {
      const mask = masks.subarray(q * plane, (q + 1) * plane)
      let x0 = rw
      let y0 = rh
      let x1 = -1
      let y1 = -1
      for (let y = 0; y < rh; y++) {
        for (let x = 0; x < rw; x++) {
          if (mask[y * rw + x] > threshold) {
            if (x < x0) x0 = x
            if (x > x1) x1 = x
            if (y < y0) y0 = y
            y1 = y
          }
        }
      }
      if (x1 < 0) continue
      valid.push(q)
      const bw = x1 - x0 + 1
      const bh = y1 - y0 + 1
      const box = new Float32Array(3 * bh * bw)
      for (let y = 0; y < bh; y++) {
        for (let x = 0; x < bw; x++) {
          const inside = mask[(y0 + y) * rw + x0 + x] > threshold
          const p = ((y0 + y) * rw + x0 + x) * 3
          for (let c = 0; c < 3; c++) box[(c * bh + y) * bw + x] = inside ? (resized[p + c] - mean[c]) / std[c] : 0
        }
      }
      const ct = cubicTaps(bw, s)
      const rt = cubicTaps(bh, s)
      const horizontal = new Float32Array(3 * bh * s)
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < bh; y++) {
          const row = (c * bh + y) * bw
          for (let x = 0; x < s; x++) {
            let v = 0
            for (let j = 0; j < 4; j++) v += ct.w[x * 4 + j] * box[row + ct.idx[x * 4 + j]]
            horizontal[(c * bh + y) * s + x] = v
          }
        }
      }
      const crop = new Float32Array(3 * s * s)
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < s; y++) {
          for (let x = 0; x < s; x++) {
            let v = 0
            for (let j = 0; j < 4; j++) v += rt.w[y * 4 + j] * horizontal[(c * bh + rt.idx[y * 4 + j]) * s + x]
            crop[(c * s + y) * s + x] = v
          }
        }
      }
      const keep = new Float32Array(grid * grid)
      for (let y = 0; y < s; y++) {
        const sy = Math.floor((y * bh) / s)
        for (let x = 0; x < s; x++) {
          const sx = Math.floor((x * bw) / s)
          if (mask[(y0 + sy) * rw + x0 + sx] > threshold) keep[Math.floor(y / clip.patchSize) * grid + Math.floor(x / clip.patchSize)] = 1
        }
      }
      crops.push(crop)
      keeps.push(keep)
    }

    // 4. CLIP on the valid crops, generator scores, ensemble.
    const pGen = cosineLogits(embeddings, classMatrix, dim)
    softmaxRows(pGen, classes + 1)
    const probs = new Float32Array(queries * classes)
    for (let q = 0; q < queries; q++) for (let c = 0; c < classes; c++) probs[q * classes + c] = Math.pow(pGen[q * (classes + 1) + c], 1 - lambda)
    if (valid.length > 0) {
      const batch = valid.length
      const pixels = new Float32Array(batch * 3 * s * s)
      const keep = new Float32Array(batch * grid * grid)
      crops.forEach((c, i) => pixels.set(c, i * 3 * s * s))
      keeps.forEach((k, i) => keep.set(k, i * grid * grid))
      const out = await timedRun(this.encoder, {
        pixels: new ort.Tensor('float32', pixels, [batch, 3, s, s]),
        keep: new ort.Tensor('float32', keep, [batch, grid * grid]),
        prompts: new ort.Tensor('float32', this.prompts, [clip.visionLayers, grid * grid, clip.visionWidth]),
        prompt_gate: new ort.Tensor('float32', this.gate, [clip.visionLayers]),
      })
      const all = cosineLogits(out.image_features.data as Float32Array, classMatrix, dim)
      const pClip = new Float32Array(batch * classes)
      for (let i = 0; i < batch; i++) pClip.set(all.subarray(i * (classes + 1), i * (classes + 1) + classes), i * classes)
      softmaxRows(pClip, classes)
      valid.forEach((q, i) => {
        for (let c = 0; c < classes; c++) probs[q * classes + c] *= Math.pow(pClip[i * classes + c], lambda)
      })
    }

    // 5. Aggregate over the soft masks, resize to the image, argmax.
    const sem = new Float32Array(classes * plane)
    for (let q = 0; q < queries; q++) {
      const mask = masks.subarray(q * plane, (q + 1) * plane)
      for (let c = 0; c < classes; c++) {
        const p = probs[q * classes + c]
        const out = c * plane
        for (let i = 0; i < plane; i++) sem[out + i] += p * mask[i]
      }
    }
    const yr = linearTaps(rh, height)
    const xr = linearTaps(rw, width)
    const labels = new Uint16Array(height * width)
    const best = new Float32Array(height * width).fill(-Infinity)
    for (let c = 0; c < classes; c++) {
      const src = c * plane
      for (let y = 0; y < height; y++) {
        const r0 = src + yr.i0[y] * rw
        const r1 = src + yr.i1[y] * rw
        const wy = yr.w1[y]
        for (let x = 0; x < width; x++) {
          const a = xr.i0[x]
          const b = xr.i1[x]
          const wx = xr.w1[x]
          const v = (sem[r0 + a] * (1 - wx) + sem[r0 + b] * wx) * (1 - wy) + (sem[r1 + a] * (1 - wx) + sem[r1 + b] * wx) * wy
          if (v > best[y * width + x]) {
            best[y * width + x] = v
            labels[y * width + x] = c
          }
        }
      }
    }
    return { labels, sessionMs }
  }

  async release(): Promise<void> {
    await this.generator.release()
    await this.encoder.release()
  }
}
