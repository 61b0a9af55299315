#!/usr/bin/env bash
# Release build of the N-API addon for one Rust target, stripped, as <out-dir>/ovseg.<platform>.node.
#   usage: bash scripts/build-release.sh <rust-target> <out-dir>
# Linux gnu targets (x86_64/aarch64-unknown-linux-gnu) are built on a Linux host with zig as the
# linker (cargo-zigbuild through `napi build -x`) against glibc $GLIBC_FLOOR, so the addon loads on
# older distributions than the build machine; aarch64 is cross-compiled the same way. The result is
# checked: ELF machine, highest GLIBC_x.y symbol version needed, no symbol table; the host's own
# architecture is also loaded in node. Other targets (macOS, Windows) get a plain
# `napi build --release` on their own CI runner.
# Tools land in build/release-tools (ziglang and cargo-zigbuild from PyPI, pinned); cargo builds
# into build/release-target so they don't contend with the dev build in target/.
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: bash scripts/build-release.sh <rust-target> <out-dir>" >&2; exit 2; }
target=$1
mkdir -p "$2"
out=$(cd "$2" && pwd)   # absolute: we cd to the repo root below
cd "$(dirname "$0")/.."
root=$PWD

GLIBC_FLOOR=${GLIBC_FLOOR:-2.28}
# Pinned: a zig/cargo-zigbuild pair that builds this crate (a new zig release can break linking).
ZIGLANG_VERSION=0.15.2
CARGO_ZIGBUILD_VERSION=0.24.1
tools=$root/build/release-tools
target_dir=$root/build/release-target
stage=$root/build/release-stage/$target

napi=$root/node_modules/.bin/napi
[ -x "$napi" ] || { echo "build-release: $napi missing; run npm ci (scripts/setup.sh) first" >&2; exit 1; }

# Linker-level strip (rustc passes --strip-all / strip -x): works for every target and, unlike
# `napi build --strip`, does not set RUSTFLAGS, which would override .cargo/config.toml's
# per-target rustflags (the static CRT on windows-msvc).
export CARGO_PROFILE_RELEASE_STRIP=symbols

# The Rust standard library for the target (rust-toolchain.toml picks the toolchain).
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
  echo "== rustup target add $target"
  rustup target add "$target"
fi

napi_args=(build --platform --release --manifest-path crates/ovseg-node/Cargo.toml
  --target-dir "$target_dir" --output-dir "$stage" --no-js)
linux_gnu=false
case "$target" in
  *-linux-gnu*) linux_gnu=true ;;
esac

if $linux_gnu; then
  [ "$(uname -s)" = Linux ] || { echo "build-release: build $target on a Linux host" >&2; exit 1; }
  for tool in readelf python3; do
    command -v $tool >/dev/null || { echo "build-release: $tool is required (apt-get install binutils python3-venv)" >&2; exit 1; }
  done
  # zig (ziglang wheel) + cargo-zigbuild (prebuilt binary wheel) in a private venv; only
  # (re)installed when the pinned versions are not there.
  venv=$tools/venv
  if [ ! -x "$venv/bin/python" ]; then
    echo "== python venv $venv"
    python3 -m venv "$venv"
  fi
  have_zig=$("$venv/bin/python" -m ziglang version 2>/dev/null || true)
  have_czb=$("$venv/bin/cargo-zigbuild" --version 2>/dev/null || true)
  if [ "$have_zig" != "$ZIGLANG_VERSION" ] || [ "$have_czb" != "cargo-zigbuild $CARGO_ZIGBUILD_VERSION" ]; then
    echo "== pip install ziglang==$ZIGLANG_VERSION cargo-zigbuild==$CARGO_ZIGBUILD_VERSION (into $venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
  fi
  # napi -x runs `cargo zigbuild` (found on PATH); cargo-zigbuild runs zig as `python -m ziglang`.
  export PATH=$venv/bin:$PATH
  export CARGO_ZIGBUILD_PYTHON_PATH=$venv/bin/python
  # The ".2.28" suffix is cargo-zigbuild's glibc pin: cargo builds <target>, zig links
  # against glibc 2.28's symbol versions.
  napi_args+=(--target "$target.$GLIBC_FLOOR" --cross-compile)
else
  napi_args+=(--target "$target")
fi

rm -rf "$stage"
mkdir -p "$stage"
echo "== napi ${napi_args[*]}"
start=$SECONDS
"$napi" "${napi_args[@]}"
echo "build took $((SECONDS - start)) s"

# napi names the file after the platform (ovseg.linux-x64-gnu.node, ...), as ts/native.ts loads it.
shopt -s nullglob
built=("$stage"/ovseg.*.node)
[ ${#built[@]} -eq 1 ] || { echo "build-release: expected one ovseg.*.node in $stage, found ${#built[@]}" >&2; exit 1; }
addon=$out/$(basename "${built[0]}")
cp "${built[0]}" "$addon"
size=$(wc -c <"$addon")
echo "$addon: $size bytes"

if $linux_gnu; then
  # A failed check removes the copy in <out-dir> so it cannot be shipped (build/release-stage keeps one).
  fail() { echo "build-release: FAIL $addon: $*" >&2; rm -f "$addon"; exit 1; }
  case "$target" in
    x86_64-*)  want_machine="X86-64";  host_arch=x86_64 ;;
    aarch64-*) want_machine="AArch64"; host_arch=aarch64 ;;
    *) fail "no ELF machine check for $target" ;;
  esac
  machine=$(readelf -h "$addon" | sed -n 's/^ *Machine: *//p')
  # GLIBC_x.y in the version-needs section: the oldest glibc the addon can load on.
  max_glibc=$(readelf -V -W "$addon" | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/GLIBC_//' | sort -uV | tail -n1)
  echo "ELF machine: $machine"
  echo "max GLIBC version needed: ${max_glibc:-none}"
  echo "size: $size bytes"
  [[ "$machine" == *"$want_machine"* ]] || fail "ELF machine is '$machine', expected $want_machine"
  [ -n "$max_glibc" ] || fail "no GLIBC symbol versions found (not a glibc build?)"
  [ "$(printf '%s\n%s\n' "$max_glibc" "$GLIBC_FLOOR" | sort -V | tail -n1)" = "$GLIBC_FLOOR" ] \
    || fail "needs GLIBC_$max_glibc, above the floor $GLIBC_FLOOR"
  # Stripped: no static symbol table and no DWARF left.
  sections=$(readelf -S -W "$addon")
  if grep -qE '\.symtab|\.debug_' <<<"$sections"; then
    fail "not stripped (.symtab or .debug_* section present)"
  fi
  # The host's own architecture: the addon must load in node and export its functions.
  if [ "$(uname -m)" = "$host_arch" ]; then
    node -e "const m = require(process.argv[1]); if (typeof m.initRuntime !== 'function') throw new Error('initRuntime missing'); console.log('node ' + process.version + ' loads it: ' + Object.keys(m).join(' '))" "$addon" \
      || fail "does not load in node"
  fi
  echo "OK $addon (GLIBC <= $GLIBC_FLOOR, stripped, $want_machine)"
fi
