"""Reference of OVSeg's image pre-processing resize: detectron2's ResizeShortestEdge size rule and
PIL's `Image.resize(..., Image.BILINEAR)` (which antialiases when downscaling), and parity fixtures
for crates/ovseg-core/src/image_resize.rs (byte-identical output required).

Run: ../.venv/bin/python -m ovseg_tools.reference.image_resize OUT_DIR  (from tools/)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..cli import run


def shortest_edge_size(h: int, w: int, short: int = 640, max_size: int = 2560) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge.get_output_shape, as OVSeg configures it."""
    scale = short * 1.0 / min(h, w)
    if h < w:
        newh, neww = short, scale * w
    else:
        newh, neww = scale * h, short
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def resize(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.BILINEAR))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(41)
    shapes = [(480, 640), (333, 500), (100, 150), (1200, 900), (37, 1000), (2000, 30), (641, 640), (1, 5), (7, 1)]
    cases = []
    for i, (h, w) in enumerate(shapes):
        # Smooth content plus noise: both the averaging and the rounding paths matter.
        yy, xx = np.mgrid[:h, :w]
        base = (127 + 100 * np.sin(yy / 7.0 + xx / 11.0))[..., None] * np.array([1.0, 0.7, 0.4])
        image = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        targets = {"shortest-edge": shortest_edge_size(h, w), "half": (max(1, h // 2), max(1, w // 2)),
                   "odd": (max(1, h * 3 // 7), w + 13), "same-height": (h, max(1, w // 3))}
        for kind, (oh, ow) in targets.items():
            name = f"{i}-{h}x{w}-{kind}-{oh}x{ow}"
            image.tofile(args.out / f"{name}.in.bin")
            resize(image, oh, ow).tofile(args.out / f"{name}.out.bin")
            cases.append({"name": name, "size": [h, w], "outSize": [oh, ow], "kind": kind})
    (args.out / "index.json").write_text(json.dumps({"cases": cases}, indent=1))
    print(f"wrote {len(cases)} resize cases to {args.out}")


if __name__ == "__main__":
    run(main)
