/**
 * The Redis queue across processes, as it runs in production: `ovseg worker` processes on a real
 * redis-server. A worker killed with SIGKILL mid-job loses nothing (another runs the job again and
 * every job completes exactly once); a restarted Redis is reconnected to and the queue drains; a
 * worker told to stop finishes its job first.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'

import { QueueEvents } from 'bullmq'
import sharp from 'sharp'

import { SegmentQueue, type SegmentJobData } from '../ts/queue'
import { createApp } from '../ts/server/app'
import { ROOT, TINY } from './helpers'
import { startRedis, type RedisServer } from './redis'

const CLI = join(ROOT, 'dist', 'cli', 'main.js')
const CLASSES = ['grass', 'red car', 'sky']
/** How long a dead worker's job stays locked: short, so that the test sees the retry soon. */
const STALL_S = 2

let redis: RedisServer
let scratch: string
const images: string[] = []
const workers: ChildProcess[] = []

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'ovseg-queue-processes-'))
  redis = await startRedis(scratch)
  mkdirSync(join(scratch, 'images'))
  // Images large enough (processed at 640 px) that a job runs for a while: a kill lands mid-job.
  for (let k = 0; k < 8; k++) {
    const rgb = new Uint8Array(320 * 240 * 3).map((_, i) => (i * (7 + 4 * k)) % 256)
    const file = join(scratch, 'images', `img${k}.png`)
    await sharp(rgb, { raw: { width: 320, height: 240, channels: 3 } }).png().toFile(file)
    images.push(file)
  }
})
afterEach(() => {
  for (const w of workers.splice(0)) if (w.exitCode === null) w.kill('SIGKILL')
})
afterAll(() => redis.stop())

/** An `ovseg worker` process on `queue`; resolves once it takes jobs. */
function startWorkerProcess(queue: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const args = [CLI, 'worker', '--redis', redis.url, '--queue', queue, '--model', TINY, '--shared-dir', scratch, '--stall-timeout-s', String(STALL_S), '--grace-s', '20']
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    workers.push(child)
    let stderr = ''
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString()
      if (stderr.includes(' on the queue ')) resolve(child)
    })
    child.on('exit', (code) => reject(new Error(`the worker exited (${code}) before it was ready: ${stderr}`)))
  })
}

/** Job `k` of a run: image `k mod 8`, its result files under `out`. */
function jobData(k: number, out: string): SegmentJobData {
  return { image: { path: images[k % images.length] }, name: `job${k}`, classes: CLASSES, output: { dir: out, stem: `job${k}` } }
}

/** Counts each job's `completed` events: exactly once means one each. */
async function completions(queue: string): Promise<{ counts: Map<string, number>; events: QueueEvents }> {
  const events = new QueueEvents(queue, { connection: { url: redis.url } })
  const counts = new Map<string, number>()
  events.on('error', () => {})
  events.on('completed', ({ jobId }) => counts.set(jobId, (counts.get(jobId) ?? 0) + 1))
  await events.waitUntilReady()
  return { counts, events }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

test('200 jobs, 3 worker processes, one killed (SIGKILL) mid-job: every job completes exactly once, none is lost', async () => {
  const name = 'kill'
  const out = join(scratch, 'kill-out')
  const queue = await SegmentQueue.connect({ redis: redis.url, queue: name })
  const { counts, events } = await completions(name)
  try {
    const [victim] = await Promise.all([startWorkerProcess(name), startWorkerProcess(name), startWorkerProcess(name)])
    const victimName = `${hostname()}:${victim.pid}`
    const ids = await Promise.all(Array.from({ length: 200 }, (_, k) => queue.add(jobData(k, out), { jobId: `kill-${k}` })))
    const results = Promise.all(ids.map((id) => queue.result(id)))

    // Once some jobs are done, kill the victim while it runs one.
    let killedDuring: string[] = []
    for (const until = Date.now() + 90000; Date.now() < until && killedDuring.length === 0; ) {
      await sleep(20)
      if (counts.size < 20) continue
      const active = await queue.bullQueue.getActive()
      const mine = active.filter((j) => j.processedBy === victimName)
      if (mine.length === 0) continue
      victim.kill('SIGKILL')
      await new Promise((resolve) => victim.once('exit', resolve))
      // Jobs the dead worker still holds (it may have finished one just before dying).
      killedDuring = (await queue.bullQueue.getActive()).filter((j) => j.processedBy === victimName).map((j) => j.id as string)
    }
    expect(killedDuring.length).toBeGreaterThan(0)

    await results
    expect(await queue.counts()).toMatchObject({ completed: 200, failed: 0, active: 0, waiting: 0 })
    await sleep(200) // the last events
    expect([...counts.keys()].sort()).toEqual([...ids].sort())
    expect([...counts.values()].every((n) => n === 1)).toBe(true)
    // The killed worker's job was run again, by another worker.
    for (const id of killedDuring) {
      const job = await queue.bullQueue.getJob(id)
      expect(job?.processedBy).not.toBe(victimName)
      expect(job?.stalledCounter).toBeGreaterThanOrEqual(1)
    }
    // One whole set of files per job, no temporary file left behind.
    const files = readdirSync(out)
    expect(files.filter((f) => f.endsWith('.json'))).toHaveLength(200)
    expect(files).toHaveLength(600)
  } finally {
    await events.close()
    await queue.close()
  }
})

test('Redis restarted mid-run: a front end answers 503 meanwhile, the workers reconnect and the queue drains', async () => {
  const name = 'restart'
  const out = join(scratch, 'restart-out')
  const queue = await SegmentQueue.connect({ redis: redis.url, queue: name })
  try {
    await Promise.all([startWorkerProcess(name), startWorkerProcess(name)])
    const ids = await Promise.all(Array.from({ length: 60 }, (_, k) => queue.add(jobData(k, out), { jobId: `restart-${k}` })))
    for (const until = Date.now() + 90000; Date.now() < until && (await queue.counts()).completed < 15; ) await sleep(20)
    expect((await queue.counts()).completed).toBeLessThan(45) // mid-run
    const app = await createApp(queue)
    try {
      const base = await app.listen({ port: 0, host: '127.0.0.1' })
      await redis.stop()
      // Meanwhile a front end says so, and does not hang.
      const r = await fetch(`${base}/segment`, { method: 'POST', body: JSON.stringify({ image: readFileSync(images[0]).toString('base64'), classes: CLASSES }), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(30000) })
      expect([r.status, (await r.json()).error.code, r.headers.get('retry-after')]).toEqual([503, 'QUEUE_UNAVAILABLE', '1'])
    } finally {
      await app.close()
    }
    await sleep(1000)
    await redis.start()
    const results = await Promise.all(ids.map((id) => queue.result(id)))
    expect(results).toHaveLength(60)
    const counts = await queue.counts()
    expect(counts).toMatchObject({ completed: 60, failed: 0, active: 0, waiting: 0 })
    expect(readdirSync(out).filter((f) => f.endsWith('.json'))).toHaveLength(60)
  } finally {
    await queue.close()
  }
})

test('SIGTERM: the worker takes no new job, finishes the one it runs, and exits 0', async () => {
  const name = 'sigterm'
  const out = join(scratch, 'sigterm-out')
  const queue = await SegmentQueue.connect({ redis: redis.url, queue: name })
  try {
    const worker = await startWorkerProcess(name)
    const ids = await Promise.all(Array.from({ length: 20 }, (_, k) => queue.add(jobData(k, out), { jobId: `sigterm-${k}` })))
    let running: string | undefined
    for (const until = Date.now() + 90000; Date.now() < until && !running; ) {
      await sleep(10)
      running = (await queue.bullQueue.getActive())[0]?.id
    }
    expect(running).toBeDefined()
    let stderr = ''
    worker.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
    const exited = new Promise<number | null>((resolve) => worker.once('exit', resolve))
    worker.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(stderr).toMatch(/stopped after \d+ jobs/)
    const status = await queue.status(running as string)
    expect(status?.state).toBe('completed')
    // The rest wait for another worker.
    const counts = await queue.counts()
    expect(counts.active).toBe(0)
    expect(counts.completed + counts.waiting).toBe(ids.length)
    expect(counts.waiting).toBeGreaterThan(0)
  } finally {
    await queue.close()
  }
})
