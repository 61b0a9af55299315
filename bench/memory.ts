/**
 * Memory over many segment() calls with a small model: RSS after 100 calls vs after 1,000 (the
 * bound: within 5%). The tiny random model runs its 16-query generator plus 4 caller masks
 * on a 640x480 image, async (the libuv pool path). A full GC runs before each reading so that JS
 * garbage not yet collected does not count as a leak.
 *
 *   npm run build:bench && node --expose-gc build/bench/memory.js [CALLS]
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

import { loadModel, TINY_RANDOM_MODEL_DIR } from 'ovseg'

const ROOT = resolve(__dirname, '..', '..')

async function main() {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) throw new Error('run with node --expose-gc')
  const calls = Number(process.argv[2] ?? 1000)
  const width = 640
  const height = 480
  const data = new Uint8Array(width * height * 3).map((_, i) => (i * 7919) % 251)
  const masks = Array.from({ length: 4 }, (_, m) => new Uint8Array(width * height).fill(1, m * 40000, m * 40000 + 60000))
  const model = await loadModel(TINY_RANDOM_MODEL_DIR)
  const readings: { calls: number; rssMiB: number; heapUsedMiB: number; externalMiB: number }[] = []
  const read = (n: number) => {
    gc()
    const m = process.memoryUsage()
    const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10
    readings.push({ calls: n, rssMiB: mib(m.rss), heapUsedMiB: mib(m.heapUsed), externalMiB: mib(m.external) })
    console.log(JSON.stringify(readings[readings.length - 1]))
  }
  const t0 = performance.now()
  for (let i = 1; i <= calls; i++) {
    const r = await model.segment({ data, width, height, channels: 3 }, ['grass', 'sky', 'red car'], { masks })
    if (r.labels.length !== width * height) throw new Error('bad result')
    if (i === 10 || i === 100 || i % 250 === 0) read(i)
  }
  const at100 = readings.find((r) => r.calls === 100)
  const last = readings[readings.length - 1]
  const growth = at100 ? (last.rssMiB - at100.rssMiB) / at100.rssMiB : NaN
  const result = { calls, msPerCall: (performance.now() - t0) / calls, readings, rssGrowthFrom100: growth }
  console.log(`RSS after 100 calls ${at100?.rssMiB} MiB, after ${calls} ${last.rssMiB} MiB: ${(100 * growth).toFixed(2)}% (bound: 5%)`)
  mkdirSync(join(ROOT, 'build', 'bench'), { recursive: true })
  writeFileSync(join(ROOT, 'build', 'bench', 'memory.json'), JSON.stringify(result, null, 2))
  model.dispose()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
