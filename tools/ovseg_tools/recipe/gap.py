"""The domain gap OVSeg's paper is about, measured on the val splits for each CLIP of the recipe:
zero-shot shape accuracy on object-centric photos (the kind of picture stage 1 learned names from)
against the same on masked crops of the shapes in scenes (what segmentation feeds CLIP: the
region's box, background filled with CLIP's mean colour, stretched; cropped as the runtime does),
plus the whole-scene presence AUC of shapes and stuff (train_clip.presence_auc) and the mean cosine
between two shape names' text embeddings (near 1: the text side cannot tell shapes apart).

  ../.venv/bin/python -m ovseg_tools.recipe.gap --out ../build/recipe   (from tools/, after the adapt stages)

Writes OUT/gap.json.
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
from .bpe import load_tokenizer
from .train_clip import WORLD_TEMPLATES, object_shape_accuracy, retrieval_accuracy
from .world import SHAPES
from .world_data import WorldSplit, load_or_render

# The CLIPs compared (state dicts in the recipe folder), as recipe-results.md names them.
MODELS = {"base": "clip.pt", "control": "clip_control.pt", "fine-tuned": "clip_ft.pt",
          "prompt-tuned": "clip_pt3.pt", "fine-tuned-prompt-tuned": "clip_ft_pt3.pt"}


@torch.no_grad()
def masked_crop_shape_accuracy(model, tok, data: WorldSplit) -> float:
    """Per shape instance of each scene, its masked crop classified among the 8 shape names (mask
    prompts used when the model has them); the share right."""
    shapes = class_embeddings(model, tok, SHAPES, WORLD_TEMPLATES)
    size = model.geometry.image_size
    right = []
    for i in range(len(data)):
        ks = [k for k, inst in enumerate(data.instances[i]) if inst["name"] in SHAPES]
        masks = np.stack([data.instance_mask(i, k) for k in ks]).astype(np.float32) if ks else None
        if masks is None or not masks.any((1, 2)).all():
            continue
        _, pixels, binaries = mask_crops(data.images[i], masks, 0.5, size)
        prompt_mask = torch.from_numpy(binaries).float()[:, None] if model.visual.mask_embedding is not None else None
        features = F.normalize(model.encode_image(torch.from_numpy(pixels), prompt_mask), dim=-1)
        predicted = (features @ shapes.T).argmax(1).tolist()
        right += [p == SHAPES.index(data.instances[i][k]["name"]) for p, k in zip(predicted, ks)]
    return float(np.mean(right))


def measure(out: Path, scenes: WorldSplit, objects: WorldSplit) -> dict:
    tok = load_tokenizer(out / "world_vocab.txt.gz")
    result = {}
    for name, state in MODELS.items():
        if not (out / state).exists():
            continue
        sd = torch.load(out / state, map_location="cpu")
        model = load_clip(sd, geometry_from_state_dict(sd, 4, 4)).eval()
        whole = retrieval_accuracy(model, scenes, tok)
        model.eval()
        names = class_embeddings(model, tok, SHAPES, WORLD_TEMPLATES)
        cosine = (names @ names.T)[~torch.eye(len(SHAPES), dtype=torch.bool)]
        result[name] = {"objectCentric": object_shape_accuracy(model, objects, tok),
                        "maskedCrop": masked_crop_shape_accuracy(model, tok, scenes),
                        "shapeAUC": whole["shapeAUC"], "stuffAUC": whole["stuffAUC"],
                        "shapeNameCosine": float(cosine.mean())}
        print(json.dumps({name: result[name]}), flush=True)
    return result


def write(out: Path, scenes: WorldSplit, objects: WorldSplit) -> None:
    result = {"scenes": len(scenes), "objects": len(objects), "models": measure(out, scenes, objects)}
    (out / "gap.json").write_text(json.dumps(result, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the recipe folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=256, help="val scenes and object-centric val photos")
    args = ap.parse_args()
    write(args.out, load_or_render(args.out / "world", args.seed, "val", args.scenes),
          load_or_render(args.out / "world", args.seed, "objects-val", args.scenes))


if __name__ == "__main__":
    run(main)
