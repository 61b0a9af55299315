/**
 * Token ids equal OpenAI's CLIP tokenizer (PyPI openai-clip) on a generated corpus of 2,000+ strings
 * (tools/ovseg_tools/reference/tokenizer_corpus.py). Strings that ftfy's mojibake repair would rewrite
 * are a separate set, compared with the reference minus that repair (docs/tokenizer.md).
 */
import { join } from 'node:path'

import { loadModelSync, type Model } from '../ts'
import { fixture, PARITY_DIR, TINY } from './helpers'

interface Case {
  text: string
  ids: number[]
  tooLong: boolean
}

const corpus = JSON.parse(fixture(join(PARITY_DIR, 'tokenizer.json')).toString()) as {
  contextLength: number
  cases: Case[]
  mojibakeCases: Case[]
}
let model: Model

beforeAll(() => {
  model = loadModelSync(TINY)
})
afterAll(() => model.dispose())

function mismatches(cases: Case[]): string[] {
  const ids = model.tokenize(cases.map((c) => c.text), { overflow: 'truncate' })
  const n = corpus.contextLength
  const bad: string[] = []
  cases.forEach((c, i) => {
    const row = Array.from(ids.subarray(i * n, (i + 1) * n))
    if (row.join() !== c.ids.join()) bad.push(`${JSON.stringify(c.text)}: got ${row.join(' ')}, want ${c.ids.join(' ')}`)
  })
  return bad
}

test('the corpus is large and covers the required kinds of input', () => {
  const texts = corpus.cases.map((c) => c.text)
  expect(corpus.cases.length).toBeGreaterThanOrEqual(2000)
  expect(texts).toContain('')
  expect(texts.some((t) => t.length > 0 && t.trim() === '')).toBe(true)
  expect(corpus.cases.filter((c) => c.tooLong).length).toBeGreaterThanOrEqual(20)
  expect(texts.some((t) => t.includes('&amp;'))).toBe(true)
  expect(texts.some((t) => t.normalize('NFC') !== t)).toBe(true)
  expect(texts.some((t) => /[\u201c\u2019]/.test(t))).toBe(true)
  expect(texts.some((t) => /[\uff01-\uff5e]/.test(t))).toBe(true)
  expect(texts.some((t) => /[\ufb00-\ufb06]/.test(t))).toBe(true)
  expect(texts.some((t) => /[\x00-\x08\x1b]/.test(t))).toBe(true)
})

test('100% identical ids on the main corpus', () => {
  const bad = mismatches(corpus.cases)
  expect(bad.slice(0, 10)).toEqual([])
  expect(bad.length).toBe(0)
})

test('the mojibake set matches the reference without mojibake repair', () => {
  expect(corpus.mojibakeCases.length).toBeGreaterThan(0)
  expect(mismatches(corpus.mojibakeCases)).toEqual([])
})

test("overflow 'error' fails with TEXT_TOO_LONG exactly where OpenAI's tokenizer raises", () => {
  for (const c of corpus.cases) {
    let code: string | undefined
    try {
      model.tokenize([c.text])
    } catch (err) {
      code = (err as { code?: string }).code
    }
    expect({ text: c.text, code }).toEqual({ text: c.text, code: c.tooLong ? 'TEXT_TOO_LONG' : undefined })
  }
})

test('known ids from the specification', () => {
  const row = (text: string) => Array.from(model.tokenize([text])).filter((id) => id !== 0)
  expect(row('a photo of a cat')).toEqual([49406, 320, 1125, 539, 320, 2368, 49407])
  expect(row('a photo of a dog')).toEqual([49406, 320, 1125, 539, 320, 1929, 49407])
  expect(row('Hello, world!')).toEqual([49406, 3306, 267, 1002, 256, 49407])
  expect(row('a &amp; b')).toEqual([49406, 320, 261, 321, 49407])
})
