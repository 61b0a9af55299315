// Loads the N-API addon built from crates/ovseg-node: a local build at the package root (a checkout,
// or a build from source), else this platform's prebuilt package `ovseg-<platform>`. Loaded on first
// use, so `require('ovseg')` and `ovseg --help` work even where no binary can be found.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { OvsegError } from './errors'

export type { NativeAmgOptions, NativeModel, NativeFeatures, NativeSamModel, NativeSegmentation } from '../native'
type NativeBinding = typeof import('../native')

const PACKAGE_ROOT = join(__dirname, '..')

/** The platforms with a prebuilt binary package, by napi-rs platform name. */
export const PREBUILT_PLATFORMS = ['linux-x64-gnu', 'linux-arm64-gnu', 'darwin-arm64', 'win32-x64-msvc'] as const

/** napi-rs's name of the running platform, e.g. `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`. */
export function nativePlatform(): string {
  const base = `${process.platform}-${process.arch}`
  if (process.platform === 'win32') return `${base}-msvc`
  if (process.platform !== 'linux') return base
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
  return `${base}-${report?.header?.glibcVersionRuntime ? 'gnu' : 'musl'}`
}

function ownVersion(): string {
  return (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version
}

function missing(platform: string, found: string): OvsegError {
  const supported = (PREBUILT_PLATFORMS as readonly string[]).includes(platform)
  const causes = supported
    ? [
        `the optional dependency ovseg-${platform} was left out (\`npm install --omit=optional\`, \`--no-optional\`, or a package manager set to skip optional dependencies)`,
        'a package-lock.json or node_modules made on another OS or CPU (remove node_modules and the lockfile, then install again on this machine)',
        `an ovseg-${platform} whose version differs from ovseg's (install both at the same version)`,
      ]
    : [`no prebuilt binary exists for ${platform} (prebuilt: ${PREBUILT_PLATFORMS.join(', ')}); build from source with Rust: \`npm run build\` in a checkout`]
  return new OvsegError(
    'NATIVE_BINDING_MISSING',
    `ovseg's native addon for ${platform} could not be loaded: ${found}. Usual causes:\n` +
      causes.map((c) => `  - ${c}`).join('\n'),
  )
}

function load(): NativeBinding {
  const platform = nativePlatform()
  const local = join(PACKAGE_ROOT, `ovseg.${platform}.node`)
  if (existsSync(local)) return require(local) as NativeBinding
  const name = `ovseg-${platform}`
  let manifest: string
  try {
    manifest = require.resolve(`${name}/package.json`)
  } catch {
    throw missing(platform, `the package ${name} is not installed`)
  }
  const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }
  const expected = ownVersion()
  if (version !== expected) throw missing(platform, `${name} is version ${version}, ovseg is ${expected}`)
  try {
    return require(name) as NativeBinding
  } catch (err) {
    throw missing(platform, `${name} is installed but failed to load (${(err as Error).message.split('\n')[0]})`)
  }
}

let binding: NativeBinding | undefined

/** The addon, loaded on first call; throws `NATIVE_BINDING_MISSING` when it cannot be. */
export function native(): NativeBinding {
  binding ??= load()
  return binding
}
