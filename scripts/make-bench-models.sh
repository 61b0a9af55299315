#!/usr/bin/env bash
# Random models with 100-query mask generators for the segment() benchmark (bench/segment.ts):
# build/bench-models/tiny-100 (the tiny geometry) and build/bench-models/vit-b-16-100 (ViT-B/16
# geometry, about 600 MB). Their outputs mean nothing; only the timing does.
set -euo pipefail
cd "$(dirname "$0")/../tools"
for spec in "tiny tiny-100" "vit-b-16 vit-b-16-100"; do
  set -- $spec
  out=../build/bench-models/$2
  [ -f "$out/manifest.json" ] && continue
  ../.venv/bin/python -W ignore -m ovseg_tools.export --random "$1" --seed 7 --prompt-depth 3 --no-object \
    --generator-queries 100 --out "$out" --name "$2"
done
