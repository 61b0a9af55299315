/** Command-line inputs: image lists from files, directories and glob patterns; class lists. */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
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

/** Class names from `--classes "a,b"` or `--classes-file` (one per line; blank lines and `#` comments skipped). */
export function readClasses(list: string | undefined, file: string | undefined): string[] {
  if ((list === undefined) === (file === undefined)) {
    throw new OvsegError('INVALID_ARGUMENT', 'give the classes with exactly one of --classes "a,b,c" or --classes-file FILE')
  }
  let classes: string[]
  if (file !== undefined) {
    if (!existsSync(file)) throw new OvsegError('INVALID_ARGUMENT', `classes file ${file} does not exist`)
    classes = readFileSync(file, 'utf8').split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))
  } else {
    classes = (list as string).split(',').map((c) => c.trim()).filter(Boolean)
  }
  if (classes.length === 0) throw new OvsegError('EMPTY_INPUT', 'the class list is empty')
  return classes
}
