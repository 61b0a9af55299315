#!/usr/bin/env bash
# Installs ovseg as a user would, from packed tarballs, and runs it: the root package, this
# platform's addon and ONNX Runtime packages, installed into an empty project with cargo and rustc
# off PATH and (where `unshare -n` works, as root) no network at all during the install, so an
# install script that downloads anything fails. Then the README's quick start, `ovseg --help`,
# every subcommand's --help and `ovseg segment` on the shipped example. Also: the root package
# alone gives NATIVE_BINDING_MISSING, and `--cpu=arm64 --os=linux` selects the arm64 packages.
# Needs `npm run build` first. OVSEG_PACK_ADDON: the addon to pack (default: the local build).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
step() { echo; echo "== test:pack: $*"; }
fail() { echo "test:pack: FAILED: $*" >&2; exit 1; }

platform=$(node -p "require('./dist/native').nativePlatform()")
version=$(node -p "require('./package.json').version")
addon=${OVSEG_PACK_ADDON:-ovseg.$platform.node}
# Outside the checkout: Node resolves packages up the directory tree, and the checkout's
# node_modules (fastify, onnxruntime-node) must not be found.
work=$(mktemp -d "${TMPDIR:-/tmp}/ovseg-test-pack.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/staged" "$work/tarballs"

step "stage and pack the packages ($platform: $addon)"
for dir in npm/*/; do
  name=$(basename "$dir")
  case "$name" in
    "$platform") bash scripts/stage-addon.sh "$platform" "$addon" "$work/staged/$name" ;;
    "onnxruntime-$platform") bash scripts/stage-runtime.sh "$platform" "$work/staged/$name" ;;
    # Other platforms: their package.json alone, enough for npm to select or skip them.
    *) mkdir -p "$work/staged/$name" && cp "$dir/package.json" "$dir/README.md" "$work/staged/$name/" ;;
  esac
  (cd "$work/staged/$name" && npm pack --silent --pack-destination "$work/tarballs" >/dev/null)
done
# The root as `npm publish` would pack it (prepack guard included), with the optionalDependencies
# that publishing writes.
npm pack --silent --pack-destination "$work/tarballs" >/dev/null
mkdir -p "$work/root" && tar -xzf "$work/tarballs/ovseg-$version.tgz" -C "$work/root"
node scripts/set-optional-deps.js "$work/root/package/package.json" >/dev/null
rm "$work/tarballs/ovseg-$version.tgz"
(cd "$work/root/package" && npm pack --silent --ignore-scripts --pack-destination "$work/tarballs" >/dev/null)
ls -l "$work/tarballs" | awk 'NR > 1 { printf "  %8.1f MB  %s\n", $5 / 1048576, $9 }'
tar -tzf "$work/tarballs/ovseg-$version.tgz" >"$work/root-files.txt"
grep -q 'package/models/tiny-random' "$work/root-files.txt" && fail "the root package holds the test-only model"
grep -qx 'package/LICENSE' "$work/root-files.txt" || fail "the root package has no LICENSE"

# An empty project whose registry stand-in for ovseg's platform packages is the tarballs above.
app=$work/app
mkdir -p "$app"
node -e '
  const [work, version] = process.argv.slice(1)
  const fs = require("fs")
  const overrides = {}
  for (const f of fs.readdirSync(`${work}/tarballs`)) {
    const name = f.slice(0, -`-${version}.tgz`.length)
    if (name !== "ovseg") overrides[name] = `file:${work}/tarballs/${f}`
  }
  const pkg = { name: "app", private: true, dependencies: { ovseg: `file:${work}/tarballs/ovseg-${version}.tgz` }, overrides }
  fs.writeFileSync(`${work}/app/package.json`, JSON.stringify(pkg, null, 2))
' "$work" "$version"

# As a user has it: no runtime override (npm test exports ORT_DYLIB_PATH for the checkout), and
# no Rust toolchain from here on.
unset ORT_DYLIB_PATH
PATH=$(echo "$PATH" | tr ':' '\n' | grep -v '/\.cargo/' | paste -sd:)
export PATH
if command -v cargo >/dev/null || command -v rustc >/dev/null; then fail "cargo/rustc still on PATH"; fi

step "install (resolve, fill the npm cache, then install offline)"
cd "$app"
npm install --package-lock-only --ignore-scripts --no-audit --no-fund --loglevel=error
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
rm -rf node_modules
if unshare -n true 2>/dev/null; then
  echo "install in a network namespace without network (unshare -n), install scripts run"
  unshare -n npm ci --offline --no-audit --no-fund --loglevel=error
else
  echo "unshare -n is not permitted here: install with --offline only, install scripts run"
  npm ci --offline --no-audit --no-fund --loglevel=error
fi
installed=$(du -sm node_modules | cut -f1)
echo "installed size: ${installed} MB (node_modules); largest:"
du -sm node_modules/* node_modules/@*/* 2>/dev/null | sort -rn | head -6 | sed 's/^/  /'
for pkg in "ovseg-$platform" "ovseg-onnxruntime-$platform"; do [ -d "node_modules/$pkg" ] || fail "$pkg was not installed"; done
others=$(ls node_modules | grep '^ovseg-' | grep -vx "ovseg-$platform" | grep -vx "ovseg-onnxruntime-$platform" || true)
[ -z "$others" ] || fail "other platforms' packages were installed: $others"
[ ! -d node_modules/onnxruntime-node ] || fail "onnxruntime-node was installed"
[ "$installed" -lt 60 ] || fail "the install is ${installed} MB, over 60 MB"

step "the README's quick start"
node -e '
  const md = require("fs").readFileSync(process.argv[1], "utf8")
  const m = /<!-- quick-start -->\s*```js\n([\s\S]*?)```/.exec(md)
  if (!m) { console.error("no quick-start block in README.md"); process.exit(1) }
  require("fs").writeFileSync("quickstart.js", `(async () => {\n${m[1]}})().catch((e) => { console.error(e); process.exit(1) })\n`)
' "$repo/README.md"
node quickstart.js | tee quickstart.out
grep -q "'sky'" quickstart.out || fail "the quick start did not find the sky"
node -e 'const r = require("ovseg").initRuntime(); console.log(`runtime: ONNX Runtime ${r.version} from ${r.libraryPath}`); if (!r.libraryPath.includes("ovseg-onnxruntime-")) process.exit(1)'

step "ovseg --help, every subcommand's --help, ovseg segment on the shipped example"
npx --no-install ovseg --help >/dev/null
for cmd in segment eval info serve worker enqueue; do npx --no-install ovseg "$cmd" --help >/dev/null || fail "ovseg $cmd --help"; done
# fastify is an optional peer: serve says what to install.
serve_out=$(timeout 60 npx --no-install ovseg serve --port 0 2>&1) && fail "ovseg serve ran without fastify"
echo "$serve_out" | grep -q DEPENDENCY_MISSING || fail "ovseg serve without fastify: $serve_out"
# So are BullMQ and ioredis: the queue's commands say what to install, before connecting anywhere.
worker_out=$(timeout 60 npx --no-install ovseg worker --redis redis://127.0.0.1:1 2>&1) && fail "ovseg worker ran without bullmq"
echo "$worker_out" | grep -q DEPENDENCY_MISSING || fail "ovseg worker without bullmq: $worker_out"
example=node_modules/ovseg/examples
npx --no-install ovseg segment "$example/world-scene.png" --classes-file "$example/world-classes.txt" --out out
node -e '
  const { readLabelPng } = require("ovseg")
  const [got, want] = process.argv.slice(1)
  Promise.all([readLabelPng(got), readLabelPng(want)]).then(([a, b]) => {
    let same = 0
    for (let i = 0; i < a.labels.length; i++) same += a.labels[i] === b.labels[i] ? 1 : 0
    const share = same / b.labels.length
    console.log(`labels equal to examples/expected on ${(100 * share).toFixed(3)}% of pixels`)
    if (a.labels.length !== b.labels.length || share < 0.999) process.exit(1)
  })
' out/world-scene.labels.png "$repo/examples/expected/world-scene.labels.png"

step "the root package alone: NATIVE_BINDING_MISSING, and --help still works"
bare=$work/bare
mkdir -p "$bare" && cp package.json package-lock.json "$bare/"
cd "$bare"
npm ci --offline --no-audit --no-fund --loglevel=error
rm -rf "node_modules/ovseg-$platform" "node_modules/ovseg-onnxruntime-$platform"
npx --no-install ovseg --help >/dev/null
node -e '
  const ovseg = require("ovseg")
  try {
    ovseg.loadModelSync(ovseg.DEFAULT_MODEL_DIR)
    process.exit(1)
  } catch (e) {
    console.log(`${e.code}: ${e.message.split("\n")[0]}`)
    if (e.code !== "NATIVE_BINDING_MISSING" || !e.message.includes(process.argv[1])) process.exit(1)
  }
' "ovseg-$platform"

step "npm install --cpu=arm64 --os=linux selects the arm64 packages"
arm=$work/arm64
mkdir -p "$arm" && cp "$app/package.json" "$app/package-lock.json" "$arm/"
cd "$arm"
npm ci --cpu=arm64 --os=linux --libc=glibc --ignore-scripts --prefer-offline --no-audit --no-fund --loglevel=error
selected=$(ls node_modules | grep '^ovseg-' | tr '\n' ' ')
echo "selected: $selected"
[ "$selected" = "ovseg-linux-arm64-gnu ovseg-onnxruntime-linux-arm64-gnu " ] || fail "expected the linux-arm64-gnu packages"

echo
echo "test:pack: ok (installed size ${installed} MB)"
