/**
 * The Redis queue in one process, over a real redis-server: `serve --redis` answers as a local
 * server does, jobs keep their error codes, bad and slow jobs fail for good while the others go on,
 * and `ovseg enqueue` writes what `ovseg segment` writes and resumes. (Several worker processes,
 * killed workers and a restarted Redis: queue-processes.test.ts.)
 */
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import sharp from 'sharp'

import { loadModelSync, type Model } from '../ts'
import { SegmentQueue, startWorker, type SegmentJobData, type SegmentWorker } from '../ts/queue'
import { createApp } from '../ts/server/app'
import { ROOT, TINY } from './helpers'
import { startRedis, type RedisServer } from './redis'

const CLI = join(ROOT, 'dist', 'cli', 'main.js')
const CLASSES = ['grass', 'red car', 'sky']

let redis: RedisServer
let scratch: string
let model: Model
let png: Buffer

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'ovseg-queue-'))
  redis = await startRedis(scratch)
  model = loadModelSync(TINY)
  const rgb = new Uint8Array(96 * 64 * 3).map((_, i) => (i * 37) % 256)
  png = await sharp(rgb, { raw: { width: 96, height: 64, channels: 3 } }).png().toBuffer()
})
afterAll(async () => {
  model.dispose()
  await redis.stop()
})

/** A queue of its own per test (no job of one test reaches another's workers), closed after it. */
async function withQueue(name: string, fn: (queue: SegmentQueue) => Promise<void>, workerOptions: { sharedDir?: string } | null = {}): Promise<void> {
  const queue = await SegmentQueue.connect({ redis: redis.url, queue: name })
  let worker: SegmentWorker | undefined
  try {
    if (workerOptions) worker = await startWorker(model, { redis: redis.url, queue: name, stallTimeoutMs: 2000, ...workerOptions })
    await fn(queue)
  } finally {
    await worker?.close()
    await queue.close()
  }
}

async function post(base: string, url: string, body: object) {
  const r = await fetch(base + url, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } })
  return { status: r.status, headers: r.headers, body: await r.json() }
}

const job = (over: Partial<SegmentJobData> = {}): SegmentJobData => ({ image: { base64: png.toString('base64') }, name: 'x.png', classes: CLASSES, ...over })

test('serve --redis answers POST /segment as a server with the model does; async requests and GET /jobs/:id', async () => {
  await withQueue('answers', async (queue) => {
    const local = await createApp(model)
    const remote = await createApp(queue)
    try {
      const [l, r] = [await local.listen({ port: 0, host: '127.0.0.1' }), await remote.listen({ port: 0, host: '127.0.0.1' })]
      const request = { image: png.toString('base64'), classes: CLASSES, threshold: 0.3 }
      const a = await post(l, '/segment', request)
      const b = await post(r, '/segment', request)
      expect([a.status, b.status]).toEqual([200, 200])
      const { timings: ta, ...restA } = a.body
      const { timings: tb, ...restB } = b.body
      expect(Object.keys(tb)).toEqual(Object.keys(ta))
      expect(restB).toEqual(restA) // the PNGs (base64) included
      expect(restA.segments.length).toBeGreaterThan(0)

      const queued = await post(r, '/segment?async=true', request)
      expect(queued.status).toBe(202)
      expect(queued.body.url).toBe(`/jobs/${queued.body.id}`)
      let status
      for (const until = Date.now() + 90000; Date.now() < until; ) {
        status = await (await fetch(r + queued.body.url)).json()
        if (status.state === 'completed') break
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      expect(status.state).toBe('completed')
      expect(status.progress).toBe(100)
      const { timings: tc, ...restC } = status.result
      expect(restC).toEqual(restA)

      const missing = await fetch(`${r}/jobs/no-such-job`)
      expect(missing.status).toBe(404)
      expect((await missing.json()).error.code).toBe('JOB_NOT_FOUND')
      // Bad requests are refused by the front end before they become jobs.
      const bad = await post(r, '/segment', { ...request, image: Buffer.from('not an image').toString('base64') })
      expect([bad.status, bad.body.error.code]).toEqual([400, 'INVALID_IMAGE'])
      const big = await post(r, '/segment', { ...request, classes: Array.from({ length: 1001 }, (_, i) => `c${i}`) })
      expect([big.status, big.body.error.code]).toEqual([422, 'LIMIT_EXCEEDED'])
      // A server with the model runs requests itself: there is no job to ask for later.
      const noAsync = await post(l, '/segment?async=true', request)
      expect([noAsync.status, noAsync.body.error.code]).toEqual([400, 'INVALID_ARGUMENT'])
      const health = await (await fetch(`${r}/health`)).json()
      expect(health.queue).toMatchObject({ redis: 'answers', workers: 1, capacity: 8 })
    } finally {
      await local.close()
      await remote.close()
    }
  })
})

test('the queue applies backpressure: beyond queueSize waiting jobs, 503 QUEUE_FULL with Retry-After', async () => {
  await withQueue(
    'backpressure',
    async (queue) => {
      const app = await createApp(queue, { queueSize: 2 })
      try {
        const base = await app.listen({ port: 0, host: '127.0.0.1' })
        const request = { image: png.toString('base64'), classes: CLASSES }
        // No worker: the jobs wait.
        expect((await post(base, '/segment?async=1', request)).status).toBe(202)
        expect((await post(base, '/segment?async=1', request)).status).toBe(202)
        const full = await post(base, '/segment?async=1', request)
        expect([full.status, full.body.error.code, full.headers.get('retry-after')]).toEqual([503, 'QUEUE_FULL', '1'])
        // Batch jobs carry a priority and do not count against interactive requests.
        expect((await queue.counts()).waiting).toBe(2)
      } finally {
        await app.close()
      }
    },
    null,
  )
})

test('a poisoned job fails for good with its code (no retry) and the worker goes on; a slow one fails with JOB_TIMEOUT after its attempts', async () => {
  await withQueue('poison', async (queue) => {
    const corrupt = await queue.add(job({ image: { base64: Buffer.from('garbage, not an image').toString('base64') } }), { attempts: 3 })
    await expect(queue.result(corrupt)).rejects.toMatchObject({ code: 'INVALID_IMAGE' })
    const failed = await queue.status(corrupt)
    expect(failed).toMatchObject({ state: 'failed', attempts: 1, error: { code: 'INVALID_IMAGE' } })

    const good = await queue.result(await queue.add(job()))
    expect(good.summary.classes.map((c) => c.name)).toEqual(CLASSES)
    expect(good.png?.labels.length).toBeGreaterThan(0)

    // Malformed data from some other producer: refused before any work.
    const malformed = await queue.add({ ...job(), classes: 'grass' } as unknown as SegmentJobData)
    await expect(queue.result(malformed)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    // No shared directory on this worker: a job naming a path is refused.
    const path = await queue.add(job({ image: { path: '/etc/passwd' } }))
    await expect(queue.result(path)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('--shared-dir') })

    const slow = await queue.add(job({ timeoutMs: 1 }), { attempts: 2 })
    await expect(queue.result(slow)).rejects.toMatchObject({ code: 'JOB_TIMEOUT' })
    expect(await queue.status(slow)).toMatchObject({ state: 'failed', attempts: 2, error: { code: 'JOB_TIMEOUT' } })
    expect(await queue.counts()).toMatchObject({ failed: 4, completed: 1 })
  })
})

test('a worker closed with no grace puts its running job back in the queue, without using an attempt; another worker runs it', async () => {
  // A large JPEG: decoding and drawing it take long enough for the close to land mid-job (segment()
  // and the drawing then see the abort). A job that still finishes first is a lost race, not a
  // failure: the test tries again, up to 5 times.
  const large = await sharp({ create: { width: 4800, height: 3200, channels: 3, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 40 } } }).jpeg().toBuffer()
  await withQueue(
    'handback',
    async (queue) => {
      let handedBack: string | undefined
      for (let attempt = 0; attempt < 5 && !handedBack; attempt++) {
        const first = await startWorker(model, { redis: redis.url, queue: 'handback', stallTimeoutMs: 2000 })
        const id = await queue.add(job({ image: { base64: large.toString('base64') } }), { attempts: 1 })
        for (const until = Date.now() + 90000; Date.now() < until && (await queue.status(id))?.state !== 'active'; ) await new Promise((resolve) => setTimeout(resolve, 5))
        await first.close(0)
        const state = (await queue.status(id))?.state
        if (state === 'waiting') {
          expect(first.completed).toBe(0)
          handedBack = id
        } else {
          expect(state).toBe('completed') // the job won the race
        }
      }
      expect(handedBack).toBeDefined()
      const second = await startWorker(model, { redis: redis.url, queue: 'handback', stallTimeoutMs: 2000 })
      try {
        // With one attempt allowed, a hand-back that had used it would leave the job failed.
        const r = await queue.result(handedBack as string)
        expect(r.summary.width).toBe(4800)
      } finally {
        await second.close()
      }
    },
    null,
  )
})

test('jobs naming paths: read and written only under the shared directory, the files ovseg segment writes', async () => {
  const shared = join(scratch, 'shared')
  mkdirSync(join(shared, 'in'), { recursive: true })
  writeFileSync(join(shared, 'in', 'a.png'), png)
  await withQueue(
    'paths',
    async (queue) => {
      const r = await queue.result(await queue.add({ ...job({ image: { path: join(shared, 'in', 'a.png') } }), output: { dir: join(shared, 'out'), stem: 'a' } }))
      expect(r.png).toBeUndefined()
      expect(r.files?.map((f) => f.slice(shared.length))).toEqual(['/out/a.overlay.png', '/out/a.labels.png', '/out/a.json'])
      expect(JSON.parse(readFileSync(join(shared, 'out', 'a.json'), 'utf8')).classes).toEqual(r.summary.classes)
      const outside = await queue.add({ ...job({ image: { path: join(shared, 'in', 'a.png') } }), output: { dir: join(shared, '..'), stem: 'a' } })
      await expect(queue.result(outside)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('outside') })
      const escape = await queue.add(job({ image: { path: `${shared}/../queue-escape.png` } }))
      await expect(queue.result(escape)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    },
    { sharedDir: shared },
  )
})

test('ovseg enqueue writes the files ovseg segment writes, and a re-run resumes without adding jobs', async () => {
  const images = join(scratch, 'batch')
  mkdirSync(images)
  for (let k = 0; k < 4; k++) {
    const rgb = new Uint8Array(64 * 48 * 3).map((_, i) => (i * (11 + k * 6)) % 256)
    await sharp(rgb, { raw: { width: 64, height: 48, channels: 3 } }).png().toFile(join(images, `img${k}.png`))
  }
  writeFileSync(join(images, 'broken.png'), 'not a png')
  await withQueue('enqueue', async (queue) => {
    // Not spawnSync: this process runs the worker.
    const cli = (...args: string[]) =>
      new Promise<{ status: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [CLI, ...args], { cwd: scratch, timeout: 120000 })
        let stderr = ''
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
        child.on('close', (status) => resolve({ status, stderr }))
      })
    const out = join(scratch, 'enqueued')
    const run = await cli('enqueue', images, '--redis', redis.url, '--queue', 'enqueue', '--classes', CLASSES.join(','), '--out', out, '--in-flight', '2')
    expect(run.stderr).toContain('broken.png: INVALID_IMAGE')
    expect(run.status).toBe(1) // one image failed, the others are done
    const local = await cli('segment', images, '--model', TINY, '--classes', CLASSES.join(','), '--out', join(scratch, 'local'))
    expect(local.status).toBe(1)
    const files = readdirSync(out).sort()
    expect(files).toEqual(readdirSync(join(scratch, 'local')).sort())
    expect(files).toHaveLength(12)
    for (const f of files) {
      if (f.endsWith('.png')) expect(readFileSync(join(out, f))).toEqual(readFileSync(join(scratch, 'local', f)))
      else {
        const { timings: a, ...got } = JSON.parse(readFileSync(join(out, f), 'utf8'))
        const { timings: b, ...want } = JSON.parse(readFileSync(join(scratch, 'local', f), 'utf8'))
        expect(got).toEqual(want)
      }
    }
    const before = await queue.counts()
    // Results written to files are removed from Redis; the failed job stays, as a dead letter.
    expect(before).toMatchObject({ completed: 0, failed: 1 })
    const again = await cli('enqueue', images, '--redis', redis.url, '--queue', 'enqueue', '--classes', CLASSES.join(','), '--out', out)
    expect(again.stderr).toContain('4 of 5 images already have results')
    // The failed image's job is the same job (its id comes from its inputs): reported again, not run again.
    expect(again.stderr).toContain('broken.png: INVALID_IMAGE')
    expect(await queue.counts()).toEqual(before)
  })
})

test('the CLI: serve --redis and worker run as processes; bad Redis URLs and options are refused with codes', async () => {
  const run = (...args: string[]) =>
    new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [CLI, ...args], { cwd: scratch, timeout: 60000 })
      let stderr = ''
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
      child.on('close', (status) => resolve({ status, stderr }))
    })
  const badUrl = await run('worker', '--redis', 'http://user:secret@127.0.0.1:6379', '--model', TINY)
  expect(badUrl.status).toBe(2)
  expect(badUrl.stderr).toContain('INVALID_ARGUMENT')
  expect(badUrl.stderr).not.toContain('secret')
  const unreachable = await run('enqueue', join(ROOT, 'examples', 'world-scene.png'), '--redis', 'redis://127.0.0.1:1', '--classes', 'sky')
  expect([unreachable.status, unreachable.stderr]).toEqual([2, expect.stringContaining('QUEUE_UNAVAILABLE')])
  const embeddings = await run('serve', '--redis', redis.url, '--class-embeddings', 'x.bin')
  expect([embeddings.status, embeddings.stderr]).toEqual([2, expect.stringContaining('INVALID_ARGUMENT')])

  // A front end and a worker, each a process, on their own queue.
  const worker = spawn(process.execPath, [CLI, 'worker', '--redis', redis.url, '--queue', 'cli', '--model', TINY])
  const front = spawn(process.execPath, [CLI, 'serve', '--redis', redis.url, '--queue', 'cli', '--port', '0'])
  try {
    const started = (child: typeof front, pattern: RegExp) =>
      new Promise<RegExpExecArray>((resolve, reject) => {
        let stderr = ''
        child.stderr.on('data', (d: Buffer) => {
          stderr += d.toString()
          const m = pattern.exec(stderr)
          if (m) resolve(m)
        })
        child.on('exit', (code) => reject(new Error(`exited (${code}): ${stderr}`)))
      })
    const [, base] = await started(front, /on (http:\/\/127\.0\.0\.1:\d+)/)
    await started(worker, / on the queue cli at /)
    const answer = await post(base, '/segment', { image: png.toString('base64'), classes: CLASSES })
    expect(answer.status).toBe(200)
    expect(answer.body.classes.map((c: { name: string }) => c.name)).toEqual(CLASSES)
    const health = await (await fetch(`${base}/health`)).json()
    expect(health).toMatchObject({ status: 'ok', model: null, queue: { redis: 'cli', workers: 1 } })
    const exits = [front, worker].map((child) => new Promise((resolve) => child.once('exit', resolve)))
    front.kill('SIGTERM')
    worker.kill('SIGTERM')
    expect(await Promise.all(exits)).toEqual([0, 0])
  } finally {
    front.kill('SIGKILL')
    worker.kill('SIGKILL')
  }
})
