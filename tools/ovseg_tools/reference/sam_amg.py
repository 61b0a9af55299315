"""Automatic mask generation cases for the core's SAM module (crates/ovseg-core/tests/parity_sam.rs),
from the `segment-anything` package's SamAutomaticMaskGenerator: the reference.

A tiny random-weight SAM (ovseg_tools.export.sam, `tiny`) is exported to OUT/model, and a tiny
random-weight MobileSAM (`tiny_vit`: TinyViT encoder, ultralytics' port as its reference) to
OUT/model-tiny-vit. Per image (three sizes and aspect ratios):
- `NAME.rgb`: the image, uint8 [H, W, 3];
- `NAME.input.f32`: SamPredictor's encoder input (resized with PIL, normalized, padded);
- `NAME.embeddings.f32`: the reference's image embeddings; `NAME.crop.embeddings.f32`: those of
  the last crop of layer 1 (`cropBox` in index.json);
- the generator on the exported model's own decoder (`graph` in index.json): its masks
  (`NAME.graph.masks.u8`, [K, H, W]) and records. Random weights give masks that nearly all cover
  the whole image, so these sets are small;
- the generator on synthetic decoder outputs (`synthetic`): every batch's low-resolution logits
  (`NAME.synthetic.lowres.f32`, [points, 3, M, M] in batch order) and IoU predictions
  (`NAME.synthetic.iou.f32`) are discs of three radii around each prompt point, so that the
  filters and the box NMS have varied masks to work on; everything after the decoder (upscaling,
  IoU and stability filters, boxes, NMS) is the reference's own code. Masks and records as above;
- the same with crop layers and small-region removal (`crops`): one layer of 2 x 2 crops (the
  crop-edge filter, the NMS across crops), and discs with small islands beside them and small
  holes inside them, some below `min_mask_region_area` (OpenCV's connected components).
  `NAME.crops.lowres.f32` holds the decoder outputs of every crop in turn;
- the generator on the TinyViT model's graphs (`tinyVitGraph`, `NAME.tiny-vit.graph.masks.u8`).

Run: ../.venv/bin/python -m ovseg_tools.reference.sam_amg OUT_DIR  (from tools/)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ..cli import run
from ..export import sam as sam_export

# Thresholds that keep a non-trivial set with these weights and these synthetic logits (the
# random decoder's logits are small: a smaller stability offset than SAM's 1.0).
GRAPH_OPTIONS = dict(points_per_side=8, points_per_batch=20, pred_iou_thresh=0.01, stability_score_thresh=0.5,
                     stability_score_offset=0.05, box_nms_thresh=0.7, crop_n_layers=1, min_mask_region_area=20)
SYNTHETIC_OPTIONS = dict(points_per_side=8, points_per_batch=24, pred_iou_thresh=0.6, stability_score_thresh=0.5,
                         stability_score_offset=1.0, box_nms_thresh=0.5)
CROP_OPTIONS = dict(SYNTHETIC_OPTIONS, crop_n_layers=1, crop_n_points_downscale_factor=2, crop_nms_thresh=0.7,
                    crop_overlap_ratio=512 / 1500, min_mask_region_area=40)
SIZES = {"landscape": (180, 240), "portrait": (250, 140), "small": (61, 97)}


def image(name: str, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(len(name) * 7 + h)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), ((xx + yy) % 48) * 5], -1).astype(np.int32)
    img[h // 4: 3 * h // 4, w // 5: w // 2] = [200, 30, 30]
    return np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)


def synthetic_outputs(points: torch.Tensor, size: int, mask_size: int, rng: np.random.Generator, blobs: bool = False):
    """Discs of three radii (logit scale 8 at the centre, 0 at the edge) around each point given in
    the resized image's pixels, plus a little noise; IoU predictions drawn in [0.4, 1]. With
    `blobs`, an island beside each disc and a hole inside it, of radii around a low-res pixel."""
    cell = size / mask_size
    centres = points.numpy() / cell - 0.5  # [B, 2] (x, y) in low-res pixels
    cx, cy = centres[:, 0, None, None, None], centres[:, 1, None, None, None]
    ys, xs = np.mgrid[0:mask_size, 0:mask_size]
    dist = np.sqrt((xs[None, None] - cx) ** 2 + (ys[None, None] - cy) ** 2)  # [B, 1, M, M]
    radii = rng.uniform(2.0, 6.0, (len(points), 1, 1, 1)) * np.array([1.0, 2.0, 3.5])[None, :, None, None]
    logits = 8.0 * (radii - dist) / radii + rng.normal(0.0, 0.3, (len(points), 3, mask_size, mask_size))
    if blobs:
        shape = (len(points), 3, 1, 1)
        angle = rng.uniform(0, 2 * np.pi, shape)
        for offset, sign in ((radii + 3.0, 1.0), (radii * 0.4, -1.0)):  # island outside, hole inside
            bx, by = cx + offset * np.cos(angle), cy + offset * np.sin(angle)
            r = rng.uniform(0.5, 2.0, shape)
            d = np.sqrt((xs[None, None] - bx) ** 2 + (ys[None, None] - by) ** 2)
            logits = logits + sign * 16.0 * np.clip(1.0 - d / r, 0.0, None)
            angle = angle + np.pi
    iou = rng.uniform(0.4, 1.0, (len(points), 3))
    return torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(iou, dtype=torch.float32)


def records(anns: list) -> list:
    return [{"box": [int(v) for v in a["bbox"]], "area": int(a["area"]), "predictedIou": float(a["predicted_iou"]), "cropBox": [int(v) for v in a["crop_box"]],
             "stabilityScore": float(a["stability_score"]), "point": [float(v) for v in a["point_coords"][0]]} for a in anns]


def write_masks(path: Path, anns: list, h: int, w: int) -> None:
    masks = np.stack([a["segmentation"] for a in anns]).astype(np.uint8) if anns else np.zeros((0, h, w), np.uint8)
    path.write_bytes(masks.tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    out = ap.parse_args().out
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import generate_crop_boxes

    out.mkdir(parents=True, exist_ok=True)
    sd = sam_export.random_state_dict("tiny", seed=0)
    manifest = sam_export.export(sd, out / "model", "sam-tiny-random")
    reference = sam_export.reference_sam("tiny")
    reference.load_state_dict(sd)
    tv_sd = sam_export.random_state_dict("tiny_vit", seed=0)
    sam_export.export(tv_sd, out / "model-tiny-vit", "sam-tiny-vit-random", image_size=256)
    tiny_vit = sam_export.reference_sam("tiny_vit")
    tiny_vit.load_state_dict(tv_sd)
    tiny_vit.eval()  # TinyViT caches its attention biases here
    size, mask_size = manifest["imageSize"], manifest["maskSize"]
    cases = []
    for name, (h, w) in SIZES.items():
        rgb = image(name, h, w)
        (out / f"{name}.rgb").write_bytes(rgb.tobytes())
        case = {"name": name, "height": h, "width": w}

        generator = SamAutomaticMaskGenerator(reference, output_mode="binary_mask", **GRAPH_OPTIONS)
        predictor = generator.predictor
        predictor.set_image(rgb)
        pre = reference.preprocess(torch.as_tensor(predictor.transform.apply_image(rgb)).permute(2, 0, 1)[None].contiguous())
        (out / f"{name}.input.f32").write_bytes(pre.numpy().astype("<f4").tobytes())
        (out / f"{name}.embeddings.f32").write_bytes(predictor.features.numpy().astype("<f4").tobytes())
        case["inputSize"] = list(predictor.input_size)
        crop_box = generate_crop_boxes((h, w), 1, 512 / 1500)[0][-1]
        x0, y0, x1, y1 = crop_box
        predictor.set_image(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
        (out / f"{name}.crop.embeddings.f32").write_bytes(predictor.features.numpy().astype("<f4").tobytes())
        case["cropBox"] = [int(v) for v in crop_box]
        anns = generator.generate(rgb)
        write_masks(out / f"{name}.graph.masks.u8", anns, h, w)
        case["graph"] = records(anns)
        anns = SamAutomaticMaskGenerator(tiny_vit, output_mode="binary_mask", **GRAPH_OPTIONS).generate(rgb)
        write_masks(out / f"{name}.tiny-vit.graph.masks.u8", anns, h, w)
        case["tinyVitGraph"] = records(anns)

        for run_name, options, blobs in (("synthetic", SYNTHETIC_OPTIONS, False), ("crops", CROP_OPTIONS, True)):
            generator = SamAutomaticMaskGenerator(reference, output_mode="binary_mask", **options)
            predictor = generator.predictor
            rng = np.random.default_rng(h * 1000 + w + blobs)
            lowres, ious = [], []

            def fake_predict_torch(point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                                   return_logits=False, predictor=predictor, rng=rng, lowres=lowres, ious=ious, blobs=blobs):
                low, iou = synthetic_outputs(point_coords[:, 0, :], size, mask_size, rng, blobs)
                lowres.append(low)
                ious.append(iou)
                return predictor.model.postprocess_masks(low, predictor.input_size, predictor.original_size), iou, low

            predictor.predict_torch = fake_predict_torch
            anns = generator.generate(rgb)
            (out / f"{name}.{run_name}.lowres.f32").write_bytes(torch.cat(lowres).numpy().astype("<f4").tobytes())
            (out / f"{name}.{run_name}.iou.f32").write_bytes(torch.cat(ious).numpy().astype("<f4").tobytes())
            write_masks(out / f"{name}.{run_name}.masks.u8", anns, h, w)
            case[run_name] = records(anns)
        cases.append(case)
        print(f"{name}: {h}x{w}, {len(case['graph'])} masks on the graphs (with crops), {len(case['tinyVitGraph'])} on TinyViT's, {len(case['synthetic'])} on synthetic logits, "
              f"{len(case['crops'])} with crops and small regions removed")
    index = {"model": "model", "tinyVitModel": "model-tiny-vit", "graphOptions": GRAPH_OPTIONS, "syntheticOptions": SYNTHETIC_OPTIONS,
             "cropOptions": CROP_OPTIONS, "cases": cases}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    run(main)
