"""PyTorch reference of OVSeg's classification, ensemble and aggregation
(docs/ovseg.md, section 1 steps 3, 6, 7, 8 and section 5), and parity fixtures
for the Rust side (crates/ovseg-core/src/classify.rs, aggregate.rs).

Run: ../.venv/bin/python -m ovseg_tools.reference.aggregate OUT_DIR  (from tools/)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cli import run


def reference(image_features, query_embeddings, class_matrix, valid, soft_masks, lam, out_size):
    """image_features: [V, E] unit rows (valid crops, in query order); query_embeddings: [Q, E];
    class_matrix: [C + 1, E] unit rows, no-object last; valid: [Q] bool; soft_masks: [Q, h, w];
    lam: ensemble weight; out_size: (H, W). Returns (probabilities [K, C], kept [K], scores [C, H, W], labels [H, W])."""
    text = torch.from_numpy(class_matrix)
    valid_t = torch.from_numpy(valid)
    mask_pred = torch.from_numpy(soft_masks)
    queries = F.normalize(torch.from_numpy(query_embeddings), dim=-1)
    mask_cls = F.softmax(100 * queries @ text.T, dim=-1)[..., :-1]  # generator: softmax over C+1, drop no-object
    clip_cls = F.softmax((100 * torch.from_numpy(image_features) @ text.T)[:, :-1], dim=-1)  # drop first, then softmax
    kept = torch.arange(len(valid))
    if lam > 0:
        map_back = mask_cls.new_ones(mask_cls.shape)
        map_back[valid_t] = clip_cls  # invalid queries: p_clip = 1
        mask_cls = torch.pow(mask_cls, 1 - lam) * torch.pow(map_back, lam)
    elif valid_t.any():
        mask_cls, mask_pred, kept = clip_cls, mask_pred[valid_t], kept[valid_t]
    # else: no valid region at all -> the generator's prediction (section 5: the intended behaviour)
    semseg = torch.einsum("qc,qhw->chw", mask_cls, mask_pred)
    scores = F.interpolate(semseg[None], size=out_size, mode="bilinear", align_corners=False)[0]
    return mask_cls.numpy(), kept.numpy(), scores.numpy(), scores.argmax(0).numpy()


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(31)
    q, c, e, h, w = 20, 7, 16, 60, 80
    cases = []
    valid_patterns = {
        "mixed": rng.random(q) > 0.3,
        "one-valid": np.eye(q, dtype=bool)[5],
        "none-valid": np.zeros(q, bool),
        "all-valid": np.ones(q, bool),
    }
    for valid_name, valid in valid_patterns.items():
        for lam in (0.0, 0.3, 0.7, 1.0):
            for out_size in ((90, 120), (45, 50)):
                name = f"{valid_name}-lambda{lam}-{out_size[0]}x{out_size[1]}"
                folder = args.out / name
                folder.mkdir(parents=True, exist_ok=True)
                class_matrix = unit_rows(rng.standard_normal((c + 1, e)))
                image_features = unit_rows(class_matrix[rng.integers(0, c, int(valid.sum()))] * 3
                                           + rng.standard_normal((int(valid.sum()), e)))
                query_embeddings = (rng.standard_normal((q, e)) * 2).astype(np.float32)
                soft_masks = (1 / (1 + np.exp(-rng.standard_normal((q, h, w)) * 3))).astype(np.float32)
                probs, kept, scores, labels = reference(image_features, query_embeddings, class_matrix, valid,
                                                        soft_masks, lam, out_size)
                for file, array in {"image_features.bin": image_features, "query_embeddings.bin": query_embeddings,
                                    "class_matrix.bin": class_matrix, "soft_masks.bin": soft_masks,
                                    "expected_probabilities.bin": probs.astype(np.float32),
                                    "expected_scores.bin": scores.astype(np.float32)}.items():
                    array.astype("<f4").tofile(folder / file)
                labels.astype("<u2").tofile(folder / "expected_labels.bin")
                cases.append({"name": name, "dir": str(folder.resolve()), "queries": q, "classes": c, "dim": e,
                              "maskSize": [h, w], "outSize": list(out_size), "lambda": lam,
                              "valid": valid.tolist(), "kept": kept.tolist()})
    (args.out / "index.json").write_text(json.dumps({"cases": cases}, indent=1))
    print(f"wrote {len(cases)} aggregation cases to {args.out}")


if __name__ == "__main__":
    run(main)
