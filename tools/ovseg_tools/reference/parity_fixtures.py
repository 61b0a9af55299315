"""Parity fixtures: random-weight model directories, inputs, and the PyTorch reference's features.

For each geometry (tiny, and ViT-B/16 and ViT-L/14 unless --tiny-only) writes under OUT/<geometry>/:
  model/                 the exported model directory (mask prompts of depth 3 in the manifest)
  prompts_depth1.npy     another prompt set, [1, P, W]
  prompts_shared3.npy    a shared-row prompt set, [3, 1, W]
  pixels_f32.bin         [B, 3, S, S] normalized float32
  pixels_u8.bin          [B, S, S, 3] RGB bytes
  masks_u8.bin           [B, S, S] binary masks of varied shapes
  expected_*.bin         raw (unnormalized) float32 features from ovseg_tools/clip_reference.py
and OUT/index.json describing them. The jest test __test__/parity.test.ts runs the same inputs
through ovseg and compares (max abs difference <= 1e-4).

Run: ../.venv/bin/python -m ovseg_tools.reference.parity_fixtures ../build/parity  (from tools/)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ..cli import run
from ..clip_reference import TINY, VIT_B_16, VIT_L_14, Geometry, load_clip, random_state_dict
from ..constants import CLIP_MEAN, CLIP_STD, OPENAI_MERGES
from ..export.model_dir import default_vocab, export_model
from .tokenizer_corpus import load_reference_tokenizer

TEXTS = [
    "a photo of a cat.",
    "There is a large building, edifice in the scene.",
    "",
    "café au lait",
    "a red car next to a skyscraper, under a cloudy sky at dusk",
    "１２３ ﬁsh &amp; chips",
]
MASK_KINDS = ["full", "empty", "box", "single-pixel", "left-border", "bottom-right-corner", "ring", "random"]


def make_masks(g: Geometry, rng: np.random.Generator) -> np.ndarray:
    s = g.image_size
    masks = np.zeros((len(MASK_KINDS), s, s), dtype=np.uint8)
    yy, xx = np.mgrid[:s, :s]
    for i, kind in enumerate(MASK_KINDS):
        m = masks[i]
        if kind == "full":
            m[:] = 1
        elif kind == "box":
            m[s // 5: s // 2, s // 3: s - 5] = 1
        elif kind == "single-pixel":
            m[s // 2 + 1, s // 3 + 2] = 1
        elif kind == "left-border":
            m[:, :2] = 1
        elif kind == "bottom-right-corner":
            m[-3:, -3:] = 1
        elif kind == "ring":
            r = np.hypot(yy - s / 2, xx - s / 2)
            m[(r > s / 5) & (r < s / 3)] = 1
        elif kind == "random":
            m[rng.random((s, s)) > 0.85] = 1
    return masks


def write(path: Path, array: np.ndarray) -> str:
    array.tofile(path)
    return path.name


def build(g: Geometry, name: str, out: Path, seed: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sd = random_state_dict(g, seed, prompt_depth=3)
    export_model(sd, g, out / "model", name=f"parity-{name}", vocab=default_vocab(), merges=OPENAI_MERGES,
                 no_object=torch.randn(1, g.embed_dim, generator=torch.Generator().manual_seed(seed)),
                 source={"random": name, "seed": seed})
    p = g.grid ** 2
    prompt_sets = {
        "depth3": sd["visual.mask_embedding"],
        "depth1": torch.from_numpy(rng.standard_normal((1, p, g.vision_width)).astype(np.float32)),
        "shared3": torch.from_numpy(rng.standard_normal((3, 1, g.vision_width)).astype(np.float32)),
    }
    np.save(out / "prompts_depth1.npy", prompt_sets["depth1"].numpy())
    np.save(out / "prompts_shared3.npy", prompt_sets["shared3"].numpy())

    masks = make_masks(g, rng)
    b, s = masks.shape[0], g.image_size
    pixels_u8 = rng.integers(0, 256, size=(b, s, s, 3), dtype=np.uint8)
    mean = np.array(CLIP_MEAN, dtype=np.float32) * 255
    std = np.array(CLIP_STD, dtype=np.float32) * 255
    pixels_from_u8 = ((pixels_u8.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2).copy()
    pixels_f32 = rng.standard_normal((b, 3, s, s)).astype(np.float32)

    tok, _ = load_reference_tokenizer()
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    ids = np.zeros((len(TEXTS), g.context_length), dtype=np.int64)
    for i, text in enumerate(TEXTS):
        row = [sot] + tok.encode(text) + [eot]
        ids[i, : len(row)] = row

    model = load_clip(sd, g)
    expected = {}
    mask_t = torch.from_numpy(masks).float().unsqueeze(1)
    with torch.no_grad():
        expected["text"] = model.encode_text(torch.from_numpy(ids)).numpy()
        expected["image_plain_f32"] = model.encode_image(torch.from_numpy(pixels_f32)).numpy()
        for set_name, prompts in prompt_sets.items():
            model.visual.mask_embedding = prompts.float()
            expected[f"image_{set_name}_f32"] = model.encode_image(torch.from_numpy(pixels_f32), mask_t).numpy()
            expected[f"image_{set_name}_u8"] = model.encode_image(torch.from_numpy(pixels_from_u8), mask_t).numpy()
    return {
        "name": name,
        "dir": str(out.resolve()),
        "geometry": g.as_dict(),
        "batch": b,
        "maskKinds": MASK_KINDS,
        "texts": TEXTS,
        "inputs": {
            "pixelsF32": write(out / "pixels_f32.bin", pixels_f32),
            "pixelsU8": write(out / "pixels_u8.bin", pixels_u8),
            "masks": write(out / "masks_u8.bin", masks),
        },
        "promptFiles": {"depth1": "prompts_depth1.npy", "shared3": "prompts_shared3.npy"},
        "expected": {k: write(out / f"expected_{k}.bin", v.astype("<f4")) for k, v in expected.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--tiny-only", action="store_true", help="skip the ViT-B/16 and ViT-L/14 geometries (about 2.3 GB)")
    args = ap.parse_args()
    cases = [build(TINY, "tiny", args.out / "tiny", seed=11)]
    if not args.tiny_only:
        cases.append(build(VIT_B_16, "vit-b-16", args.out / "vit-b-16", seed=12))
        cases.append(build(VIT_L_14, "vit-l-14", args.out / "vit-l-14", seed=13))
    (args.out / "index.json").write_text(json.dumps({"cases": cases}, indent=2))
    print(f"wrote {len(cases)} parity cases to {args.out}")


if __name__ == "__main__":
    run(main)
