"""Test fixture (scripts/make-fixtures.sh): a tiny random model with a generator, mask prompts and a
no-object embedding, exported with `--quantize int8 --fp16`, so that its directory holds float32,
int8 and float16 CLIP encoders side by side. Writes OUT/model and OUT/index.json."""

import argparse
import json
from pathlib import Path

from ..cli import run
from .model_dir import main as export


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    model = args.out / "model"
    export(["--random", "tiny", "--seed", "61", "--prompt-depth", "3", "--no-object", "--generator-queries", "16",
            "--out", str(model), "--name", "tiny-variants", "--quantize", "int8", "--fp16"])
    (args.out / "index.json").write_text(json.dumps({"model": str(model.resolve())}, indent=1))


if __name__ == "__main__":
    run(main)
