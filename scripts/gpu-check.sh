#!/usr/bin/env bash
# CUDA-vs-CPU parity and GPU timings of the core on random ViT-B/16 and ViT-L/14 models
# (docs/benchmarks.md, "CUDA on an H200"). The GPU machine needs no network and no Node.js:
#
#   scripts/gpu-check.sh prepare [DIR] [--sm N]
#       On a CPU machine with network (after scripts/setup.sh). Writes DIR (build/gpu-check):
#       bin/gpu_check (crates/ovseg-core/examples/gpu_check.rs), ort/ (ONNX Runtime's CUDA 13 build
#       from the onnxruntime-gpu wheel, xz-compressed) and models/ (weightless skeletons of the
#       random OVSeg R101c + ViT-B/16 and Swin-B + ViT-L/14 exports of make-bench-models.sh --ovseg,
#       about 13 MB). --sm 90 keeps only that GPU architecture's kernels (the CUDA provider then
#       compresses to 52 MB instead of 186 MB).
#   scripts/gpu-check.sh run DIR OUT [GPU_CHECK_ARGS...]
#       On the GPU machine, from a copy of this repository: python3 with onnx, numpy and onnxruntime
#       (CPU is enough: its float16 converter), and CUDA 13 + cuDNN 9 libraries (pip's nvidia-*
#       packages are found). Draws the weights (seed 1), makes float16 copies of the CLIP
#       encoders (once per OVSEG_GPU_WORK), runs gpu_check and writes OUT/gpu-check.json and
#       OUT/gpu-check.md. Extra arguments go to gpu_check (--no-parity, --profile 1,100,
#       --concurrency N: the cross-request batching rows, 16 threads by default).
#   scripts/gpu-check.sh check-libs DIR
#       On the GPU machine: the CUDA libraries that DIR's CUDA provider would load, or "not found".
#   scripts/gpu-check.sh dry-run [OUT]
#       The whole path on this CPU machine with the tiny model and provider auto (CPU here): npm test.
set -euo pipefail
cd "$(dirname "$0")/.."
ORT_GPU_VERSION=1.31.1 # onnxruntime-gpu on PyPI: built for CUDA 13 and cuDNN 9
PYTHON=${PYTHON:-python3}
py() { (cd tools && PYTHONPATH=. "$PYTHON" -W ignore "$@"); }
abs() { realpath -m "$1"; }

prepare() {
  local dir=build/gpu-check sm=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --sm) sm=$2; shift 2 ;;
      *) dir=$1; shift ;;
    esac
  done
  dir=$(abs "$dir")
  PYTHON=$PWD/.venv/bin/python
  mkdir -p "$dir/bin" "$dir/ort" "$dir/models"
  cargo build --release --quiet --example gpu_check
  cp target/release/examples/gpu_check "$dir/bin/"
  local wheels=build/wheels/onnxruntime-gpu-$ORT_GPU_VERSION
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 -d "$wheels" "onnxruntime-gpu==$ORT_GPU_VERSION"
  fi
  local unpacked=build/wheels/onnxruntime-gpu-$ORT_GPU_VERSION-lib
  rm -rf "$unpacked" && mkdir -p "$unpacked"
  "$PYTHON" - "$wheels"/*.whl "$unpacked" <<'EOF'
import re, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():  # the C library and its CUDA provider; not TensorRT's or Python's
        if re.fullmatch(r"onnxruntime/capi/libonnxruntime(\.so\.[\d.]+|_providers_(cuda|shared)\.so)", name):
            open(f"{out}/{name.rsplit('/', 1)[1]}", "wb").write(z.read(name))
EOF
  rm -f "$dir"/ort/*
  if [ -n "$sm" ]; then
    py -m ovseg_tools.cuda_fatbin "$(abs "$unpacked")/libonnxruntime_providers_cuda.so" \
      "$(abs "$unpacked")/libonnxruntime_providers_cuda.so" --sm "$sm"
  fi
  for f in "$unpacked"/*; do xz -T0 -9 -c "$f" >"$dir/ort/$(basename "$f").xz"; done
  bash scripts/make-bench-models.sh --ovseg
  rm -rf "$dir/models/vit-b-16" "$dir/models/vit-l-14"
  py -m ovseg_tools.export.skeleton pack "$(abs build/bench-models/ovseg-r101c)" "$dir/models/vit-b-16"
  py -m ovseg_tools.export.skeleton pack "$(abs build/bench-models/ovseg-swinb)" "$dir/models/vit-l-14"
  du -sh "$dir"/*
}

# CUDA and cuDNN from pip's nvidia-* packages (as PyTorch installs them) or a system toolkit.
cuda_library_path() {
  local dirs
  dirs=$("$PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null |
    while read -r sp; do [ -d "$sp/nvidia" ] && find "$sp/nvidia" -name 'lib*.so*' -printf '%h\n'; done | sort -u | paste -sd:)
  echo "${dirs:+$dirs:}/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# Decompresses DIR/ort/*.xz in place (python's lzma where xz is missing).
unpack_runtime() {
  for f in "$1"/ort/*.xz; do
    [ -e "$f" ] || continue
    if command -v xz >/dev/null; then xz -d -f -T0 "$f"; else
      "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3], "wb"))' "$f" && rm "$f"
    fi
  done
}

# What the CUDA provider library would load: its needed libraries and cuDNN.
check_libs() {
  local dir
  dir=$(abs "$1")
  unpack_runtime "$dir"
  LD_LIBRARY_PATH=$(cuda_library_path)
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  LD_LIBRARY_PATH=$LD_LIBRARY_PATH ldd "$dir/ort/libonnxruntime_providers_cuda.so" | grep -E 'not found|cu|nv' || true
  tr : '\n' <<<"$LD_LIBRARY_PATH" | while read -r d; do ls "$d"/libcudnn.so.* 2>/dev/null; done | head -3
}

run() {
  local dir out work provider=${OVSEG_GPU_PROVIDER:-cuda} repeats=${OVSEG_GPU_REPEATS:-10}
  dir=$(abs "$1") out=$(abs "$2") work=$(abs "${OVSEG_GPU_WORK:-/tmp/ovseg-gpu-check}")
  mkdir -p "$out" "$work"
  local t=$SECONDS
  unpack_runtime "$dir"
  local runtime
  runtime=$(ls "$dir"/ort/libonnxruntime.so.* 2>/dev/null | grep -v '\.xz$' | head -1 || true)
  runtime=${OVSEG_GPU_RUNTIME:-$runtime}
  [ -n "$runtime" ] || { echo "no ONNX Runtime library in $dir/ort" >&2; exit 1; }
  export LD_LIBRARY_PATH
  LD_LIBRARY_PATH=$(cuda_library_path)
  local args=()
  for m in "$dir"/models/*/; do
    local name
    name=$(basename "$m")
    if [ ! -f "$work/$name-fp16/manifest.json" ]; then
      py -m ovseg_tools.export.skeleton unpack "$m" "$work/$name" --seed 1
      py -m ovseg_tools.export.fp16 "$work/$name" "$work/$name-fp16"
    fi
    args+=(--model "$name=$work/$name,$work/$name-fp16")
  done
  echo "-- weights drawn, float16 copies: $((SECONDS - t)) s"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
  fi
  "$dir/bin/gpu_check" --runtime "$runtime" --provider "$provider" --repeats "$repeats" \
    --out "$out/gpu-check.json" "${args[@]}" "${@:3}"
  echo "-- gpu_check: $((SECONDS - t)) s in all"
}

dry_run() {
  local out dir
  out=$(abs "${1:-build/gpu-check-dry/out}") dir=$(abs build/gpu-check-dry)
  PYTHON=$PWD/.venv/bin/python
  rm -rf "$dir/models" && mkdir -p "$dir/bin" "$dir/ort"
  cargo build --release --quiet --example gpu_check
  cp target/release/examples/gpu_check "$dir/bin/"
  py -m ovseg_tools.export.skeleton pack "$(abs models/tiny-random)" "$dir/models/tiny"
  source scripts/node-env.sh
  OVSEG_GPU_PROVIDER=auto OVSEG_GPU_REPEATS=2 OVSEG_GPU_WORK=$dir/work \
    OVSEG_GPU_RUNTIME=$(node -p "require('./dist').resolveRuntimeLibrary()") run "$dir" "$out" --concurrency 4
  # gpu_check exits non-zero when a parity check fails; the report must also say what ran.
  node -e '
    const r = require(process.argv[1]);
    const m = r.models[0];
    for (const p of ["float32", "fp16"]) {
      const batching = m[p] && m[p].timings.concurrency && m[p].timings.concurrency.batching;
      if (!m[p] || m[p].parity.pass !== true || !(m[p].timings.segmentMs > 0) || !(batching.off.imagesPerS > 0) || !(batching.on.encoderRuns > 0)) {
        throw new Error(`dry run: ${p} incomplete`);
      }
    }
    console.log(`dry run: ${m.model} on ${m.float32.provider} (${m.float32.providerReason}), report complete`);
  ' "$out/gpu-check.json"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  run) shift; run "$@" ;;
  dry-run) shift; dry_run "$@" ;;
  check-libs) shift; check_libs "$@" ;;
  *) sed -n '2,23p' "$0"; exit 2 ;;
esac
