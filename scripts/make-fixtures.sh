#!/usr/bin/env bash
# Test fixtures the Python references make: the tokenizer corpus and the model parity cases,
# written to build/parity (about 2.3 GB with the ViT-B/16 and ViT-L/14 geometries), and the
# mask-crop cases in build/crops (about 200 MB), the aggregation cases in build/aggregate, the
# image-resize cases in build/resize and the end-to-end segment cases in build/pipeline (about 600 MB). They are remade whenever the Python tooling
# that makes them changes (a hash of its sources is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/parity
stamp=$(cat tools/ovseg_tools/*.py tools/requirements.txt | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$stamp" ] && [ -f "$OUT/index.json" ] && [ -f "$OUT/tokenizer.json" ] \
  && [ -f "$OUT/tokenizer-world.json" ] \
  && [ -f build/crops/index.json ] && [ -f build/aggregate/index.json ] && [ -f build/resize/index.json ] \
  && [ -f build/pipeline/index.json ]; then
  echo "fixtures up to date ($OUT)"
  exit 0
fi
rm -rf "$OUT" build/crops build/aggregate build/resize build/pipeline
mkdir -p "$OUT"
cd tools
../.venv/bin/python -m ovseg_tools.tokenizer_corpus "../$OUT/tokenizer.json"
../.venv/bin/python -m ovseg_tools.bpe "../$OUT/tokenizer-world.json"
../.venv/bin/python -W ignore -m ovseg_tools.parity_fixtures "../$OUT"
../.venv/bin/python -m ovseg_tools.mask_crop_reference ../build/crops
../.venv/bin/python -m ovseg_tools.aggregate_reference ../build/aggregate
../.venv/bin/python -m ovseg_tools.image_resize_reference ../build/resize
../.venv/bin/python -W ignore -m ovseg_tools.pipeline_reference ../build/pipeline
echo "$stamp" > "../$OUT/.stamp"
