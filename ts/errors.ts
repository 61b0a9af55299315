import { CORE_ERROR_CODES } from './generated'

/** Every stable error code (`err.code`) ovseg gives: the native core's, then the TypeScript layer's. */
export const ERROR_CODES = [
  ...CORE_ERROR_CODES,
  'NATIVE_BINDING_MISSING',
  'DEPENDENCY_MISSING',
  // The server's (`ovseg serve`, `ovseg/server`): HTTP answers, never thrown by the library.
  'BAD_REQUEST',
  'NOT_FOUND',
  'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE',
  'LIMIT_EXCEEDED',
  'HOST_NOT_ALLOWED',
  'QUEUE_FULL',
  // The Redis queue's (`ovseg worker`, `ovseg enqueue`, `serve --redis`, `ovseg/queue`).
  'QUEUE_UNAVAILABLE',
  'JOB_NOT_FOUND',
  'JOB_TIMEOUT',
  'JOB_STALLED',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

/** An Error with a stable `code`. Errors from the native core are plain Errors with the same `code` field. */
export class OvsegError extends Error {
  readonly code: ErrorCode

  constructor(code: ErrorCode, message: string) {
    super(message)
    this.name = 'OvsegError'
    this.code = code
  }
}

/** sharp-style argument message: "Expected <what> for `<name>` but received <value>". */
export function expected(code: ErrorCode, what: string, name: string, value: unknown): OvsegError {
  return new OvsegError(code, `Expected ${what} for \`${name}\` but received ${describe(value)}`)
}

function describe(value: unknown): string {
  if (value === null) return 'null'
  if (ArrayBuffer.isView(value)) return `${tagOf(value)} of length ${(value as unknown as { length?: number }).length ?? value.byteLength}`
  if (Array.isArray(value)) return `an array of length ${value.length}`
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  if (typeof value === 'object') return tagOf(value)
  return `${typeof value} ${String(value)}`
}

/** `Float32Array`, `Uint8Array`, ...: works across realms (jest), unlike `instanceof`. */
export function tagOf(value: unknown): string {
  return Object.prototype.toString.call(value).slice(8, -1)
}

/**
 * Rejections of native async calls carry a stack from the worker thread only; append the
 * caller's stack (captured at call time) so users see where the call came from.
 */
export async function withCallerStack<T>(promise: Promise<T>, caller: Error): Promise<T> {
  try {
    return await promise
  } catch (err) {
    if (err instanceof Error || (typeof err === 'object' && err !== null && 'stack' in err)) {
      const e = err as Error
      const callerFrames = (caller.stack ?? '').split('\n').slice(1).join('\n')
      e.stack = `${e.stack ?? String(e)}\n    --- called from ---\n${callerFrames}`
    }
    throw err
  }
}

/** AbortSignal rejections from the native layer become `ABORTED` errors. */
export function abortedError(signal: AbortSignal | undefined): OvsegError {
  const reason = signal?.reason instanceof Error ? `: ${signal.reason.message}` : ''
  return new OvsegError('ABORTED', `the call was aborted${reason}`)
}
