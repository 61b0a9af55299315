/**
 * The bad-input catalogue: each hostile-but-ordinary input a client, an operator or a
 * caller can send, with the outcome it must have: a status and a documented code, no crash, no
 * hang. The server runs over a loopback socket; the CLI and calls that once aborted the process
 * run as child processes. Every case is bounded in time.
 */
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { crc32, deflateSync } from 'node:zlib'

import sharp from 'sharp'

import { loadModelSync, overlayPng, type Model } from '../ts'
import { ERROR_CODES } from '../ts/errors'
import { MAX_SCORE_BYTES, checkScoreSize } from '../ts/segment'
import { createApp, type ServerOptions } from '../ts/server/app'
import { codeOf, ROOT, TINY } from './helpers'

const CLI = join(ROOT, 'dist', 'cli', 'main.js')
const DIST = join(ROOT, 'dist', 'index.js')
/** Every code the package documents (the one list, which a test below holds to the README's table). */
const DOCUMENTED = new Set<string>(ERROR_CODES)
/** One case's time bound: generous for 2 shared cores, far below a hang. */
const CASE_MS = 60000

let model: Model
let scratch: string
let png: Buffer

beforeAll(async () => {
  model = loadModelSync(TINY)
  scratch = mkdtempSync(join(tmpdir(), 'ovseg-catalogue-'))
  png = await sharp({ create: { width: 80, height: 60, channels: 3, background: { r: 40, g: 160, b: 90 } } }).png().toBuffer()
})
afterAll(() => model.dispose())

/** A complete 1-bit greyscale PNG of `width` x `height` black pixels: a few KB that decode to width x height bytes. */
function pngBomb(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data])
    const out = Buffer.alloc(12 + data.length)
    out.writeUInt32BE(data.length, 0)
    body.copy(out, 4)
    out.writeUInt32BE(crc32(body), 8 + data.length)
    return out
  }
  const header = Buffer.alloc(13)
  header.writeUInt32BE(width, 0)
  header.writeUInt32BE(height, 4)
  header[8] = 1 // bit depth; colour type 0 (grey), no interlace
  const rows = Buffer.alloc((1 + Math.ceil(width / 8)) * height) // filter byte 0 + zero bits per row
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', header), chunk('IDAT', deflateSync(rows, { level: 9 })), chunk('IEND', Buffer.alloc(0))])
}

const svg = (width: number, height: number) => Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}"><rect width="10" height="10"/></svg>`)

/** A multipart/form-data body with text fields and an optional `image` file. */
function form(fields: Record<string, string>, image?: Buffer, boundary = '----ovsegcat'): { body: Buffer; headers: Record<string, string> } {
  const parts: Buffer[] = []
  for (const [name, value] of Object.entries(fields)) parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`))
  if (image) parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n`), image, Buffer.from('\r\n'))
  parts.push(Buffer.from(`--${boundary}--\r\n`))
  return { body: Buffer.concat(parts), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } }
}

interface Answer {
  status: number
  body: any // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** One HTTP request over loopback (node:http, so that the Host header can be set), bounded by `CASE_MS` or `signal`. */
function send(port: number, path: string, r: { method?: string; body?: Buffer; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: r.method ?? 'GET', headers: r.headers, timeout: CASE_MS, signal: r.signal }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        resolve({ status: res.statusCode as number, body: text.startsWith('{') ? JSON.parse(text) : text })
      })
    })
    req.on('timeout', () => req.destroy(new Error(`no answer to ${path} within ${CASE_MS} ms`)))
    req.on('error', reject)
    req.end(r.body)
  })
}

async function serve(options?: ServerOptions, m: Model = model) {
  const app = await createApp(m, options)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as { port: number }).port
  return { port, close: () => app.close(), post: (f: { body: Buffer; headers: Record<string, string> }) => send(port, '/segment', { method: 'POST', ...f }) }
}

/** The server answered with a documented code and status, and still serves. */
async function expectError(server: Awaited<ReturnType<typeof serve>>, answer: Answer, status: number, codes: string | string[]) {
  expect(answer.status).toBe(status)
  expect([codes].flat()).toContain(answer.body.error.code)
  expect(DOCUMENTED.has(answer.body.error.code)).toBe(true)
  expect((await send(server.port, '/health')).status).toBe(200)
}

test('the README documents exactly the codes ERROR_CODES lists (the core\'s come from Rust)', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const documented = new Set([...readme.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]))
  expect([...documented].sort()).toEqual([...new Set<string>(ERROR_CODES)].sort())
})

describe('server', () => {
  let server: Awaited<ReturnType<typeof serve>>
  beforeAll(async () => {
    server = await serve()
  })
  afterAll(() => server.close())

  test.each([
    // Items 1 and 7: refused from the header, before any decoding.
    ['a 1-bit PNG declaring 8000x8000 (a decompression bomb)', () => form({ classes: 'a,b' }, pngBomb(8000, 8000)), 422, 'LIMIT_EXCEEDED'],
    ['an SVG declaring 16000x16000', () => form({ classes: 'a,b,c' }, svg(16000, 16000)), 422, 'LIMIT_EXCEEDED'],
    ['4000x4000 with 20 classes (score maps over 1 GiB)', () => form({ classes: Array.from({ length: 20 }, (_, i) => `c${i}`).join(',') }, pngBomb(4000, 4000)), 422, 'LIMIT_EXCEEDED'],
    // Item 9.
    ['1,001 classes', () => form({ classes: Array.from({ length: 1001 }, (_, i) => `c${i}`).join(',') }, png), 422, 'LIMIT_EXCEEDED'],
    // Item 10.
    ['multipart without a boundary', () => ({ body: form({ classes: 'a' }, png).body, headers: { 'content-type': 'multipart/form-data' } }), 400, 'BAD_REQUEST'],
    ['multipart with an empty boundary', () => ({ body: form({ classes: 'a' }, png).body, headers: { 'content-type': 'multipart/form-data; boundary=' } }), 400, ['BAD_REQUEST', 'INVALID_IMAGE']], // busboy reads it as a form with no parts
    ['multipart with the wrong boundary', () => ({ body: form({ classes: 'a' }, png).body, headers: { 'content-type': 'multipart/form-data; boundary=other' } }), 400, 'BAD_REQUEST'],
    ['multipart garbage', () => ({ body: Buffer.from('\x00\xff garbage \r\n--\r\n'), headers: form({}).headers }), 400, 'BAD_REQUEST'],
    ['a truncated multipart body', () => { const f = form({ classes: 'a' }, png); return { ...f, body: f.body.subarray(0, f.body.length - 60) } }, 400, 'BAD_REQUEST'],
    // Item 12: never cut silently.
    ['a classes field over 1 MiB', () => form({ classes: `${'sky,'.repeat(2 ** 18)}grass` }, png), 413, 'PAYLOAD_TOO_LARGE'],
    // Item 13.
    ['threshold " "', () => form({ classes: 'a', threshold: ' ' }, png), 400, 'INVALID_ARGUMENT'],
    ['lambda "0x1"', () => form({ classes: 'a', lambda: '0x1' }, png), 400, 'INVALID_ARGUMENT'],
    ['lambda "Infinity"', () => form({ classes: 'a', lambda: 'Infinity' }, png), 400, 'INVALID_ARGUMENT'],
    ['threshold "1e"', () => form({ classes: 'a', threshold: '1e' }, png), 400, 'INVALID_ARGUMENT'],
  ])('%s', async (_what, request, status, code) => {
    await expectError(server, await server.post(request()), status, code)
  }, CASE_MS)

  test('strictly parsed numbers still take plain decimals', async () => {
    const r = await server.post(form({ classes: 'a,b', threshold: '.5', lambda: '1e-1' }, png))
    expect(r.status).toBe(200)
  }, CASE_MS)

  test('class names with control characters segment, and the legend shows them', async () => {
    const r = await server.post(form({ classes: 'a\u0001b,c\u001fd,e\ufffef' }, png))
    expect(r.status).toBe(200)
    expect(r.body.classes.map((c: { name: string }) => c.name)).toEqual(['a\u0001b', 'c\u001fd', 'e\ufffef'])
    expect((await sharp(Buffer.from(r.body.png.overlay, 'base64')).metadata()).width).toBe(80 + 260)
  }, CASE_MS)

  test('a Host header that is not a loopback name is 421', async () => {
    const evil = await send(server.port, '/health', { headers: { host: 'attacker.example:8080' } })
    await expectError(server, evil, 421, 'HOST_NOT_ALLOWED')
    await expectError(server, await send(server.port, '/segment', { method: 'POST', ...form({ classes: 'a' }, png), headers: { ...form({}).headers, host: 'attacker.example' } }), 421, 'HOST_NOT_ALLOWED')
    for (const host of ['localhost:1', '127.0.0.1', '[::1]:8080', 'LOCALHOST']) expect((await send(server.port, '/health', { headers: { host } })).status).toBe(200)
    // No CORS headers by default.
    const page = await new Promise<Record<string, unknown>>((resolve, reject) => {
      httpRequest({ host: '127.0.0.1', port: server.port, path: '/health', headers: { origin: 'http://attacker.example' }, timeout: CASE_MS }, (res) => {
        res.resume()
        resolve(res.headers)
      }).on('error', reject).end()
    })
    expect(page['access-control-allow-origin']).toBeUndefined()
  }, CASE_MS)
})

describe('server options', () => {
  test('maxScoreBytes, maxPixels, maxClasses and allowedHosts are the operator\'s', async () => {
    const server = await serve({ maxScoreBytes: 80 * 60 * 4 * 2, maxPixels: 80 * 60, maxClasses: 2, allowedHosts: ['ovseg.lan', '127.0.0.1'] })
    await expectError(server, await server.post(form({ classes: 'a,b,c' }, png)), 422, 'LIMIT_EXCEEDED')
    const big = await sharp({ create: { width: 81, height: 60, channels: 3, background: 'red' } }).png().toBuffer()
    await expectError(server, await server.post(form({ classes: 'a,b' }, big)), 422, 'LIMIT_EXCEEDED')
    expect((await server.post(form({ classes: 'a,b' }, png))).status).toBe(200)
    expect((await send(server.port, '/health', { headers: { host: 'ovseg.lan:80' } })).status).toBe(200)
    expect((await send(server.port, '/health', { headers: { host: 'localhost' } })).status).toBe(421)
    await server.close()
    const any = await serve({ allowedHosts: ['*'] })
    expect((await send(any.port, '/health', { headers: { host: 'anything.example' } })).status).toBe(200)
    await any.close()
  }, CASE_MS)
})

describe('server: work for a client that has gone', () => {
  test('queued requests whose clients disconnect are dropped; a running one sees its signal fire', async () => {
    // segment() waits at a gate the test opens, so that the queue's state is known at each step;
    // each call waits at the gate that was closed when it began.
    let open!: () => void
    let gate!: Promise<void>
    const close = () => (gate = new Promise<void>((resolve) => (open = resolve)))
    close()
    const signals: AbortSignal[] = []
    const gated = new Proxy(model, {
      get(target, key) {
        if (key === 'segment') {
          return async (...args: Parameters<Model['segment']>) => {
            signals.push(args[2]?.signal as AbortSignal)
            await gate
            return target.segment(...args)
          }
        }
        const value = Reflect.get(target, key, target)
        return typeof value === 'function' ? value.bind(target) : value
      },
    })
    const server = await serve({ concurrency: 1, queueSize: 8 }, gated)
    const health = async () => (await send(server.port, '/health')).body.queue as { running: number; waiting: number }
    const until = async (what: string, done: (q: { running: number; waiting: number }) => boolean) => {
      for (let i = 0; i < 200; i++) {
        if (done(await health())) return
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      throw new Error(`the queue never got to: ${what}`)
    }
    try {
      const running = new AbortController()
      const first = server.post(form({ classes: 'a' }, png)).catch(() => null)
      await until('one running', (q) => q.running === 1)
      const leaving = Array.from({ length: 4 }, () => new AbortController())
      const left = leaving.map((c) => send(server.port, '/segment', { method: 'POST', ...form({ classes: 'b' }, png), signal: c.signal }).catch((e: Error) => e))
      await until('four waiting', (q) => q.waiting === 4)
      for (const c of leaving) c.abort()
      await until('none waiting', (q) => q.waiting === 0 && q.running === 1)
      for (const r of await Promise.all(left)) expect(r).toMatchObject({ name: 'AbortError' })
      // The running request's client goes too: its signal fires (segment() and the pictures stop).
      const third = send(server.port, '/segment', { method: 'POST', ...form({ classes: 'c' }, png), signal: running.signal }).catch((e: Error) => e)
      await until('one more waiting', (q) => q.waiting === 1)
      open()
      close() // the third waits at a new gate
      expect((await first)?.status).toBe(200)
      await until('the third running', () => signals.length === 2)
      running.abort()
      expect(await third).toMatchObject({ name: 'AbortError' })
      for (let i = 0; i < 200 && !signals[1].aborted; i++) await new Promise((resolve) => setTimeout(resolve, 50))
      expect(signals[1].aborted).toBe(true)
      expect(signals).toHaveLength(2) // the four that left never reached segment()
      open()
      await until('idle', (q) => q.running === 0 && q.waiting === 0)
      expect((await server.post(form({ classes: 'a' }, png))).status).toBe(200)
    } finally {
      open() // a failed step leaves no request waiting at the gate
      await server.close()
    }
  }, 2 * CASE_MS)
})

describe('server: the event loop stays free during a large request', () => {
  test('/health answers within a bound while a 4000x4000 image is segmented and drawn', async () => {
    const server = await serve()
    try {
      const big = await sharp({ create: { width: 4000, height: 4000, channels: 3, background: { r: 30, g: 120, b: 200 } } }).png().toBuffer()
      let finished = false
      const work = server.post(form({ classes: 'sky,grass,road' }, big)).finally(() => (finished = true))
      const latencies: number[] = []
      // Bounded: at most 2,000 polls; the request takes seconds.
      for (let i = 0; i < 2000 && !finished; i++) {
        const t = performance.now()
        expect((await send(server.port, '/health')).status).toBe(200)
        latencies.push(performance.now() - t)
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      expect((await work).status).toBe(200)
      expect(latencies.length).toBeGreaterThan(0)
      // Per-pixel work runs in slices of about 1M pixels (milliseconds each); a single 16M-pixel loop used to hold it for seconds.
      expect(Math.max(...latencies)).toBeLessThan(1000)
    } finally {
      await server.close()
    }
  }, 2 * CASE_MS)
})

describe('library', () => {
  test('score maps past what one buffer can hold are refused up front', () => {
    const classes = (n: number) => Array.from({ length: n }, (_, i) => `c${i}`)
    expect(codeOf(() => checkScoreSize(classes(1100), 1024, 1024, { scores: true }))).toBe('INVALID_ARGUMENT')
    expect(codeOf(() => checkScoreSize(classes(1100), 1024, 1024, { scores: false }))).toBeUndefined()
    expect(codeOf(() => checkScoreSize(classes(3), 1024, 1024, { scores: true }))).toBeUndefined()
    // Demo mode with one class adds "others": 2 x 2^29 x 4 bytes is over, 1 x 2^29 x 4 is not.
    expect(codeOf(() => checkScoreSize(classes(1), 2 ** 15, 2 ** 14, { scores: true }))).toBeUndefined()
    expect(codeOf(() => checkScoreSize(classes(1), 2 ** 15, 2 ** 14, { mode: 'demo', scores: true }))).toBe('INVALID_ARGUMENT')
    expect(1100 * 1024 * 1024 * 4).toBeGreaterThan(MAX_SCORE_BYTES)
  })

  /** Runs `script` (with `o` = the built package) in a child process; returns its last stdout line as JSON. */
  function child(script: string): { ok?: boolean; code?: string; length?: number } {
    const run = spawnSync(process.execPath, ['-e', `const o = require(${JSON.stringify(DIST)});\n${script}`], { encoding: 'utf8', timeout: CASE_MS })
    expect(run.signal).toBeNull() // no abort, no hang
    expect(run.status).toBe(0)
    return JSON.parse(run.stdout.trim().split('\n').pop() as string)
  }

  test('labelPng on a 140M-pixel label map (past V8\'s array limit) does not abort', () => {
    const r = child(`o.labelPng(new Uint16Array(14000 * 10000), 14000, 10000, 3).then((b) => console.log(JSON.stringify({ ok: true, length: b.length })), (e) => console.log(JSON.stringify({ code: e.code })))`)
    expect(r.ok).toBe(true)
  })

  test('overlayPng draws class names with control characters', async () => {
    const names = ['a\u0000b', 'c\u0008d', 'e\u000ef', 'g\u001fh', 'i\ufffej', '<&>']
    const labels = Uint16Array.from({ length: 6 * 4 }, (_, p) => p % 6)
    const overlay = await overlayPng(new Uint8Array(6 * 4 * 3), 6, 4, labels, names)
    expect((await sharp(overlay).metadata()).width).toBe(6 + 260)
  })
})

describe('CLI', () => {
  function ovseg(...args: string[]) {
    const r = spawnSync(process.execPath, [CLI, ...args], { cwd: scratch, encoding: 'utf8', timeout: CASE_MS })
    expect(r.signal).toBeNull() // no abort (exit 134 is SIGABRT), no hang
    return { code: r.status, stdout: r.stdout, stderr: r.stderr }
  }

  beforeAll(async () => {
    mkdirSync(join(scratch, 'images'))
    writeFileSync(join(scratch, 'images', 'small.png'), png)
  })

  test.each([
    ['--classes-file /dev/zero', ['--classes-file', '/dev/zero'], /INVALID_ARGUMENT classes file \/dev\/zero is over the limit of 1048576 bytes/],
    ['a classes file with 70,000 names', ['--classes-file', 'many.txt'], /INVALID_ARGUMENT 70000 classes, over the limit of 65535/],
    ['a classes file that is a directory', ['--classes-file', 'images'], /INVALID_ARGUMENT classes file images is a directory/],
  ])('%s is a usage error (exit 2)', (_what, args, message) => {
    writeFileSync(join(scratch, 'many.txt'), Array.from({ length: 70000 }, (_, i) => `c${i}`).join('\n'))
    const r = ovseg('segment', 'images', ...args, '--model', TINY)
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(message)
  })

  test('a huge image is one failed image, reported; the others are written', () => {
    mkdirSync(join(scratch, 'huge'))
    writeFileSync(join(scratch, 'huge', 'a.png'), png)
    writeFileSync(join(scratch, 'huge', 'b.svg'), svg(20000, 20000)) // 400M pixels, over segment()'s limit
    const r = ovseg('segment', join('huge', 'a.png'), join('huge', 'b.svg'), '-c', 'a,b', '-o', 'huge-out', '--model', TINY)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/b\.svg: INVALID_IMAGE/)
    expect(r.stderr).toMatch(/wrote 3 files to huge-out; 1 of 2 images failed/)
  })

  test('class names with control characters are written, and the count is what is on disk', () => {
    writeFileSync(join(scratch, 'controls.txt'), 'a\u0001b\nc\u001fd\ne\ufffef\n')
    const r = ovseg('segment', join('images', 'small.png'), '--classes-file', 'controls.txt', '-o', 'controls-out', '--model', TINY)
    expect(r.code).toBe(0)
    expect(r.stderr).toMatch(/wrote 3 files to controls-out\n/)
  })

  test('serve takes --allow-host and the limits', () => {
    const r = ovseg('serve', '--help')
    expect(r.code).toBe(0)
    for (const flag of ['--allow-host', '--max-pixels', '--max-classes', '--max-score-mb']) expect(r.stdout).toContain(flag)
  })
})
