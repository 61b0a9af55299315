/** `ovseg serve`'s HTTP API over a real socket: good and bad requests, concurrency, a full queue. */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import sharp from 'sharp'

import { loadModelSync, type Model } from '../ts'
import { createApp, type ServerOptions } from '../ts/server/app'
import { ROOT, tinyModelCopy } from './helpers'

const CLASSES = ['grass', 'red car', 'sky']
let model: Model
let png: Buffer
let rgb: Uint8Array

/** A multipart/form-data body with text fields and an optional `image` file. */
function multipart(fields: Record<string, string>, image?: Buffer, fileField = 'image'): { payload: Buffer; headers: Record<string, string> } {
  const boundary = '----ovsegtest'
  const parts: Buffer[] = []
  for (const [name, value] of Object.entries(fields)) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`))
  }
  if (image) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${fileField}"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n`), image, Buffer.from('\r\n'))
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`))
  return { payload: Buffer.concat(parts), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } }
}

interface Served {
  inject(r: { method?: string; url: string; payload?: unknown; headers?: Record<string, string> }): Promise<Reply>
  close(): Promise<void>
}

interface Reply {
  statusCode: number
  headers: Record<string, string>
  body: string
  json(): any // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** The app listening on a free local port, with an inject-like helper over fetch. (fastify's own
 * inject needs an ES-module-only dependency that jest cannot load on Node 20.) */
async function serve(options?: ServerOptions, on: Model = model): Promise<Served> {
  const app = await createApp(on, options)
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    async inject({ method = 'GET', url, payload, headers = {} }) {
      let body: Blob | string | undefined
      if (Buffer.isBuffer(payload)) body = new Blob([new Uint8Array(payload)])
      else if (typeof payload === 'string') body = payload
      else if (payload !== undefined) {
        body = JSON.stringify(payload)
        headers = { 'content-type': 'application/json', ...headers }
      }
      const r = await fetch(base + url, { method, body, headers })
      const text = await r.text()
      const replyHeaders: Record<string, string> = {}
      r.headers.forEach((value, name) => (replyHeaders[name] = value))
      return { statusCode: r.status, headers: replyHeaders, body: text, json: () => JSON.parse(text) }
    },
    close: () => app.close(),
  }
}

async function greyPixels(base64: string): Promise<Buffer> {
  return sharp(Buffer.from(base64, 'base64')).toColourspace('b-w').raw().toBuffer()
}

beforeAll(async () => {
  model = loadModelSync(`${ROOT}/models/tiny-random`)
  const width = 80
  const height = 60
  rgb = new Uint8Array(width * height * 3).map((_, i) => (i * 37) % 256)
  png = await sharp(rgb, { raw: { width, height, channels: 3 } }).png().toBuffer()
})
afterAll(() => model.dispose())

test('GET /health and the page', async () => {
  const app = await serve()
  const health = await app.inject({ url: '/health' })
  expect(health.statusCode).toBe(200)
  expect(health.json()).toMatchObject({ status: 'ok', model: 'tiny-random', queue: { running: 0, waiting: 0, capacity: 8 } })
  const page = await app.inject({ url: '/' })
  expect(page.statusCode).toBe(200)
  expect(page.headers['content-type']).toMatch(/text\/html/)
  expect(page.body).toContain('data-testid="legend"')
  await app.close()
})

test("a request without a mode gets the model's (here demo, from its manifest), the score limit included", async () => {
  const dir = tinyModelCopy(mkdtempSync(join(tmpdir(), 'ovseg-server-')), 'demo-defaults', (m) => {
    m.version = 2
    m.defaults = { mode: 'demo' }
  })
  const demo = loadModelSync(dir)
  // Score maps of one class fit, of two do not: demo mode appends "others" to a single class.
  const app = await serve({ maxScoreBytes: 80 * 60 * 4 }, demo)
  const classesOf = async (fields: Record<string, string>) => {
    const r = await app.inject({ method: 'POST', url: '/segment', ...multipart({ classes: 'sky', ...fields }, png) })
    return [r.statusCode, r.statusCode === 200 ? r.json().classes.map((c: { name: string }) => c.name) : r.json().error.code]
  }
  expect(await classesOf({})).toEqual([422, 'LIMIT_EXCEEDED'])
  expect(await classesOf({ mode: '' })).toEqual([422, 'LIMIT_EXCEEDED']) // the page's "model default"
  expect(await classesOf({ mode: 'semantic' })).toEqual([200, ['sky']])
  await app.close()
  const roomy = await serve({}, demo)
  const r = await roomy.inject({ method: 'POST', url: '/segment', ...multipart({ classes: 'sky' }, png) })
  expect(r.json().classes.map((c: { name: string }) => c.name)).toEqual(['sky', 'others'])
  await roomy.close()
  demo.dispose()
})

test('POST /segment: multipart and JSON give the API result', async () => {
  const app = await serve()
  const want = model.segmentSync({ data: rgb, width: 80, height: 60, channels: 3 }, CLASSES)
  const viaForm = await app.inject({ method: 'POST', url: '/segment', ...multipart({ classes: CLASSES.join(',') }, png) })
  const viaJson = await app.inject({ method: 'POST', url: '/segment', payload: { image: png.toString('base64'), classes: CLASSES } })
  for (const r of [viaForm, viaJson]) {
    expect(r.statusCode).toBe(200)
    const body = r.json()
    expect([body.width, body.height]).toEqual([80, 60])
    expect(body.classes.map((c: { name: string }) => c.name)).toEqual(CLASSES)
    expect(body.classes.map((c: { pixels: number }) => c.pixels)).toEqual(want.classPixels)
    expect((await greyPixels(body.png.labels)).equals(Buffer.from(Uint8Array.from(want.labels)))).toBe(true)
    const overlay = await sharp(Buffer.from(body.png.overlay, 'base64')).metadata()
    expect(overlay.width).toBe(80 + 260)
    expect((await greyPixels(body.png.confidence)).length).toBe(80 * 60)
  }
  await app.close()
})

test.each([
  ['no image', 400, 'INVALID_IMAGE', () => multipart({ classes: 'a' })],
  ['an empty class list', 400, 'EMPTY_INPUT', () => multipart({ classes: ' , ' }, png)],
  ['a corrupt image', 400, 'INVALID_IMAGE', () => multipart({ classes: 'a' }, Buffer.from('not an image'))],
  ['classes as a broken JSON array', 400, 'INVALID_ARGUMENT', () => multipart({ classes: '["sky", ' }, png)],
  ['classes as a JSON array of numbers', 400, 'INVALID_ARGUMENT', () => multipart({ classes: '[1, 2]' }, png)],
  ['a bad mode', 400, 'INVALID_ARGUMENT', () => multipart({ classes: 'a', mode: 'panoptic' }, png)],
  ['a bad lambda', 400, 'INVALID_ARGUMENT', () => multipart({ classes: 'a', lambda: '7' }, png)],
  ['a non-number threshold', 400, 'INVALID_ARGUMENT', () => multipart({ classes: 'a', threshold: 'high' }, png)],
  ['a file under another field', 400, 'INVALID_ARGUMENT', () => multipart({ classes: 'a' }, png, 'picture')],
  ['malformed JSON', 400, 'BAD_REQUEST', () => ({ payload: '{"image": ', headers: { 'content-type': 'application/json' } })],
  ['JSON without an image', 400, 'INVALID_IMAGE', () => ({ payload: { classes: ['a'] }, headers: {} })],
  ['a JSON array', 400, 'INVALID_ARGUMENT', () => ({ payload: '[1]', headers: { 'content-type': 'application/json' } })],
  ['a wrong content type', 415, 'UNSUPPORTED_MEDIA_TYPE', () => ({ payload: 'x', headers: { 'content-type': 'text/plain' } })],
  ['an upload over the limit', 413, 'PAYLOAD_TOO_LARGE', () => multipart({ classes: 'a' }, Buffer.alloc(3000))],
  ['a JSON body over the limit', 413, 'PAYLOAD_TOO_LARGE', () => ({ payload: { image: 'A'.repeat(5000), classes: ['a'] }, headers: {} })],
])('%s: %i %s', async (_what, status, code, request) => {
  const app = await serve({ maxBodyBytes: 2048 + (status === 413 ? 0 : 10 ** 6) })
  const r = await app.inject({ method: 'POST', url: '/segment', ...(request() as { payload: never; headers: Record<string, string> }) })
  expect(r.statusCode).toBe(status)
  expect(r.json().error.code).toBe(code)
  // The server keeps serving.
  expect((await app.inject({ url: '/health' })).statusCode).toBe(200)
  await app.close()
})

test('unknown routes are 404 JSON', async () => {
  const app = await serve()
  const r = await app.inject({ url: '/nope' })
  expect([r.statusCode, r.json().error.code]).toEqual([404, 'NOT_FOUND'])
  await app.close()
})

test('concurrent requests all complete with the same result', async () => {
  const app = await serve()
  const rs = await Promise.all(Array.from({ length: 6 }, () => app.inject({ method: 'POST', url: '/segment', ...multipart({ classes: CLASSES.join(',') }, png) })))
  expect(rs.map((r) => r.statusCode)).toEqual(Array(6).fill(200))
  const labels = rs.map((r) => r.json().png.labels)
  expect(new Set(labels).size).toBe(1)
  await app.close()
})

test('a full queue answers 503 with Retry-After, and the server keeps serving', async () => {
  const app = await serve({ queueSize: 1, concurrency: 1 })
  const rs = await Promise.all(Array.from({ length: 8 }, () => app.inject({ method: 'POST', url: '/segment', ...multipart({ classes: CLASSES.join(',') }, png) })))
  const statuses = rs.map((r) => r.statusCode)
  expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(2) // one running, one waiting
  const refused = rs.filter((r) => r.statusCode === 503)
  expect(refused.length).toBeGreaterThan(0)
  expect(statuses.every((s) => s === 200 || s === 503)).toBe(true)
  for (const r of refused) {
    expect(r.headers['retry-after']).toBe('1')
    expect(r.json().error.code).toBe('QUEUE_FULL')
  }
  const again = await app.inject({ method: 'POST', url: '/segment', ...multipart({ classes: 'sky' }, png) })
  expect(again.statusCode).toBe(200)
  await app.close()
})

test('a request still waiting for the model after the timeout gets 503', async () => {
  // One call at a time; each takes tens of milliseconds (the image is processed at 853x640), so
  // the requests queued behind the first wait past 20 ms.
  const app = await serve({ requestTimeoutMs: 20, concurrency: 1 })
  const rs = await Promise.all(Array.from({ length: 3 }, () => app.inject({ method: 'POST', url: '/segment', ...multipart({ classes: 'sky' }, png) })))
  expect(rs.some((r) => r.statusCode === 200)).toBe(true)
  const late = rs.filter((r) => r.statusCode === 503)
  expect(late.length).toBeGreaterThan(0)
  for (const r of late) expect(r.json().error).toMatchObject({ code: 'ABORTED', message: expect.stringMatching(/timed out/) })
  await app.close()
})
