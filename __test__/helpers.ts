import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
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

/** A copy of the tiny model in `scratch/name`, with `edit` applied to its manifest and `files` written into it. */
export function tinyModelCopy(scratch: string, name: string, edit: (m: Record<string, any>) => void, files: Record<string, Buffer | string> = {}): string {
  const dir = join(scratch, name)
  cpSync(TINY, dir, { recursive: true })
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'))
  edit(manifest)
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest))
  for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, file), content)
  return dir
}

/** A little-endian `.npy` file of `shape` (`<f4` or `<f8`) holding `values`, zeros after them. */
export function npy(shape: number[], values: number[] = [], descr: '<f4' | '<f8' = '<f4'): Buffer {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`
  while ((10 + header.length + 1) % 64 !== 0) header += ' '
  header += '\n'
  const head = Buffer.alloc(10)
  head.write('\x93NUMPY', 0, 'latin1')
  head[6] = 1
  head.writeUInt16LE(header.length, 8)
  const count = shape.reduce((a, b) => a * b, 1)
  const data = descr === '<f8' ? new Float64Array(count) : new Float32Array(count)
  data.set(values)
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer)])
}
