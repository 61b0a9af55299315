// Measures the recipe's models like the paper, through ovseg's own runtime (segment()), on the
// synthetic world's held-out test split: CLIP on ground-truth masks per variant (Table 3), cropping
// without masking, generator vs CLIP vs ensemble over lambda (Table 4), prompt depth (Table 6),
// seen vs unseen classes, the mining precision and each stage's time. Writes docs/recipe-results.md
// and a JSON next to it.
//
//   npm run recipe:eval -- [--recipe build/recipe] [--out docs/recipe-results.md]
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import { ConfusionMatrix, loadModel, type Model, readLabelPng, type SegmentOptions } from 'ovseg'

const IGNORE = 255

interface TestScene {
  image: string
  labels: Uint16Array
  width: number
  height: number
}

interface Row {
  model: string
  setting: string
  mIoU: number
  seen: number
  unseen: number
  perClass: Record<string, number | null>
}

/** One binary mask per class present in the label map (ground-truth masks), and their classes. */
function classMasks(scene: TestScene, boxes: boolean): { masks: Uint8Array[]; classes: number[] } {
  const { labels, width, height } = scene
  const present = [...new Set(labels)].filter((c) => c !== IGNORE).sort((a, b) => a - b)
  const masks = present.map((c) => {
    const mask = Uint8Array.from(labels, (v) => (v === c ? 1 : 0))
    if (!boxes) return mask
    // Cropping without masking: the mask's bounding box, so the crop keeps its background.
    let [x0, y0, x1, y1] = [width, height, -1, -1]
    for (let i = 0; i < mask.length; i++) {
      if (!mask[i]) continue
      const x = i % width
      const y = (i - x) / width
      x0 = Math.min(x0, x)
      y0 = Math.min(y0, y)
      x1 = Math.max(x1, x)
      y1 = Math.max(y1, y)
    }
    const box = new Uint8Array(mask.length)
    for (let y = y0; y <= y1; y++) box.fill(1, y * width + x0, y * width + x1 + 1)
    return box
  })
  return { masks, classes: present }
}

async function evaluate(model: Model, scenes: TestScene[], classes: string[], setting: string): Promise<ConfusionMatrix> {
  const matrix = new ConfusionMatrix(classes.length, IGNORE)
  for (const scene of scenes) {
    let prediction: Uint16Array
    if (setting === 'gt-masks' || setting === 'gt-boxes') {
      const { masks, classes: present } = classMasks(scene, setting === 'gt-boxes')
      const r = await model.segment(scene.image, classes, { masks, generator: false })
      // Each ground-truth region takes the class CLIP gave its crop.
      prediction = new Uint16Array(scene.labels.length).fill(IGNORE)
      present.forEach((c, k) => {
        const cls = r.segments[k].classIndex ?? IGNORE
        for (let i = 0; i < prediction.length; i++) if (scene.labels[i] === c) prediction[i] = cls
      })
    } else {
      // 'pipeline': the model's own defaults (its shipped λ); 'lambda=X': that λ.
      const options: SegmentOptions = setting === 'pipeline' ? {} : { lambda: Number(setting.replace('lambda=', '')) }
      prediction = (await model.segment(scene.image, classes, options)).labels
    }
    matrix.add(prediction, scene.labels)
  }
  return matrix
}

/** `seen`: the generator's training classes, as the recipe wrote them next to the test split. */
function row(model: string, setting: string, classes: string[], seen: Set<string>, matrix: ConfusionMatrix): Row {
  const m = matrix.metrics()
  const perClass: Record<string, number | null> = {}
  classes.forEach((c, i) => (perClass[c] = m.perClass[i].iou))
  const mean = (names: string[]) => {
    const v = names.map((c) => perClass[c]).filter((x): x is number => x !== null)
    return v.reduce((a, b) => a + b, 0) / v.length
  }
  return { model, setting, mIoU: m.mIoU ?? NaN, seen: mean(classes.filter((c) => seen.has(c))), unseen: mean(classes.filter((c) => !seen.has(c))), perClass }
}

const pct = (v: number) => (100 * v).toFixed(1)
/** The three head nouns a class's mined regions were paired with most, with their shares. */
const pairedWith = (counts: Record<string, number> | undefined) => {
  if (!counts) return 'none'
  const total = Object.values(counts).reduce((a, b) => a + b, 0)
  return Object.entries(counts).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, n]) => `${k} ${pct(n / total)}%`).join(', ')
}
/** Table 4's rows: CLIP alone, the generator alone (in effect), ensembles, CLIP over every query. */
const LAMBDAS = [['0', 'CLIP only (valid queries)'], ['0.000001', 'generator only, in effect'], ['0.3', 'ensemble'], ['0.5', 'ensemble'], ['0.7', 'ensemble (OVSeg\'s default)'], ['0.9', 'ensemble'], ['1', 'CLIP only (every query, invalid ones at p = 1)']]
const readJson = (path: string) => (existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : undefined)

async function main() {
  const { values } = parseArgs({ options: { recipe: { type: 'string', default: 'build/recipe' }, out: { type: 'string', default: 'docs/recipe-results.md' } } })
  const recipe = values.recipe as string
  const test = join(recipe, 'test')
  const classes = readFileSync(join(test, 'classes.txt'), 'utf8').trim().split('\n')
  const seen = new Set(readFileSync(join(test, 'seen-classes.txt'), 'utf8').trim().split('\n'))
  const scenes: TestScene[] = []
  for (const name of readdirSync(join(test, 'images')).sort()) {
    const truth = await readLabelPng(join(test, 'labels', name), false, IGNORE)
    scenes.push({ image: join(test, 'images', name), ...truth })
  }
  const variants = ['base', 'fine-tuned', 'prompt-tuned', 'fine-tuned-prompt-tuned', 'control', 'prompt-tuned-depth-1', 'prompt-tuned-depth-4']
  const rows: Row[] = []
  let shippedLambda = NaN
  for (const variant of variants) {
    const dir = join(recipe, 'models', variant)
    if (!existsSync(dir)) continue
    const model = await loadModel(dir)
    if (variant === 'fine-tuned-prompt-tuned') shippedLambda = model.defaults.semantic.lambda
    const settings = ['gt-masks', 'pipeline']
    if (variant === 'base' || variant === 'fine-tuned-prompt-tuned') settings.push('gt-boxes')
    if (variant === 'fine-tuned-prompt-tuned') settings.push(...LAMBDAS.map(([l]) => `lambda=${l}`))
    for (const setting of settings) {
      const started = performance.now()
      rows.push(row(variant, setting, classes, seen, await evaluate(model, scenes, classes, setting)))
      const r = rows[rows.length - 1]
      console.log(`${variant} ${setting}: mIoU ${pct(r.mIoU)} (seen ${pct(r.seen)}, unseen ${pct(r.unseen)}) in ${((performance.now() - started) / 1000).toFixed(1)} s`)
    }
    model.dispose()
  }
  const get = (model: string, setting: string) => rows.find((r) => r.model === model && r.setting === setting)
  const line = (cells: (string | undefined)[]) => `| ${cells.map((c) => c ?? 'n/a').join(' | ')} |`
  const cell = (r: Row | undefined, key: 'mIoU' | 'seen' | 'unseen') => (r ? pct(r[key]) : undefined)
  const mined = JSON.parse(readFileSync(join(recipe, 'mined.json'), 'utf8'))
  // Earlier mining rounds (mined_r1.json, ...), then the last one (mined.json).
  const rounds: { pairs: number; crops: number; precision: number; clip: string }[] = []
  for (let r = 1; existsSync(join(recipe, `mined_r${r}.json`)); r++) rounds.push(JSON.parse(readFileSync(join(recipe, `mined_r${r}.json`), 'utf8')))
  rounds.push(mined)
  const log = JSON.parse(readFileSync(join(recipe, 'recipe_log.json'), 'utf8'))
  const gap = readJson(join(recipe, 'gap.json'))
  const chosen = readJson(join(recipe, 'lambda.json'))
  const proposals = readJson(join(recipe, 'generator_log.json'))?.valProposals
  const L = `λ ${shippedLambda}`

  const md: string[] = [
    '<!-- Generated by `npm run recipe:eval` from the recipe folder; do not edit by hand. -->',
    '# Recipe results',
    '',
    `Test split: ${scenes.length} held-out scenes of the synthetic world, ${classes.length} classes (${seen.size} seen by the generator, ${classes.length - seen.size} unseen). ` +
      'Every number is mIoU (%) from ovseg\'s runtime (`segment()`, ONNX Runtime on CPU), ignoring distractor pixels. ' +
      '"GT masks": each ground-truth class region is cropped and masked as segment() does and classified by CLIP alone. ' +
      `"Pipeline": the model's own generator, CLIP and the ensemble at the shipped λ = ${shippedLambda} (chosen on the val split, below).`,
    '',
    '## CLIP variants (the paper\'s Table 3 and its control)',
    '',
    line(['model', 'GT masks', 'seen', 'unseen', `pipeline (${L})`, 'seen', 'unseen']),
    line(['---', '---', '---', '---', '---', '---', '---']),
    ...variants.filter((v) => get(v, 'gt-masks')).map((v) => line([v, cell(get(v, 'gt-masks'), 'mIoU'), cell(get(v, 'gt-masks'), 'seen'), cell(get(v, 'gt-masks'), 'unseen'),
      cell(get(v, 'pipeline'), 'mIoU'), cell(get(v, 'pipeline'), 'seen'), cell(get(v, 'pipeline'), 'unseen')])),
    '',
    '## What each CLIP knows of shapes: object-centric photos vs masked crops (val splits)',
    '',
    'Zero-shot shape accuracy among the 8 shape names (chance 12.5%) on object-centric photos with one thing (the kind of picture stage 1 learned shape names from) and on masked crops of every shape instance of the val scenes (cropped as segment() does); the whole-scene presence AUC of cos(scene, class name), 0.5 being chance; and the mean cosine between the text embeddings of two shape names (the text encoder is frozen after stage 1). From `gap.json` (`python -m ovseg_tools.recipe.gap`).',
    '',
    line(['model', 'object-centric', 'masked crops', 'gap (points)', 'presence AUC, shapes', 'presence AUC, stuff', 'shape-name cosine']),
    line(['---', '---', '---', '---', '---', '---', '---']),
    ...Object.entries((gap?.models ?? {}) as Record<string, { objectCentric: number; maskedCrop: number; shapeAUC: number; stuffAUC: number; shapeNameCosine: number }>).map(([k, v]) =>
      line([k, pct(v.objectCentric), pct(v.maskedCrop), pct(v.objectCentric - v.maskedCrop), v.shapeAUC.toFixed(3), v.stuffAUC.toFixed(3), v.shapeNameCosine.toFixed(3)])),
    '',
    '## Cropping with and without masking (ground-truth regions)',
    '',
    line(['model', 'masked crop', 'crop without masking (the bounding box)']),
    line(['---', '---', '---']),
    ...['base', 'fine-tuned-prompt-tuned'].map((v) => line([v, cell(get(v, 'gt-masks'), 'mIoU'), cell(get(v, 'gt-boxes'), 'mIoU')])),
    '',
    '## Generator, CLIP and the ensemble (the paper\'s Table 4), default model',
    '',
    'OVSeg\'s ensemble is `p = p_gen^(1 − λ) · p_clip^λ`, with λ = 0 meaning CLIP alone over the valid queries; no λ is the generator alone, so λ = 10⁻⁶ stands in for it.',
    '',
    line(['λ', 'what it is', 'mIoU', 'seen', 'unseen']),
    line(['---', '---', '---', '---', '---']),
    ...LAMBDAS.map(([l, what]) => {
      const r = get('fine-tuned-prompt-tuned', `lambda=${l}`)
      return line([l, Number(l) === shippedLambda ? `${what}, shipped` : what, cell(r, 'mIoU'), cell(r, 'seen'), cell(r, 'unseen')])
    }),
    ...(LAMBDAS.some(([l]) => Number(l) === shippedLambda) ? [] : [line([String(shippedLambda), 'ensemble, shipped', cell(get('fine-tuned-prompt-tuned', 'pipeline'), 'mIoU'), cell(get('fine-tuned-prompt-tuned', 'pipeline'), 'seen'), cell(get('fine-tuned-prompt-tuned', 'pipeline'), 'unseen')])]),
    '',
    ...(chosen ? [`The shipped λ is the best of a grid on the val split (${chosen.valScenes} scenes; \`lambda.json\`, \`python -m ovseg_tools.recipe.choose_lambda\`), val mIoU: ${Object.entries(chosen.grid as Record<string, number>).map(([k, v]) => `${k}: ${pct(v)}`).join(', ')}.`] : []),
    '',
    '## Proposals of the generator (val split)',
    '',
    'Per ground-truth instance, the best IoU of any proposal binarized at 0.4, and the share of instances some proposal covers at IoU > 0.5 (`train_generator.proposal_recall`, 100 scenes). Unseen: the classes the generator never trained on.',
    '',
    line(['classes', 'mean best IoU', 'covered at IoU > 0.5']),
    line(['---', '---', '---']),
    ...(proposals ? [line(['seen', proposals.seenMeanBestIoU.toFixed(3), pct(proposals.seenCoveredAt50)]), line(['unseen', proposals.unseenMeanBestIoU.toFixed(3), pct(proposals.unseenCoveredAt50)])] : []),
    '',
    '## Prompt depth, prompt tuning only (the paper\'s Table 6)',
    '',
    'This ViT has 4 blocks, so depth 4 (every block) takes the place of the paper\'s 6 of 12.',
    '',
    line(['depth', 'GT masks', `pipeline (${L})`]),
    line(['---', '---', '---']),
    ...[['1', 'prompt-tuned-depth-1'], ['3', 'prompt-tuned'], ['4', 'prompt-tuned-depth-4']].map(([d, v]) => line([d, cell(get(v, 'gt-masks'), 'mIoU'), cell(get(v, 'pipeline'), 'mIoU')])),
    '',
    '## Mining (stage 3)',
    '',
    `${mined.pairs} region/noun-phrase pairs over ${mined.crops} distinct masked crops, matching rule "${mined.rule}"; precision (the phrase's head noun is the region's true class): ${pct(mined.precision)}%.`,
    '',
    'Round 1 pairs with the stage-1 CLIP; round r > 1 with the CLIP fine-tuned (from stage 1) on round r − 1\'s pairs. Only the last round\'s pairs train the adapted CLIPs below and above.',
    '',
    line(['round', 'paired by', 'pairs', 'distinct crops', 'precision']),
    line(['---', '---', '---', '---', '---']),
    ...rounds.map((m, i) => line([String(i + 1), m.clip, String(m.pairs), String(m.crops), pct(m.precision)])),
    '',
    `Last round, per head noun:`,
    '',
    line(['head noun', 'pairs', 'precision', "this class's regions were paired with"]),
    line(['---', '---', '---', '---']),
    ...Object.entries(mined.precisionPerNoun as Record<string, { pairs: number; precision: number }>).map(([k, v]) => line([k, String(v.pairs), pct(v.precision), pairedWith(mined.pairedWith[k])])),
    '',
    '## Stage times on this machine',
    '',
    line(['stage', 'seconds', 'torch threads', 'note']),
    line(['---', '---', '---', '---']),
    ...Object.entries(log.stages as Record<string, { seconds: number; threads: number; note?: string }>).map(([k, v]) => line([k, String(v.seconds), String(v.threads), v.note ?? ''])),
    '',
    `Total: ${Object.values(log.stages as Record<string, { seconds: number }>).reduce((a, v) => a + v.seconds, 0).toFixed(0)} s.`,
    '',
    '## Per-class IoU, default model',
    '',
    line(['class', 'seen', 'GT masks', 'CLIP only (λ 0)', 'generator only', `pipeline (${L})`]),
    line(['---', '---', '---', '---', '---', '---']),
    ...classes.map((c) => {
      const f = (r: Row | undefined) => (r && r.perClass[c] !== null ? pct(r.perClass[c] as number) : undefined)
      return line([c, seen.has(c) ? 'yes' : 'no', f(get('fine-tuned-prompt-tuned', 'gt-masks')), f(get('fine-tuned-prompt-tuned', 'lambda=0')), f(get('fine-tuned-prompt-tuned', 'lambda=0.000001')), f(get('fine-tuned-prompt-tuned', 'pipeline'))])
    }),
    '',
  ]
  writeFileSync(values.out as string, md.join('\n'))
  writeFileSync((values.out as string).replace(/\.md$/, '.json'), `${JSON.stringify({ scenes: scenes.length, classes, shippedLambda, rows, gap: gap?.models, lambda: chosen, proposals, mining: rounds.map((m) => ({ pairs: m.pairs, crops: m.crops, precision: m.precision })), stages: log.stages }, null, 1)}\n`)
  console.log(`wrote ${values.out}`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
