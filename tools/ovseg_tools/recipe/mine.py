"""Stage 3 of the recipe: mine region/noun pairs as OVSeg does (docs/ovseg.md, section 7). For each training scene: the noun phrases of its captions; the stage-2 generator's
proposals, cropped and masked exactly as the runtime crops them; a CLIP (the stage-1 one, or in the
recipe's later rounds one fine-tuned on the previous round's pairs: `--clip`) pairs each noun
phrase with a masked crop by a matching rule (`match_phrases`: OVSeg's best crop per phrase, or the
recipe's CSLS with mutual best matches, docs/recipe.md stage 3). No labels are used; the labels
only measure the result (mining precision: the share of pairs whose head noun is the region's true
class).

  ../.venv/bin/python -m ovseg_tools.recipe.mine --out ../build/recipe [--mine 4000] [--rule best-crop]
      [--clip clip_ft_r1.pt] [--report R.json]   (from tools/, after train_generator)

Writes OUT/mined.npz (crops: normalized pixels [N, 3, S, S] float16, masks [N, S, S] uint8;
pairs: crop index per pair) and OUT/mined.json (phrases per pair, the true class of each crop, the
pairing CLIP, precision).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cli import run
from ..clip_reference import encode_texts, geometry_from_state_dict, load_clip
from ..export.mask_generator import GENERATORS
from ..reference.mask_crop import mask_crops
from ..reference.pipeline import propose
from .bpe import load_tokenizer
from .world import CLASSES, IGNORE, noun_phrases
from .world_data import WorldSplit, load_or_render

CROP_THRESHOLD = 0.4  # segment()'s default mask threshold: mining crops as inference will
MIN_PIXELS = 16  # proposals smaller than this are not candidates
PHRASE_TEMPLATE = "a {}."


def head_noun(phrase: str) -> str:
    return phrase.split()[-1]


def region_class(labels: np.ndarray, mask: np.ndarray) -> str | None:
    """The class most of the region's pixels have (None when most are a distractor)."""
    values = np.bincount(labels[mask], minlength=256)
    best = int(values.argmax())
    return None if best == IGNORE else CLASSES[best]


def match_phrases(crop_features: torch.Tensor, phrase_features: torch.Tensor, heads: list[str] | None = None,
                  rule: str = "best-crop") -> list[int | None]:
    """Per phrase, the crop it matches best (cosine similarity of unit rows). "mutual" only lets
    a phrase take a crop whose own best phrase has the same head noun (None when there is none).
    "csls" scores 2 cos - (the crop's mean cos to the scene's phrases) - (the phrase's mean cos to
    the scene's crops), so a crop close to every phrase, or a phrase close to every crop, stops
    winning by default (cross-domain similarity local scaling, Conneau et al. 2018)."""
    if rule not in MATCH_RULES:
        raise ValueError(f"unknown matching rule {rule!r}; one of {', '.join(MATCH_RULES)}")
    score = phrase_features @ crop_features.T
    if rule.startswith("csls"):
        score = 2 * score - score.mean(dim=0, keepdim=True) - score.mean(dim=1, keepdim=True)
    if not rule.endswith("mutual"):
        return score.argmax(dim=1).tolist()
    if heads is None:
        raise ValueError("the mutual rules need each phrase's head noun")
    crop_head = [heads[k] for k in score.argmax(dim=0).tolist()]
    best: list[int | None] = []
    for p, head in enumerate(heads):
        allowed = torch.tensor([h == head for h in crop_head])
        best.append(int(score[p].masked_fill(~allowed, -torch.inf).argmax()) if allowed.any() else None)
    return best


MATCH_RULES = ("best-crop", "mutual", "csls", "csls-mutual")
RECIPE_RULE = "csls-mutual"  # the recipe's; "best-crop" is the paper's


def load_generator(path: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu")
    generator = GENERATORS[ckpt.get("arch", "tiny")](ckpt["no_object"].shape[0], ckpt["queries"], ckpt["width"])
    generator.load_state_dict(ckpt["generator"])
    return generator.eval(), ckpt["no_object"]


@torch.no_grad()
def mine(data: WorldSplit, clip_model, tok, generator, *, image_size: int, rule: str = RECIPE_RULE,
         log_every: int = 500) -> dict:
    crops, masks, crop_class, pair_crop, pair_phrase = [], [], [], [], []
    start = time.time()
    for i in range(len(data)):
        image = data.images[i]
        soft, _ = propose(generator, image)
        soft = soft.numpy()
        candidates = soft[(soft > CROP_THRESHOLD).sum(axis=(1, 2)) >= MIN_PIXELS]
        phrases = sorted({p for caption in data.captions[i] for p in noun_phrases(caption)})
        if len(candidates) == 0 or not phrases:
            continue
        _, pixels, binaries = mask_crops(image, candidates, CROP_THRESHOLD, image_size)
        features = F.normalize(clip_model.encode_image(torch.from_numpy(pixels)), dim=-1)
        text = F.normalize(encode_texts(clip_model, tok, [PHRASE_TEMPLATE.format(p) for p in phrases]), dim=-1)
        matched = match_phrases(features, text, [head_noun(p) for p in phrases], rule)
        phrases = [p for p, k in zip(phrases, matched) if k is not None]
        best = [k for k in matched if k is not None]
        used = sorted(set(best))
        index = {k: len(crops) + n for n, k in enumerate(used)}
        for k in used:
            crops.append(pixels[k].astype(np.float16))
            masks.append(binaries[k])
            crop_class.append(region_class(data.labels[i], candidates[k] > CROP_THRESHOLD))
        pair_crop.extend(index[k] for k in best)
        pair_phrase.extend(phrases)
        if (i + 1) % log_every == 0:
            print(json.dumps({"scenes": i + 1, "pairs": len(pair_phrase), "seconds": round(time.time() - start, 1)}),
                  flush=True)
    correct = [head_noun(p) == crop_class[c] for p, c in zip(pair_phrase, pair_crop)]
    return {"crops": np.stack(crops), "masks": np.stack(masks), "crop_class": crop_class,
            "pair_crop": np.array(pair_crop, np.int64), "pair_phrase": pair_phrase,
            "precision": float(np.mean(correct)), "rule": rule, "seconds": round(time.time() - start, 1)}


def report(result: dict) -> dict:
    """Precision per head noun, and per region class the head nouns its crops were paired with."""
    per_noun: dict[str, list[bool]] = {}
    paired: dict[str, dict[str, int]] = {}
    for p, c in zip(result["pair_phrase"], result["pair_crop"]):
        noun, truth = head_noun(p), result["crop_class"][c] or "distractor"
        per_noun.setdefault(noun, []).append(noun == truth)
        paired.setdefault(truth, {}).setdefault(noun, 0)
        paired[truth][noun] += 1
    return {"pairs": len(result["pair_phrase"]), "crops": len(result["crops"]), "precision": result["precision"],
            "rule": result["rule"],
            "precisionPerNoun": {k: {"pairs": len(v), "precision": float(np.mean(v))} for k, v in sorted(per_noun.items())},
            "pairedWith": {k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in sorted(paired.items())},
            "seconds": result["seconds"]}


def save(result: dict, out: Path, stem: str = "mined", clip: str = "clip.pt") -> None:
    """OUT/<stem>.{npz,json}; `clip` names the state in OUT that did the pairing."""
    np.savez(out / f"{stem}.npz", crops=result["crops"], masks=result["masks"], pair_crop=result["pair_crop"])
    (out / f"{stem}.json").write_text(json.dumps({**report(result), "clip": clip, "pair_phrase": result["pair_phrase"],
                                                "crop_class": result["crop_class"]}, indent=1))


def load_mined(out: Path, stem: str = "mined") -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(crops float32 [N, 3, S, S], masks [N, S, S], crop index per pair, phrase per pair)."""
    arrays = np.load(out / f"{stem}.npz")
    meta = json.loads((out / f"{stem}.json").read_text())
    return arrays["crops"].astype(np.float32), arrays["masks"], arrays["pair_crop"], meta["pair_phrase"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the recipe folder (clip.pt, generator.pt, vocabulary)")
    ap.add_argument("--scenes", type=int, default=8000, help="training scenes (as stage 1 rendered them)")
    ap.add_argument("--mine", type=int, default=4000, help="scenes to mine (the first N)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rule", choices=MATCH_RULES, default=RECIPE_RULE, help="how a phrase picks its crop")
    ap.add_argument("--clip", default="clip.pt", help="the CLIP in OUT that pairs phrases with crops")
    ap.add_argument("--report", type=Path, help="write only the report (JSON) here, not OUT/mined.*")
    args = ap.parse_args()
    sd = torch.load(args.out / args.clip, map_location="cpu")
    g = geometry_from_state_dict(sd, 4, 4)
    clip_model = load_clip(sd, g).eval()
    generator, _ = load_generator(args.out / "generator.pt")
    data = load_or_render(args.out / "world", args.seed, "train", args.scenes).head(args.mine)
    result = mine(data, clip_model, load_tokenizer(args.out / "world_vocab.txt.gz"), generator, image_size=g.image_size,
                  rule=args.rule)
    if args.report:
        args.report.write_text(json.dumps(report(result), indent=1))
    else:
        save(result, args.out, clip=args.clip)
    print(json.dumps({"pairs": len(result["pair_phrase"]), "crops": len(result["crops"]),
                      "precision": result["precision"], "seconds": result["seconds"]}))


if __name__ == "__main__":
    run(main)
