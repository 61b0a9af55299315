"""int8 CLIP encoders for CPUs: `python -m ovseg_tools.export.int8 DIR` adds them beside DIR's float32
ones (loaded with the `precision: 'int8'` option); `... DIR DST` writes a copy of DIR with them instead.

ONNX Runtime's dynamic quantization (onnxruntime.quantization.quantize_dynamic): the weights of
the encoders' MatMul and Gemm nodes become int8 per output channel, their activations are
quantized per run. Everything else (the patch convolution, LayerNorm, softmax and the mask-prompt
substitution, which are elementwise) stays float32, and so do the graphs' inputs and outputs, so
the core runs the result unchanged. The mask generator stays float32. Needs the `onnx`,
`onnxruntime` and `ml_dtypes` packages; no torch.
"""

import shutil
import tempfile
from pathlib import Path

from ..cli import run
from .encoder_copy import add_beside, cli, convert_encoders

QUANTIZED_OPS = ["MatMul", "Gemm"]


def convert_dir(src: Path, dst: Path | None) -> list:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise RuntimeError("needs the onnx, onnxruntime and ml_dtypes packages (tools/requirements.txt pins them)") from exc

    def quantize(graph: Path, out: Path) -> None:
        # quantize_dynamic writes helper files beside its output: keep them out of DST.
        with tempfile.TemporaryDirectory() as scratch:
            staged = Path(scratch) / graph.name
            quantize_dynamic(graph, staged, op_types_to_quantize=QUANTIZED_OPS, per_channel=True, weight_type=QuantType.QInt8)
            shutil.copyfile(staged, out)

    record = {"ops": QUANTIZED_OPS, "weights": "int8 per channel"}
    if dst is None:
        return add_beside(src, quantize, "int8", "int8", lambda graphs: {"graphs": graphs, **record})
    return convert_encoders(src, dst, quantize, "int8", lambda graphs: {"graphs": graphs, **record})


main = cli("ovseg_tools.export.int8", __doc__, convert_dir, "int8")

if __name__ == "__main__":
    run(main)
