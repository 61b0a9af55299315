/**
 * Image-encoder throughput (crops/s) vs batch size, ovseg vs onnxruntime-node's JS API, one run.
 *   npm run bench:image [-- MODEL_DIR]   (default: the ViT-B/16-geometry random model from the parity fixtures)
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import os from 'node:os'

import { loadModel, runtimeInfo } from 'ovseg'
import { BaselineImageEncoder, ONNXRUNTIME_NODE_LIBRARY } from './baseline-ort-js'

const ROOT = resolve(__dirname, '..', '..') // build/bench -> repo root
const BATCHES = [1, 8, 32, 100]

function inputs(batch: number, size: number): { pixels: Uint8Array; masks: Uint8Array } {
  const pixels = new Uint8Array(batch * size * size * 3)
  const masks = new Uint8Array(batch * size * size)
  let seed = 12345
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32)
  for (let i = 0; i < pixels.length; i++) pixels[i] = Math.floor(rand() * 256)
  for (let b = 0; b < batch; b++) {
    // A box covering a varying part of the crop, as masked crops do.
    const x0 = Math.floor(rand() * size * 0.4)
    const y0 = Math.floor(rand() * size * 0.4)
    for (let y = y0; y < y0 + size / 2; y++) masks.fill(1, b * size * size + y * size + x0, b * size * size + y * size + x0 + size / 2)
  }
  return { pixels, masks }
}

/**
 * Median seconds per call of each side, after one warm-up call each. Repetitions alternate which
 * side goes first, so neither profits from running right after the other (caches, clocks).
 */
async function timeBoth(a: () => Promise<unknown>, b: () => Promise<unknown>, repeats: number): Promise<[number, number]> {
  await a()
  await b()
  const times: [number[], number[]] = [[], []]
  const once = async (fn: () => Promise<unknown>, into: number[]) => {
    const t0 = process.hrtime.bigint()
    await fn()
    into.push(Number(process.hrtime.bigint() - t0) / 1e9)
  }
  for (let i = 0; i < repeats; i++) {
    if (i % 2 === 0) {
      await once(a, times[0])
      await once(b, times[1])
    } else {
      await once(b, times[1])
      await once(a, times[0])
    }
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]
  return [median(times[0]), median(times[1])]
}

async function main() {
  const dir = resolve(process.argv[2] ?? join(ROOT, 'build', 'parity', 'vit-b-16', 'model'))
  const ours = await loadModel(dir, { runtimeLibraryPath: ONNXRUNTIME_NODE_LIBRARY })
  const theirs = await BaselineImageEncoder.load(dir)
  const size = ours.imageSize
  const rows: string[] = []
  const results: object[] = []
  console.log(`model ${ours.manifest.name} (${size}px, patch ${ours.manifest.clip.patchSize}, prompt depth ${ours.promptDepth}); ` +
    `ONNX Runtime ${runtimeInfo()?.version}; ${os.cpus().length} CPUs (${os.cpus()[0]?.model}); default intra-op threads on both sides`)
  for (const batch of BATCHES) {
    const { pixels, masks } = inputs(batch, size)
    const repeats = Math.max(3, Math.round(24 / batch))
    // Same features from both, or the comparison means nothing.
    const a = (await ours.encodeImage({ pixels, masks })).data
    const b = await theirs.encode(pixels, masks)
    let diff = 0
    for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i] - b[i]))
    if (diff > 1e-4) throw new Error(`outputs differ by ${diff}`)
    const [oursS, theirsS] = await timeBoth(() => ours.encodeImage({ pixels, masks }), () => theirs.encode(pixels, masks), repeats)
    const row = { batch, repeats, oursCropsPerS: batch / oursS, baselineCropsPerS: batch / theirsS, ratio: theirsS / oursS, maxAbsDiff: diff }
    results.push(row)
    rows.push(`| ${batch} | ${row.oursCropsPerS.toFixed(2)} | ${row.baselineCropsPerS.toFixed(2)} | ${row.ratio.toFixed(3)} |`)
    console.log(JSON.stringify(row))
  }
  const table = ['| batch | ovseg crops/s | onnxruntime-node JS crops/s | ours/theirs |', '|---|---|---|---|', ...rows].join('\n')
  console.log(`\n${table}`)
  mkdirSync(join(ROOT, 'build', 'bench'), { recursive: true })
  writeFileSync(join(ROOT, 'build', 'bench', 'image-encoder.json'), JSON.stringify({ dir, results }, null, 2))
  ours.dispose()
  await theirs.release()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
