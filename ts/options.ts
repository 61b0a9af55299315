import { availableParallelism } from 'node:os'

import { expected, OvsegError, tagOf } from './errors'

export function checkPositiveInteger(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw expected('INVALID_ARGUMENT', 'a positive integer', name, value)
  }
  return value
}

/** ONNX Runtime intra-op threads: 1 to 4x the available cores (more only thrash; the core checks the same). */
export function checkThreads(value: unknown): number | undefined {
  if (value === undefined) return undefined
  const most = 4 * availableParallelism()
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > most) {
    throw expected('INVALID_ARGUMENT', `an integer in 1..${most} (4x the available cores)`, 'threads', value)
  }
  return value
}

export function checkBoolean(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw expected('INVALID_ARGUMENT', 'a boolean', name, value)
  return value
}

/** `value` if it is one of `allowed`; `fallback` when it is undefined (none: undefined). */
export function checkOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[], fallback: T): T
export function checkOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[]): T | undefined
export function checkOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[], fallback?: T): T | undefined {
  if (value === undefined) return fallback
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw expected('INVALID_ARGUMENT', `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, name, value)
  }
  return value as T
}

export function checkOptionsObject(value: unknown, name: string): Record<string, unknown> {
  if (value === undefined) return {}
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw expected('INVALID_ARGUMENT', 'an options object', name, value)
  }
  return value as Record<string, unknown>
}

/** A non-empty array of strings (texts, class names, templates). */
export function checkStrings(value: unknown, name: string): string[] {
  if (!Array.isArray(value)) throw expected('INVALID_ARGUMENT', 'an array of strings', name, value)
  if (value.length === 0) throw new OvsegError('EMPTY_INPUT', `Expected at least one entry in \`${name}\` but received an empty array`)
  // An index loop, not forEach: forEach skips the holes of a sparse array.
  for (let i = 0; i < value.length; i++) {
    const v: unknown = value[i]
    if (typeof v !== 'string') throw expected('INVALID_ARGUMENT', 'a string', `${name}[${i}]`, v)
  }
  return value as string[]
}

export function checkSignal(value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined
  if (tagOf(value) !== 'AbortSignal') throw expected('INVALID_ARGUMENT', 'an AbortSignal', 'signal', value)
  return value as AbortSignal
}
