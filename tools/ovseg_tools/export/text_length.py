"""Rewrites a model directory's text encoder with a dynamic token axis (python -m
ovseg_tools.export.text_length DIR), for directories exported before format version 3, whose text
graph takes exactly the context length: the core then runs each batch of texts at its longest text.

The weights are read back from the old graph (export/graphs.py's TextGraph names its buffers; the
linear weights are the transposed MatMul initializers, four per block in graph order) and the
graph is exported again. The attention heads are not in the file: each divisor of the width is
tried and the one whose features match the old graph on random token rows of every length, to
1e-5, is kept; nothing is written otherwise. The manifest's version becomes 3.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..cli import run
from ..clip_reference import Geometry
from .graphs import TextGraph
from .model_dir import FORMAT_VERSION

TOLERANCE = 1e-5
# TextGraph's buffer names of a block's vectors -> OpenAI's state-dict keys.
BLOCK_VECTORS = {"attn_in_proj_bias": "attn.in_proj_bias", "attn_out_proj_bias": "attn.out_proj.bias",
                 "ln_1_weight": "ln_1.weight", "ln_1_bias": "ln_1.bias", "ln_2_weight": "ln_2.weight",
                 "ln_2_bias": "ln_2.bias", "mlp_c_fc_bias": "mlp.c_fc.bias", "mlp_c_proj_bias": "mlp.c_proj.bias"}


def weights(graph) -> tuple[dict, int]:
    """An OpenAI-layout text state dict from a text_encoder.onnx, and its number of blocks."""
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    sd = {"token_embedding.weight": init["token_embedding"], "positional_embedding": init["positional_embedding"],
          "ln_final.weight": init["ln_final_weight"], "ln_final.bias": init["ln_final_bias"],
          "text_projection": init["text_projection"]}
    layers = len({k.split(".")[1] for k in init if k.startswith("blocks.")})
    width = init["ln_final_weight"].shape[0]
    # MatMul weights in the order the graph uses them: in_proj, out_proj, c_fc, c_proj per block.
    matmuls = [n.input[1] for n in graph.graph.node
               if n.op_type == "MatMul" and n.input[1] in init and n.input[1] != "text_projection"]
    if len(matmuls) != 4 * layers:
        raise ValueError(f"expected {4 * layers} weight MatMuls for {layers} blocks, found {len(matmuls)}: "
                         "not a text graph of ovseg's exporter")
    for i in range(layers):
        prefix = f"transformer.resblocks.{i}"
        for name, key in BLOCK_VECTORS.items():
            # The exporter folds away an all-zero bias (`x + 0`); the comparison below checks the guess.
            size = {"attn_in_proj_bias": 3 * width, "mlp_c_fc_bias": 4 * width}.get(name, width)
            sd[f"{prefix}.{key}"] = init.get(f"blocks.{i}.{name}", np.zeros(size, np.float32))
        for name, key in zip(matmuls[4 * i:4 * i + 4], ("attn.in_proj_weight", "attn.out_proj.weight",
                                                         "mlp.c_fc.weight", "mlp.c_proj.weight")):
            sd[f"{prefix}.{key}"] = init[name].T
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, layers


def probe_ids(vocab: int, context: int, rows: int = 24, seed: int = 0) -> np.ndarray:
    """Token rows of lengths 2..context: start, random ids, end-of-text (the highest id), padding."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((rows, context), np.int64)
    for r, length in enumerate(np.linspace(2, context, rows).astype(int)):
        ids[r, 0] = vocab - 2
        ids[r, 1:length - 1] = rng.integers(1, vocab - 2, length - 2)
        ids[r, length - 1] = vocab - 1
    return ids


def convert(model: Path) -> dict:
    import onnx
    import onnxruntime as ort

    manifest = json.loads((model / "manifest.json").read_text())
    path = model / manifest["graphs"]["textEncoder"]
    old = onnx.load(str(path))
    dim = old.graph.input[0].type.tensor_type.shape.dim[1]
    if not dim.HasField("dim_value"):
        return {"out": str(model), "changed": False, "reason": "the text encoder's token axis is dynamic already"}
    sd, layers = weights(old)
    clip = manifest["clip"]
    width = sd["ln_final.weight"].shape[0]
    ids = probe_ids(clip["vocabSize"], clip["contextLength"])
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
    tried = []
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / path.name
        for heads in sorted((h for h in range(1, width + 1) if width % h == 0), key=lambda h: (h != width // 64, h)):
            g = Geometry(clip["imageSize"], clip["patchSize"], clip["visionWidth"], clip["visionLayers"], 1,
                         clip["embedDim"], clip["contextLength"], clip["vocabSize"], width, layers, heads)
            with torch.no_grad():
                torch.onnx.export(TextGraph(sd, g).eval(), (torch.zeros(2, g.context_length, dtype=torch.int64),),
                                  str(staged), opset_version=old.opset_import[0].version, input_names=["input_ids"],
                                  output_names=["text_features"],
                                  dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "text_features": {0: "batch"}})
            session = ort.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
            got = session.run(None, {"input_ids": ids})[0]
            diff = float(np.abs(got - want).max())
            tried.append((heads, diff))
            if diff <= TOLERANCE:
                # Cut to the longest row, as the core runs it: the same features again.
                few = ids[:4]
                longest = int(few.argmax(axis=1).max()) + 1
                short = session.run(None, {"input_ids": few[:, :longest]})[0]
                cut = float(np.abs(short - want[:4]).max())
                if cut > TOLERANCE:
                    raise RuntimeError(f"the new graph differs by {cut:.2e} when cut to {longest} tokens")
                shutil.copyfile(staged, path)
                break
        else:
            raise RuntimeError(f"no head count reproduces the old graph within {TOLERANCE}: {tried}")
    manifest["version"] = max(manifest["version"], FORMAT_VERSION)
    (model / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {"out": str(model), "changed": True, "heads": tried[-1][0], "maxAbsDiff": tried[-1][1]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ovseg_tools.export.text_length",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="model directory (its text encoder is replaced)")
    args = parser.parse_args(argv)
    print(json.dumps(convert(args.model)))


if __name__ == "__main__":
    run(main)
