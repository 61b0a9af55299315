/**
 * OVSeg's released models on CPU: segment() with no options (the model's config defaults: its
 * processing size, threshold and ensemble weight) on a 640x480 image, 5 classes. Reports the load
 * time, the median of CALLS calls (default 3; of 2, the slower) and its stages, and the process's
 * resident memory after loading and at its peak. One model per process, so that the RSS figures
 * are that model's alone.
 *
 *   bash scripts/make-bench-models.sh --ovseg && npm run build:bench && node build/bench/generators.js MODEL_DIR [CALLS]
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import os from 'node:os'

import { loadModel, runtimeInfo } from 'ovseg'

const ROOT = resolve(__dirname, '..', '..')
const CLASSES = ['grass', 'red car', 'building, edifice', 'sky', 'water']
const MiB = 2 ** 20

function testImage(width: number, height: number): Uint8Array {
  const data = new Uint8Array(width * height * 3)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v = 120 + 90 * Math.sin(y / 29 + x / 43)
      const i = (y * width + x) * 3
      data[i] = v
      data[i + 1] = v * 0.8 + 40 * Math.cos(x / 17)
      data[i + 2] = v * 0.5 + 40 * Math.sin(y / 11)
    }
  }
  return data
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function main() {
  const dir = process.argv[2]
  if (!dir) throw new Error('usage: node build/bench/generators.js MODEL_DIR [CALLS]')
  const calls = Number(process.argv[3] ?? 3)
  const width = 640
  const height = 480
  const image = { data: testImage(width, height), width, height, channels: 3 as const }
  const rss = () => Math.round(process.memoryUsage().rss / MiB)
  const startRss = rss()
  const t0 = performance.now()
  const model = await loadModel(resolve(dir))
  const loadMs = performance.now() - t0
  const loadedRss = rss()
  const warm = await model.segment(image, CLASSES) // class embeddings cached from here on
  const samples: Record<string, number>[] = []
  for (let i = 0; i < calls; i++) {
    const t = performance.now()
    const r = await model.segment(image, CLASSES)
    samples.push({ wallMs: performance.now() - t, ...r.timings })
  }
  const stages = Object.fromEntries(
    Object.keys(samples[0]).map((k) => [k, Math.round(median(samples.map((s) => s[k])))]),
  )
  const row = {
    model: model.manifest.name,
    cpus: `${os.cpus().length} x ${os.cpus()[0]?.model}`,
    onnxRuntime: runtimeInfo()?.version,
    defaults: model.defaults,
    processing: warm.processingSize,
    proposals: warm.segments.length,
    validProposals: warm.segments.filter((s) => s.valid).length,
    calls,
    loadMs: Math.round(loadMs),
    medianMs: stages,
    rssMiB: { beforeLoad: startRss, afterLoad: loadedRss, afterCalls: rss(), peak: Math.round((process.resourceUsage().maxRSS * 1024) / MiB) },
  }
  console.log(JSON.stringify(row, null, 1))
  model.dispose()
  mkdirSync(join(ROOT, 'build', 'bench'), { recursive: true })
  writeFileSync(join(ROOT, 'build', 'bench', `generators-${basename(resolve(dir))}.json`), JSON.stringify(row, null, 2))
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
