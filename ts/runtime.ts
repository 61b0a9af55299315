import { existsSync, readFileSync } from 'node:fs'
import { dirname, isAbsolute, join, resolve } from 'node:path'

import { native, nativePlatform } from './native'
import { OvsegError } from './errors'

/** ONNX Runtime's library file, by platform (in onnxruntime-node and in ovseg's runtime packages). */
export const ONNXRUNTIME_LIBRARY_FILE: Record<string, string> = {
  linux: 'libonnxruntime.so.1',
  darwin: 'libonnxruntime.1.dylib',
  win32: 'onnxruntime.dll',
}

/** The CUDA provider library that onnxruntime-node's install adds next to its runtime on Linux x64. */
const CUDA_PROVIDER_FILE = 'libonnxruntime_providers_cuda.so'

function packageDir(name: string): string | undefined {
  try {
    return dirname(require.resolve(`${name}/package.json`))
  } catch {
    return undefined
  }
}

/**
 * The runtime of this platform's `ovseg-onnxruntime-<platform>` package (its package.json names the
 * file), or in a checkout the same package's folder under npm/ (scripts/stage-runtime.sh).
 */
function bundledRuntime(): string | undefined {
  const name = `onnxruntime-${nativePlatform()}`
  for (const dir of [packageDir(`ovseg-${name}`), join(__dirname, '..', 'npm', name)]) {
    if (dir === undefined || !existsSync(join(dir, 'package.json'))) continue
    const { ovseg } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { ovseg?: { library?: string } }
    const path = ovseg?.library === undefined ? undefined : join(dir, ovseg.library)
    if (path !== undefined && existsSync(path)) return path
  }
  return undefined
}

function onnxruntimeNodeRuntime(): string | undefined {
  const dir = packageDir('onnxruntime-node')
  const file = ONNXRUNTIME_LIBRARY_FILE[process.platform]
  if (dir === undefined || file === undefined) return undefined
  const path = join(dir, 'bin', 'napi-v6', process.platform, process.arch, file)
  return existsSync(path) ? path : undefined
}

/**
 * The absolute path of ONNX Runtime's shared library, the first of: `override`; the environment
 * variable `ORT_DYLIB_PATH`; onnxruntime-node's library when its CUDA provider is installed next to
 * it (installing onnxruntime-node is how a user opts into CUDA); the library in this platform's
 * `ovseg-onnxruntime-<platform>` package (CPU); onnxruntime-node's library (CPU).
 */
export function resolveRuntimeLibrary(override?: string): string {
  const chosen = override ?? (process.env.ORT_DYLIB_PATH || undefined)
  if (chosen !== undefined) {
    if (typeof chosen !== 'string' || chosen.length === 0) {
      throw new OvsegError('INVALID_ARGUMENT', `Expected a file path for \`runtimeLibraryPath\` but received ${String(chosen)}`)
    }
    return isAbsolute(chosen) ? chosen : resolve(chosen)
  }
  const fromOnnxruntimeNode = onnxruntimeNodeRuntime()
  if (fromOnnxruntimeNode !== undefined && existsSync(join(dirname(fromOnnxruntimeNode), CUDA_PROVIDER_FILE))) return fromOnnxruntimeNode
  const found = bundledRuntime() ?? fromOnnxruntimeNode
  if (found === undefined) {
    throw new OvsegError(
      'RUNTIME_NOT_FOUND',
      `no ONNX Runtime library found: the package ovseg-onnxruntime-${nativePlatform()} (an optional dependency of ovseg) is not installed ` +
        'and neither is onnxruntime-node; reinstall ovseg without omitting optional dependencies, install onnxruntime-node, ' +
        'or set ORT_DYLIB_PATH / `runtimeLibraryPath` to a libonnxruntime',
    )
  }
  return found
}

export interface RuntimeInfo {
  /** Absolute path of the loaded library. */
  libraryPath: string
  /** ONNX Runtime's version, e.g. "1.30.0". */
  version: string
}

/**
 * Loads ONNX Runtime (once per process; later calls with the same path are no-ops).
 * `loadModel` calls this for you.
 */
export function initRuntime(libraryPath?: string): RuntimeInfo {
  // The addon first: without it, NATIVE_BINDING_MISSING is the error to report, not a missing runtime.
  const binding = native()
  const path = resolveRuntimeLibrary(libraryPath)
  try {
    return binding.initRuntime(path)
  } catch (err) {
    throw withRuntimeHint(err)
  }
}

/** What a JavaScript user can do about the core's runtime errors (the core knows nothing of npm). */
const RUNTIME_HINTS: Record<string, string> = {
  RUNTIME_NOT_FOUND: 'Point ORT_DYLIB_PATH or `runtimeLibraryPath` at another libonnxruntime, or reinstall ovseg (docs/install.md).',
  RUNTIME_VERSION: 'Point ORT_DYLIB_PATH or `runtimeLibraryPath` at a newer libonnxruntime, or reinstall ovseg (docs/install.md).',
  PROVIDER_UNAVAILABLE:
    'The runtime ovseg installs is CPU-only: install onnxruntime-node (`npm install onnxruntime-node`: on Linux x64 its install ' +
    'downloads the CUDA provider, and ovseg then uses its runtime), or point ORT_DYLIB_PATH / `runtimeLibraryPath` at a GPU build ' +
    'of ONNX Runtime (docs/install.md).',
}

/** `err` with the remedy for its code appended to its message, when it has one. */
export function withRuntimeHint(err: unknown): unknown {
  const e = err as { code?: unknown; message?: unknown }
  const hint = typeof e?.code === 'string' ? RUNTIME_HINTS[e.code] : undefined
  if (hint !== undefined && typeof e.message === 'string' && !e.message.includes(hint)) e.message = `${e.message} ${hint}`
  return err
}

/** The loaded ONNX Runtime, or `null` before the first model is loaded. */
export function runtimeInfo(): RuntimeInfo | null {
  return native().runtimeInfo()
}
