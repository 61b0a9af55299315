"""Test fixture (scripts/make-fixtures.sh): a tiny random model with a generator, mask prompts and a
no-object embedding, exported with `--quantize int8 --fp16`, so that its directory holds float32,
int8 and float16 CLIP encoders side by side (OUT/model); and a copy whose text encoder declares a
fixed token axis of the full context, as exports before format version 3 did (OUT/fixed-text).
Writes OUT/index.json."""

import argparse
import json
import shutil
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
    fixed = args.out / "fixed-text"
    shutil.copytree(model, fixed)
    import onnx

    graph = onnx.load(str(fixed / "text_encoder.onnx"))
    graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 77
    onnx.save(graph, str(fixed / "text_encoder.onnx"))
    (args.out / "index.json").write_text(json.dumps({"model": str(model.resolve()), "fixedText": str(fixed.resolve())},
                                                    indent=1))


if __name__ == "__main__":
    run(main)
