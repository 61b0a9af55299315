"""float16 CLIP encoders for GPUs: `python -m ovseg_tools.export.fp16 DIR` adds them beside DIR's float32
ones (loaded with the `precision: 'float16'` option); `... DIR DST` writes a copy of DIR with them instead.

ONNX Runtime's own converter (onnxruntime.transformers.float16) rewrites the image and text
encoders' weights and arithmetic to float16 and keeps their inputs and outputs float32, so the
core runs them unchanged. The mask generator stays float32 (its positional encodings and masks are
built from index arithmetic). On CPU, ONNX Runtime runs float16 graphs slower than float32: this is
for the `cuda` execution provider. Needs the `onnx` and `onnxruntime` packages; no torch.
"""

from pathlib import Path

from ..cli import run
from .encoder_copy import add_beside, cli, convert_encoders


def convert_dir(src: Path, dst: Path | None) -> list:
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise RuntimeError("needs the onnx and onnxruntime packages (tools/requirements.txt pins both)") from exc

    def to_half(graph: Path, out: Path) -> None:
        half = convert_float_to_float16(onnx.load(str(graph)), keep_io_types=True, disable_shape_infer=True)
        onnx.save(half, str(out))

    if dst is None:
        return add_beside(src, to_half, "fp16", "float16", lambda graphs: graphs)
    return convert_encoders(src, dst, to_half, "fp16", lambda graphs: graphs)


main = cli("ovseg_tools.export.fp16", __doc__, convert_dir, "float16")

if __name__ == "__main__":
    run(main)
