"""A model directory with float16 CLIP encoders, for GPUs (python -m ovseg_tools.export.fp16 SRC DST).

ONNX Runtime's own converter (onnxruntime.transformers.float16) rewrites the image and text
encoders' weights and arithmetic to float16 and keeps their inputs and outputs float32, so the
core runs them unchanged. The mask generator stays float32 (its positional encodings and masks are
built from index arithmetic). On CPU, ONNX Runtime runs float16 graphs slower than float32: this is
for the `cuda` execution provider. Needs the `onnx` and `onnxruntime` packages; no torch.
"""

import argparse
import json
import shutil
from pathlib import Path

from ..cli import run


def convert_dir(src: Path, dst: Path) -> list:
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise RuntimeError("needs the onnx and onnxruntime packages (tools/requirements.txt pins both)") from exc

    manifest = json.loads((src / "manifest.json").read_text())
    graphs = [manifest["graphs"]["imageEncoder"], manifest["graphs"]["textEncoder"]]
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.name not in graphs and entry.name != "manifest.json":
            shutil.copyfile(entry, dst / entry.name)
    for name in graphs:
        model = onnx.load(str(src / name))
        half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
        onnx.save(half, str(dst / name))
    manifest["name"] = manifest.get("name", "model") + "-fp16"
    manifest.setdefault("source", {})["fp16"] = graphs
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return graphs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ovseg_tools.export.fp16", description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    args = parser.parse_args(argv)
    graphs = convert_dir(args.src, args.dst)
    print(json.dumps({"out": str(args.dst), "float16": graphs}))


if __name__ == "__main__":
    run(main)
