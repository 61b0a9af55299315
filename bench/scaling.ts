/**
 * Scale-out through the Redis queue: throughput (jobs/s) of 1, 2 and 4 `ovseg worker` processes
 * on one redis-server, side by side in one run. Each worker runs with `--threads 1`, so that N
 * workers use N cores (this is what N machines would add); the last row is one worker using every
 * core, ONNX Runtime's default, for comparison. Jobs carry the image bytes (no shared storage):
 * 640x480 PNGs, 3 classes, the model's generator. Per row, 2 jobs per worker warm up first.
 *
 *   npm run build && npm run build:bench && node build/bench/scaling.js [MODEL_DIR] [JOBS]
 *
 * Default: models/tiny-random, 80 jobs per row. Needs redis-server on the PATH (scripts/setup.sh).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { availableParallelism, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

import sharp from 'sharp'
import { SegmentQueue } from 'ovseg/queue'

const ROOT = resolve(__dirname, '..', '..') // build/bench -> repo root
const CLI = join(ROOT, 'dist', 'cli', 'main.js')
const CLASSES = ['grass', 'red car', 'sky']

async function freePort(): Promise<number> {
  return new Promise((done) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port
      server.close(() => done(port))
    })
  })
}

function startWorker(redis: string, queue: string, model: string, threads: number | undefined): Promise<ChildProcess> {
  return new Promise((done, fail) => {
    const args = [CLI, 'worker', '--redis', redis, '--queue', queue, '--model', model, ...(threads ? ['--threads', String(threads)] : [])]
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString()
      if (stderr.includes(' on the queue ')) done(child)
    })
    child.on('exit', (code) => fail(new Error(`worker exited (${code}): ${stderr}`)))
  })
}

/** CPU seconds (user + system) a process has used, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in clock ticks (USER_HZ = 100)
}

/** Jobs per second over `jobs` jobs added at once, and the mean time inside segment() (the summary's `timings.totalMs`). */
async function run(queue: SegmentQueue, images: string[], jobs: number): Promise<{ perS: number; segmentMs: number }> {
  const start = performance.now()
  const ids = await Promise.all(Array.from({ length: jobs }, (_, k) => queue.add({ image: { base64: images[k % images.length] }, name: `job${k}`, classes: CLASSES })))
  const results = await Promise.all(ids.map((id) => queue.result(id)))
  const perS = jobs / ((performance.now() - start) / 1000)
  return { perS, segmentMs: results.reduce((sum, r) => sum + r.summary.timings.totalMs, 0) / jobs }
}

async function main() {
  const model = resolve(process.argv[2] ?? join(ROOT, 'models', 'tiny-random'))
  const jobs = Number(process.argv[3] ?? 80)
  const dir = mkdtempSync(join(tmpdir(), 'ovseg-bench-scaling-'))
  const port = await freePort()
  const redisProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  while (spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() !== 'PONG') await new Promise((r) => setTimeout(r, 50))
  const redis = `redis://127.0.0.1:${port}`
  const images = await Promise.all(
    Array.from({ length: 4 }, async (_, k) => {
      const rgb = new Uint8Array(640 * 480 * 3).map((_, i) => (i * (7 + 4 * k) + (i >> 11)) % 256)
      return (await sharp(rgb, { raw: { width: 640, height: 480, channels: 3 } }).png().toBuffer()).toString('base64')
    }),
  )
  console.log(`model ${model}, ${jobs} jobs per row, ${availableParallelism()} cores, Node ${process.version}`)
  const rows: Array<{ label: string; perS: number; segmentMs: number; cpu: { workers: number; redis: number; producer: number } }> = []
  for (const [n, threads] of [[1, 1], [2, 1], [4, 1], [1, undefined]] as Array<[number, number | undefined]>) {
    const name = `bench-${n}-${threads ?? 'all'}`
    const queue = await SegmentQueue.connect({ redis, queue: name })
    const workers = await Promise.all(Array.from({ length: n }, () => startWorker(redis, name, model, threads)))
    await run(queue, images, 2 * n)
    const pids = { workers: workers.map((w) => w.pid as number), redis: redisProcess.pid as number }
    const before = { workers: pids.workers.map(cpuSeconds), redis: cpuSeconds(pids.redis), self: process.cpuUsage() }
    const { perS, segmentMs } = await run(queue, images, jobs)
    const self = process.cpuUsage(before.self)
    const cpu = {
      workers: pids.workers.map(cpuSeconds).reduce((a, b) => a + b, 0) - before.workers.reduce((a, b) => a + b, 0),
      redis: cpuSeconds(pids.redis) - before.redis,
      producer: (self.user + self.system) / 1e6,
    }
    for (const w of workers) w.kill('SIGTERM')
    await Promise.all(workers.map((w) => new Promise((r) => (w.exitCode === null ? w.once('exit', r) : r(null)))))
    await queue.close()
    rows.push({ label: `${n} worker${n > 1 ? 's' : ''} × ${threads ? `${threads} thread` : 'all cores'}`, perS, segmentMs, cpu })
  }
  const ms = (s: number) => `${((1000 * s) / jobs).toFixed(0)}`
  console.log('\n| workers | jobs/s | vs 1 worker × 1 thread | segment() ms, mean | CPU ms per job: workers | producer | redis-server |\n|---|---|---|---|---|---|---|')
  for (const r of rows) console.log(`| ${r.label} | ${r.perS.toFixed(1)} | ${(r.perS / rows[0].perS).toFixed(2)}x | ${r.segmentMs.toFixed(0)} | ${ms(r.cpu.workers)} | ${ms(r.cpu.producer)} | ${ms(r.cpu.redis)} |`)
  redisProcess.kill('SIGTERM')
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
