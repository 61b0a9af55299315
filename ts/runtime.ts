import { existsSync } from 'node:fs'
import { dirname, isAbsolute, join, resolve } from 'node:path'

import { native } from './native'
import { OvsegError } from './errors'

/** The ONNX Runtime library file that onnxruntime-node ships for this platform. */
const LIBRARY_FILE: Record<string, string> = {
  linux: 'libonnxruntime.so.1',
  darwin: 'libonnxruntime.1.dylib',
  win32: 'onnxruntime.dll',
}

/**
 * The absolute path of ONNX Runtime's shared library: `override`, else the environment variable
 * `ORT_DYLIB_PATH`, else the library inside the npm package onnxruntime-node.
 */
export function resolveRuntimeLibrary(override?: string): string {
  const chosen = override ?? (process.env.ORT_DYLIB_PATH || undefined)
  if (chosen !== undefined) {
    if (typeof chosen !== 'string' || chosen.length === 0) {
      throw new OvsegError('INVALID_ARGUMENT', `Expected a file path for \`runtimeLibraryPath\` but received ${String(chosen)}`)
    }
    return isAbsolute(chosen) ? chosen : resolve(chosen)
  }
  let packageJson: string
  try {
    packageJson = require.resolve('onnxruntime-node/package.json')
  } catch {
    throw new OvsegError(
      'RUNTIME_NOT_FOUND',
      'the npm package onnxruntime-node is not installed: install it, or set ORT_DYLIB_PATH / `runtimeLibraryPath` to a libonnxruntime',
    )
  }
  const file = LIBRARY_FILE[process.platform]
  if (file === undefined) {
    throw new OvsegError('RUNTIME_NOT_FOUND', `onnxruntime-node ships no library for platform ${process.platform}: set ORT_DYLIB_PATH`)
  }
  const path = join(dirname(packageJson), 'bin', 'napi-v6', process.platform, process.arch, file)
  if (!existsSync(path)) {
    throw new OvsegError(
      'RUNTIME_NOT_FOUND',
      `onnxruntime-node has no ONNX Runtime library for ${process.platform}/${process.arch} (looked for ${path}): set ORT_DYLIB_PATH`,
    )
  }
  return path
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
  return native.initRuntime(resolveRuntimeLibrary(libraryPath))
}

/** The loaded ONNX Runtime, or `null` before the first model is loaded. */
export function runtimeInfo(): RuntimeInfo | null {
  return native.runtimeInfo()
}
