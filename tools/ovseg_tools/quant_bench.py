"""float32 vs int8 CLIP image encoders on CPU, side by side (python -m ovseg_tools.quant_bench OUT.json NAME=FLOAT_DIR,INT8_DIR ...).

For each model: both image encoders in one process (ONNX Runtime's Python API, CPU, default
threads), the same masked crops (mask prompts from the model directory, half the patches masked
out), runs interleaved float / int8 so both see the same machine state; crops per second (median
of the rounds) and how far the int8 features are from the float ones (cosine of unit features).
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from .cli import run


def encoder_inputs(model_dir: Path, batch: int, rng) -> dict:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    clip = manifest["clip"]
    size, layers, width = clip["imageSize"], clip["visionLayers"], clip["visionWidth"]
    patches = (size // clip["patchSize"]) ** 2
    prompts = np.zeros((layers, patches, width), np.float32)
    gate = np.zeros(layers, np.float32)
    if manifest.get("maskPrompts"):
        stored = np.load(model_dir / manifest["maskPrompts"]["file"]).astype(np.float32)
        prompts[: stored.shape[0]] = stored  # [depth, patches or 1, width], broadcast over patches
        gate[: stored.shape[0]] = 1.0
    return {
        "pixels": rng.standard_normal((batch, 3, size, size), dtype=np.float32),
        "keep": (rng.random((batch, patches)) > 0.5).astype(np.float32),
        "prompts": prompts,
        "prompt_gate": gate,
    }


def compare(name: str, float_dir: Path, int8_dir: Path, batch: int, rounds: int) -> dict:
    import onnxruntime as ort

    graph = json.loads((float_dir / "manifest.json").read_text())["graphs"]["imageEncoder"]
    sessions = [ort.InferenceSession(str(d / graph), providers=["CPUExecutionProvider"]) for d in (float_dir, int8_dir)]
    feeds = encoder_inputs(float_dir, batch, np.random.default_rng(0))
    outputs = [s.run(None, feeds)[0] for s in sessions]  # also the warm-up
    unit = [o / np.linalg.norm(o, axis=1, keepdims=True) for o in outputs]
    cosine = (unit[0] * unit[1]).sum(axis=1)
    times = ([], [])
    for _ in range(rounds):
        for session, kept in zip(sessions, times):
            start = time.perf_counter()
            session.run(None, feeds)
            kept.append(time.perf_counter() - start)
    crops_per_s = [batch / statistics.median(t) for t in times]
    row = {
        "model": name,
        "batch": batch,
        "rounds": rounds,
        "float32CropsPerS": crops_per_s[0],
        "int8CropsPerS": crops_per_s[1],
        "speedup": crops_per_s[1] / crops_per_s[0],
        "cosineMin": float(cosine.min()),
        "cosineMean": float(cosine.mean()),
        "graphBytes": [(d / graph).stat().st_size for d in (float_dir, int8_dir)],
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("models", nargs="+", help="NAME=FLOAT_DIR,INT8_DIR")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for spec in args.models:
        name, _, dirs = spec.partition("=")
        float_dir, _, int8_dir = dirs.partition(",")
        if not int8_dir:
            raise ValueError(f"expected NAME=FLOAT_DIR,INT8_DIR, got {spec!r}")
        rows.append(compare(name, Path(float_dir), Path(int8_dir), args.batch, args.rounds))
    import onnxruntime

    args.out.write_text(json.dumps({"onnxruntime": onnxruntime.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    run(main)
