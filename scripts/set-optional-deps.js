// Writes the root package's optionalDependencies at publish time (napi prepublish writes the addon
// packages; this also adds the ONNX Runtime packages): every package under npm/ at ovseg's version.
//   usage: node scripts/set-optional-deps.js <package.json>
const { readdirSync, readFileSync, writeFileSync } = require('node:fs')
const { join } = require('node:path')

const file = process.argv[2]
if (!file) {
  console.error('usage: node scripts/set-optional-deps.js <package.json>')
  process.exit(2)
}
const npmDir = join(__dirname, '..', 'npm')
const pkg = JSON.parse(readFileSync(file, 'utf8'))
const names = readdirSync(npmDir)
  .map((dir) => JSON.parse(readFileSync(join(npmDir, dir, 'package.json'), 'utf8')).name)
  .sort()
pkg.optionalDependencies = Object.fromEntries(names.map((name) => [name, pkg.version]))
writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`)
console.log(`${file}: optionalDependencies ${names.join(', ')} @ ${pkg.version}`)
