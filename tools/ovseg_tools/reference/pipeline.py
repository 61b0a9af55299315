"""PyTorch reference of OVSeg's inference (docs/ovseg.md, section 1 and the demo path), and
parity fixtures for `Model::segment` (crates/ovseg-core/src/segment.rs).

Masks come from the generator (export/mask_generator.py's module, the one the model directory's ONNX
graph was exported from), from the caller, or both (generator's first). Caller masks have no generator
score: they are classified by CLIP alone, and an invalid one is left out.

Run: ../.venv/bin/python -m ovseg_tools.reference.pipeline OUT_DIR [--tiny-only]  (from tools/)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cli import run
from ..clip_reference import TINY, VIT_B_16, Geometry, class_embeddings, load_clip, random_state_dict
from ..constants import IMAGENET_MEAN, IMAGENET_STD, MASK_STRIDE, OPENAI_MERGES, SIZE_DIVISIBILITY, TEMPLATES
from ..export.mask_generator import random_generator
from ..export.model_dir import default_vocab, export_model
from .image_resize import resize, shortest_edge_size
from .mask_crop import edge_case_masks, mask_crops
from .tokenizer_corpus import load_reference_tokenizer

CLASSES = ["grass", "red car", "building, edifice", "sky", "water"]
UNLABELED = 65535


# Keyed by the model object, not id(): a freed model's id is reused by the next one (CI saw a
# ViT-L matrix handed to a ViT-B model).
_CLASS_MATRICES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def class_matrix(model, tok, classes, templates, no_object) -> torch.Tensor:
    """Template ensembling (normalize, mean, normalize) and the normalized no-object row last;
    kept per model and class list, since a case runs the reference several times."""
    cache = _CLASS_MATRICES.setdefault(model, {})
    key = (tuple(classes), tuple(templates), id(no_object))
    if key not in cache:
        cache[key] = (no_object, torch.cat([class_embeddings(model, tok, classes, templates),
                                            F.normalize(no_object, dim=-1)]))
    return cache[key][1]


def propose(generator, resized: np.ndarray):
    """MaskFormer's pre/post-processing: normalize, zero-pad to a multiple of 32, run, upsample the
    stride-4 logits to the padded size, crop to the image, sigmoid."""
    rh, rw = resized.shape[:2]
    x = (torch.from_numpy(resized).permute(2, 0, 1).float() - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    ph, pw = -(-rh // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY, -(-rw // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    padded = torch.zeros(1, 3, ph, pw)
    padded[0, :, :rh, :rw] = x
    logits, embeddings = generator(padded)
    assert logits.shape[-2:] == (ph // MASK_STRIDE, pw // MASK_STRIDE)
    logits = F.interpolate(logits, size=(ph, pw), mode="bilinear", align_corners=False)[0, :, :rh, :rw]
    return logits.sigmoid(), embeddings[0]


def soft_masks(image, generator=None, caller_masks=None, processing=(640, 2560)):
    """The soft masks at processing size (generator's, then the caller's), the generator's query
    embeddings and count, and the resized image."""
    rh, rw = shortest_edge_size(*image.shape[:2], *processing)
    resized = resize(image, rh, rw)
    parts, generated, embeddings = [], 0, None
    if generator is not None:
        gen_masks, embeddings = propose(generator, resized)
        parts.append(gen_masks)
        generated = gen_masks.shape[0]
    if caller_masks is not None:
        parts.append(F.interpolate(torch.from_numpy(caller_masks)[None], size=(rh, rw), mode="bilinear",
                                   align_corners=False)[0])
    return torch.cat(parts), embeddings, generated, resized


# The soft masks of the ONNX graph and of PyTorch differ by a few 1e-6, and soft masks are dense
# around any threshold, so pixels that close to it land on either side depending on the machine's
# float rounding. A case is kept only if its result does not depend on them: moving the threshold
# by THRESHOLD_NOISE either way must leave validity and selection unchanged and move probabilities
# and (in semantic mode, where the masks stay soft) scores by at most STABLE_TOL, half the parity
# check's tolerance (the runtimes' own difference is a few 1e-6). Demo mode sums binarized masks:
# the output pixels whose scores such a move changes are written as fragile, and the check leaves
# them out.
THRESHOLD_NOISE = 1e-5
PARITY_TOL = 1e-4
STABLE_TOL = PARITY_TOL / 2
# Demo mode picks each class's best query: its two best must be further apart than this in logit
# space, log(p / (1 - p)), where the rounding noise is even (about 1e-4: the feature noise times
# CLIP's logit scale) for probabilities near 0, near 1 and between.
SELECTION_MARGIN = 1e-2


def generator_probabilities(embeddings: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """The generator's class probabilities: its query embeddings against the class matrix, the
    no-object column (last) dropped after the softmax."""
    return F.softmax(100 * F.normalize(embeddings, dim=-1) @ matrix.T, dim=-1)[:, :-1]


def clip_probabilities(model, crops: np.ndarray, binaries: np.ndarray, matrix: torch.Tensor) -> torch.Tensor:
    """CLIP's class probabilities of the valid crops (mask_crops' output); the no-object column is
    dropped before the softmax."""
    feats = F.normalize(model.encode_image(torch.from_numpy(crops), torch.from_numpy(binaries)[:, None].float()), dim=-1)
    return F.softmax((100 * feats @ matrix.T)[:, :-1], dim=-1)


def ensemble(p_gen: torch.Tensor, clip_valid: torch.Tensor, valid: torch.Tensor, lam: float):
    """OVSeg's ensemble over the generator's queries: `p_gen^(1 − λ) · p_clip^λ`, with p_clip = 1 for a
    query whose mask has no crop; λ = 0 is CLIP alone over the valid queries, or the generator's
    prediction when none is valid. clip_valid holds CLIP's probabilities of the valid queries, in
    order. Returns the probabilities and the queries (rows of the masks) they belong to."""
    if lam > 0:
        p_clip = torch.ones_like(p_gen)
        p_clip[valid] = clip_valid
        return p_gen ** (1 - lam) * p_clip ** lam, list(range(len(p_gen)))
    if valid.any():
        return clip_valid, [q for q in range(len(p_gen)) if valid[q]]
    return p_gen, list(range(len(p_gen)))


def segment_reference(model, g: Geometry, tok, no_object, image, classes, *, generator=None, caller_masks=None,
                      threshold=0.4, lam=0.7, mode="semantic", processing=(640, 2560)):
    h, w = image.shape[:2]
    classes = list(classes)
    user_classes = len(classes)
    if mode == "demo" and user_classes == 1 and classes[0] != "others":
        classes.append("others")
    n = len(classes)
    soft, embeddings, generated, resized = soft_masks(image, generator, caller_masks, processing)
    rh, rw = resized.shape[:2]
    boxes, crops, binaries = mask_crops(resized, soft.numpy(), threshold, size=g.image_size)
    matrix = class_matrix(model, tok, classes, TEMPLATES, no_object)
    valid = torch.tensor([b is not None for b in boxes])
    p_clip = clip_probabilities(model, crops, binaries, matrix) if valid.any() else torch.zeros(0, n)
    gen_valid = valid[:generated]
    clip_gen, clip_caller = p_clip[: int(gen_valid.sum())], p_clip[int(gen_valid.sum()):]
    used, probs = [], []
    if generator is not None:
        p_gen_used, used = ensemble(generator_probabilities(embeddings, matrix), clip_gen, gen_valid, lam)
        probs.append(p_gen_used)
    probs.append(clip_caller)
    used += [q for q in range(generated, len(boxes)) if valid[q]]
    p = torch.cat(probs) if probs else torch.zeros(0, n)
    selection_margin = float("inf")
    if mode == "demo":
        for c in range(user_classes if len(used) > 1 else 0):
            top2 = torch.topk(p[:, c], 2).values
            if top2[0] > top2[1]:  # an exact tie (saturated softmax) is one on every machine
                logit = torch.logit(top2.double())
                selection_margin = min(selection_margin, float(logit[0] - logit[1]))
        rows = sorted({int(torch.argmax(p[:, c])) for c in range(user_classes)}) if len(used) else []
        p = p[rows]
        used = [used[r] for r in rows]
        masks = (soft[used] > threshold).float()
    else:
        masks = soft[used]
    if used:
        semseg = torch.einsum("qc,qhw->chw", p, masks)
        scores = F.interpolate(semseg[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    else:
        scores = torch.zeros(n, h, w)
    labels = scores.argmax(0).numpy().astype(np.int64)
    if mode == "demo":
        labels[(scores == 0).all(0).numpy()] = UNLABELED
    return {"probabilities": p.numpy(), "scores": scores.numpy(), "labels": labels, "valid": valid.tolist(),
            "used": used, "classes": classes, "processingSize": [rh, rw], "selectionMargin": selection_margin}


def test_image(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.clip((120 + 90 * np.sin(yy / 9 + xx / 13))[..., None] * np.array([1.0, 0.8, 0.5])
                   + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


# name -> (image size, uses the generator, caller masks, options)
CASES = {
    "mixed": ((150, 200), False, "edge", {}),
    "one-valid": ((150, 200), False, "one-valid", {}),
    "none-valid": ((150, 200), False, "none-valid", {}),
    "small-image": ((40, 60), False, "edge", {}),
    "wide": ((90, 400), False, "edge", {}),
    "generator": ((150, 200), True, None, {"lambda": 0.7, "threshold": 0.998}),
    "generator-clip-only": ((150, 200), True, None, {"lambda": 0.0}),
    "generator-none-valid": ((150, 200), True, None, {"lambda": 0.0, "threshold": 0.999999}),
    "generator-and-caller": ((120, 90), True, "edge", {"lambda": 0.5}),
    "demo": ((150, 200), True, None, {"mode": "demo", "lambda": 0.0, "threshold": 0.35}),
    "demo-one-class": ((150, 200), True, "edge", {"mode": "demo", "lambda": 0.0, "threshold": 0.35,
                                                  "classes": ["red car"]}),
}


def case_inputs(spec, rng: np.random.Generator):
    """One case's image and caller masks, drawn from `rng`."""
    (h, w), _, caller, _ = spec
    image = test_image(h, w, rng)
    masks = None
    if caller is not None:
        names, masks = edge_case_masks(h, w, rng)
        # A mask exactly at the threshold becomes, after the bilinear resize, a tie that the last
        # bit decides (PyTorch's kernel and ours differ by an ulp there). The strict `>` itself is
        # checked without interpolation by the mask-crop parity fixtures.
        masks = masks[[i for i, n in enumerate(names) if n != "exactly-threshold"]]
        if caller == "one-valid":
            masks = np.zeros_like(masks)
            masks[3, h // 3: h // 2, w // 4: w // 2] = 0.8
        elif caller == "none-valid":
            masks = np.zeros_like(masks[:4])
    return image, masks


def instability(r: dict, other: dict, demo: bool) -> float:
    """How far `other` (the same case at a threshold moved by the noise) is from `r`: the largest
    probability (and, in semantic mode, score) difference; infinite if validity or selection differ."""
    if r["valid"] != other["valid"] or r["used"] != other["used"] \
            or r["probabilities"].shape != other["probabilities"].shape:
        return float("inf")
    worst = float(np.abs(r["probabilities"] - other["probabilities"]).max(initial=0))
    return worst if demo else max(worst, float(np.abs(r["scores"] - other["scores"]).max(initial=0)))


class CachedCrops:
    """The model, with the image features of each (crop, mask) kept: build_case runs the reference 3
    times per threshold and image, with thresholds at most a few 1e-4 apart, which change few crops;
    encoding them again took most of this fixture's time with ViT-B/16. A feature comes from whichever
    batch first held its crop: batches differ by float rounding only, far below the parity tolerance."""

    def __init__(self, model):
        self.model, self.features = model, {}

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode_image(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keys = [hashlib.sha256(image[i].numpy().tobytes() + mask[i].numpy().tobytes()).digest()
                for i in range(len(image))]
        missing = {}
        for i, k in enumerate(keys):
            if k not in self.features:
                missing.setdefault(k, i)
        if missing:
            rows = list(missing.values())
            self.features.update(zip(missing, self.model.encode_image(image[rows], mask[rows])))
        return torch.stack([self.features[k] for k in keys])


def build_case(model, g: Geometry, tok, no_object, generator, rng: np.random.Generator, spec, processing=(640, 2560),
               images: int = 2):
    """A case whose result float rounding cannot change (see THRESHOLD_NOISE): new images, and
    thresholds moved in steps of 3e-4 from the case's, until one is. Where none is (ViT-B/16's crops
    of generator masks: one pixel flips a patch's mask prompt), the least unstable candidate, with
    the parity tolerance widened to twice its instability (the returned tolerance)."""
    (_, _), use_generator, _, options = spec
    case_generator = generator if use_generator else None

    def run(image, masks, threshold):
        with torch.no_grad():
            return segment_reference(model, g, tok, no_object, image, options.get("classes", CLASSES),
                                     generator=case_generator, caller_masks=masks, threshold=threshold,
                                     lam=options.get("lambda", 0.7), mode=options.get("mode", "semantic"),
                                     processing=processing)

    base = options.get("threshold", 0.4)
    demo = options.get("mode") == "demo"
    best = None
    for _ in range(images):
        image, masks = case_inputs(spec, rng)
        for t in sorted({round(min(max(base + k * 3e-4, 0.0), 0.999999), 6) for k in range(-1, 2)},
                        key=lambda t: abs(t - base)):
            r = run(image, masks, t)
            if not r["selectionMargin"] > SELECTION_MARGIN:
                continue
            moved = [run(image, masks, t + d) for d in (-THRESHOLD_NOISE, THRESHOLD_NOISE) if t + d < 1]
            worst = max(instability(r, m, demo) for m in moved)
            r["fragile"] = np.zeros(r["labels"].shape, bool)
            for m in moved if demo else []:
                r["fragile"] |= (np.abs(r["scores"] - m["scores"]) > STABLE_TOL).any(0)
            if best is None or worst < best[0]:
                best = (worst, r, image, masks, {**options, "threshold": t})
            if worst <= STABLE_TOL:
                return r, image, masks, {**options, "threshold": t}, PARITY_TOL
    if best is None or best[0] == float("inf"):
        raise RuntimeError(f"no image and threshold near {base} give a case whose selection rounding cannot change")
    worst, r, image, masks, case_options = best
    return r, image, masks, case_options, max(PARITY_TOL, 2 * worst)


def build(g: Geometry, name: str, out: Path, seed: int, cases: list[str]) -> list[dict]:
    sd = random_state_dict(g, seed, prompt_depth=3)
    no_object = torch.randn(1, g.embed_dim, generator=torch.Generator().manual_seed(seed))
    generator = random_generator(g.embed_dim, seed + 2)
    model_dir = out / name / "model"
    export_model(sd, g, model_dir, name=f"pipeline-{name}", vocab=default_vocab(), merges=OPENAI_MERGES,
                 no_object=no_object, source={"random": name, "seed": seed}, generator=generator)
    model = CachedCrops(load_clip(sd, g))
    tok, _ = load_reference_tokenizer()
    rng = np.random.default_rng(seed)
    written = []
    for case in cases:
        built = build_case(model, g, tok, no_object, generator, rng, CASES[case])
        written.append(write_case(out / name / case, f"{name}/{case}", model_dir, CASES[case], *built))
    return written


def write_case(folder: Path, name: str, model_dir: Path, spec, r, image, masks, options, tolerance) -> dict:
    """Writes one case of `build_case` into `folder`; returns its index.json entry."""
    (h, w), use_generator = spec[:2]
    folder.mkdir(parents=True, exist_ok=True)
    image.tofile(folder / "image_u8.bin")
    if masks is not None:
        masks.astype("<f4").tofile(folder / "masks_f32.bin")
    r["probabilities"].astype("<f4").tofile(folder / "expected_probabilities.bin")
    r["scores"].astype("<f4").tofile(folder / "expected_scores.bin")
    r["labels"].astype("<u2").tofile(folder / "expected_labels.bin")
    r["fragile"].astype("u1").tofile(folder / "fragile_u8.bin")
    print(f"{name}: threshold {options['threshold']}, tolerance {tolerance:.2g}, "
          f"{int(r['fragile'].sum())} fragile pixels", flush=True)
    return {"name": name, "model": str(model_dir.resolve()), "dir": str(folder.resolve()),
            "size": [h, w], "generator": use_generator, "callerMasks": masks is not None,
            "inputClasses": options.get("classes", CLASSES), "classes": r["classes"], "valid": r["valid"],
            "used": r["used"], "processingSize": r["processingSize"], "tolerance": tolerance,
            "options": {k: v for k, v in options.items() if k != "classes"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--tiny-only", action="store_true", help="skip the ViT-B/16 geometry (about 600 MB)")
    args = ap.parse_args()
    cases = build(TINY, "tiny", args.out, seed=51, cases=list(CASES))
    if not args.tiny_only:
        cases += build(VIT_B_16, "vit-b-16", args.out, seed=52, cases=["mixed", "generator", "generator-and-caller"])
    (args.out / "index.json").write_text(json.dumps({"cases": cases}, indent=1))
    print(f"wrote {len(cases)} pipeline cases to {args.out}")


if __name__ == "__main__":
    run(main)
