"""A model directory with int8 CLIP encoders, for CPUs (python -m ovseg_tools.export.int8 SRC DST).

ONNX Runtime's dynamic quantization (onnxruntime.quantization.quantize_dynamic): the weights of
the encoders' MatMul and Gemm nodes become int8 per output channel, their activations are
quantized per run. Everything else (the patch convolution, LayerNorm, softmax and the mask-prompt
substitution, which are elementwise) stays float32, and so do the graphs' inputs and outputs, so
the core runs the result unchanged. The mask generator stays float32. Needs the `onnx`,
`onnxruntime` and `ml_dtypes` packages; no torch.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from ..cli import run

QUANTIZED_OPS = ["MatMul", "Gemm"]


def convert_dir(src: Path, dst: Path) -> list:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise RuntimeError("needs the onnx, onnxruntime and ml_dtypes packages (tools/requirements.txt pins them)") from exc

    manifest = json.loads((src / "manifest.json").read_text())
    graphs = [manifest["graphs"]["imageEncoder"], manifest["graphs"]["textEncoder"]]
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.name not in graphs and entry.name != "manifest.json":
            shutil.copyfile(entry, dst / entry.name)
    for name in graphs:
        # quantize_dynamic writes helper files beside its output: keep them out of DST.
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / name
            quantize_dynamic(
                src / name,
                out,
                op_types_to_quantize=QUANTIZED_OPS,
                per_channel=True,
                weight_type=QuantType.QInt8,
            )
            shutil.copyfile(out, dst / name)
    manifest["name"] = manifest.get("name", "model") + "-int8"
    manifest.setdefault("source", {})["int8"] = {"graphs": graphs, "ops": QUANTIZED_OPS, "weights": "int8 per channel"}
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return graphs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ovseg_tools.export.int8", description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    args = parser.parse_args(argv)
    graphs = convert_dir(args.src, args.dst)
    print(json.dumps({"out": str(args.dst), "int8": graphs}))


if __name__ == "__main__":
    run(main)
