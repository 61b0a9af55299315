#!/usr/bin/env bash
# Every check CI runs: format, lint, Rust tests, Python tests, fixtures, typecheck, jest.
# Needs scripts/setup.sh to have run once.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo; echo "== $*"; }

step "rustfmt";        cargo fmt --all -- --check
step "clippy";         cargo clippy --workspace --all-targets --quiet -- -D warnings
step "build";          npm run build --silent
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(node -p "require('./dist').resolveRuntimeLibrary()")}"
step "cargo test";     cargo test --workspace --quiet
step "pytest";         (cd tools && ../.venv/bin/python -m pytest -q -W ignore::DeprecationWarning -W ignore::UserWarning tests)
step "fixtures";       bash scripts/make-fixtures.sh
step "tokenizer parity (core)"
cargo run --quiet --release -p ovseg-core --example tokenizer_parity -- build/parity/tokenizer.json
cargo run --quiet --release -p ovseg-core --example tokenizer_parity -- build/parity/tokenizer-world.json
step "mask-crop parity (core vs PyTorch)"
cargo run --quiet --release -p ovseg-core --example crop_parity -- build/crops
step "classification/aggregation parity (core vs PyTorch)"
cargo run --quiet --release -p ovseg-core --example aggregate_parity -- build/aggregate
step "image resize parity (core vs PIL)"
cargo run --quiet --release -p ovseg-core --example resize_parity -- build/resize
step "segment parity: generator, caller masks, both, demo (core vs PyTorch pipeline)"
cargo run --quiet --release -p ovseg-core --example segment_parity -- build/pipeline
step "typecheck";      npm run typecheck --silent
step "jest";           npx jest --ci
