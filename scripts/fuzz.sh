#!/usr/bin/env bash
# Fuzzes the parsers of untrusted bytes in ovseg-core (crates/ovseg-core/fuzz: manifest, .npy,
# vocabulary gz/plain, tokenizer input, mask arrays), each for a bounded time, from the committed
# seeds. Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   bash scripts/fuzz.sh 20            # 20 seconds per target (the default)
#   bash scripts/fuzz.sh 60 npy vocab  # only these targets
#
# A crash leaves its input in crates/ovseg-core/fuzz/artifacts/<target>/ and fails the script;
# new inputs the fuzzer finds go to crates/ovseg-core/fuzz/corpus/<target>/ (not committed).
set -euo pipefail

seconds="${1:-20}"
shift || true
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../crates/ovseg-core/fuzz" && pwd)"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(manifest npy vocab tokenize masks)
fi

cd "$fuzz_dir/.."
# Built once for all targets; the sanitizer is off (the parsers have no unsafe code: panics, overflow
# checks and the memory limit are what the runs look for) to keep the build short.
cargo +nightly fuzz build --sanitizer none --debug-assertions
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  echo "== fuzz $target for ${seconds}s"
  cargo +nightly fuzz run --sanitizer none --debug-assertions "$target" \
    "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
done
