"""Parity fixtures for OVSeg's released generators (export/maskformer.py), exported the way a user
exports the released checkpoints: random weights in the released key layout, saved as a `.pth`,
then `python -m ovseg_tools.export --checkpoint`.

Per variant (Swin-B and R101c; CI-sized = the released key names and shapes with fewer blocks,
`--full` = the released geometry with ViT-L/14 / ViT-B/16 CLIP):
  * generator cases (crates/ovseg-core/tests/parity_maskformer.rs): an image at the processing
    size, the normalized padded input, the PyTorch module's stride-4 mask logits and query
    embeddings, the soft masks at the image size, and the generator's class probabilities for
    CLASSES (OVSeg's `100 * cos` against the text and no-object embeddings, no-object dropped);
    one size a multiple of 32, one padded;
  * pipeline cases in reference/pipeline.py's format (parity_segment.rs): semantic inference with
    OVSeg's ensemble at the config's weight (0.7) and at 0.0, and demo mode (CI-sized only).

Run: ../.venv/bin/python -m ovseg_tools.reference.maskformer OUT [--full]  (from tools/)
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cli import run
from ..clip_reference import TINY, VIT_B_16, VIT_L_14, load_clip
from ..constants import IMAGENET_MEAN, IMAGENET_STD, SIZE_DIVISIBILITY, TEMPLATES
from ..export.maskformer import R101C, R101C_CI, SWIN_B, SWIN_B_CI
from ..export.model_dir import main as export_main
from ..export.model_dir import read_checkpoint
from ..export.ovseg_checkpoint import CONFIGS, EVAL_CONFIG, load_generator, random_checkpoint
from .image_resize import resize, shortest_edge_size
from .pipeline import CLASSES, CachedCrops, build_case, class_matrix, propose, test_image, write_case
from .tokenizer_corpus import load_reference_tokenizer

# CI models run at a small processing size: 120x200 -> 96x160 (no padding), 100x150 -> 96x144 (padded to 160).
CI_PROCESSING = (96, 512)
SIZES = [(120, 200), (100, 150)]
FULL_SIZES = [(480, 640), (500, 750)]  # at 640: 640x853 (padded to 864) and 640x960


def variants(full: bool):
    if full:
        return [("swinb", SWIN_B, VIT_L_14, None), ("r101c", R101C, VIT_B_16, None)]
    return [("swinb-ci", SWIN_B_CI, replace(TINY, embed_dim=SWIN_B_CI.head.text_dim), CI_PROCESSING),
            ("r101c-ci", R101C_CI, replace(TINY, embed_dim=R101C_CI.head.text_dim), CI_PROCESSING)]


def padded_input(resized: np.ndarray) -> torch.Tensor:
    """Normalized, then zero-padded to a multiple of 32 (OVSeg's order)."""
    h, w = resized.shape[:2]
    x = (torch.from_numpy(resized).permute(2, 0, 1).float() - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    ph, pw = -(-h // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY, -(-w // SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
    return F.pad(x, (0, pw - w, 0, ph - h))[None]


def write(path: Path, array) -> None:
    np.ascontiguousarray(array).astype("<f4").tofile(path)


def build(name: str, spec, g, processing, out: Path, seed: int, full: bool) -> tuple[list[dict], list[dict]]:
    sizes = FULL_SIZES if full else SIZES
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    ckpt_path = folder / "checkpoint.pth"
    torch.save({"model": random_checkpoint(spec, g, seed), "iteration": 120000}, ckpt_path)
    model_dir = folder / "model"
    args = ["--checkpoint", str(ckpt_path), "--out", str(model_dir), "--name", name]
    if g.vision_width < 64:  # TINY: heads are not width // 64
        args += ["--vision-heads", str(g.vision_heads), "--text-heads", str(g.text_heads)]
    if processing:
        args += ["--processing", *map(str, processing)]
    started = time.time()
    export_main(args)
    print(f"{name}: exported in {time.time() - started:.0f} s", flush=True)
    ckpt = read_checkpoint(ckpt_path)
    ckpt_path.unlink()  # the model directory is what the tests read
    config = CONFIGS[EVAL_CONFIG[spec.variant]]
    generator = load_generator(ckpt.ovseg, config)
    clip = CachedCrops(load_clip(ckpt.clip, g))
    tok, _ = load_reference_tokenizer()
    processing = processing or (config.short_side, config.max_size)
    rng = np.random.default_rng(seed)

    generator_cases = []
    for h, w in sizes:
        image = test_image(h, w, rng)
        rh, rw = shortest_edge_size(h, w, *processing)
        resized = resize(image, rh, rw)
        case_dir = folder / f"generator-{rh}x{rw}"
        case_dir.mkdir(exist_ok=True)
        x = padded_input(resized)
        with torch.no_grad():
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            started = time.time()
            logits, embeddings = generator(x)
            ms = (time.time() - started) * 1e3
            # PyTorch's own rounding noise: the same input on 2 threads (a floor for the tolerance).
            torch.set_num_threads(2)
            logits2, embeddings2 = generator(x)
            torch.set_num_threads(threads)
            noise = [float((logits2 - logits).abs().max()), float((embeddings2 - embeddings).abs().max())]
            soft, _ = propose(generator, resized)
            matrix = class_matrix(clip, tok, CLASSES, TEMPLATES, ckpt.no_object)
            p_gen = F.softmax(100 * F.normalize(embeddings[0], dim=-1) @ matrix.T, dim=-1)[:, :-1]
        resized.tofile(case_dir / "image_u8.bin")
        write(case_dir / "input_f32.bin", x.numpy())
        write(case_dir / "expected_logits.bin", logits.numpy())
        write(case_dir / "expected_embeddings.bin", embeddings.numpy())
        write(case_dir / "expected_masks.bin", soft.numpy())
        write(case_dir / "expected_generator_probabilities.bin", p_gen.numpy())
        generator_cases.append({"name": f"{name}/generator-{rh}x{rw}", "model": str(model_dir.resolve()),
                                "dir": str(case_dir.resolve()), "size": [rh, rw], "input": list(x.shape),
                                "logits": list(logits.shape), "queries": int(logits.shape[1]),
                                "classes": CLASSES, "threadNoise": noise, "torchMs": round(ms, 1)})
        print(f"{name}: generator case {rh}x{rw} (padded {list(x.shape[2:])}), torch {ms:.0f} ms on 1 thread; "
              f"1 vs 2 threads: logits {noise[0]:.2g}, embeddings {noise[1]:.2g}", flush=True)

    if full:  # ViT-L/14 on 100 crops per call, several calls per case: too slow for 2 cores
        return generator_cases, []
    specs = [("semantic", sizes[0], {"lambda": config.ensemble_weight, "threshold": config.threshold}),
             ("semantic-clip-only", sizes[1], {"lambda": 0.0, "threshold": config.threshold}),
             # Demo mode picks each class's best of 100 queries, whose CLIP scores are close with random
             # weights: one class (plus "others") and more images to find picks clear of near-ties.
             ("demo", sizes[0], {"mode": "demo", "lambda": 0.0, "threshold": 0.35, "classes": ["red car"]})]
    pipeline_cases = []
    for case, size, options in specs:
        spec_tuple = (size, True, None, options)
        built = build_case(clip, g, tok, ckpt.no_object, generator, rng, spec_tuple, processing=processing, images=8)
        pipeline_cases.append(write_case(folder / case, f"{name}/{case}", model_dir, spec_tuple, *built))
    return generator_cases, pipeline_cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--full", action="store_true", help="the released geometries (several GB; not in CI)")
    args = ap.parse_args()
    generator_cases, pipeline_cases = [], []
    for seed, (name, spec, g, processing) in enumerate(variants(args.full), start=61):
        gen, pipe = build(name, spec, g, processing, args.out, seed, args.full)
        generator_cases += gen
        pipeline_cases += pipe
    index = {"geometry": "full" if args.full else "ci", "generator": generator_cases, "cases": pipeline_cases}
    (args.out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"wrote {len(generator_cases)} generator and {len(pipeline_cases)} pipeline cases to {args.out}")


if __name__ == "__main__":
    run(main)
