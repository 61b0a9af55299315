/**
 * A seeded, bounded fuzz of the server's request parsing: a few hundred requests made by mutating
 * valid /segment requests (multipart and JSON) and a few odd methods, paths and Host headers. The
 * one-by-one cases live in server.test.ts and catalogue.test.ts; this is the randomized sweep over
 * their combinations. Every answer must be a documented status (never a 5xx other than 503) with a
 * JSON error whose code belongs to that status, and the server must still be healthy afterwards.
 *
 * Requests go over a loopback socket with node:http, as in catalogue.test.ts: fastify's inject
 * needs an ES-module-only dependency that jest cannot load, and node:http lets us set any Host
 * header and method. A failure lists seed, case number and the request; rerun one seed with
 * FUZZ_SEED=<seed> (and FUZZ_CASES=<n> for more or fewer cases).
 */
import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'

import sharp from 'sharp'

import { loadModelSync, type Model } from '../ts'
import { createApp } from '../ts/server/app'
import { TINY } from './helpers'

const SEED = Number(process.env.FUZZ_SEED ?? 20261130)
const CASES = Number(process.env.FUZZ_CASES ?? 500)

/** The server's error codes (ts/server/app.ts) and the status each is sent with. */
const STATUS_OF: Record<string, number> = {
  BAD_REQUEST: 400, INVALID_ARGUMENT: 400, EMPTY_INPUT: 400, TEXT_TOO_LONG: 400, INVALID_IMAGE: 400, INVALID_MASK: 400,
  NOT_FOUND: 404, PAYLOAD_TOO_LARGE: 413, UNSUPPORTED_MEDIA_TYPE: 415, HOST_NOT_ALLOWED: 421, LIMIT_EXCEEDED: 422,
  QUEUE_FULL: 503, ABORTED: 503,
}

/** mulberry32: a tiny deterministic PRNG, so that a seed names one exact sequence of requests. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
}

type Rand = () => number
const int = (rand: Rand, n: number) => Math.floor(rand() * n)
const pick = <T>(rand: Rand, list: readonly T[]): T => list[int(rand, list.length)]

/** Field values that have broken parsers elsewhere: blanks, odd numbers, unicode, control characters, JSON-ish text. */
const WEIRD = [
  '', ' ', '\t\r\n', '\u0000', 'a\u0001b,\u001f', 'NaN', '1e999', '-1e999', '1e-400', '0x1', 'Infinity', '-0', '.5', '7', '-3', '1e',
  '１', '٣', '💥', '\ud800', 'é,ü,中文', '[', '["a",', '[[]]', '["", " "]', '[1, 2]', '{}', 'null', 'true', ',,,', 'demo',
  'semantic', 'SEMANTIC', '__proto__', 'constructor', 'x'.repeat(5000), Array.from({ length: 1001 }, (_, i) => `c${i}`).join(','),
  'sky,'.repeat(2 ** 18 + 1), // over the 1 MiB field limit
]
/** JSON values of every type for JSON bodies. */
const JSON_VALUES: unknown[] = [null, true, 0, -1, 1e308, 0.5, [], [1], ['a', null], [['a']], {}, { a: { b: [] } }, '', 'a,b', ...WEIRD.slice(0, 12)]
const FIELDS = ['classes', 'threshold', 'lambda', 'mode']
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'PROPFIND']
const PATHS = ['/', '/health', '/segment/', '/Segment', '/segment?mode=demo', '//segment', '/segment/../health', '/%00', '/%zz', '/segment%2f', '/x'.repeat(200)]
const HOSTS = ['', 'localhost:', '[::1]', '[::1', 'localhost:99999', 'localhost.', 'LOCALHOST:1', 'localhost:abc', '127.0.0.1:80:80', 'attacker.example', 'localhost@evil', ' localhost']
const CONTENT_TYPES = [
  'text/plain', 'application/x-www-form-urlencoded', 'application/octet-stream', 'image/png', '', 'multipart/mixed; boundary=b',
  'multipart/form-data', 'multipart/form-data; boundary=', 'multipart/form-data; boundary="q"', 'application/json; charset=utf-16', 'APPLICATION/JSON',
]

interface Part {
  name: string
  value: Buffer
  filename?: string
}

interface Req {
  method: string
  path: string
  headers: Record<string, string>
  body: Buffer
  /** What was done to the valid request, for the failure message. */
  steps: string[]
}

let model: Model
let png: Buffer
let images: Buffer[]

function multipartBody(parts: Part[], boundary: string): Buffer {
  const chunks: Buffer[] = []
  for (const p of parts) {
    const file = p.filename === undefined ? '' : `; filename="${p.filename}"\r\nContent-Type: image/png`
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"${file}\r\n\r\n`), p.value, Buffer.from('\r\n'))
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return Buffer.concat(chunks)
}

/** A valid multipart request, then 1-3 changes to its parts, its content type or its bytes. */
function multipartCase(rand: Rand, steps: string[]): { headers: Record<string, string>; body: Buffer } {
  const boundary = `----fuzz${int(rand, 1e9)}`
  const parts: Part[] = [
    { name: 'classes', value: Buffer.from('grass,sky,red car') },
    { name: 'image', value: png, filename: 'x.png' },
  ]
  let contentType = `multipart/form-data; boundary=${boundary}`
  const bytes: ((b: Buffer) => Buffer)[] = []
  for (let n = 1 + int(rand, 3); n > 0; n--) {
    const what = int(rand, 9)
    const field = pick(rand, FIELDS)
    if (what <= 1) {
      const value = pick(rand, WEIRD)
      steps.push(`field ${field}=${JSON.stringify(value.slice(0, 40))}`)
      parts.push({ name: field, value: Buffer.from(value) })
    } else if (what === 2) {
      const i = int(rand, parts.length)
      steps.push(`drop part ${parts[i]?.name}`)
      parts.splice(i, 1)
    } else if (what === 3 && parts.length > 0) {
      const p = pick(rand, parts)
      steps.push(`duplicate part ${p.name}`)
      parts.push(p)
    } else if (what === 4) {
      const i = int(rand, images.length)
      steps.push(`image #${i}`)
      const part = { name: 'image', value: images[i], filename: pick(rand, ['x.png', '', '../x', '\u00e9.png']) }
      const at = parts.findIndex((p) => p.name === 'image')
      if (at < 0) parts.push(part)
      else parts[at] = part
    } else if (what === 5) {
      const name = pick(rand, ['', 'picture', '__proto__', 'constructor', 'classes[]', 'image"; x="'])
      steps.push(`part named ${JSON.stringify(name)}`)
      parts.push({ name, value: pick(rand, [Buffer.from('a'), png]), filename: rand() < 0.5 ? 'y.png' : undefined })
    } else if (what === 6) {
      contentType = pick(rand, [...CONTENT_TYPES, `multipart/form-data; boundary=${boundary}x`, `multipart/form-data; boundary="${boundary}"`])
      steps.push(`content-type ${JSON.stringify(contentType)}`)
    } else {
      bytes.push(byteMutation(rand, steps))
    }
  }
  return { headers: { 'content-type': contentType }, body: bytes.reduce<Buffer>((b, f) => f(b), multipartBody(parts, boundary)) }
}

/** A valid JSON request with random types in its properties, or a body that is not an object, or broken text. */
function jsonCase(rand: Rand, steps: string[]): { headers: Record<string, string>; body: Buffer } {
  let body: unknown = { image: png.toString('base64'), classes: ['grass', 'sky'] }
  const bytes: ((b: Buffer) => Buffer)[] = []
  let contentType = 'application/json'
  for (let n = 1 + int(rand, 3); n > 0; n--) {
    const what = int(rand, 7)
    const obj = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : undefined
    if (what <= 1 && obj) {
      const key = pick(rand, [...FIELDS, 'image', '__proto__', 'constructor'])
      const value = pick(rand, JSON_VALUES)
      steps.push(`json ${key}=${JSON.stringify(value)?.slice(0, 40)}`)
      // defineProperty: a plain `obj.__proto__ =` would set the prototype, not send the key.
      Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true })
    } else if (what === 2 && obj) {
      const image = pick(rand, ['', '!!!!', 'data:image/png;base64,', `data:,${png.toString('base64')}`, Buffer.from('garbage').toString('base64'), pick(rand, images).toString('base64'), png.toString('base64url')])
      steps.push(`json image ${JSON.stringify(image.slice(0, 30))}`)
      obj.image = image
    } else if (what === 3) {
      body = pick(rand, JSON_VALUES)
      steps.push(`json body ${JSON.stringify(body)?.slice(0, 40)}`)
    } else if (what === 4) {
      contentType = pick(rand, CONTENT_TYPES)
      steps.push(`content-type ${JSON.stringify(contentType)}`)
    } else {
      bytes.push(byteMutation(rand, steps))
    }
  }
  return { headers: { 'content-type': contentType }, body: bytes.reduce<Buffer>((b, f) => f(b), Buffer.from(JSON.stringify(body) ?? '')) }
}

/** Truncate, flip, insert or repeat bytes of the finished body. */
function byteMutation(rand: Rand, steps: string[]): (b: Buffer) => Buffer {
  const kind = pick(rand, ['truncate', 'flip', 'insert', 'repeat'] as const)
  const r1 = rand()
  const r2 = rand()
  steps.push(`bytes ${kind} at ${r1.toFixed(3)}`)
  return (b) => {
    const at = Math.floor(r1 * b.length)
    if (kind === 'truncate') return b.subarray(0, at)
    if (kind === 'repeat') return Buffer.concat([b, b])
    const out = Buffer.from(b)
    if (kind === 'flip') {
      for (let i = 0; i < 1 + r2 * 8; i++) out[Math.floor(((r1 + i * r2) % 1) * out.length)] ^= 1 << i % 8
      return out
    }
    return Buffer.concat([out.subarray(0, at), Buffer.from([0, 0xff, 0x0d, 0x0a, 0x2d, 0x2d].slice(0, 1 + Math.floor(r2 * 6))), out.subarray(at)])
  }
}

/** Case `i` of seed `SEED`: its own PRNG, so that each case can be rebuilt alone (seeds spread apart so that seed 1 and seed 2 share no cases). */
function makeCase(i: number): Req {
  const rand = mulberry32(Math.imul(SEED, 0x9e3779b1) + i)
  const steps: string[] = []
  const { headers, body } = rand() < 0.6 ? multipartCase(rand, steps) : jsonCase(rand, steps)
  let method = 'POST'
  let path = '/segment'
  if (rand() < 0.1) {
    method = pick(rand, METHODS)
    steps.push(`method ${method}`)
  }
  if (rand() < 0.1) {
    path = pick(rand, PATHS)
    steps.push(`path ${path.slice(0, 40)}`)
  }
  if (rand() < 0.1) {
    headers.host = pick(rand, HOSTS)
    steps.push(`host ${JSON.stringify(headers.host)}`)
  }
  return { method, path, headers, body, steps }
}

interface Answer {
  status: number
  text: string
}

/**
 * One request on its own connection (no keep-alive: a broken request must not leak into the next).
 * Content-Length is always set: Node sends a GET, HEAD, DELETE or OPTIONS body without one, and the
 * server would read those bytes as a second, garbage request (HTTP framing is not what this fuzzes).
 */
function send(port: number, r: Pick<Req, 'method' | 'path' | 'headers'> & { body?: Buffer }): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: r.path, method: r.method, headers: { host: 'localhost', ...r.headers, 'content-length': String(r.body?.length ?? 0) }, agent: false, timeout: 30000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode as number, text: Buffer.concat(chunks).toString() }))
    })
    req.on('timeout', () => req.destroy(new Error('no answer within 30 s')))
    req.on('error', reject)
    req.end(r.body)
  })
}

/** What is wrong with an answer, or undefined. */
function problem(r: Req, a: Answer): string | undefined {
  if (a.status === 200) return undefined
  if (!Object.values(STATUS_OF).includes(a.status)) return `status ${a.status}`
  if (r.method === 'HEAD') return a.text === '' ? undefined : 'HEAD answer with a body'
  let error: { code?: unknown; message?: unknown } | undefined
  try {
    error = JSON.parse(a.text).error
  } catch {
    return 'body is not JSON'
  }
  if (typeof error?.code !== 'string' || typeof error.message !== 'string') return 'no { error: { code, message } }'
  if (STATUS_OF[error.code] !== a.status) return `code ${error.code} with status ${a.status}`
  return undefined
}

beforeAll(async () => {
  model = loadModelSync(TINY)
  // Tiny images: requests that get through parsing still run the model, and 8x8 keeps them short.
  png = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 40, g: 160, b: 90 } } }).png().toBuffer()
  images = [
    png,
    Buffer.alloc(0),
    png.subarray(0, 40), // truncated
    Buffer.from('not an image'),
    await sharp(png).jpeg().toBuffer(),
    await sharp(png).gif().toBuffer(),
    Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="16000" height="16000"/>'), // over maxPixels from the header alone
  ]
})
afterAll(() => model.dispose())

test(`${CASES} fuzzed requests (seed ${SEED}) get documented answers, and the server stays healthy`, async () => {
  const app = await createApp(model)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as { port: number }).port
  const failures: string[] = []
  const seen: Record<number, number> = {}
  try {
    for (let i = 0; i < CASES; i++) {
      const r = makeCase(i)
      let why: string | undefined
      try {
        const a = await send(port, r)
        seen[a.status] = (seen[a.status] ?? 0) + 1
        why = problem(r, a) && `${problem(r, a)}: ${a.text.slice(0, 200)}`
      } catch (err) {
        why = `no answer: ${(err as Error).message}`
      }
      if (why) failures.push(`seed ${SEED} case ${i} (${r.method} ${r.path.slice(0, 40)} ${r.steps.join('; ')}): ${why}`)
    }
    console.log(`seed ${SEED}: statuses ${JSON.stringify(seen)}`)
    expect(failures).toEqual([])
    // The sweep reaches every kind of answer; if it stops doing so, the generator has gone blind.
    expect(Object.keys(seen).map(Number).sort()).toEqual(expect.arrayContaining([200, 400, 404, 413, 415, 421, 422]))
    const health = await send(port, { method: 'GET', path: '/health', headers: {} })
    expect(health.status).toBe(200)
    expect(JSON.parse(health.text).queue).toMatchObject({ running: 0, waiting: 0 })
  } finally {
    await app.close()
  }
}, 120000)

test('bytes that are not HTTP get a 400 in the same JSON error shape', async () => {
  const app = await createApp(model)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as { port: number }).port
  try {
    for (const raw of ['GARBAGE\r\n\r\n', 'POST /segment HTTP/1.1\r\nContent-Length: x\r\n\r\n', '\u0000\u0001\u0002\r\n\r\n']) {
      const answer = await new Promise<string>((resolve, reject) => {
        let text = ''
        const socket = connect(port, '127.0.0.1', () => socket.write(raw))
        socket.on('data', (chunk) => (text += chunk.toString()))
        socket.on('close', () => resolve(text))
        socket.on('error', reject)
      })
      expect(answer).toMatch(/^HTTP\/1\.1 400 /)
      expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toMatchObject({ error: { code: 'BAD_REQUEST' } })
    }
  } finally {
    await app.close()
  }
})
