#!/usr/bin/env bash
# Stages the npm package ovseg-<platform> in <out-dir>: the addon binary with its license and the
# third-party notices of the crates linked into it (the package.json and README from npm/<platform>).
#   usage: bash scripts/stage-addon.sh <platform> <addon.node> <out-dir>
set -euo pipefail
cd "$(dirname "$0")/.."
platform=$1
addon=$2
out=$3
case "$platform" in
  linux-x64-gnu)   target=x86_64-unknown-linux-gnu ;;
  linux-arm64-gnu) target=aarch64-unknown-linux-gnu ;;
  darwin-arm64)    target=aarch64-apple-darwin ;;
  win32-x64-msvc)  target=x86_64-pc-windows-msvc ;;
  *) echo "stage-addon: unknown platform $platform" >&2; exit 2 ;;
esac
[ -f "$addon" ] || { echo "stage-addon: no addon at $addon" >&2; exit 1; }
mkdir -p "$out"
cp "npm/$platform/package.json" "npm/$platform/README.md" LICENSE "$out/"
cp "$addon" "$out/ovseg.$platform.node"
node scripts/third-party-notices.js "$target" "$out/THIRD_PARTY_NOTICES.md" >/dev/null
echo "staged $out: $(du -h "$out/ovseg.$platform.node" | cut -f1) ovseg.$platform.node"
