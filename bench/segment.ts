/**
 * End-to-end segment() at 100 proposals: ovseg vs the plain-TS pipeline over onnxruntime-node
 * (baseline-segment.ts), same graphs, same 640x480 image, 5 classes, lambda 0.7. For each side:
 * wall time per call, time inside ONNX Runtime's session runs, and the rest ("outside ORT").
 * Repetitions alternate which side goes first; medians are reported. The class matrix is cached on
 * both sides (a warm-up call each), so no timed call runs the text encoder.
 *
 *   bash scripts/make-bench-models.sh && npm run build:bench && node build/bench/segment.js [MODEL_DIR...]
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import os from 'node:os'

import { loadModel, runtimeInfo } from 'ovseg'
import { BaselineSegmenter } from './baseline-segment'
import { ONNXRUNTIME_NODE_LIBRARY } from './baseline-ort-js'

const ROOT = resolve(__dirname, '..', '..') // build/bench -> repo root
const CLASSES = ['grass', 'red car', 'building, edifice', 'sky', 'water']
const DEFAULT_MODELS = ['tiny-100', 'vit-b-16-100'].map((m) => join(ROOT, 'build', 'bench-models', m))

function testImage(width: number, height: number): Uint8Array {
  const data = new Uint8Array(width * height * 3)
  let seed = 7
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v = 120 + 90 * Math.sin(y / 29 + x / 43)
      const i = (y * width + x) * 3
      data[i] = Math.max(0, Math.min(255, v + (rand() - 0.5) * 50))
      data[i + 1] = Math.max(0, Math.min(255, v * 0.8 + (rand() - 0.5) * 50))
      data[i + 2] = Math.max(0, Math.min(255, v * 0.5 + (rand() - 0.5) * 50))
    }
  }
  return data
}

interface Sample {
  totalMs: number
  ortMs: number
  stages?: Record<string, number>
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]

async function benchModel(dir: string) {
  const width = 640
  const height = 480
  const rgb = testImage(width, height)
  const image = { data: rgb, width, height, channels: 3 as const }
  const ours = await loadModel(dir, { runtimeLibraryPath: ONNXRUNTIME_NODE_LIBRARY })
  const theirs = await BaselineSegmenter.load(dir)
  const matrix = (await ours.classEmbeddings(CLASSES, { includeNoObject: true })).data
  const runOurs = async (): Promise<Sample & { labels: Uint16Array; proposals: number; valid: number }> => {
    const t0 = performance.now()
    const r = await ours.segment(image, CLASSES, { lambda: 0.7 })
    const totalMs = performance.now() - t0
    return { totalMs, ortMs: r.timings.onnxRuntimeMs, stages: { ...r.timings }, labels: r.labels, proposals: r.segments.length, valid: r.segments.filter((s) => s.valid).length }
  }
  const runTheirs = async (): Promise<Sample & { labels: Uint16Array }> => {
    const t0 = performance.now()
    const r = await theirs.segment(rgb, width, height, matrix, CLASSES.length, 0.7)
    return { totalMs: performance.now() - t0, ortMs: r.sessionMs, labels: r.labels }
  }
  const warmOurs = await runOurs()
  const warmTheirs = await runTheirs()
  let same = 0
  for (let i = 0; i < warmOurs.labels.length; i++) same += Number(warmOurs.labels[i] === warmTheirs.labels[i])
  const repeats = warmOurs.totalMs > 5000 ? 3 : 9
  const a: Sample[] = []
  const b: Sample[] = []
  for (let i = 0; i < repeats; i++) {
    if (i % 2 === 0) {
      a.push(await runOurs())
      b.push(await runTheirs())
    } else {
      b.push(await runTheirs())
      a.push(await runOurs())
    }
  }
  const summary = (xs: Sample[]) => {
    const totalMs = median(xs.map((x) => x.totalMs))
    const ortMs = median(xs.map((x) => x.ortMs))
    const outsideMs = median(xs.map((x) => x.totalMs - x.ortMs))
    const stageNames = Object.keys(xs[0].stages ?? {})
    const stagesMs = Object.fromEntries(stageNames.map((k) => [k, median(xs.map((x) => (x.stages as Record<string, number>)[k]))]))
    return { totalMs, ortMs, outsideMs, outsideShare: outsideMs / totalMs, ...(stageNames.length ? { stagesMs } : {}) }
  }
  const row = {
    model: ours.manifest.name,
    clip: `${ours.manifest.clip.imageSize}px/${ours.manifest.clip.patchSize}, width ${ours.manifest.clip.visionWidth} x ${ours.manifest.clip.visionLayers}`,
    image: `${width}x${height}`,
    proposals: warmOurs.proposals,
    validProposals: warmOurs.valid,
    repeats,
    ours: summary(a),
    baseline: summary(b),
    labelAgreement: same / warmOurs.labels.length,
  }
  ours.dispose()
  await theirs.release()
  return {
    ...row,
    outsideRatio: row.baseline.outsideMs / row.ours.outsideMs,
    endToEndRatio: row.baseline.totalMs / row.ours.totalMs,
  }
}

async function main() {
  const dirs = process.argv.length > 2 ? process.argv.slice(2).map((d) => resolve(d)) : DEFAULT_MODELS
  console.log(`ONNX Runtime ${runtimeInfo()?.version ?? '(loaded on first model)'}; ${os.cpus().length} CPUs (${os.cpus()[0]?.model}); default intra-op threads on both sides`)
  const results = []
  const rows: string[] = []
  for (const dir of dirs) {
    const r = await benchModel(dir)
    console.log(JSON.stringify(r))
    results.push(r)
    const f = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`)
    rows.push(
      `| ${r.model} | ${r.proposals} (${r.validProposals} valid) | ${f(r.ours.totalMs)} | ${f(r.ours.outsideMs)} (${(100 * r.ours.outsideShare).toFixed(2)}%) | ` +
        `${f(r.baseline.totalMs)} | ${f(r.baseline.outsideMs)} (${(100 * r.baseline.outsideShare).toFixed(2)}%) | ${r.outsideRatio.toFixed(1)}x | ${r.endToEndRatio.toFixed(3)} | ${(100 * r.labelAgreement).toFixed(1)}% |`,
    )
  }
  const table = [
    '| model | proposals | ovseg total | ovseg outside ORT (share) | plain TS total | plain TS outside ORT (share) | outside ORT, TS / ovseg | end-to-end, TS / ovseg | same labels |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n')
  console.log(`\n${table}`)
  mkdirSync(join(ROOT, 'build', 'bench'), { recursive: true })
  writeFileSync(join(ROOT, 'build', 'bench', 'segment.json'), JSON.stringify(results, null, 2))
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
