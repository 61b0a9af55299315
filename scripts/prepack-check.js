// `npm pack` / `npm publish` guard: the package must carry the compiled TypeScript (current with
// ts/), its addon loader and the addon's type declarations; without them it installs but cannot load.
const { existsSync, readdirSync, statSync } = require('node:fs')
const { join, relative } = require('node:path')

const root = join(__dirname, '..')
const required = ['dist/index.js', 'dist/native.js', 'dist/cli/main.js', 'dist/server/app.js', 'native.d.ts']
const missing = required.filter((f) => !existsSync(join(root, f)))
if (missing.length > 0) {
  console.error(`prepack: refusing to pack without ${missing.join(', ')}: run \`npm run build\` first`)
  process.exit(1)
}

function* sources(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) yield* sources(path)
    else if (entry.name.endsWith('.ts')) yield path
  }
}
const stale = [...sources(join(root, 'ts'))].filter((ts) => {
  const js = join(root, 'dist', relative(join(root, 'ts'), ts)).replace(/\.ts$/, '.js')
  return !existsSync(js) || statSync(js).mtimeMs < statSync(ts).mtimeMs
})
if (stale.length > 0) {
  console.error(`prepack: dist/ is older than ${stale.map((f) => relative(root, f)).join(', ')}: run \`npm run build\` first`)
  process.exit(1)
}
