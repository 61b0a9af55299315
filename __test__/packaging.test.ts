// How an installed ovseg finds its addon and ONNX Runtime: a copy of the built package (dist/ and
// package.json, no addon) in a scratch folder, with fake platform packages beside it, run in child
// processes. scripts/test-pack.sh checks the same against real installs from packed tarballs.
import { spawnSync } from 'node:child_process'
import { copyFileSync, cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { resolveRuntimeLibrary } from '../ts'
import { nativePlatform, PREBUILT_PLATFORMS } from '../ts/native'
import { ONNXRUNTIME_LIBRARY_FILE } from '../ts/runtime'
import { PACKAGE_JSON, ROOT } from './helpers'

const PLATFORM = nativePlatform()
const SANDBOX = join(ROOT, 'build', 'test-packaging')

/** A fresh copy of the package without its addon; Node still finds the checkout's node_modules above it. */
function makePackage(name: string): string {
  const dir = join(SANDBOX, name)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true })
  copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'))
  return dir
}

function addPackage(root: string, name: string, pkg: object, files: Record<string, string | Buffer> = {}): string {
  const dir = join(root, 'node_modules', name)
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, ...pkg }))
  for (const [file, content] of Object.entries(files)) {
    mkdirSync(join(dir, file, '..'), { recursive: true })
    writeFileSync(join(dir, file), content)
  }
  return dir
}

/** Runs `script` with `ovseg` bound to the package in `dir`; its stdout is one JSON value. */
function run(dir: string, script: string, env: NodeJS.ProcessEnv = {}): unknown {
  const clean = { ...process.env }
  delete clean.ORT_DYLIB_PATH
  const child = spawnSync(process.execPath, ['-e', `const ovseg = require(${JSON.stringify(join(dir, 'dist'))}); ${script}`], {
    encoding: 'utf8',
    env: { ...clean, ...env },
  })
  if (child.status !== 0) throw new Error(`child failed (${child.status}): ${child.stderr}`)
  return JSON.parse(child.stdout)
}

const loadError = `try { ovseg.loadModelSync(ovseg.DEFAULT_MODEL_DIR); console.log('null') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`

beforeAll(() => rmSync(SANDBOX, { recursive: true, force: true }))
afterAll(() => rmSync(SANDBOX, { recursive: true, force: true }))

test('this platform is one with a prebuilt package', () => {
  expect(PREBUILT_PLATFORMS).toContain(PLATFORM)
  if (process.platform === 'linux' && process.arch === 'x64') expect(PLATFORM).toBe('linux-x64-gnu')
})

describe('the addon loader', () => {
  test('no addon: NATIVE_BINDING_MISSING naming the package and the usual causes; require and --help still work', () => {
    const dir = makePackage('no-addon')
    const { code, message } = run(dir, loadError) as { code: string; message: string }
    expect(code).toBe('NATIVE_BINDING_MISSING')
    expect(message).toContain(`the package ovseg-${PLATFORM} is not installed`)
    expect(message).toContain('--omit=optional')
    expect(message).toContain('another OS or CPU')
    for (const args of [['--help'], ['segment', '--help'], ['eval', '--help'], ['info', '--help'], ['serve', '--help']]) {
      const cli = spawnSync(process.execPath, [join(dir, 'dist', 'cli', 'main.js'), ...args], { encoding: 'utf8' })
      expect({ args, status: cli.status, stderr: cli.stderr }).toEqual({ args, status: 0, stderr: '' })
      expect(cli.stdout).toContain('Usage: ovseg')
    }
  })

  test('a platform package of another version is named as the mismatch', () => {
    const dir = makePackage('old-addon')
    addPackage(dir, `ovseg-${PLATFORM}`, { version: '0.0.1', main: 'addon.node' }, { 'addon.node': 'not a binary' })
    expect(run(dir, loadError)).toEqual({
      code: 'NATIVE_BINDING_MISSING',
      message: expect.stringContaining(`ovseg-${PLATFORM} is version 0.0.1, ovseg is ${PACKAGE_JSON.version}`),
    })
  })

  test('a platform package whose binary does not load gives the loader error', () => {
    const dir = makePackage('broken-addon')
    addPackage(dir, `ovseg-${PLATFORM}`, { version: PACKAGE_JSON.version, main: 'addon.node' }, { 'addon.node': 'not a binary' })
    expect(run(dir, loadError)).toEqual({
      code: 'NATIVE_BINDING_MISSING',
      message: expect.stringContaining(`ovseg-${PLATFORM} is installed but failed to load`),
    })
  })

  test('the platform package loads', () => {
    const dir = makePackage('with-addon')
    const pkg = addPackage(dir, `ovseg-${PLATFORM}`, { version: PACKAGE_JSON.version, main: `ovseg.${PLATFORM}.node` })
    copyFileSync(join(ROOT, `ovseg.${PLATFORM}.node`), join(pkg, `ovseg.${PLATFORM}.node`))
    const script = `const m = ovseg.loadModelSync(${JSON.stringify(join(ROOT, 'models', 'world-ovseg'))}, { runtimeLibraryPath: ${JSON.stringify(resolveRuntimeLibrary())} }); console.log(JSON.stringify(m.manifest.name))`
    expect(run(dir, script)).toBe('world-ovseg')
  })
})

describe('resolveRuntimeLibrary', () => {
  const resolved = 'console.log(JSON.stringify(ovseg.resolveRuntimeLibrary()))'
  const libraryFile = ONNXRUNTIME_LIBRARY_FILE[process.platform]
  const ortNodeDir = join('bin', 'napi-v6', process.platform, process.arch)

  test('in a checkout: the runtime that scripts/stage-runtime.sh staged in npm/', () => {
    const clean = { ...process.env }
    delete clean.ORT_DYLIB_PATH
    const child = spawnSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(join(ROOT, 'dist'))}).resolveRuntimeLibrary())`], { encoding: 'utf8', env: clean })
    const staged = join(ROOT, 'npm', `onnxruntime-${PLATFORM}`)
    const { ovseg } = JSON.parse(readFileSync(join(staged, 'package.json'), 'utf8')) as { ovseg: { library: string } }
    expect(child.stdout.trim()).toBe(join(staged, ovseg.library))
  })

  test('installed: the ovseg-onnxruntime package, then onnxruntime-node; ORT_DYLIB_PATH wins', () => {
    const dir = makePackage('runtime-order')
    // Without the package, the checkout's onnxruntime-node (a dev dependency, found up the tree).
    expect(run(dir, resolved)).toBe(join(ROOT, 'node_modules', 'onnxruntime-node', ortNodeDir, libraryFile as string))
    const bundled = addPackage(dir, `ovseg-onnxruntime-${PLATFORM}`, { version: PACKAGE_JSON.version, ovseg: { library: 'lib.so' } }, { 'lib.so': '' })
    expect(run(dir, resolved)).toBe(join(bundled, 'lib.so'))
    expect(run(dir, resolved, { ORT_DYLIB_PATH: '/opt/ort/libonnxruntime.so' })).toBe('/opt/ort/libonnxruntime.so')
  })

  test('onnxruntime-node with its CUDA provider installed beside it is preferred (the CUDA opt-in)', () => {
    const dir = makePackage('runtime-cuda')
    addPackage(dir, `ovseg-onnxruntime-${PLATFORM}`, { version: PACKAGE_JSON.version, ovseg: { library: 'lib.so' } }, { 'lib.so': '' })
    const ortNode = addPackage(dir, 'onnxruntime-node', { version: '1.30.0' }, { [join(ortNodeDir, libraryFile as string)]: '' })
    expect(run(dir, resolved)).toBe(join(dir, 'node_modules', `ovseg-onnxruntime-${PLATFORM}`, 'lib.so'))
    writeFileSync(join(ortNode, ortNodeDir, 'libonnxruntime_providers_cuda.so'), '')
    expect(run(dir, resolved)).toBe(join(ortNode, ortNodeDir, libraryFile as string))
  })
})

describe('the package manifests', () => {
  const root = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))
  const platformPackages = readdirSync(join(ROOT, 'npm')).map((dir) => ({ dir, pkg: JSON.parse(readFileSync(join(ROOT, 'npm', dir, 'package.json'), 'utf8')) }))

  test('an addon and a runtime package for each prebuilt platform, each with engines, version, license and repository as the root', () => {
    expect(platformPackages.map((p) => p.dir).sort()).toEqual(
      [...PREBUILT_PLATFORMS, ...PREBUILT_PLATFORMS.map((p) => `onnxruntime-${p}`)].sort(),
    )
    for (const { dir, pkg } of platformPackages) {
      expect({ dir, name: pkg.name, version: pkg.version, engines: pkg.engines, license: pkg.license, repository: pkg.repository }).toEqual({
        dir,
        name: `ovseg-${dir}`,
        version: root.version,
        engines: root.engines,
        license: 'MIT',
        repository: root.repository,
      })
      const [os, cpu] = dir.replace(/^onnxruntime-/, '').split('-')
      expect({ dir, os: pkg.os, cpu: pkg.cpu }).toEqual({ dir, os: [os], cpu: [cpu] })
      if (os === 'linux') expect(pkg.libc).toEqual(['glibc'])
    }
  })

  test('the root: Node >= 22, no ONNX Runtime, server or queue in its dependencies (optional peers), no test-only model in its files', () => {
    expect(root.engines).toEqual({ node: '>=22' })
    for (const name of ['onnxruntime-node', 'fastify', '@fastify/multipart', 'bullmq', 'ioredis']) {
      expect(root.dependencies[name]).toBeUndefined()
      expect(root.peerDependenciesMeta[name]).toEqual({ optional: true })
    }
    expect(root.files).not.toContain('models/tiny-random')
    expect(root.files).toContain('models/world-ovseg')
    expect(root.scripts.prepack).toBe('node scripts/prepack-check.js')
  })
})
