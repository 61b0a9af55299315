#!/usr/bin/env bash
# Random models with 100-query mask generators for the segment() benchmark (bench/segment.ts):
# build/bench-models/tiny-100 (the tiny geometry) and build/bench-models/vit-b-16-100 (ViT-B/16
# geometry, about 600 MB). Their outputs mean nothing; only the timing does.
# --ovseg: instead, random checkpoints in the layout of OVSeg's two released models, exported like
# real ones (bench/generators.ts): build/bench-models/ovseg-swinb (about 2.2 GB) and ovseg-r101c.
set -euo pipefail
cd "$(dirname "$0")/../tools"
if [ "${1:-}" = --ovseg ]; then
  for name in ovseg-swinb ovseg-r101c; do
    out=../build/bench-models/$name
    [ -f "$out/manifest.json" ] && continue
    ../.venv/bin/python -W ignore -m ovseg_tools.export --random "$name" --seed 7 --out "$out" --name "$name"
  done
  exit 0
fi
for spec in "tiny tiny-100" "vit-b-16 vit-b-16-100"; do
  set -- $spec
  out=../build/bench-models/$2
  [ -f "$out/manifest.json" ] && continue
  ../.venv/bin/python -W ignore -m ovseg_tools.export --random "$1" --seed 7 --prompt-depth 3 --no-object \
    --generator-queries 100 --out "$out" --name "$2"
done
