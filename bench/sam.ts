/**
 * SAM's automatic mask generation: ovseg against segment-anything's SamAutomaticMaskGenerator
 * (PyTorch, the same CPU, the same random weights in Meta's layout, the same 1024x768 image), side
 * by side in one run, at 32x32 points. Two settings: segment-anything's default thresholds (with
 * random weights few masks pass the predicted-IoU filter), and thresholds that keep every mask
 * (predIouThresh 0, stabilityScoreThresh 0: every one of the 3072 masks is upscaled, scored and
 * boxed, the post-processing's worst case). For ovseg, the share of the time outside the networks
 * (total minus ONNX Runtime's), and the peak RSS of one segment() call with SAM and a CLIP model.
 * Each side runs each setting OVSEG_BENCH_RUNS times (default 1) and reports its fastest.
 *
 *   npm run bench:sam [GEOMETRY]      (GEOMETRY: vit_b, the default, mobile_sam (TinyViT), or tiny; exports
 *                                      build/bench-models/sam-GEOMETRY once)
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join, resolve } from 'node:path'

import { loadModel, loadSamModel, TINY_RANDOM_MODEL_DIR, type SamOptions } from 'ovseg'

const ROOT = resolve(__dirname, '..', '..') // build/bench -> repo root
const PYTHON = join(ROOT, '.venv', 'bin', 'python')
const SEED = 0
const [WIDTH, HEIGHT] = [1024, 768]
/** Timed runs per side and setting (the fastest counts); both sides the same. */
const RUNS = Number(process.env.OVSEG_BENCH_RUNS ?? 1)

function image(): Uint8Array {
  const rgb = new Uint8Array(WIDTH * HEIGHT * 3)
  for (let y = 0; y < HEIGHT; y++) {
    for (let x = 0; x < WIDTH; x++) {
      const i = (y * WIDTH + x) * 3
      const inside = (x - 400) ** 2 + (y - 300) ** 2 < 150 ** 2
      rgb[i] = inside ? 200 : (x * 255) / WIDTH
      rgb[i + 1] = inside ? 40 : (y * 255) / HEIGHT
      rgb[i + 2] = ((x + y) % 64) * 4
    }
  }
  return rgb
}

async function main() {
  const geometry = process.argv[2] ?? 'vit_b'
  const dir = join(ROOT, 'build', 'bench-models', `sam-${geometry}`)
  if (!existsSync(join(dir, 'sam.json'))) {
    execFileSync(PYTHON, ['-W', 'ignore', '-m', 'ovseg_tools.export.sam', geometry, dir, '--random', '--seed', String(SEED)], { cwd: join(ROOT, 'tools'), stdio: 'inherit' })
  }
  const rgb = image()
  const rgbFile = join(ROOT, 'build', 'bench-models', 'sam-bench.rgb')
  mkdirSync(join(ROOT, 'build', 'bench-models'), { recursive: true })
  writeFileSync(rgbFile, rgb)
  const sam = await loadSamModel(dir)
  const raw = { data: rgb, width: WIDTH, height: HEIGHT, channels: 3 as const }
  console.log(`SAM ${geometry} (random weights), ${WIDTH}x${HEIGHT}, 32x32 points, ${availableParallelism()} cores, Node ${process.version}`)
  const settings: Array<[string, SamOptions]> = [
    ['default thresholds', {}],
    ['every mask kept', { predIouThresh: 0, stabilityScoreThresh: 0 }],
  ]
  const rows: string[] = []
  for (const [name, options] of settings) {
    let best = Infinity
    let session = 0
    let masks = 0
    for (let run = 0; run < RUNS; run++) {
      const start = performance.now()
      const out = await sam.generate(raw, options)
      const ms = performance.now() - start
      if (ms < best) [best, session, masks] = [ms, out.onnxRuntimeMs, out.records.length]
    }
    const python = {
      points_per_side: 32, points_per_batch: 64,
      pred_iou_thresh: options.predIouThresh ?? 0.88, stability_score_thresh: options.stabilityScoreThresh ?? 0.95,
      stability_score_offset: 1.0, box_nms_thresh: 0.7,
    }
    const ref = JSON.parse(execFileSync(PYTHON, [join(ROOT, 'bench', 'sam_reference.py'), geometry, String(SEED), rgbFile, String(HEIGHT), String(WIDTH), JSON.stringify(python), String(RUNS)], { encoding: 'utf8' }).trim().split('\n').pop() as string)
    rows.push(`| ${name} | ${masks} | ${ref.masks} | ${(best / 1000).toFixed(2)} s | ${(session / 1000).toFixed(2)} s | ${(100 * (best - session) / best).toFixed(1)}% | ${(ref.ms / 1000).toFixed(2)} s (torch ${ref.torch}, ${ref.threads} threads) | ${(ref.ms / best).toFixed(2)}x |`)
  }
  console.log('\n| setting | masks (ovseg) | masks (reference) | ovseg total | in ONNX Runtime | outside the networks | segment-anything | speed-up |\n|---|---|---|---|---|---|---|---|')
  for (const r of rows) console.log(r)

  // Peak RSS of one segment() call, in a fresh process each, at SAM's batch and a smaller one.
  console.log('')
  for (const batch of [64, 16]) console.log(execFileSync(process.execPath, [__filename, geometry, '--rss', String(batch)], { encoding: 'utf8' }).trim())
  sam.dispose()
}

/** The process's peak RSS in MiB: VmHWM (getrusage's maxRSS would count the parent's size at the fork). */
function vmHwm(): number {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('VmHWM:')) ?? 'VmHWM: 0 kB'
  return Number(line.split(/\s+/)[1]) / 1024
}

/** One segment() with SAM (every mask kept, `pointsPerBatch` prompts per decoder run) and the tiny CLIP model: the process's peak RSS. */
async function peakRss(geometry: string, pointsPerBatch: number) {
  const sam = await loadSamModel(join(ROOT, 'build', 'bench-models', `sam-${geometry}`))
  const model = await loadModel(TINY_RANDOM_MODEL_DIR)
  const loaded = vmHwm()
  const r = await model.segment({ data: image(), width: WIDTH, height: HEIGHT, channels: 3 }, ['grass', 'sky', 'red car'], { sam, generator: false, samOptions: { predIouThresh: 0, stabilityScoreThresh: 0, pointsPerBatch } })
  console.log(`one segment() with SAM (every mask kept, ${r.segments.length} classified by CLIP, ${pointsPerBatch} prompts per decoder run) and the tiny CLIP model on ${WIDTH}x${HEIGHT}: peak RSS ${vmHwm().toFixed(0)} MiB (${loaded.toFixed(0)} MiB with both models loaded)`)
}

;(process.argv[3] === '--rss' ? peakRss(process.argv[2], Number(process.argv[4] ?? 64)) : main()).catch((err) => {
  console.error(err)
  process.exit(1)
})
