import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

export const ROOT = resolve(__dirname, '..')
export const TINY = join(ROOT, 'models', 'tiny-random')
export const PARITY_DIR = join(ROOT, 'build', 'parity')
export const PACKAGE_JSON = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; ovseg: { onnxruntime: string } }

/** Reads a file the Python fixtures made; fails loudly (never skips) when it is missing. */
export function fixture(path: string): Buffer {
  if (!existsSync(path)) {
    throw new Error(`missing fixture ${path}: run \`bash scripts/make-fixtures.sh\` (it needs the Python tooling, see README)`)
  }
  return readFileSync(path)
}

export function float32s(buf: Buffer): Float32Array {
  const copy = new Uint8Array(buf)
  return new Float32Array(copy.buffer, 0, copy.byteLength / 4)
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length)
  let max = 0
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]))
  return max
}

/** Typed arrays made by the addon come from another realm: check the tag, not `instanceof`. */
export function tag(value: unknown): string {
  return Object.prototype.toString.call(value).slice(8, -1)
}

/** The `code` of what `fn` throws, or undefined when it does not throw. */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return (err as { code?: string }).code
  }
  return undefined
}
