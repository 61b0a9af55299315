"""PyTorch reference of OVSeg's inference with caller-supplied masks (../shared/docs/ovseg-reference.md,
section 1 steps 1, 4-8, CLIP-only classification), and parity fixtures for `Model::segment`
(crates/ovseg-core/src/segment.rs).

Run: .venv/bin/python -m ovseg_tools.pipeline_reference OUT_DIR [--tiny-only]  (from tools/)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .clip_reference import TINY, VIT_B_16, Geometry, load_clip, random_state_dict
from .export import OPENAI_MERGES, TEMPLATES, default_vocab, export_model
from .image_resize_reference import resize, shortest_edge_size
from .mask_crop_reference import edge_case_masks, mask_crops
from .tokenizer_corpus import load_reference_tokenizer

CLASSES = ["grass", "red car", "building, edifice", "sky", "water"]


def class_matrix(model, tok, classes, templates, no_object) -> torch.Tensor:
    """Template ensembling (normalize, mean, normalize) and the normalized no-object row last."""
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    rows = []
    for name in classes:
        ids = torch.zeros(len(templates), 77, dtype=torch.int64)
        for i, t in enumerate(templates):
            row = [sot] + tok.encode(t.format(name)) + [eot]
            ids[i, : len(row)] = torch.tensor(row)
        feats = F.normalize(model.encode_text(ids), dim=-1)
        rows.append(F.normalize(feats.mean(dim=0), dim=-1))
    return torch.cat([torch.stack(rows), F.normalize(no_object, dim=-1)])


def segment_reference(model, g: Geometry, tok, no_object, image, soft_masks, classes, threshold=0.4):
    h, w = image.shape[:2]
    rh, rw = shortest_edge_size(h, w)
    resized = resize(image, rh, rw)
    soft = F.interpolate(torch.from_numpy(soft_masks)[None], size=(rh, rw), mode="bilinear", align_corners=False)[0]
    boxes, crops, binaries = mask_crops(resized, soft.numpy(), threshold, size=g.image_size)
    matrix = class_matrix(model, tok, classes, TEMPLATES, no_object)
    valid = torch.tensor([b is not None for b in boxes])
    if valid.any():
        feats = F.normalize(model.encode_image(torch.from_numpy(crops), torch.from_numpy(binaries)[:, None].float()), dim=-1)
        probs = F.softmax((100 * feats @ matrix.T)[:, :-1], dim=-1)  # no-object dropped first
        semseg = torch.einsum("qc,qhw->chw", probs, soft[valid])
        scores = F.interpolate(semseg[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    else:
        probs = torch.zeros(0, len(classes))
        scores = torch.zeros(len(classes), h, w)
    return probs.numpy(), scores.numpy(), scores.argmax(0).numpy(), valid.numpy(), (rh, rw)


def build(g: Geometry, name: str, out: Path, seed: int, cases: list[str]) -> list[dict]:
    sd = random_state_dict(g, seed, prompt_depth=3)
    no_object = torch.randn(1, g.embed_dim, generator=torch.Generator().manual_seed(seed))
    model_dir = out / name / "model"
    export_model(sd, g, model_dir, name=f"pipeline-{name}", vocab=default_vocab(), merges=OPENAI_MERGES,
                 no_object=no_object, source={"random": name, "seed": seed})
    model = load_clip(sd, g)
    tok, _ = load_reference_tokenizer()
    rng = np.random.default_rng(seed)
    written = []
    for case in cases:
        h, w = {"small-image": (40, 60), "wide": (90, 400)}.get(case, (150, 200))
        yy, xx = np.mgrid[:h, :w]
        image = np.clip((120 + 90 * np.sin(yy / 9 + xx / 13))[..., None] * np.array([1.0, 0.8, 0.5])
                        + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        names, masks = edge_case_masks(h, w, rng)
        # A mask exactly at the threshold becomes, after the bilinear resize, a tie that the last
        # bit decides (PyTorch's kernel and ours differ by an ulp there). The strict `>` itself is
        # checked without interpolation by the mask-crop parity fixtures.
        masks = masks[[i for i, n in enumerate(names) if n != "exactly-threshold"]]
        if case == "one-valid":
            masks = np.zeros_like(masks)
            masks[3, h // 3: h // 2, w // 4: w // 2] = 0.8
        elif case == "none-valid":
            masks = np.zeros_like(masks[:4])
        with torch.no_grad():
            probs, scores, labels, valid, processing = segment_reference(model, g, tok, no_object, image, masks, CLASSES)
        folder = out / name / case
        folder.mkdir(parents=True, exist_ok=True)
        image.tofile(folder / "image_u8.bin")
        masks.astype("<f4").tofile(folder / "masks_f32.bin")
        probs.astype("<f4").tofile(folder / "expected_probabilities.bin")
        scores.astype("<f4").tofile(folder / "expected_scores.bin")
        labels.astype("<u2").tofile(folder / "expected_labels.bin")
        written.append({"name": f"{name}/{case}", "model": str(model_dir.resolve()), "dir": str(folder.resolve()),
                        "size": [h, w], "masks": int(masks.shape[0]), "classes": CLASSES,
                        "valid": valid.tolist(), "processingSize": list(processing)})
    return written


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--tiny-only", action="store_true", help="skip the ViT-B/16 geometry (about 600 MB)")
    args = ap.parse_args()
    cases = build(TINY, "tiny", args.out, seed=51, cases=["mixed", "one-valid", "none-valid", "small-image", "wide"])
    if not args.tiny_only:
        cases += build(VIT_B_16, "vit-b-16", args.out, seed=52, cases=["mixed"])
    (args.out / "index.json").write_text(json.dumps({"cases": cases}, indent=1))
    print(f"wrote {len(cases)} pipeline cases to {args.out}")


if __name__ == "__main__":
    main()
