/**
 * `ovseg serve`: an HTTP API over one model (fastify) and the web page.
 *
 *   GET  /         the web page
 *   GET  /health   status, model, queue
 *   POST /segment  multipart (`image` file + fields) or JSON (`{ image: base64, classes, ... }`)
 *
 * Requests beyond the queue get 503 with Retry-After; bodies over the limit 413; work over the
 * limits 422 (checked from the image header, before decoding); other bad input 4xx; every error is
 * JSON `{ error: { code, message } }`. Host headers other than the allowed names get 421 (DNS
 * rebinding); no CORS headers are sent.
 */
import './dependencies'

import multipart from '@fastify/multipart'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import sharp from 'sharp'

import { OvsegError } from '../errors'
import { checkOneOf } from '../options'
import type { Model } from '../model'
import { classColor, forSlices, greyPng, labelPng, overlayPng } from '../render'
import { checkScoreSize, decodeImage, resultClassCount, SEGMENT_MODES, type SegmentOptions } from '../segment'
import { DEFAULT_SERVER_LIMITS, LOOPBACK_HOSTS } from './limits'
import { PAGE } from './page'
import { WorkQueue } from './work-queue'

export { DEFAULT_SERVER_LIMITS, LOOPBACK_HOSTS } from './limits'

export interface ServerOptions {
  /** Largest request body in bytes (images are uploaded whole). Default 20 MiB. */
  maxBodyBytes?: number
  /** Requests waiting for the model beyond the ones running. Default 8. */
  queueSize?: number
  /** segment() calls at once. Default 1 (ONNX Runtime already uses every core for one). */
  concurrency?: number
  /** A request still waiting for the model after this long gets 503. Default 60 s. */
  requestTimeoutMs?: number
  /** The whole request (an upload) must arrive within this (Node's `server.requestTimeout`). Default 120 s. */
  uploadTimeoutMs?: number
  /** Log requests (pino, to stdout). Default false. */
  logger?: boolean
  /** Images with more pixels (read from the header, before decoding) get 422 `LIMIT_EXCEEDED`. Default 16777216 (4096 x 4096). */
  maxPixels?: number
  /** Requests with more classes get 422 `LIMIT_EXCEEDED`. Default 1000. */
  maxClasses?: number
  /** Largest score maps a request may need (classes x pixels x 4 bytes, for the confidence PNG); more: 422 `LIMIT_EXCEEDED`. Default 1 GiB. */
  maxScoreBytes?: number
  /** Host names (no port) accepted in the Host header; `'*'` accepts any. Default: the loopback names. Others get 421 `HOST_NOT_ALLOWED`. */
  allowedHosts?: string[]
}

/** Largest multipart text field (`classes`): a longer one is refused, never cut. */
const MAX_FIELD_BYTES = 2 ** 20

/** Fields a /segment request can set (multipart fields or JSON properties). */
interface SegmentRequest {
  image: Buffer
  classes: string[]
  mode?: (typeof SEGMENT_MODES)[number]
  threshold?: number
  lambda?: number
}

const STATUS: Record<string, number> = {
  INVALID_ARGUMENT: 400,
  EMPTY_INPUT: 400,
  TEXT_TOO_LONG: 400,
  INVALID_IMAGE: 400,
  INVALID_MASK: 400,
  BAD_REQUEST: 400,
  PAYLOAD_TOO_LARGE: 413,
  HOST_NOT_ALLOWED: 421,
  LIMIT_EXCEEDED: 422,
  QUEUE_FULL: 503,
  ABORTED: 503,
}

function parseClasses(value: unknown, maxClasses: number): string[] {
  let list = value
  if (typeof value === 'string') {
    try {
      list = value.trim().startsWith('[') ? JSON.parse(value) : value.split(',')
    } catch {
      throw new OvsegError('INVALID_ARGUMENT', `\`classes\` starts like a JSON array but is not one: ${JSON.stringify(value.slice(0, 80))}`)
    }
  }
  if (!Array.isArray(list) || list.some((c) => typeof c !== 'string')) {
    throw new OvsegError('INVALID_ARGUMENT', 'Expected `classes` as an array of strings or a comma-separated string')
  }
  const classes = (list as string[]).map((c) => c.trim()).filter(Boolean)
  if (classes.length === 0) throw new OvsegError('EMPTY_INPUT', 'Expected at least one class name in `classes`')
  if (classes.length > maxClasses) throw new OvsegError('LIMIT_EXCEEDED', `${classes.length} classes, over the server's limit of ${maxClasses} (option maxClasses)`)
  return classes
}

/** A plain decimal number: Number() would also take " " (0), "0x1" and "Infinity". */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/

function parseNumber(value: unknown, name: string): number | undefined {
  if (value === undefined || value === '') return undefined
  const n = typeof value === 'string' && DECIMAL.test(value) ? Number(value) : value
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new OvsegError('INVALID_ARGUMENT', `Expected a number for \`${name}\` but received ${JSON.stringify(value)}`)
  return n
}

function parseFields(image: Buffer | undefined, fields: Record<string, unknown>, maxClasses: number): SegmentRequest {
  if (!image || image.length === 0) throw new OvsegError('INVALID_IMAGE', 'Expected an image (multipart file field `image`, or base64 `image` in JSON)')
  // Checked here, as segment() checks it, so that a bad request never waits in the queue.
  const mode = fields.mode === '' ? undefined : checkOneOf(fields.mode, 'mode', SEGMENT_MODES)
  return { image, classes: parseClasses(fields.classes, maxClasses), mode, threshold: parseNumber(fields.threshold, 'threshold'), lambda: parseNumber(fields.lambda, 'lambda') }
}

async function readMultipart(request: FastifyRequest): Promise<{ image: Buffer | undefined; fields: Record<string, unknown> }> {
  let image: Buffer | undefined
  const fields: Record<string, unknown> = {}
  try {
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        if (part.fieldname !== 'image') throw new OvsegError('INVALID_ARGUMENT', `unexpected file field \`${part.fieldname}\` (the image goes in \`image\`)`)
        image = await part.toBuffer()
      } else {
        if (part.valueTruncated || part.fieldnameTruncated) throw new OvsegError('PAYLOAD_TOO_LARGE', `the field \`${part.fieldname}\` is over the limit of ${MAX_FIELD_BYTES} bytes`)
        fields[part.fieldname] = part.value
      }
    }
  } catch (err) {
    const e = err as { statusCode?: number }
    if (err instanceof OvsegError || (e.statusCode !== undefined && e.statusCode < 500)) throw err
    // busboy's parse errors (no or wrong boundary, garbage, a truncated body) carry no status.
    throw new OvsegError('BAD_REQUEST', `malformed multipart body: ${(err as Error).message}`)
  }
  return { image, fields }
}

async function readRequest(request: FastifyRequest, maxClasses: number): Promise<SegmentRequest> {
  if (request.isMultipart()) {
    const { image, fields } = await readMultipart(request)
    return parseFields(image, fields, maxClasses)
  }
  const body = request.body as Record<string, unknown> | undefined
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new OvsegError('INVALID_ARGUMENT', 'Expected a JSON object body')
  if (typeof body.image !== 'string') throw new OvsegError('INVALID_IMAGE', 'Expected `image` as a base64 string')
  const base64 = body.image.replace(/^data:[^,]*,/, '')
  return parseFields(Buffer.from(base64, 'base64'), body, maxClasses)
}

/** The image's size from its header alone (sharp's metadata does not decode pixels). */
async function headerSize(image: Buffer): Promise<{ width: number; height: number }> {
  let meta: sharp.Metadata
  try {
    meta = await sharp(image, { limitInputPixels: false }).metadata()
  } catch (err) {
    throw new OvsegError('INVALID_IMAGE', `cannot decode the image: ${(err as Error).message}`)
  }
  if (!meta.width || !meta.height) throw new OvsegError('INVALID_IMAGE', 'the image header has no size')
  return { width: meta.width, height: meta.height }
}

/** The host name of a Host header, without port or IPv6 brackets, lower case. */
function hostName(header: string | undefined): string | undefined {
  const m = /^(\[[^\]]*\]|[^:]*)(:\d*)?$/.exec(header ?? '')
  return m ? m[1].replace(/^\[|\]$/g, '').toLowerCase() : undefined
}

/** Per pixel, how much of the summed class score the winning class holds, as 0..255. */
async function confidence(scores: Float32Array, classes: number, labels: Uint16Array, signal: AbortSignal): Promise<Uint8Array> {
  const plane = labels.length
  const out = new Uint8Array(plane)
  await forSlices(plane, signal, (start, end) => {
    for (let p = start; p < end; p++) {
      let sum = 0
      for (let c = 0; c < classes; c++) sum += scores[c * plane + p]
      const l = labels[p]
      out[p] = l < classes && sum > 0 ? Math.round((255 * scores[l * plane + p]) / sum) : 0
    }
  }, classes + 1)
  return out
}

export async function createApp(model: Model, options: ServerOptions = {}): Promise<FastifyInstance> {
  const maxBodyBytes = options.maxBodyBytes ?? 20 * 2 ** 20
  const queue = new WorkQueue(options.concurrency ?? 1, options.queueSize ?? 8)
  const requestTimeoutMs = options.requestTimeoutMs ?? 60000
  const { maxPixels, maxClasses, maxScoreBytes } = { ...DEFAULT_SERVER_LIMITS, ...options }
  const allowedHosts = new Set((options.allowedHosts ?? LOOPBACK_HOSTS).map((h) => h.toLowerCase()))
  // requestTimeout: slow uploads cannot hold a socket forever.
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: maxBodyBytes,
    requestTimeout: options.uploadTimeoutMs ?? 120000,
    // Errors fastify raises before routing (a bad URL such as `/%zz`) and unparsable HTTP get the
    // same JSON error shape as everything else.
    frameworkErrors: (err, _request, reply) => void (reply as FastifyReply).status(400).send({ error: { code: 'BAD_REQUEST', message: err.message } }),
    clientErrorHandler: (err, socket) => {
      if (!socket.writable) return
      const body = JSON.stringify({ error: { code: 'BAD_REQUEST', message: `malformed HTTP request (${(err as Error & { code?: string }).code ?? err.message})` } })
      socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
    },
  })
  // Only JSON and multipart bodies: anything else is 415.
  app.removeContentTypeParser('text/plain')
  await app.register(multipart, { limits: { fileSize: maxBodyBytes, files: 1, fields: 16, fieldSize: MAX_FIELD_BYTES }, throwFileSizeLimit: true })

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _request, reply: FastifyReply) => {
    let code = err.code ?? 'INTERNAL'
    let status = STATUS[code] ?? err.statusCode ?? 500
    if (status === 413 || code === 'FST_REQ_FILE_TOO_LARGE') {
      status = 413
      code = 'PAYLOAD_TOO_LARGE'
    } else if (status === 415) {
      code = 'UNSUPPORTED_MEDIA_TYPE'
    } else if (code.startsWith('FST_') && status < 500) {
      code = 'BAD_REQUEST' // malformed JSON or multipart
    }
    if (status === 503) void reply.header('Retry-After', '1')
    if (status >= 500 && status !== 503) app.log.error(err)
    void reply.status(status).send({ error: { code, message: err.message } })
  })
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` } })
  })
  // A page on another name that resolves here (DNS rebinding) must not reach the API.
  app.addHook('onRequest', async (request) => {
    const host = hostName(request.headers.host)
    if (!allowedHosts.has('*') && (host === undefined || !allowedHosts.has(host))) {
      throw new OvsegError('HOST_NOT_ALLOWED', `the Host header ${JSON.stringify(request.headers.host ?? '')} is not one this server answers to (option allowedHosts, --allow-host)`)
    }
  })

  app.get('/', async (_request, reply) => reply.type('text/html; charset=utf-8').send(PAGE))
  app.get('/health', async () => ({
    status: 'ok',
    model: model.manifest.name,
    executionProvider: model.executionProvider.name,
    queue: { running: queue.running, waiting: queue.waiting, capacity: queue.capacity, concurrency: queue.concurrency },
  }))

  app.post('/segment', async (request, reply) => {
    // Work for a client that has gone is dropped: waiting in the queue, or between the steps after segment().
    const gone = new AbortController()
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) gone.abort(new Error('the client closed the connection'))
    })
    const req = await readRequest(request, maxClasses)
    const mode = req.mode ?? model.defaults.mode
    // Classes x pixels bound the score maps the confidence PNG needs.
    const scoreClasses = resultClassCount(req.classes.length, mode)
    const checkWork = (width: number, height: number) => {
      if (width * height > maxPixels) {
        throw new OvsegError('LIMIT_EXCEEDED', `the image has ${width}x${height} pixels, over the server's limit of ${maxPixels} (option maxPixels)`)
      }
      if (scoreClasses * width * height * 4 > maxScoreBytes) {
        throw new OvsegError('LIMIT_EXCEEDED', `${scoreClasses} classes over ${width}x${height} pixels need ${scoreClasses * width * height * 4} bytes of score maps, over the server's limit of ${maxScoreBytes} (option maxScoreBytes)`)
      }
      checkScoreSize(req.classes, width, height, { mode, scores: true })
    }
    const declared = await headerSize(req.image)
    checkWork(declared.width, declared.height)
    const decoded = await decodeImage(req.image, maxPixels)
    checkWork(decoded.width, decoded.height)
    const segmentOptions: SegmentOptions = { mode: req.mode, threshold: req.threshold, lambda: req.lambda, scores: true }
    // The timeout counts from here and bounds the time waiting for the model; once a request runs,
    // only its client leaving stops it.
    const waiting = AbortSignal.any([gone.signal, AbortSignal.timeout(requestTimeoutMs)])
    const image = { data: decoded.rgb, width: decoded.width, height: decoded.height, channels: 3 as const }
    const r = await queue.run(() => model.segment(image, req.classes, { ...segmentOptions, signal: gone.signal }), waiting)
    const pixels = r.width * r.height
    const [overlay, labels, conf] = await Promise.all([
      overlayPng(decoded.rgb, r.width, r.height, r.labels, r.classes, gone.signal),
      labelPng(r.labels, r.width, r.height, r.classes.length, gone.signal),
      confidence(r.scores as Float32Array, r.classes.length, r.labels, gone.signal).then((c) => greyPng(c, r.width, r.height)),
    ])
    return {
      width: r.width,
      height: r.height,
      classes: r.classes.map((name, i) => ({ name, index: i, color: classColor(i), pixels: r.classPixels[i], share: r.classPixels[i] / pixels })),
      segments: r.segments.filter((s) => s.used).map((s) => ({ source: s.source, index: s.index, class: s.class, score: s.score, box: s.box, area: s.area })),
      timings: r.timings,
      executionProvider: r.executionProvider,
      png: { overlay: overlay.toString('base64'), labels: labels.toString('base64'), confidence: conf.toString('base64') },
    }
  })
  return app
}
