#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a built, working ovseg:
# system packages, npm packages, the Python tooling venv, the native addon and the TS build,
# then runs examples/quickstart.js on the bundled tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# Python tooling (Debian's CPU torch), and for the web page's browser test: Chromium and a font.
PACKAGES="python3-torch python3-numpy python3-regex python3-pil python3-venv python3-pip libopenblas0-openmp chromium fonts-dejavu-core"
missing=$(dpkg-query -W -f='${Status} ${Package}\n' $PACKAGES 2>/dev/null | grep -vc "install ok installed" || true)
if [ "$missing" != "0" ] || ! dpkg-query -W $PACKAGES >/dev/null 2>&1; then
  echo "== apt: $PACKAGES"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $PACKAGES >/dev/null
fi

command -v cargo >/dev/null || { echo "Rust is required (rustup.rs); rust-toolchain.toml pins the version" >&2; exit 1; }
command -v node >/dev/null || { echo "Node.js >= 20 is required" >&2; exit 1; }

echo "== npm ci"
npm ci --no-audit --no-fund

echo "== Python tooling venv (.venv, over Debian's torch)"
if [ ! -x .venv/bin/python ]; then /usr/bin/python3 -m venv --system-site-packages .venv; fi
.venv/bin/pip install -q -r tools/requirements.txt
.venv/bin/pip install -q --no-deps openai-clip==1.0.1

echo "== build (native addon + TypeScript)"
npm run build

echo "== quick start"
node examples/quickstart.js
