/**
 * `ovseg serve`: an HTTP API over one model, or over a Redis queue of workers (fastify), and the web page.
 *
 *   GET  /          the web page
 *   GET  /health    status, model, queue
 *   POST /segment   multipart (`image` file + fields) or JSON (`{ image: base64, classes, ... }`);
 *                   with a queue, `?async=true` answers 202 with a job id at once
 *   GET  /jobs/:id  with a queue: the job's state, progress, and its answer or error
 *
 * Requests beyond the queue get 503 with Retry-After; bodies over the limit 413; work over the
 * limits 422 (checked from the image header, before decoding); other bad input 4xx; every error is
 * JSON `{ error: { code, message } }`. Host headers other than the allowed names get 421 (DNS
 * rebinding); no CORS headers are sent.
 */
import './dependencies'

import { randomUUID } from 'node:crypto'

import multipart from '@fastify/multipart'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'

import { OvsegError } from '../errors'
import { checkOneOf } from '../options'
import type { Model } from '../model'
import type { SegmentQueue } from '../queue/client'
import type { SegmentJobResult } from '../queue/jobs'
import { httpAnswer, type Pictures } from '../results'
import { SEGMENT_MODES, type SegmentOptions } from '../segment'
import { checkWork, DEFAULT_SERVER_LIMITS, headerSize, LOOPBACK_HOSTS } from './limits'
import { PAGE } from './page'
import { WorkQueue } from './work-queue'
import { segmentBytes, type SegmentFields } from './work'

export { DEFAULT_SERVER_LIMITS, LOOPBACK_HOSTS } from './limits'

export interface ServerOptions {
  /** Largest request body in bytes (images are uploaded whole). Default 20 MiB. */
  maxBodyBytes?: number
  /** Requests waiting for the model beyond the ones running; with a Redis queue, jobs waiting in it (without a priority: batch jobs do not count). Default 8. */
  queueSize?: number
  /** segment() calls at once. Default 1 (ONNX Runtime already uses every core for one). */
  concurrency?: number
  /** A request still waiting for the model after this long gets 503; with a Redis queue, a request whose job has not completed by then. Default 60 s. */
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
  /** With a model: its proposal sources (`generator`, `sam`, `samOptions` of `segment()`). */
  proposals?: Pick<SegmentOptions, 'generator' | 'sam' | 'samOptions'>
}

/** Largest multipart text field (`classes`): a longer one is refused, never cut. */
const MAX_FIELD_BYTES = 2 ** 20

/** Fields a /segment request can set (multipart fields or JSON properties). */
interface SegmentRequest extends SegmentFields {
  image: Buffer
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
  QUEUE_UNAVAILABLE: 503,
  JOB_NOT_FOUND: 404,
  JOB_TIMEOUT: 504,
  JOB_STALLED: 500,
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
  return {
    image,
    classes: parseClasses(fields.classes, maxClasses),
    mode,
    threshold: parseNumber(fields.threshold, 'threshold'),
    lambda: parseNumber(fields.lambda, 'lambda'),
    masks: typeof fields.masks === 'boolean' ? fields.masks : parseBoolean(fields.masks, 'masks'),
  }
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

/** The host name of a Host header, without port or IPv6 brackets, lower case. */
function hostName(header: string | undefined): string | undefined {
  const m = /^(\[[^\]]*\]|[^:]*)(:\d*)?$/.exec(header ?? '')
  return m ? m[1].replace(/^\[|\]$/g, '').toLowerCase() : undefined
}

const base64 = (p: Pictures) => ({ overlay: p.overlay.toString('base64'), labels: p.labels.toString('base64'), confidence: p.confidence?.toString('base64') })

/**
 * The app over a loaded `Model` (requests run here), or over a `SegmentQueue` from `ovseg/queue`
 * (requests become jobs for `ovseg worker` processes; this process loads no model).
 */
export async function createApp(source: Model | SegmentQueue, options: ServerOptions = {}): Promise<FastifyInstance> {
  const model = typeof (source as Model).segment === 'function' ? (source as Model) : undefined
  const jobs = model ? undefined : (source as SegmentQueue)
  const maxBodyBytes = options.maxBodyBytes ?? 20 * 2 ** 20
  const queueSize = options.queueSize ?? 8
  const queue = new WorkQueue(options.concurrency ?? 1, queueSize)
  const requestTimeoutMs = options.requestTimeoutMs ?? 60000
  const limits = { ...DEFAULT_SERVER_LIMITS, ...options }
  const { maxClasses } = limits
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
  app.get('/health', async () => {
    if (model) {
      return {
        status: 'ok',
        model: model.manifest.name,
        executionProvider: model.executionProvider.name,
        queue: { running: queue.running, waiting: queue.waiting, capacity: queue.capacity, concurrency: queue.concurrency },
      }
    }
    const c = await (jobs as SegmentQueue).counts()
    return { status: 'ok', model: null, executionProvider: null, queue: { redis: (jobs as SegmentQueue).name, running: c.active, waiting: c.waiting, capacity: queueSize, batch: c.prioritized, delayed: c.delayed, failed: c.failed, workers: c.workers } }
  })

  app.post('/segment', async (request, reply) => {
    // Work for a client that has gone is dropped: waiting in the queue, or between the steps after segment().
    const gone = new AbortController()
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) gone.abort(new Error('the client closed the connection'))
    })
    const req = await readRequest(request, maxClasses)
    const asynchronous = parseBoolean((request.query as Record<string, unknown>).async, 'async')
    if (model) {
      if (asynchronous) throw new OvsegError('INVALID_ARGUMENT', '`async` needs a server over a Redis queue (ovseg serve --redis)')
      // The timeout counts from the queue and bounds the time waiting for the model; once a request
      // runs, only its client leaving stops it.
      const waiting = () => AbortSignal.any([gone.signal, AbortSignal.timeout(requestTimeoutMs)])
      const { summary, pictures } = await segmentBytes(model, req.image, req, { name: 'image', limits, confidence: true, signal: gone.signal, run: (job) => queue.run(job, waiting()), proposals: options.proposals })
      return httpAnswer(summary, base64(pictures))
    }
    const q = jobs as SegmentQueue
    // The same checks as a local request, from the header, before the job is queued.
    const declared = await headerSize(req.image)
    checkWork(req.classes, req.mode, declared.width, declared.height, limits)
    if ((await q.waiting()) >= queueSize) throw new OvsegError('QUEUE_FULL', `the queue is full (${queueSize} jobs waiting)`)
    const id = await q.add({ image: { base64: req.image.toString('base64') }, name: 'image', classes: req.classes, mode: req.mode, threshold: req.threshold, lambda: req.lambda, confidence: true }, { jobId: randomUUID() })
    if (asynchronous) return reply.status(202).send({ id, state: 'waiting', url: `/jobs/${id}` })
    try {
      const answer = answerOf(await q.result(id, AbortSignal.any([gone.signal, AbortSignal.timeout(requestTimeoutMs)])))
      void q.forget(id) // delivered: only async requests' results are kept for GET /jobs/:id
      return answer
    } catch (err) {
      if (gone.signal.aborted) await q.cancel(id)
      throw err
    }
  })

  if (jobs) {
    app.get('/jobs/:id', async (request) => {
      const { id } = request.params as { id: string }
      const status = await jobs.status(id)
      if (!status) throw new OvsegError('JOB_NOT_FOUND', `no job ${JSON.stringify(id)} (never added, or its result expired)`)
      return { id: status.id, state: status.state, progress: status.progress, attempts: status.attempts, result: status.result && answerOf(status.result), error: status.error }
    })
  }
  return app
}

/** A job's result as the HTTP answer. */
function answerOf(result: SegmentJobResult) {
  if (!result.png) throw new OvsegError('INTERNAL', 'the job wrote its result to files, not to Redis')
  return httpAnswer(result.summary, result.png)
}

function parseBoolean(value: unknown, name: string): boolean {
  if (value === undefined || value === '' || value === 'false' || value === '0') return false
  if (value === 'true' || value === '1') return true
  throw new OvsegError('INVALID_ARGUMENT', `Expected \`${name}\` as true or false but received ${JSON.stringify(value)}`)
}
