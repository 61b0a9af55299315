#!/usr/bin/env node
/** The `ovseg` command line: segment, eval, info, serve, worker, enqueue. Exit codes: 0 ok, 1 some images failed, 2 usage or fatal error. */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { Command, CommanderError, InvalidArgumentError, Option } from 'commander'
import sharp from 'sharp'

import { EXECUTION_PROVIDERS, PRECISIONS } from '../generated'
import { loadModel, type ExecutionProviderName, type Model, type Precision } from '../model'
import { runtimeInfo } from '../runtime'
import { DEFAULT_MODEL_DIR, TINY_RANDOM_MODEL_DIR } from '../default-model'
import { DEFAULT_PROCESSING } from '../generated'
import { SEGMENT_MODES } from '../segment'
import { OvsegError } from '../errors'
import type { SegmentQueue } from '../queue/client'
import { DEFAULT_QUEUE_NAME, DEFAULT_QUEUE_SETTINGS } from '../queue/jobs'
import { DEFAULT_SERVER_LIMITS } from '../server/limits'
import { BATCH_PRIORITY, enqueueCommand } from './enqueue-command'
import { evalCommand } from './eval-command'
import { expandImages, readClasses } from './inputs'
import { openProposals, type Proposals } from './proposals'
import { segmentCommand } from './segment-command'

const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }

function positiveInteger(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got ${JSON.stringify(value)}`)
  return n
}

function wholeNumber(value: string): number {
  const n = Number(value)
  if (value.trim() === '' || !Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`expected an integer >= 0, got ${JSON.stringify(value)}`)
  return n
}

function unitInterval(value: string): number {
  const n = Number(value)
  if (value.trim() === '' || !(n >= 0 && n <= 1)) throw new InvalidArgumentError(`expected a number in [0, 1], got ${JSON.stringify(value)}`)
  return n
}

function threshold(value: string): number {
  const n = Number(value)
  if (value.trim() === '' || !(n >= 0 && n < 1)) throw new InvalidArgumentError(`expected a number in [0, 1), got ${JSON.stringify(value)}`)
  return n
}

function integer(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`expected an integer, got ${JSON.stringify(value)}`)
  return n
}

interface ModelFlags {
  model: string
  provider: ExecutionProviderName
  threads?: number
  precision: Precision
}

const modelOptions = (cmd: Command) =>
  cmd
    .option('--model <dir>', 'model directory', DEFAULT_MODEL_DIR)
    .addOption(new Option('--provider <name>', 'execution provider').choices([...EXECUTION_PROVIDERS]).default('cpu'))
    .option('--threads <n>', 'ONNX Runtime intra-op threads (default: one per core)', positiveInteger)
    .addOption(new Option('--precision <name>', 'CLIP encoders to load (int8 / float16: when the model has them)').choices([...PRECISIONS]).default('float32'))

/** `--proposals` and the SAM flags, for the commands that segment. */
const proposalOptions = (cmd: Command) =>
  cmd
    .option('--proposals <list>', 'mask proposal sources: generator, sam, or generator,sam (SAM: --sam-model)', 'generator')
    .option('--sam-model <dir>', 'a SAM proposal-model directory (python -m ovseg_tools.export.sam)')
    .option('--sam-points <n>', 'SAM: points per side of its prompt grid (default 32)', positiveInteger)
    .option('--sam-max-masks <n>', 'SAM: most masks classified per image, the highest predicted IoU first (default 100)', positiveInteger)
    .option('--sam-crop-layers <n>', 'SAM: layers of crops beside the whole image, 0..3 (default 0)', wholeNumber)
    .option('--sam-min-region-area <n>', 'SAM: remove holes and islands of fewer pixels from each mask (default 0: none)', wholeNumber)

async function openModel(flags: ModelFlags): Promise<Model> {
  if (flags.model === TINY_RANDOM_MODEL_DIR) {
    process.stderr.write(`model: ${TINY_RANDOM_MODEL_DIR} (random weights: its labels mean nothing)\n`)
  }
  return loadModel(flags.model, { executionProvider: flags.provider, threads: flags.threads, precision: flags.precision })
}

/** A Redis URL without its password, for logs. */
function redisHost(url: string): string {
  try {
    return new URL(url).host
  } catch {
    return 'the given URL'
  }
}

/** Resolves on the first SIGINT or SIGTERM. */
function untilSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      resolve()
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
}

export function buildProgram(): Command {
  const program = new Command()
  program.name('ovseg').description('Open-vocabulary semantic segmentation (OVSeg) from the command line').version(pkg.version).exitOverride()

  modelOptions(
    proposalOptions(program
      .command('segment')
      .description('segment images into the given classes; writes an overlay PNG, a label-map PNG and a JSON per image')
      .argument('<images...>', 'image files, directories (their images) or glob patterns')
      .option('-c, --classes <list>', 'comma-separated class names')
      .option('--classes-file <file>', 'class names, one per line (names may contain commas)')
      .option('-o, --out <dir>', 'output directory (default: ovseg-out, or no files with --json)')
      .option('--json', 'print the results as JSON on stdout', false)
      .option('--threshold <x>', "mask threshold (default: the model's for the mode, see ovseg info; OVSeg's 0.4, demo 0.35)", threshold)
      .option('--lambda <x>', "ensemble weight of CLIP against the generator (default: the model's for the mode; OVSeg's 0.7, demo 0)", unitInterval)
      .addOption(new Option('--mode <mode>', "semantic: every pixel gets a class; demo: best mask per class, the rest unlabeled (default: the model's, semantic unless its manifest says otherwise)").choices([...SEGMENT_MODES]))),
  ).action(async (images: string[], o) => {
    const classes = readClasses(o.classes, o.classesFile)
    const files = expandImages(images)
    const model = await openModel(o)
    let proposals: Proposals | undefined
    try {
      proposals = await openProposals(o, model)
      const failed = await segmentCommand(model, files, classes, { ...o, proposals: proposals.options })
      process.exitCode = failed > 0 ? 1 : 0
    } finally {
      proposals?.sam?.dispose()
      model.dispose()
    }
  })

  modelOptions(
    proposalOptions(program
      .command('eval')
      .description('mIoU, per-class IoU, pixel accuracy and frequency-weighted IoU over images + label PNGs (ADE20K / Pascal Context layout)')
      .requiredOption('--images <dir>', 'images')
      .requiredOption('--labels <dir>', 'label PNGs (class index per pixel), same base names as the images')
      .requiredOption('--classes <file>', 'class names, one per line, in label-index order')
      .option('--ignore-index <n>', 'label value left out of the metrics', integer, 255)
      .option('--reduce-zero-label', 'ADE20K convention: label 0 is ignored, label k is class k - 1', false)
      .option('--threshold <x>', "mask threshold (default: the model's)", threshold)
      .option('--lambda <x>', "ensemble weight (default: the model's)", unitInterval)
      .option('-o, --out <file>', 'JSON report', 'ovseg-eval.json')),
  ).action(async (o) => {
    const classes = readClasses(undefined, o.classes)
    const model = await openModel(o)
    let proposals: Proposals | undefined
    try {
      proposals = await openProposals(o, model)
      const failed = await evalCommand(model, classes, { ...o, proposals: proposals.options })
      process.exitCode = failed > 0 ? 1 : 0
    } finally {
      proposals?.sam?.dispose()
      model.dispose()
    }
  })

  modelOptions(
    proposalOptions(program
      .command('serve')
      .description('HTTP API (POST /segment, GET /health) and the web page, on one model')
      .option('-p, --port <n>', 'port', integer, 8080)
      .option('--host <host>', 'interface to listen on', '127.0.0.1')
      .option('--max-body-mb <n>', 'largest upload in MiB (larger: 413)', positiveInteger, 20)
      .option('--queue-size <n>', 'requests that may wait for the model (more: 503 + Retry-After)', positiveInteger, 8)
      .option('--concurrency <n>', 'segment() calls at once (more than 1 on CUDA: their crops share image-encoder runs)', positiveInteger, 1)
      .option('--class-embeddings <file>', 'a file of model.saveClassEmbeddings to load at start (repeatable): its vocabulary runs no text encoder', (v: string, all: string[]) => [...all, v], [] as string[])
      .option('--timeout-s <n>', 'a request still waiting for the model after this long gets 503', positiveInteger, 60)
      .option('--max-pixels <n>', 'largest image in pixels, read from its header before decoding (larger: 422)', positiveInteger, DEFAULT_SERVER_LIMITS.maxPixels)
      .option('--max-classes <n>', 'most classes per request (more: 422)', positiveInteger, DEFAULT_SERVER_LIMITS.maxClasses)
      .option('--max-score-mb <n>', 'largest score maps per request in MiB, classes x pixels x 4 bytes (larger: 422)', positiveInteger, DEFAULT_SERVER_LIMITS.maxScoreBytes / 2 ** 20)
      .option('--allow-host <name>', "a Host header name to answer besides the loopback names and --host (repeatable; '*' for any)", (v: string, all: string[]) => [...all, v], [] as string[])
      .option('--redis <url>', 'enqueue requests for `ovseg worker` processes on this Redis (redis://host:port) instead of running them here; no model is loaded')
      .option('--queue <name>', 'the Redis queue (with --redis)', DEFAULT_QUEUE_NAME)
      .option('--log', 'log requests', false)),
  ).action(async (o) => {
    // Loaded here: the other commands do not need fastify.
    const { createApp, LOOPBACK_HOSTS } = await import('../server/app')
    if (o.redis && (o.classEmbeddings.length > 0 || o.samModel !== undefined)) throw new OvsegError('INVALID_ARGUMENT', '--class-embeddings and --sam-model load into a model, and with --redis the workers hold the model')
    // With --redis, a front end: requests become jobs, and no model is loaded here.
    const queue = o.redis ? await (await import('../queue/client')).SegmentQueue.connect({ redis: o.redis, queue: o.queue }) : undefined
    const model = queue ? undefined : await openModel(o)
    const proposals = model ? await openProposals(o, model) : undefined
    for (const file of o.classEmbeddings as string[]) {
      const { classes } = await (model as Model).loadClassEmbeddings(file)
      process.stderr.write(`class embeddings: ${classes.length} classes from ${file}\n`)
    }
    // A wildcard bind address is no name a client uses: those come with --allow-host.
    const bound = o.host === '0.0.0.0' || o.host === '::' ? [] : [o.host.replace(/^\[|\]$/g, '')]
    const app = await createApp((queue ?? model) as Model | SegmentQueue, {
      maxBodyBytes: o.maxBodyMb * 2 ** 20,
      queueSize: o.queueSize,
      concurrency: o.concurrency,
      requestTimeoutMs: o.timeoutS * 1000,
      logger: o.log,
      maxPixels: o.maxPixels,
      maxClasses: o.maxClasses,
      maxScoreBytes: o.maxScoreMb * 2 ** 20,
      allowedHosts: [...LOOPBACK_HOSTS, ...bound, ...o.allowHost],
      proposals: proposals?.options,
    })
    const address = await app.listen({ port: o.port, host: o.host })
    process.stderr.write(`ovseg serving ${model ? model.manifest.name : `the Redis queue ${o.queue} at ${redisHost(o.redis)}`} on ${address}\n`)
    await untilSignal()
    await app.close()
    proposals?.sam?.dispose()
    model?.dispose()
    await queue?.close()
  })

  modelOptions(
    program
      .command('worker')
      .description('run segmentation jobs from a Redis queue (BullMQ) until SIGTERM / SIGINT: for `ovseg serve --redis` and `ovseg enqueue`')
      .requiredOption('--redis <url>', 'Redis URL (redis://host:port)')
      .option('--queue <name>', 'the queue', DEFAULT_QUEUE_NAME)
      .option('--concurrency <n>', 'jobs at once (segment() calls; more than 1 pays on CUDA)', positiveInteger, 1)
      .option('--shared-dir <dir>', 'run jobs that name image and result paths under this directory (storage every worker and `ovseg enqueue --shared` see at the same path)')
      .option('--stall-timeout-s <n>', 'a job whose worker dies goes back to the queue after about this long', positiveInteger, DEFAULT_QUEUE_SETTINGS.stallTimeoutMs / 1000)
      .option('--grace-s <n>', 'on SIGTERM, running jobs get this long to finish before they go back to the queue', positiveInteger, 30)
      .option('--max-pixels <n>', 'largest image in pixels (larger: LIMIT_EXCEEDED)', positiveInteger, DEFAULT_SERVER_LIMITS.maxPixels)
      .option('--max-score-mb <n>', 'largest score maps per job in MiB (larger: LIMIT_EXCEEDED)', positiveInteger, DEFAULT_SERVER_LIMITS.maxScoreBytes / 2 ** 20)
      .option('--class-embeddings <file>', 'a file of model.saveClassEmbeddings to load at start (repeatable)', (v: string, all: string[]) => [...all, v], [] as string[]),
  ).action(async (o) => {
    const { startWorker } = await import('../queue/worker')
    const model = await openModel(o)
    for (const file of o.classEmbeddings as string[]) await model.loadClassEmbeddings(file)
    // A worker waits for Redis (it may start first), but says so.
    const waiting = setTimeout(() => process.stderr.write(`ovseg worker: waiting for Redis at ${redisHost(o.redis)}\n`), 3000)
    const worker = await startWorker(model, {
      redis: o.redis,
      queue: o.queue,
      concurrency: o.concurrency,
      sharedDir: o.sharedDir,
      stallTimeoutMs: o.stallTimeoutS * 1000,
      limits: { maxPixels: o.maxPixels, maxScoreBytes: o.maxScoreMb * 2 ** 20 },
    })
    clearTimeout(waiting)
    process.stderr.write(`ovseg worker ${worker.name}: ${model.manifest.name} on the queue ${o.queue} at ${redisHost(o.redis)}\n`)
    await untilSignal()
    process.stderr.write(`ovseg worker ${worker.name}: stopping (running jobs get ${o.graceS} s)\n`)
    await worker.close(o.graceS * 1000)
    model.dispose()
    process.stderr.write(`ovseg worker ${worker.name}: stopped after ${worker.completed} jobs\n`)
  })

  program
    .command('enqueue')
    .description('segment images on `ovseg worker` processes through a Redis queue; writes what `segment` writes, and a re-run resumes')
    .argument('<images...>', 'image files, directories (their images) or glob patterns')
    .requiredOption('--redis <url>', 'Redis URL (redis://host:port)')
    .option('--queue <name>', 'the queue', DEFAULT_QUEUE_NAME)
    .option('-c, --classes <list>', 'comma-separated class names')
    .option('--classes-file <file>', 'class names, one per line')
    .option('-o, --out <dir>', 'output directory (images whose JSON is there already are skipped)', 'ovseg-out')
    .option('--shared', 'workers read the images and write the results themselves (the same paths on every machine, under their --shared-dir); otherwise bytes and results travel through Redis', false)
    .option('--priority <n>', 'job priority (lower first; requests of `serve --redis` go before every batch job)', positiveInteger, BATCH_PRIORITY)
    .option('--in-flight <n>', 'without --shared: most jobs in the queue at once (their image bytes are held in Redis)', positiveInteger, 64)
    .option('--threshold <x>', "mask threshold (default: the workers' model's)", threshold)
    .option('--lambda <x>', "ensemble weight (default: the workers' model's)", unitInterval)
    .addOption(new Option('--mode <mode>', "semantic or demo (default: the workers' model's)").choices([...SEGMENT_MODES]))
    .action(async (images: string[], o) => {
      const classes = readClasses(o.classes, o.classesFile)
      const files = expandImages(images)
      const { SegmentQueue } = await import('../queue/client')
      const queue = await SegmentQueue.connect({ redis: o.redis, queue: o.queue })
      try {
        const failed = await enqueueCommand(queue, files, classes, o)
        process.exitCode = failed > 0 ? 1 : 0
      } finally {
        await queue.close()
      }
    })

  program
    .command('info')
    .description('model directory summary, execution providers, library versions')
    .option('--model <dir>', 'model directory', DEFAULT_MODEL_DIR)
    .option('--json', 'as JSON', false)
    .action(async (o) => {
      // 'auto' tries CUDA and says why it is or is not used.
      const model = await loadModel(o.model, { executionProvider: 'auto' })
      const m = model.manifest
      const processing = m.processing ?? DEFAULT_PROCESSING
      const precisions = PRECISIONS.filter((p) => p === 'float32' || m.graphs[p] !== undefined)
      const info = {
        model: { dir: model.dir, name: m.name, formatVersion: m.version, clip: m.clip, precisions, promptDepth: model.promptDepth, noObject: m.noObjectEmbedding !== null, generator: m.generator ?? null, templates: m.templates.length, defaults: model.defaults, processing },
        executionProvider: model.executionProvider,
        versions: { ovseg: pkg.version, onnxRuntime: runtimeInfo()?.version, runtimeLibrary: runtimeInfo()?.libraryPath, sharp: sharp.versions.sharp, libvips: sharp.versions.vips, node: process.versions.node },
      }
      model.dispose()
      if (o.json) {
        process.stdout.write(`${JSON.stringify(info, null, 2)}\n`)
        return
      }
      const c = m.clip
      const d = model.defaults
      process.stdout.write(
        [
          `model        ${m.name} (${model.dir})`,
          `CLIP         ${c.imageSize}px, patch ${c.patchSize}, ViT ${c.visionWidth} x ${c.visionLayers}, embedding ${c.embedDim}; mask prompts depth ${model.promptDepth}`,
          `precisions   ${precisions.join(', ')} (--precision)`,
          `generator    ${m.generator ? `${m.generator.file} (stride ${m.generator.maskStride}, padded to ${m.generator.sizeDivisibility})` : 'none (segment needs caller masks)'}`,
          `processing   short side ${processing.shortSide}, long side at most ${processing.maxSize}${m.processing ? '' : " (OVSeg's: the manifest sets none)"}`,
          `defaults     mode ${d.mode}; ${SEGMENT_MODES.map((mode) => `${mode}: threshold ${d[mode].threshold}, lambda ${d[mode].lambda}`).join('; ')}${m.defaults ? '' : " (OVSeg's: the manifest sets none)"}`,
          `providers    cpu: yes; auto picks ${model.executionProvider.name} (${model.executionProvider.reason})`,
          `versions     ovseg ${pkg.version}, ONNX Runtime ${info.versions.onnxRuntime}, sharp ${info.versions.sharp} (libvips ${info.versions.libvips}), Node ${process.versions.node}`,
          '',
        ].join('\n'),
      )
    })
  return program
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram()
  try {
    await program.parseAsync(argv)
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2 // --help / --version exit 0; usage errors 2
    const e = err as { code?: string; message: string }
    process.stderr.write(`ovseg: ${e.code ? `${e.code} ` : ''}${e.message}\n`)
    return 2
  }
}

if (require.main === module) {
  main(process.argv).then((code) => {
    process.exitCode = code
  })
}
