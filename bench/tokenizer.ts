/**
 * Tokenizer throughput (strings/s), ovseg vs OpenAI's Python tokenizer, on the parity corpus.
 *   npm run bench   (needs build/parity/tokenizer.json from scripts/make-fixtures.sh)
 * The Python tokenizer caches BPE results per word, so its first pass (cold) and later passes
 * (warm) are reported apart; ovseg has no cache, every pass does the full work.
 */
import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

import { loadModelSync, TINY_RANDOM_MODEL_DIR } from 'ovseg'

const ROOT = resolve(__dirname, '..', '..')
const PASSES = 5

const corpusPath = join(ROOT, 'build', 'parity', 'tokenizer.json')
const texts = (JSON.parse(readFileSync(corpusPath, 'utf8')).cases as { text: string }[]).map((c) => c.text)
const model = loadModelSync(TINY_RANDOM_MODEL_DIR)
const ours: number[] = []
for (let p = 0; p < PASSES; p++) {
  const t0 = process.hrtime.bigint()
  model.tokenize(texts, { overflow: 'truncate' })
  ours.push(Number(process.hrtime.bigint() - t0) / 1e9)
}
model.dispose()

const py = spawnSync(join(ROOT, '.venv', 'bin', 'python'), [join(ROOT, 'bench', 'tokenizer_reference.py'), corpusPath, String(PASSES)], { encoding: 'utf8' })
if (py.status !== 0) throw new Error(`Python reference failed: ${py.stderr}`)
const theirs = JSON.parse(py.stdout) as { strings: number; seconds: number[] }

const rate = (s: number) => texts.length / s
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const result = {
  strings: texts.length,
  oursFirstPass: rate(ours[0]),
  oursMedian: rate(median(ours)),
  pythonColdFirstPass: rate(theirs.seconds[0]),
  pythonWarmMedian: rate(median(theirs.seconds.slice(1))),
}
console.log(JSON.stringify(result))
console.log(
  [
    '| tokenizer | strings/s (first pass) | strings/s (median of later passes) |',
    '|---|---|---|',
    `| ovseg (Rust, via TS API) | ${result.oursFirstPass.toFixed(0)} | ${result.oursMedian.toFixed(0)} |`,
    `| OpenAI simple_tokenizer (Python) | ${result.pythonColdFirstPass.toFixed(0)} | ${result.pythonWarmMedian.toFixed(0)} |`,
    `| ratio ours/Python | ${(result.oursFirstPass / result.pythonColdFirstPass).toFixed(1)}x | ${(result.oursMedian / result.pythonWarmMedian).toFixed(1)}x |`,
  ].join('\n'),
)
mkdirSync(join(ROOT, 'build', 'bench'), { recursive: true })
writeFileSync(join(ROOT, 'build', 'bench', 'tokenizer.json'), JSON.stringify(result, null, 2))
