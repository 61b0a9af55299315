/** The segmentation job as it travels through Redis: its data, its result, its settings and how its errors keep their codes. */
import { isAbsolute, relative, resolve } from 'node:path'

import { OvsegError, type ErrorCode } from '../errors'
import { checkOneOf } from '../options'
import type { Summary } from '../results'
import { SEGMENT_MODES, type SegmentMode } from '../segment'

export const DEFAULT_QUEUE_NAME = 'ovseg'

/** Settings of the queue's jobs and workers (README: Scaling out). */
export const DEFAULT_QUEUE_SETTINGS = {
  /** Runs of a job before it is failed for good (input errors are never retried). */
  attempts: 3,
  /** The first retry's delay; doubled for each later one. */
  backoffMs: 1000,
  /** A run still going after this is stopped and counts as a failed attempt (`JOB_TIMEOUT`). */
  timeoutMs: 120000,
  /** Completed jobs, results included, stay in Redis this long. */
  resultTtlS: 3600,
  /** Failed jobs (the dead letters, with their error code) stay this long. */
  failedTtlS: 7 * 24 * 3600,
  /** A job whose worker stops renewing its lock (it died) goes back to the queue after about this long. */
  stallTimeoutMs: 30000,
  /** A job whose workers died this many times is failed (`JOB_STALLED`) rather than run again. */
  maxStalls: 2,
}

/** One image to segment. `image.path` and `output` name files on storage every worker shares (workers accept them only under their `--shared-dir`). */
export interface SegmentJobData {
  /** The image's bytes (base64) or its path. */
  image: { base64: string } | { path: string }
  /** The `image` field of the result's summary. */
  name: string
  classes: string[]
  mode?: SegmentMode
  threshold?: number
  lambda?: number
  /** Also draw the confidence PNG (the HTTP API's answer has it). */
  confidence?: boolean
  /** Write `<dir>/<stem>.overlay.png`, `.labels.png` and `.json` (as `ovseg segment` does) instead of returning the PNGs. */
  output?: { dir: string; stem: string }
  /** This job's run time limit in ms (default `DEFAULT_QUEUE_SETTINGS.timeoutMs`). */
  timeoutMs?: number
}

/** What a completed job holds: the summary `ovseg segment` writes as JSON, and the PNGs (base64) or the files written. */
export interface SegmentJobResult {
  summary: Summary
  png?: { overlay: string; labels: string; confidence?: string }
  files?: string[]
}

/** The same input fails the same way again: a job failing with these codes is not retried. */
const FINAL_CODES = new Set<string>(['INVALID_ARGUMENT', 'EMPTY_INPUT', 'TEXT_TOO_LONG', 'INVALID_IMAGE', 'INVALID_MASK', 'LIMIT_EXCEEDED'])

export function isFinal(code: string): boolean {
  return FINAL_CODES.has(code)
}

/** BullMQ keeps a failed job's message only: the code travels as its prefix. */
export function failedReason(code: string, message: string): string {
  return `${code}: ${message}`
}

/** BullMQ's own reason for a job whose workers kept dying. */
const STALLED_REASON = 'job stalled more than allowable limit'

/** The code and message of a failed job's reason (`failedReason`'s inverse; BullMQ's own reasons get codes too). */
export function errorOfReason(reason: string | undefined): OvsegError {
  const m = /^([A-Z][A-Z_]+): ([\s\S]*)$/.exec(reason ?? '')
  if (m) return new OvsegError(m[1] as ErrorCode, m[2])
  if (reason === STALLED_REASON) return new OvsegError('JOB_STALLED', "the job's workers died (or stalled) more often than they allow (maxStalls)")
  return new OvsegError('INTERNAL', reason || 'the job failed without a reason')
}

function bad(message: string): OvsegError {
  return new OvsegError('INVALID_ARGUMENT', `bad job: ${message}`)
}

/** A path of a job, resolved inside `sharedDir` (a job naming a file elsewhere is refused). */
export function sharedPath(path: unknown, sharedDir: string | undefined, what: string): string {
  if (typeof path !== 'string' || path === '') throw bad(`expected \`${what}\` as a path`)
  if (sharedDir === undefined) throw bad(`\`${what}\` is a path, and this worker reads and writes no shared storage (start it with --shared-dir)`)
  const full = resolve(sharedDir, path)
  const rel = relative(resolve(sharedDir), full)
  if (rel.startsWith('..') || isAbsolute(rel)) throw bad(`\`${what}\` ${JSON.stringify(path)} is outside the worker's shared directory`)
  return full
}

const STEM = /^[^/\\\0]{1,200}$/

/** Checks data that came from Redis (any client may have written it) before any work. */
export function checkJobData(data: unknown): SegmentJobData {
  if (typeof data !== 'object' || data === null) throw bad('expected an object')
  const d = data as Record<string, unknown>
  const image = d.image as Record<string, unknown> | undefined
  if (typeof image !== 'object' || image === null || (typeof image.base64 !== 'string') === (typeof image.path !== 'string')) {
    throw bad('expected `image` as { base64 } or { path }')
  }
  if (typeof d.name !== 'string') throw bad('expected `name` as a string')
  if (!Array.isArray(d.classes) || d.classes.some((c) => typeof c !== 'string')) throw bad('expected `classes` as an array of strings')
  for (const key of ['threshold', 'lambda', 'timeoutMs'] as const) {
    if (d[key] !== undefined && (typeof d[key] !== 'number' || !Number.isFinite(d[key]))) throw bad(`expected \`${key}\` as a number`)
  }
  if (d.timeoutMs !== undefined && (d.timeoutMs as number) <= 0) throw bad('expected `timeoutMs` > 0')
  if (d.mode !== undefined) checkOneOf(d.mode, 'mode', SEGMENT_MODES)
  const output = d.output as Record<string, unknown> | undefined
  if (output !== undefined && (typeof output !== 'object' || output === null || typeof output.dir !== 'string' || typeof output.stem !== 'string' || !STEM.test(output.stem) || output.stem === '..' || output.stem === '.')) {
    throw bad('expected `output` as { dir, stem } (a file name without slashes)')
  }
  return data as SegmentJobData
}
