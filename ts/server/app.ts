/**
 * `ovseg serve`: an HTTP API over one model (fastify) and the web page.
 *
 *   GET  /         the web page
 *   GET  /health   status, model, queue
 *   POST /segment  multipart (`image` file + fields) or JSON (`{ image: base64, classes, ... }`)
 *
 * Requests beyond the queue get 503 with Retry-After; bodies over the limit 413; other bad input
 * 4xx; every error is JSON `{ error: { code, message } }`.
 */
import './dependencies'

import multipart from '@fastify/multipart'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'

import { OvsegError } from '../errors'
import { checkOneOf } from '../options'
import type { Model } from '../model'
import { classColor, greyPng, labelPng, overlayPng } from '../render'
import { decodeImage, DEFAULT_MAX_PIXELS, SEGMENT_MODES, type SegmentOptions } from '../segment'
import { PAGE } from './page'
import { WorkQueue } from './work-queue'

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
}

/** Fields a /segment request can set (multipart fields or JSON properties). */
interface SegmentRequest {
  image: Buffer
  classes: string[]
  mode?: 'semantic' | 'demo'
  threshold?: number
  lambda?: number
}

const STATUS: Record<string, number> = {
  INVALID_ARGUMENT: 400,
  EMPTY_INPUT: 400,
  TEXT_TOO_LONG: 400,
  INVALID_IMAGE: 400,
  INVALID_MASK: 400,
  QUEUE_FULL: 503,
  ABORTED: 503,
}

function parseClasses(value: unknown): string[] {
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
  return classes
}

function parseNumber(value: unknown, name: string): number | undefined {
  if (value === undefined || value === '') return undefined
  const n = typeof value === 'string' ? Number(value) : value
  if (typeof n !== 'number' || !Number.isFinite(n)) throw new OvsegError('INVALID_ARGUMENT', `Expected a number for \`${name}\` but received ${JSON.stringify(value)}`)
  return n
}

function parseFields(image: Buffer | undefined, fields: Record<string, unknown>): SegmentRequest {
  if (!image || image.length === 0) throw new OvsegError('INVALID_IMAGE', 'Expected an image (multipart file field `image`, or base64 `image` in JSON)')
  // Checked here, as segment() checks it, so that a bad request never waits in the queue.
  const mode = fields.mode === undefined || fields.mode === '' ? undefined : checkOneOf(fields.mode, 'mode', SEGMENT_MODES, 'semantic')
  return { image, classes: parseClasses(fields.classes), mode, threshold: parseNumber(fields.threshold, 'threshold'), lambda: parseNumber(fields.lambda, 'lambda') }
}

async function readRequest(request: FastifyRequest): Promise<SegmentRequest> {
  if (request.isMultipart()) {
    let image: Buffer | undefined
    const fields: Record<string, unknown> = {}
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        if (part.fieldname !== 'image') throw new OvsegError('INVALID_ARGUMENT', `unexpected file field \`${part.fieldname}\` (the image goes in \`image\`)`)
        image = await part.toBuffer()
      } else {
        fields[part.fieldname] = part.value
      }
    }
    return parseFields(image, fields)
  }
  const body = request.body as Record<string, unknown> | undefined
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new OvsegError('INVALID_ARGUMENT', 'Expected a JSON object body')
  if (typeof body.image !== 'string') throw new OvsegError('INVALID_IMAGE', 'Expected `image` as a base64 string')
  const base64 = body.image.replace(/^data:[^,]*,/, '')
  return parseFields(Buffer.from(base64, 'base64'), body)
}

/** Per pixel, how much of the summed class score the winning class holds, as 0..255. */
function confidence(scores: Float32Array, classes: number, labels: Uint16Array): Uint8Array {
  const plane = labels.length
  const out = new Uint8Array(plane)
  for (let p = 0; p < plane; p++) {
    let sum = 0
    for (let c = 0; c < classes; c++) sum += scores[c * plane + p]
    const l = labels[p]
    out[p] = l < classes && sum > 0 ? Math.round((255 * scores[l * plane + p]) / sum) : 0
  }
  return out
}

export async function createApp(model: Model, options: ServerOptions = {}): Promise<FastifyInstance> {
  const maxBodyBytes = options.maxBodyBytes ?? 20 * 2 ** 20
  const queue = new WorkQueue(options.concurrency ?? 1, options.queueSize ?? 8)
  const requestTimeoutMs = options.requestTimeoutMs ?? 60000
  // requestTimeout: slow uploads cannot hold a socket forever.
  const app = Fastify({ logger: options.logger ?? false, bodyLimit: maxBodyBytes, requestTimeout: options.uploadTimeoutMs ?? 120000 })
  // Only JSON and multipart bodies: anything else is 415.
  app.removeContentTypeParser('text/plain')
  await app.register(multipart, { limits: { fileSize: maxBodyBytes, files: 1, fields: 16 }, throwFileSizeLimit: true })

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

  app.get('/', async (_request, reply) => reply.type('text/html; charset=utf-8').send(PAGE))
  app.get('/health', async () => ({
    status: 'ok',
    model: model.manifest.name,
    executionProvider: model.executionProvider.name,
    queue: { running: queue.running, waiting: queue.waiting, capacity: queue.capacity },
  }))

  app.post('/segment', async (request) => {
    const req = await readRequest(request)
    const decoded = await decodeImage(req.image, DEFAULT_MAX_PIXELS)
    const segmentOptions: SegmentOptions = { mode: req.mode, threshold: req.threshold, lambda: req.lambda, scores: true }
    const signal = AbortSignal.timeout(requestTimeoutMs)
    const r = await queue.run(() => model.segment({ data: decoded.rgb, width: decoded.width, height: decoded.height, channels: 3 }, req.classes, { ...segmentOptions, signal }), signal)
    const pixels = r.width * r.height
    const [overlay, labels, conf] = await Promise.all([
      overlayPng(decoded.rgb, r.width, r.height, r.labels, r.classes),
      labelPng(r.labels, r.width, r.height, r.classes.length),
      greyPng(confidence(r.scores as Float32Array, r.classes.length, r.labels), r.width, r.height),
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

