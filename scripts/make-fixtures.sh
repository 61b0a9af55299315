#!/usr/bin/env bash
# Test fixtures the Python references write (tools/ovseg_tools/reference), one set per output:
#   build/parity/tokenizer.json        tokenizer corpus, OpenAI's vocabulary
#   build/parity/tokenizer-world.json  tokenizer corpus, the synthetic world's learned vocabulary (written beside it)
#   build/parity                       model parity cases (about 2.3 GB with the ViT-B/16 and ViT-L/14 geometries)
#   build/crops                        mask-crop cases (about 200 MB)
#   build/aggregate, build/resize      classification/aggregation cases, image-resize cases
#   build/pipeline                     end-to-end segment cases (about 600 MB)
#   build/maskformer                   OVSeg's released generators, CI-sized, exported from random checkpoints (about 400 MB)
#   build/variants                     a tiny model with int8 and float16 CLIP encoders beside the float32 ones
#   build/sam                          SAM automatic mask generation (segment-anything's) on a tiny random-weight SAM
# A set is remade only when its stamp changes: a hash of its command, tools/requirements.txt and the
# files of every ovseg_tools module the command runs (`python -m ovseg_tools.sources MODULE` lists them).
set -euo pipefail
cd "$(dirname "$0")/../tools"
PY=../.venv/bin/python

# fixture OUT MODULE [ARGS...]: OUT (under build/) is a .json file or a folder that ends with an index.json.
fixture() {
  local out=../build/$1 module=$2 files stamp done_file stamp_file
  shift 2
  if [[ $out == *.json ]]; then done_file=$out stamp_file=$out.stamp; else done_file=$out/index.json stamp_file=$out/.stamp; fi
  files=$("$PY" -m ovseg_tools.sources "$module")
  stamp=$({ echo "$module $*"; cat requirements.txt $files; } | sha256sum | cut -d' ' -f1)
  if [ -f "$done_file" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; then
    echo "up to date: ${out#../}"
    return
  fi
  echo "remaking:   ${out#../}"
  local started=$SECONDS
  # build/parity also holds the tokenizer corpora: its cases are overwritten in place; other folders start empty.
  if [[ $out == *.json || $out == ../build/parity ]]; then rm -f "$stamp_file" "$done_file"; else rm -rf "$out"; fi
  mkdir -p "${done_file%/*}"
  "$PY" -W ignore -m "$module" "$out" "$@"
  echo "$stamp" > "$stamp_file"
  echo "-- ${out#../}: $((SECONDS - started)) s"
}

fixture parity/tokenizer.json       ovseg_tools.reference.tokenizer_corpus
fixture parity/tokenizer-world.json ovseg_tools.recipe.bpe
fixture parity                      ovseg_tools.reference.parity_fixtures
fixture crops                       ovseg_tools.reference.mask_crop
fixture aggregate                   ovseg_tools.reference.aggregate
fixture resize                      ovseg_tools.reference.image_resize
fixture pipeline                    ovseg_tools.reference.pipeline
fixture maskformer                  ovseg_tools.reference.maskformer
fixture variants                    ovseg_tools.export.variants_fixture
fixture sam                         ovseg_tools.reference.sam_amg
