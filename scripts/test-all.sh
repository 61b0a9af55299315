#!/usr/bin/env bash
# Every check CI runs: format, lint, Rust tests, Python tests, fixtures, parity, bounded fuzz runs
# (OVSEG_FUZZ_SECONDS per target, default 15), typecheck, jest on Node 24 and a smoke subset on
# Node 22, then the release build installed from packed tarballs.
# Needs scripts/setup.sh to have run once. Prints each step's time.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/node-env.sh
started=$SECONDS
step_start=$SECONDS
step_name=""
end_step() { if [ -n "$step_name" ]; then echo "-- $step_name: $((SECONDS - step_start)) s"; fi; }
step() { end_step; step_name=$*; step_start=$SECONDS; echo; echo "== $*"; }
trap 'end_step; echo; echo "total: $((SECONDS - started)) s"' EXIT

step "rustfmt";        cargo fmt --all -- --check
step "clippy";         cargo clippy --workspace --all-targets --quiet -- -D warnings
step "build";          npm run build --silent
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(node -p "require('./dist').resolveRuntimeLibrary()")}"
echo "Node.js $(node --version), ONNX Runtime library $ORT_DYLIB_PATH"
step "pytest";         (cd tools && ../.venv/bin/python -m pytest -q -W ignore::DeprecationWarning -W ignore::UserWarning tests)
step "fixtures";       bash scripts/make-fixtures.sh
# Unit tests, the tiny model through ONNX Runtime, cancellation, and the parity tests against the
# PyTorch/PIL references' fixtures (tokenizer, resize, crops, aggregation, segment end to end).
step "cargo test (with parity against the references)"
cargo test --workspace --release --quiet -- --nocapture
step "gpu-check dry run (the GPU script's whole path on the tiny model, CPU)"
bash scripts/gpu-check.sh dry-run
step "fuzz: manifest, .npy, vocabulary, tokenizer input, masks (${OVSEG_FUZZ_SECONDS:-15} s each)"
bash scripts/fuzz.sh "${OVSEG_FUZZ_SECONDS:-15}"
step "typecheck";      npm run typecheck --silent
step "jest (Node $(node --version))"
npx jest --ci
if [ -d .node/22 ]; then
  step "jest smoke subset (Node 22)"
  (OVSEG_NODE_MAJOR=22 && source scripts/node-env.sh && node --version && node node_modules/.bin/jest --ci __test__/api.test.ts __test__/segment.test.ts __test__/cli.test.ts __test__/packaging.test.ts __test__/queue.test.ts)
fi
step "release build (stripped, glibc floor 2.28)"
bash scripts/build-release.sh "$(rustc -vV | sed -n 's/^host: //p')" build/release
step "test:pack (install from packed tarballs, no Rust toolchain, no network)"
OVSEG_PACK_ADDON="build/release/ovseg.$(node -p "require('./dist/native').nativePlatform()").node" bash scripts/test-pack.sh
