/**
 * Cross-request batching: throughput (images/s) and latency (p50/p99) of concurrent segment()
 * calls on one model, batching off (`batch: false`, each call runs its own crops, the behaviour
 * before batching) against on (`DEFAULT_BATCH` with `onCpu: true`), at concurrency 1, 4 and 16. Each request is a
 * 640x480 image with caller masks (no generator), 5 classes; the class matrix is cached first.
 * Per concurrency level, two rounds in one process, off then on, then on then off; images/s is
 * the mean of the rounds, the percentiles are over both rounds' latencies.
 *
 *   npm run build:bench && node build/bench/batching.js [MODEL_DIR:MASKS:REQUESTS_PER_WORKER ...]
 *
 * Default: the tiny geometry (models/tiny-random) and the ViT-B/16 geometry
 * (build/parity/vit-b-16/model, made by `npm test`), 8 masks per request.
 */
import { availableParallelism } from 'node:os'
import { join, resolve } from 'node:path'

import { DEFAULT_BATCH, loadModel, runtimeInfo, type Model } from 'ovseg'

const ROOT = resolve(__dirname, '..', '..') // build/bench -> repo root
const CLASSES = ['grass', 'red car', 'building, edifice', 'sky', 'water']
const WIDTH = 640
const HEIGHT = 480
const LEVELS = [1, 4, 16]

function testImage(): Uint8Array {
  const data = new Uint8Array(WIDTH * HEIGHT * 3)
  for (let i = 0; i < data.length; i++) data[i] = (i * 7919 + (i >> 9) * 31) % 251
  return data
}

/** Request `r`'s masks: `count` rectangles, different per request. */
function masksOf(r: number, count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const mask = new Uint8Array(WIDTH * HEIGHT)
    const seed = r * 131 + i * 17
    const [x0, y0] = [(seed * 37) % (WIDTH - 200), (seed * 53) % (HEIGHT - 150)]
    const [w, h] = [40 + ((seed * 3) % 160), 30 + ((seed * 5) % 120)]
    for (let y = y0; y < y0 + h; y++) mask.fill(1, y * WIDTH + x0, y * WIDTH + x0 + w)
    return mask
  })
}

const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)]

interface Row {
  imagesPerS: number
  latencies: number[]
  runs: number
}

/** `workers` loops, each making `perWorker` calls one after another; every latency and the wall time. */
async function load(model: Model, workers: number, perWorker: number, masks: number): Promise<Row> {
  const image = { data: testImage(), width: WIDTH, height: HEIGHT, channels: 3 as const }
  const requests = Array.from({ length: workers * perWorker }, (_, r) => masksOf(r, masks))
  const latencies: number[] = []
  const runsBefore = model.stats().cropBatches
  const start = performance.now()
  let next = 0
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (next < requests.length) {
        const r = next++
        const t0 = performance.now()
        await model.segment(image, CLASSES, { masks: requests[r], generator: false })
        latencies.push(performance.now() - t0)
      }
    }),
  )
  const wall = performance.now() - start
  return { imagesPerS: (requests.length / wall) * 1e3, latencies, runs: model.stats().cropBatches - runsBefore }
}

async function benchModel(dir: string, masks: number, perWorker: number) {
  const off = await loadModel(dir, { batch: false })
  const on = await loadModel(dir, { batch: { onCpu: true } })
  for (const m of [off, on]) {
    await m.classEmbeddings(CLASSES, { includeNoObject: m.manifest.noObjectEmbedding !== null })
    await m.segment({ data: testImage(), width: WIDTH, height: HEIGHT, channels: 3 }, CLASSES, { masks: masksOf(0, masks), generator: false })
  }
  const name = off.manifest.name
  for (const workers of LEVELS) {
    const a1 = await load(off, workers, perWorker, masks)
    const b1 = await load(on, workers, perWorker, masks)
    const b2 = await load(on, workers, perWorker, masks)
    const a2 = await load(off, workers, perWorker, masks)
    const [a, b] = [[a1, a2], [b1, b2]].map(([x, y]) => ({
      imagesPerS: (x.imagesPerS + y.imagesPerS) / 2,
      p50: percentile([...x.latencies, ...y.latencies], 50),
      p99: percentile([...x.latencies, ...y.latencies], 99),
      runs: x.runs + y.runs,
    }))
    const f = (x: number) => x.toFixed(x < 10 ? 2 : 0)
    console.log(
      `| ${name} | ${masks} | ${workers} | 2 x ${workers * perWorker} | ${f(a.imagesPerS)} | ${f(b.imagesPerS)} | ${(b.imagesPerS / a.imagesPerS).toFixed(2)}x | ` +
        `${f(a.p50)} / ${f(a.p99)} | ${f(b.p50)} / ${f(b.p99)} | ${2 * workers * perWorker} / ${b.runs} |`,
    )
  }
  off.dispose()
  on.dispose()
}

async function main() {
  const args = process.argv.slice(2)
  const specs = args.length > 0 ? args : [`${join(ROOT, 'models', 'tiny-random')}:8:16`, `${join(ROOT, 'build', 'parity', 'vit-b-16', 'model')}:8:2`]
  console.log('| model | masks/request | concurrency | requests | off images/s | on images/s | on/off | off p50 / p99 ms | on p50 / p99 ms | encoder runs off / on |')
  console.log('|---|---|---|---|---|---|---|---|---|---|')
  for (const spec of specs) {
    const [dir, masks, perWorker] = spec.split(':')
    await benchModel(resolve(dir), Number(masks), Number(perWorker))
  }
  console.log(
    `\nONNX Runtime ${runtimeInfo()?.version}, ${availableParallelism()} cores, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}, ` +
      `batching on = ${JSON.stringify(DEFAULT_BATCH)}; p99 of n samples is the ceil(0.99 n)-th smallest`,
  )
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
