#!/usr/bin/env bash
# Test fixtures the Python references make: the tokenizer corpus and the model parity cases.
# Written to build/parity (about 600 MB with the ViT-B/16 geometry); skipped when present.
set -euo pipefail
cd "$(dirname "$0")/../tools"
PY=../.venv/bin/python
mkdir -p ../build/parity
if [ ! -f ../build/parity/tokenizer.json ]; then
  $PY -m ovseg_tools.tokenizer_corpus ../build/parity/tokenizer.json
fi
if [ ! -f ../build/parity/index.json ]; then
  $PY -W ignore -m ovseg_tools.parity_fixtures ../build/parity
fi
