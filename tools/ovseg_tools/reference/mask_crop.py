"""PyTorch reference of OVSeg's mask cropping (docs/ovseg.md, section 1 step 4),
and the parity / benchmark fixtures for the Rust implementation (crates/ovseg-core/src/mask_crop.rs).

Run: ../.venv/bin/python -m ovseg_tools.reference.mask_crop OUT_DIR  (from tools/)
writes OUT_DIR/index.json and per case image_u8.bin, masks_f32.bin, expected_pixels.bin, expected_masks.bin.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cli import run
from ..constants import CLIP_MEAN, CLIP_STD


def mask_crops(image: np.ndarray, masks: np.ndarray, threshold: float, size: int = 224):
    """image: [H, W, 3] uint8; masks: [Q, H, W] float32 soft masks.
    Returns (boxes per query or None, pixels [V, 3, size, size], binary masks [V, size, size])."""
    img = torch.from_numpy(image).permute(2, 0, 1).float()
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(CLIP_STD).view(3, 1, 1) * 255
    boxes, pixels, binaries = [], [], []
    for soft in torch.from_numpy(masks):
        binary = soft > threshold  # strict
        if not binary.any():
            boxes.append(None)
            continue
        ys, xs = torch.where(binary)
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        boxes.append([x0, y0, x1, y1])
        m = binary[y0:y1, x0:x1].float()
        crop = img[:, y0:y1, x0:x1]
        blended = crop * m + mean * (1 - m)  # fill = CLIP mean x 255
        normalized = (blended - mean) / std  # the background becomes exactly 0
        stretched = F.interpolate(normalized[None], size=(size, size), mode="bicubic", align_corners=False)[0]
        pixels.append(stretched)
        binaries.append(F.interpolate(m[None, None], size=(size, size), mode="nearest")[0, 0].to(torch.uint8))
    if not pixels:
        return boxes, np.zeros((0, 3, size, size), np.float32), np.zeros((0, size, size), np.uint8)
    return boxes, torch.stack(pixels).numpy(), torch.stack(binaries).numpy()


def blob_masks(h: int, w: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Soft elliptic blobs of varied size and place (a sigmoid of the distance), like generator masks."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    out = np.empty((n, h, w), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(3, h / 2), rng.uniform(3, w / 2)
        d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        out[i] = 1 / (1 + np.exp(np.minimum((d - 1) * 8, 60)))
    return out


def edge_case_masks(h: int, w: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    cases: dict[str, np.ndarray] = {}
    m = lambda: np.zeros((h, w), np.float32)  # noqa: E731
    cases["full"] = np.ones((h, w), np.float32)
    cases["empty"] = m()
    at_threshold = m()
    at_threshold[h // 3: h // 2, w // 3: w // 2] = 0.4  # == threshold: not foreground (strict >)
    cases["exactly-threshold"] = at_threshold
    one = m()
    one[h // 2, w // 3] = 0.9
    cases["one-pixel"] = one
    corner = m()
    corner[0, 0] = 1
    corner[:3, :5] = 1
    cases["top-left-corner"] = corner
    border = m()
    border[:, w - 1] = 1
    cases["right-border-column"] = border
    bottom = m()
    bottom[h - 2:, w // 4: w - 3] = 1
    cases["bottom-strip"] = bottom
    line = m()
    line[h // 2, 2: w - 2] = 1
    cases["elongated-horizontal"] = line
    two = m()
    two[h // 5: h // 5 + 2, w // 7] = 1
    two[h - 4, w - 9] = 1
    cases["two-far-pixels"] = two
    cases["random-soft"] = rng.uniform(0, 1, (h, w)).astype(np.float32) * (rng.uniform(0, 1, (h, w)) > 0.97)
    names = list(cases) + ["blob"] * 4
    masks = np.concatenate([np.stack(list(cases.values())), blob_masks(h, w, 4, rng)])
    return names, masks


def write_case(out: Path, name: str, image: np.ndarray, masks: np.ndarray, names: list[str], threshold: float) -> dict:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    boxes, pixels, binaries = mask_crops(image, masks, threshold)
    image.tofile(folder / "image_u8.bin")
    masks.astype("<f4").tofile(folder / "masks_f32.bin")
    pixels.astype("<f4").tofile(folder / "expected_pixels.bin")
    binaries.tofile(folder / "expected_masks.bin")
    return {"name": name, "dir": str(folder.resolve()), "height": image.shape[0], "width": image.shape[1],
            "queries": masks.shape[0], "maskNames": names, "threshold": threshold, "size": 224, "boxes": boxes,
            "mean": CLIP_MEAN, "std": CLIP_STD}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(21)
    cases = []
    for name, (h, w) in {"640x480": (480, 640), "small-130x90": (90, 130), "tall-40x300": (300, 40)}.items():
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        names, masks = edge_case_masks(h, w, rng)
        cases.append(write_case(args.out, name, image, masks, names, threshold=0.4))
    image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    cases.append(write_case(args.out, "bench-100-blobs", image, blob_masks(480, 640, 100, rng), ["blob"] * 100, 0.4))
    (args.out / "index.json").write_text(json.dumps({"cases": cases}, indent=1))
    print(f"wrote {len(cases)} mask-crop cases to {args.out}")


if __name__ == "__main__":
    run(main)
