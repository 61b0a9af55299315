/** Command-line inputs: image lists from files, directories and glob patterns; class lists. */
import { closeSync, existsSync, openSync, readdirSync, readSync, statSync } from 'node:fs'
import { extname, join, resolve } from 'node:path'

import { globSync } from 'tinyglobby'

import { OvsegError } from '../errors'

export const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.gif', '.avif', '.bmp'])

function imagesIn(dir: string): string[] {
  return readdirSync(dir)
    .filter((name) => IMAGE_EXTENSIONS.has(extname(name).toLowerCase()))
    .sort()
    .map((name) => join(dir, name))
}

/** Files as given, every image of a directory (sorted, not recursive), or a glob's matches. */
export function expandImages(inputs: string[]): string[] {
  const out: string[] = []
  for (const input of inputs) {
    if (existsSync(input)) {
      out.push(...(statSync(input).isDirectory() ? imagesIn(input) : [input]))
      continue
    }
    const matches = globSync(input, { absolute: false, onlyFiles: true }).sort()
    if (matches.length === 0) throw new OvsegError('INVALID_ARGUMENT', `no file, directory or glob match for ${JSON.stringify(input)}`)
    out.push(...matches)
  }
  return [...new Set(out.map((p) => resolve(p)))]
}

/** Largest classes file; read in bounded chunks, since /dev/zero or a pipe reports no size. */
export const MAX_CLASSES_FILE_BYTES = 2 ** 20

/** Most class names (segment()'s limit: labels are 16-bit). */
export const MAX_CLASSES = 65535

function readBounded(file: string, limit: number): string {
  const fd = openSync(file, 'r')
  try {
    const buf = Buffer.alloc(limit + 1)
    let length = 0
    for (let n = -1; n !== 0 && length <= limit; length += n) n = readSync(fd, buf, length, buf.length - length, null)
    if (length > limit) throw new OvsegError('INVALID_ARGUMENT', `classes file ${file} is over the limit of ${limit} bytes`)
    return buf.toString('utf8', 0, length)
  } finally {
    closeSync(fd)
  }
}

/** Class names from `--classes "a,b"` or `--classes-file` (one per line; blank lines and `#` comments skipped). */
export function readClasses(list: string | undefined, file: string | undefined): string[] {
  if ((list === undefined) === (file === undefined)) {
    throw new OvsegError('INVALID_ARGUMENT', 'give the classes with exactly one of --classes "a,b,c" or --classes-file FILE')
  }
  let classes: string[]
  if (file !== undefined) {
    if (!existsSync(file)) throw new OvsegError('INVALID_ARGUMENT', `classes file ${file} does not exist`)
    if (statSync(file).isDirectory()) throw new OvsegError('INVALID_ARGUMENT', `classes file ${file} is a directory`)
    classes = readBounded(file, MAX_CLASSES_FILE_BYTES).split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
  } else {
    classes = (list as string).split(',').map((c) => c.trim()).filter(Boolean)
  }
  if (classes.length === 0) throw new OvsegError('EMPTY_INPUT', 'the class list is empty')
  if (classes.length > MAX_CLASSES) throw new OvsegError('INVALID_ARGUMENT', `${classes.length} classes, over the limit of ${MAX_CLASSES}`)
  return classes
}
