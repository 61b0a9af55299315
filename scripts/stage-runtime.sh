#!/usr/bin/env bash
# Stages the npm package ovseg-onnxruntime-<platform> in <out-dir>: ONNX Runtime's shared library
# (CPU) with its license and notices, taken unchanged from Microsoft's onnxruntime wheel on PyPI
# (the version is package.json's "ovseg.onnxruntime"). The wheels of every platform hold the same
# C API library that onnxruntime-node ships, without its JS binding, WebGPU or GPU parts.
#   usage: bash scripts/stage-runtime.sh <linux-x64-gnu|linux-arm64-gnu|darwin-arm64|win32-x64-msvc> [<out-dir>]
# Without <out-dir> it stages in place, in npm/onnxruntime-<platform>: the library files only (git
# ignores them), where a checkout's resolveRuntimeLibrary() finds them.
set -euo pipefail
cd "$(dirname "$0")/.."
platform=$1
out=${2:-npm/onnxruntime-$platform}
in_place=$([ "$out" = "npm/onnxruntime-$platform" ] && echo 1 || echo 0)
version=$(node -p "require('./package.json').ovseg.onnxruntime")
case "$platform" in
  linux-x64-gnu)   tags="manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64" ;;
  linux-arm64-gnu) tags="manylinux_2_28_aarch64 manylinux_2_27_aarch64 manylinux_2_17_aarch64" ;;
  darwin-arm64)    tags="macosx_14_0_arm64 macosx_13_0_arm64 macosx_12_0_arm64 macosx_11_0_arm64" ;;
  win32-x64-msvc)  tags="win_amd64" ;;
  *) echo "stage-runtime: unknown platform $platform" >&2; exit 2 ;;
esac
if [ "$in_place" = 1 ] && [ "$(cat "$out/.staged" 2>/dev/null)" = "$version" ]; then
  echo "ONNX Runtime $version already staged in $out"
  exit 0
fi
wheels=build/wheels/onnxruntime-$version-$platform
if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
  mkdir -p "$wheels"
  platform_args=()
  for t in $tags; do platform_args+=(--platform "$t"); done
  "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platform_args[@]}" -d "$wheels" "onnxruntime==$version"
fi
wheel=$(ls "$wheels"/*.whl | head -n1)
library=$(node -p "require('./npm/onnxruntime-$platform/package.json').ovseg.library")

if [ "$in_place" = 0 ]; then
  rm -rf "$out"
  mkdir -p "$out"
  cp "npm/onnxruntime-$platform/README.md" "$out/"
fi
# The wheel names the library with its full version (libonnxruntime.so.1.24.4); the package, by platform.
"${PYTHON:-python3}" - "$wheel" "$out" "$library" <<'PY'
import re, sys, zipfile
wheel, out, library = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    lib = [n for n in names if re.fullmatch(r"onnxruntime/capi/(libonnxruntime\.so\.[\d.]+|libonnxruntime\.[\d.]+\.dylib|onnxruntime\.dll)", n)]
    if len(lib) != 1:
        sys.exit(f"stage-runtime: expected one ONNX Runtime library in {wheel}, found {lib}")
    for src, dst in ((lib[0], library), ("onnxruntime/LICENSE", "LICENSE"), ("onnxruntime/ThirdPartyNotices.txt", "ThirdPartyNotices.txt")):
        with z.open(src) as f, open(f"{out}/{dst}", "wb") as g:
            g.write(f.read())
PY
chmod 755 "$out/$library"
if [ "$in_place" = 1 ]; then
  echo "$version" >"$out/.staged"
else
  node -e '
  const fs = require("fs")
  const [src, dst, version, onnxruntime] = process.argv.slice(1)
  const p = JSON.parse(fs.readFileSync(src, "utf8"))
  p.version = version
  p.ovseg.onnxruntime = onnxruntime
  fs.writeFileSync(dst, JSON.stringify(p, null, 2) + "\n")
' "npm/onnxruntime-$platform/package.json" "$out/package.json" "$(node -p "require('./package.json').version")" "$version"
fi
echo "staged $out: ONNX Runtime $version ($(du -h "$out/$library" | cut -f1) $library)"
