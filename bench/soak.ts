/**
 * Soak: N model.segment() calls, then N POST /segment requests over real loopback HTTP, with the
 * tiny random model and one small PNG (16x16, 3 classes). The model is a copy of the tiny one whose
 * manifest sets the processing size to 64 (short side): at OVSeg's 640 a call is about 10x
 * slower and the 20,000 calls would take most of an hour; a soak looks for what only shows after
 * many calls (RSS that keeps growing, latency that drifts), not for speed. Per
 * phase: RSS after a forced full GC (at the start, after the first 1,000 calls and every N/10
 * calls), p50/p99 latency over the first 1,000 and the last 1,000 calls (they overlap when
 * N < 2,000), and the total time.
 *
 * Phase 1 passes the PNG to segment() (so it is decoded per call, as the server does). Phase 2
 * starts the server (ovseg/server's createApp) in this process on 127.0.0.1, port 0, and sends
 * the requests with Node's fetch (undici, keep-alive), sequentially: one request in flight, so
 * that a latency is one request's service time, not queueing. RSS in phase 2 is server and client
 * together. Every answer is checked (status 200, the image's size).
 *
 *   npx tsc -p bench/tsconfig.json && node --expose-gc build/bench/soak.js [N]   (N default 10000)
 *
 * Writes build/bench/soak.json (the summary it prints).
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import sharp from 'sharp'

import { loadModel, TINY_RANDOM_MODEL_DIR } from 'ovseg'
import type { createApp as CreateApp } from '../dist/server/app'

// bench/tsconfig.json maps only `ovseg` for types; at run time the package's own exports resolve the subpath.
const { createApp } = require('ovseg/server') as { createApp: typeof CreateApp } // eslint-disable-line @typescript-eslint/no-require-imports

const ROOT = resolve(__dirname, '..', '..') // build/bench -> repo root
const CLASSES = ['grass', 'sky', 'red car']
const WINDOW = 1000
const WIDTH = 16
const HEIGHT = 16
const PROCESSING = { shortSide: 64, maxSize: 256 }

const mib = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10
const round = (ms: number) => Math.round(ms * 100) / 100

/** Nearest-rank percentile of unsorted times. */
function percentile(times: Float64Array, p: number): number {
  const sorted = Float64Array.from(times).sort()
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

/** Runs `call` n times one after another: latencies, total time and RSS readings after a full GC. */
async function phase(name: string, n: number, call: () => Promise<void>) {
  const gc = (globalThis as { gc?: () => void }).gc as () => void
  const readings: { calls: number; rssMiB: number; heapUsedMiB: number; externalMiB: number }[] = []
  const read = (calls: number) => {
    gc()
    const m = process.memoryUsage()
    readings.push({ calls, rssMiB: mib(m.rss), heapUsedMiB: mib(m.heapUsed), externalMiB: mib(m.external) })
    console.error(`${name}: ${JSON.stringify(readings[readings.length - 1])}`)
  }
  const every = Math.max(1, Math.floor(n / 10))
  const times = new Float64Array(n)
  read(0)
  const t0 = performance.now()
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await call()
    times[i] = performance.now() - t
    if (i + 1 === Math.min(WINDOW, n) || (i + 1) % every === 0) read(i + 1)
  }
  const totalS = (performance.now() - t0) / 1000 // includes the GCs of the readings (about 11 of them)
  const first = times.subarray(0, Math.min(WINDOW, n))
  const last = times.subarray(Math.max(0, n - WINDOW))
  const at = (calls: number) => readings.find((r) => r.calls === calls)?.rssMiB
  return {
    calls: n,
    totalS: round(totalS),
    latencyMs: {
      first: { calls: first.length, p50: round(percentile(first, 50)), p99: round(percentile(first, 99)) },
      last: { calls: last.length, p50: round(percentile(last, 50)), p99: round(percentile(last, 99)) },
    },
    // `after1000` (after300 when N is 300): the reading that starts the steady state.
    rssMiB: { start: at(0), [`after${first.length}`]: at(first.length), end: at(n) },
    readings,
  }
}

async function main() {
  if (!(globalThis as { gc?: () => void }).gc) throw new Error('run with node --expose-gc')
  const n = Number(process.argv[2] ?? 10000)
  if (!Number.isInteger(n) || n < 1) throw new Error(`expected a call count, got ${process.argv[2]}`)
  const rgb = new Uint8Array(WIDTH * HEIGHT * 3).map((_, i) => (i * 7919) % 251)
  const png = await sharp(rgb, { raw: { width: WIDTH, height: HEIGHT, channels: 3 } }).png().toBuffer()
  const dir = mkdtempSync(join(tmpdir(), 'ovseg-soak-'))
  cpSync(TINY_RANDOM_MODEL_DIR, dir, { recursive: true })
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'))
  manifest.processing = PROCESSING
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest))
  const model = await loadModel(dir)

  const segment = await phase('segment()', n, async () => {
    const r = await model.segment(png, CLASSES)
    if (r.width !== WIDTH || r.labels.length !== WIDTH * HEIGHT) throw new Error('bad result')
  })

  const app = await createApp(model)
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  const image = new Blob([new Uint8Array(png)], { type: 'image/png' })
  const http = await phase('HTTP', n, async () => {
    const form = new FormData()
    form.set('classes', CLASSES.join(','))
    form.set('image', image, 'soak.png')
    const r = await fetch(`${base}/segment`, { method: 'POST', body: form })
    const body = (await r.json()) as { width?: number }
    if (r.status !== 200 || body.width !== WIDTH) throw new Error(`HTTP ${r.status}: ${JSON.stringify(body).slice(0, 200)}`)
  })
  await app.close()
  model.dispose()
  rmSync(dir, { recursive: true })

  const summary = {
    model: `tiny-random, processing size ${PROCESSING.shortSide}/${PROCESSING.maxSize}`,
    image: `${WIDTH}x${HEIGHT} PNG`,
    classes: CLASSES.length,
    httpClient: 'fetch (undici, keep-alive) to 127.0.0.1, sequential: 1 request in flight',
    node: process.version,
    segmentCalls: segment,
    httpRequests: http,
  }
  console.log(JSON.stringify(summary, null, 2))
  mkdirSync(join(ROOT, 'build', 'bench'), { recursive: true })
  writeFileSync(join(ROOT, 'build', 'bench', 'soak.json'), JSON.stringify(summary, null, 2))
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
