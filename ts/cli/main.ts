#!/usr/bin/env node
/** The `ovseg` command line: segment, eval, info, serve. Exit codes: 0 ok, 1 some images failed, 2 usage or fatal error. */
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
import { DEFAULT_SERVER_LIMITS } from '../server/limits'
import { evalCommand } from './eval-command'
import { expandImages, readClasses } from './inputs'
import { segmentCommand } from './segment-command'

const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }

function positiveInteger(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got ${JSON.stringify(value)}`)
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

async function openModel(flags: ModelFlags): Promise<Model> {
  if (flags.model === TINY_RANDOM_MODEL_DIR) {
    process.stderr.write(`model: ${TINY_RANDOM_MODEL_DIR} (random weights: its labels mean nothing)\n`)
  }
  return loadModel(flags.model, { executionProvider: flags.provider, threads: flags.threads, precision: flags.precision })
}

export function buildProgram(): Command {
  const program = new Command()
  program.name('ovseg').description('Open-vocabulary semantic segmentation (OVSeg) from the command line').version(pkg.version).exitOverride()

  modelOptions(
    program
      .command('segment')
      .description('segment images into the given classes; writes an overlay PNG, a label-map PNG and a JSON per image')
      .argument('<images...>', 'image files, directories (their images) or glob patterns')
      .option('-c, --classes <list>', 'comma-separated class names')
      .option('--classes-file <file>', 'class names, one per line (names may contain commas)')
      .option('-o, --out <dir>', 'output directory (default: ovseg-out, or no files with --json)')
      .option('--json', 'print the results as JSON on stdout', false)
      .option('--threshold <x>', "mask threshold (default: the model's for the mode, see ovseg info; OVSeg's 0.4, demo 0.35)", threshold)
      .option('--lambda <x>', "ensemble weight of CLIP against the generator (default: the model's for the mode; OVSeg's 0.7, demo 0)", unitInterval)
      .addOption(new Option('--mode <mode>', "semantic: every pixel gets a class; demo: best mask per class, the rest unlabeled (default: the model's, semantic unless its manifest says otherwise)").choices([...SEGMENT_MODES])),
  ).action(async (images: string[], o) => {
    const classes = readClasses(o.classes, o.classesFile)
    const files = expandImages(images)
    const model = await openModel(o)
    try {
      const failed = await segmentCommand(model, files, classes, o)
      process.exitCode = failed > 0 ? 1 : 0
    } finally {
      model.dispose()
    }
  })

  modelOptions(
    program
      .command('eval')
      .description('mIoU, per-class IoU, pixel accuracy and frequency-weighted IoU over images + label PNGs (ADE20K / Pascal Context layout)')
      .requiredOption('--images <dir>', 'images')
      .requiredOption('--labels <dir>', 'label PNGs (class index per pixel), same base names as the images')
      .requiredOption('--classes <file>', 'class names, one per line, in label-index order')
      .option('--ignore-index <n>', 'label value left out of the metrics', integer, 255)
      .option('--reduce-zero-label', 'ADE20K convention: label 0 is ignored, label k is class k - 1', false)
      .option('--threshold <x>', "mask threshold (default: the model's)", threshold)
      .option('--lambda <x>', "ensemble weight (default: the model's)", unitInterval)
      .option('-o, --out <file>', 'JSON report', 'ovseg-eval.json'),
  ).action(async (o) => {
    const classes = readClasses(undefined, o.classes)
    const model = await openModel(o)
    try {
      const failed = await evalCommand(model, classes, o)
      process.exitCode = failed > 0 ? 1 : 0
    } finally {
      model.dispose()
    }
  })

  modelOptions(
    program
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
      .option('--log', 'log requests', false),
  ).action(async (o) => {
    // Loaded here: the other commands do not need fastify.
    const { createApp, LOOPBACK_HOSTS } = await import('../server/app')
    const model = await openModel(o)
    for (const file of o.classEmbeddings as string[]) {
      const { classes } = await model.loadClassEmbeddings(file)
      process.stderr.write(`class embeddings: ${classes.length} classes from ${file}\n`)
    }
    // A wildcard bind address is no name a client uses: those come with --allow-host.
    const bound = o.host === '0.0.0.0' || o.host === '::' ? [] : [o.host.replace(/^\[|\]$/g, '')]
    const app = await createApp(model, {
      maxBodyBytes: o.maxBodyMb * 2 ** 20,
      queueSize: o.queueSize,
      concurrency: o.concurrency,
      requestTimeoutMs: o.timeoutS * 1000,
      logger: o.log,
      maxPixels: o.maxPixels,
      maxClasses: o.maxClasses,
      maxScoreBytes: o.maxScoreMb * 2 ** 20,
      allowedHosts: [...LOOPBACK_HOSTS, ...bound, ...o.allowHost],
    })
    const address = await app.listen({ port: o.port, host: o.host })
    process.stderr.write(`ovseg serving ${model.manifest.name} on ${address}\n`)
    await new Promise<void>((resolve) => {
      const stop = () => resolve()
      process.once('SIGINT', stop)
      process.once('SIGTERM', stop)
    })
    await app.close()
    model.dispose()
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
