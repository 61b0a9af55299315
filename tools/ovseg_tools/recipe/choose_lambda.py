"""The shipped ensemble weight λ, chosen on the val split (never the test split): OVSeg's
`p = p_gen^(1 − λ) · p_clip^λ` over the generator's queries, as segment() computes it in semantic
mode (reference/pipeline.py's `ensemble`), for the mask-adapted CLIP and the recipe's generator;
the λ of the best val mIoU over a grid. OVSeg's own 0.7 was chosen for COCO-trained generators on
ADE20K; this world's generator knows 9 classes, so the best weight may differ.

  ../.venv/bin/python -m ovseg_tools.recipe.choose_lambda --out ../build/recipe   (from tools/, after adapt)

Writes OUT/lambda.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cli import run
from ..clip_reference import class_embeddings, geometry_from_state_dict, load_clip
from ..reference.mask_crop import mask_crops
from ..reference.pipeline import clip_probabilities, ensemble, generator_probabilities, soft_masks
from .bpe import load_tokenizer
from .mine import CROP_THRESHOLD, load_generator
from .train_clip import WORLD_TEMPLATES
from .world import CLASSES, IGNORE
from .world_data import WorldSplit, load_or_render

GRID = [0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def miou(confusion: np.ndarray) -> float:
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


@torch.no_grad()
def sweep(out: Path, state: str, data: WorldSplit, processing: tuple[int, int]) -> dict[float, float]:
    """val mIoU for each λ of GRID (λ = 0: CLIP alone over the valid queries, as segment())."""
    sd = torch.load(out / state, map_location="cpu")
    g = geometry_from_state_dict(sd, 4, 4)
    model = load_clip(sd, g).eval()
    generator, no_object = load_generator(out / "generator.pt")
    matrix = torch.cat([class_embeddings(model, load_tokenizer(out / "world_vocab.txt.gz"), CLASSES, WORLD_TEMPLATES),
                        F.normalize(no_object, dim=-1)[None]])
    n = len(CLASSES)
    confusion = {lam: np.zeros((n, n), np.int64) for lam in GRID}
    for i in range(len(data)):
        image, truth = data.images[i], data.labels[i].astype(np.int64)
        soft, embeddings, _, resized = soft_masks(image, generator, processing=processing)
        boxes, crops, binaries = mask_crops(resized, soft.numpy(), CROP_THRESHOLD, size=g.image_size)
        valid = torch.tensor([b is not None for b in boxes])
        p_gen = generator_probabilities(embeddings, matrix)
        clip_valid = clip_probabilities(model, crops, binaries, matrix) if valid.any() else torch.zeros(0, n)
        keep = truth != IGNORE
        for lam in GRID:  # one crop pass scores every λ
            p, used = ensemble(p_gen, clip_valid, valid, lam)
            scores = torch.einsum("qc,qhw->chw", p, soft[used])
            if scores.shape[1:] != truth.shape:
                scores = F.interpolate(scores[None], size=truth.shape, mode="bilinear", align_corners=False)[0]
            labels = scores.argmax(0).numpy()
            confusion[lam] += np.bincount(truth[keep] * n + labels[keep], minlength=n * n).reshape(n, n)
    return {lam: miou(c) for lam, c in confusion.items()}


def choose(out: Path, state: str, data: WorldSplit, processing: tuple[int, int]) -> dict:
    scores = sweep(out, state, data, processing)
    best = max(scores, key=lambda lam: (round(scores[lam], 4), lam))  # a near-tie goes to more CLIP
    result = {"state": state, "valScenes": len(data), "grid": {str(k): round(v, 4) for k, v in scores.items()},
              "lambda": best}
    (out / "lambda.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    from .stages import PROCESSING, SHIPPED_STATE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the recipe folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=256, help="val scenes")
    args = ap.parse_args()
    choose(args.out, SHIPPED_STATE, load_or_render(args.out / "world", args.seed, "val", args.scenes), PROCESSING)


if __name__ == "__main__":
    run(main)
