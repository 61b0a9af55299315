"""Per-class proposal recall of a generator on world scenes: which classes it proposes regions for,
and how well. The generator is a model directory's (mask_generator.onnx, through ONNX Runtime) or
a recipe stage-2 checkpoint (generator.pt, PyTorch).

  ../.venv/bin/python -m ovseg_tools.recipe.proposals ../models/world-ovseg --seed 1   (from tools/)

prints, per class, the mean best IoU of any proposal (binarized at 0.4) with each ground-truth
instance of the first 100 test scenes of that seed (of each seed, given several), and the share
covered at IoU > 0.5; `--json` prints the same as one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnxruntime as ort
import torch

from ..cli import run
from .train_generator import best_ious, recall_stats
from .world import CLASSES, SEEN_CLASSES
from .world_data import render


class OnnxGenerator:
    """An exported generator called as propose() calls the PyTorch one: image batch -> (mask logits,
    query embeddings)."""

    def __init__(self, path: Path):
        if not path.is_file():
            raise ValueError(f"{path} does not exist (a model directory with a generator?)")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embeddings = self.session.run(["mask_logits", "query_embeddings"], {self.input: x.numpy()})
        return torch.from_numpy(logits), torch.from_numpy(embeddings)


def load(model: Path):
    if model.suffix == ".pt":
        from .mine import load_generator

        return load_generator(model)[0].eval()
    return OnnxGenerator(model / "mask_generator.onnx")


def per_class_recall(model: Path, seeds: list[int], split: str, scenes: int, threshold: float) -> dict:
    generator, best = load(model), {c: [] for c in CLASSES}
    for seed in seeds:
        for c, ious in best_ious(generator, render(seed, split, scenes), scenes, threshold).items():
            best[c] += ious
    return {c: {"seen": c in SEEN_CLASSES, "instances": len(best[c]), **(recall_stats(best[c]) if best[c] else {})}
            for c in CLASSES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="model directory, or a stage-2 generator.pt")
    ap.add_argument("--seed", type=int, nargs="+", required=True)
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--threshold", type=float, default=0.4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = per_class_recall(args.model, args.seed, args.split, args.scenes, args.threshold)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'class':9s} seen  instances  mean best IoU  covered at IoU > 0.5")
    for c, r in result.items():
        stats = f"{r['MeanBestIoU']:13.3f}  {100 * r['CoveredAt50']:19.1f}%" if r["instances"] else f"{'-':>13s}  {'-':>20s}"
        print(f"{c:9s} {'yes' if r['seen'] else 'no ':4s} {r['instances']:9d}  {stats}")


if __name__ == "__main__":
    run(main)
