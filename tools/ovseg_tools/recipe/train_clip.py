"""Stage 1 of the recipe: a tiny CLIP (OpenAI's layout, so the exporter takes it as is) trained
contrastively on whole synthetic scenes, object-centric photos (world.object_scene) and their
captions. No masks.

  ../.venv/bin/python -m ovseg_tools.recipe.train_clip --out ../build/recipe [--steps 1500] [--batch 128]   (from tools/)

Writes OUT/clip.pt (an OpenAI-layout state dict) and OUT/clip_log.json (loss, whole-scene
retrieval, presence AUC and object-centric shape accuracy on the val splits as it trains).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cli import run
from ..clip_reference import Geometry, class_embeddings, encode_texts, load_clip, random_state_dict
from ..constants import CLIP_MEAN, CLIP_STD
from .bpe import load_tokenizer, vocab_size
from .world import CLASSES, SHAPES, STUFF
from .world_data import WorldSplit, load_or_render

CONTEXT = 64
# Caption-style class templates: every word is one the world's captions use (OVSeg's 14 are
# photo-style: "photo", "medium" never occur in these captions, so their embeddings stay untrained).
WORLD_TEMPLATES = ["a {}.", "the {}.", "there is a {}.", "a picture of a {}."]


def geometry(merges: int) -> Geometry:
    """64 px, patch 8 (an 8 x 8 grid), width 96: small enough for 2 CPU cores."""
    return Geometry(image_size=64, patch_size=8, vision_width=96, vision_layers=4, vision_heads=4, embed_dim=96,
                    context_length=CONTEXT, vocab_size=vocab_size(merges), text_width=96, text_layers=3, text_heads=4)


def scene_pixels(images: np.ndarray, size: int) -> torch.Tensor:
    """Whole scenes `[B, H, W, 3]` uint8 -> CLIP input `[B, 3, size, size]` (antialiased, normalized)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255
    return (x - mean) / std


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                     negatives: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric loss; `negatives` (one extra caption per image) join the image-to-text side."""
    image = F.normalize(image, dim=-1)
    scale = logit_scale.exp().clamp(max=100)
    logits = scale * image @ F.normalize(text, dim=-1).T
    target = torch.arange(len(logits), device=logits.device)
    to_text = logits if negatives is None else torch.cat([logits, scale * image @ F.normalize(negatives, dim=-1).T], 1)
    return (F.cross_entropy(to_text, target) + F.cross_entropy(logits.T, target)) / 2


def swap_shapes(caption: str, rng: np.random.Generator) -> str:
    """A hard negative: the caption with every shape name replaced by another shape (NegCLIP-style).
    Whole-scene captions can be matched by colour and ground alone; with these negatives in the
    batch, telling shapes apart pays, on both the image and the text side."""
    words = re.split(r"(\W+)", caption)
    return "".join(SHAPES[(SHAPES.index(w.lower()) + 1 + rng.integers(len(SHAPES) - 1)) % len(SHAPES)]
                   if w.lower() in SHAPES else w for w in words)


def warmup_cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first 5% of the steps, then cosine decay to 0 (CLIP's schedule)."""
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


@torch.no_grad()
def object_shape_accuracy(model, data: WorldSplit, tok) -> float:
    """Zero-shot shape accuracy on object-centric photos with one thing: the argmax over the 8 shape
    names (template-ensembled) is the thing's shape. What stage 1 learned on its own ground."""
    one = [i for i, inst in enumerate(data.instances) if sum(t["name"] in SHAPES for t in inst) == 1]
    truth = torch.tensor([SHAPES.index(next(t["name"] for t in data.instances[i] if t["name"] in SHAPES))
                          for i in one])
    device = model.logit_scale.device
    image = model.encode_image(scene_pixels(data.images[one], model.geometry.image_size).to(device))
    shapes = class_embeddings(model, tok, SHAPES, WORLD_TEMPLATES)
    return float(((image @ shapes.T).argmax(1).cpu() == truth).float().mean())


@torch.no_grad()
def retrieval_accuracy(model, data: WorldSplit, tok, count: int = 256, objects: WorldSplit | None = None) -> dict:
    """Whole-scene retrieval R@1 among `count` val scenes (first caption each), both directions; the
    presence AUC of shapes and stuff; with `objects`, the object-centric shape accuracy."""
    model.eval()
    n = min(count, len(data))
    device = model.logit_scale.device
    image = F.normalize(model.encode_image(scene_pixels(data.images[:n], model.geometry.image_size).to(device)), dim=-1)
    text = F.normalize(encode_texts(model, tok, [c[0] for c in data.captions[:n]]), dim=-1)
    sim = image @ text.T
    target = torch.arange(n, device=device)
    presence = presence_auc(image, class_embeddings(model, tok, CLASSES, WORLD_TEMPLATES), data.instances[:n])
    result = {"imageToText": float((sim.argmax(1) == target).float().mean()),
              "textToImage": float((sim.argmax(0) == target).float().mean()), "scenes": n,
              "shapeAUC": float(np.mean([presence[c] for c in SHAPES])),
              "stuffAUC": float(np.mean([presence[c] for c in STUFF]))}
    if objects is not None:
        result["objectShapeAccuracy"] = object_shape_accuracy(model, objects, tok)
    model.train()
    return result


def presence_auc(images: torch.Tensor, classes: torch.Tensor, instances: list[list[dict]]) -> dict[str, float]:
    """Per class, the ROC AUC of cos(scene, class name) for telling scenes that contain the class from
    scenes that do not: 0.5 is chance, 1 is perfect. A sharper whole-scene measure than retrieval,
    which colour and ground alone can win."""
    sim = (images @ classes.T).cpu().numpy()
    out = {}
    for c, name in enumerate(CLASSES):
        present = np.array([any(i["name"] == name for i in inst) for inst in instances])
        pos, neg = sim[present, c], sim[~present, c]
        out[name] = float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()) \
            if len(pos) and len(neg) else float("nan")
    return out


def train(train_data: WorldSplit, val_data: WorldSplit, vocab: Path, merges: int, out: Path, *, steps: int,
          batch: int = 128, lr: float = 5e-4, seed: int = 0, log_every: int = 100, init: Path | None = None,
          save: str = "clip.pt", device: str = "cpu", shape_negatives: bool = False,
          objects: WorldSplit | None = None, objects_fraction: float = 0.5, objects_val: WorldSplit | None = None) -> dict:
    """Trains from random weights, or from the state dict `init` (the recipe's control run: more of
    stage 1's training); writes OUT/save and OUT/<save stem>_log.json. With `objects`, that
    fraction of each batch is object-centric photos, in twins (the rest whole scenes)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    g = geometry(merges)
    tok = load_tokenizer(vocab)
    model = load_clip(torch.load(init, map_location="cpu") if init else random_state_dict(g, seed), g).to(device).train()
    model.geometry = g
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
    sched = warmup_cosine(opt, steps)
    log: list[dict] = []
    start = time.time()
    for step in range(1, steps + 1):
        images, texts = [], []
        n_objects = round(batch * objects_fraction) if objects is not None else 0
        for data, n in ((train_data, batch - n_objects), (objects, n_objects)):
            if n:
                if data is objects:  # twins together (world.object_scene): told apart by shape alone
                    pairs = rng.choice(len(data) // 2, size=n // 2, replace=False)
                    idx = np.concatenate([2 * pairs, 2 * pairs + 1, rng.choice(len(data), size=n % 2)])
                else:
                    idx = rng.choice(len(data), size=n, replace=False)
                images.append(data.images[idx])
                texts += [data.captions[i][rng.integers(len(data.captions[i]))] for i in idx]
        images = np.concatenate(images)
        flip = rng.random(batch) < 0.5  # captions never say left or right
        images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        negatives = encode_texts(model, tok, [swap_shapes(t, rng) for t in texts], cut=True) if shape_negatives else None
        loss = contrastive_loss(model.encode_image(scene_pixels(images, g.image_size).to(device)),
                                encode_texts(model, tok, texts, cut=True), model.logit_scale, negatives)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            entry = {"step": step, "loss": float(loss), "seconds": round(time.time() - start, 1),
                     "val": retrieval_accuracy(model, val_data, tok, objects=objects_val)}
            log.append(entry)
            print(json.dumps(entry), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save(sd, out / save)
    result = {"geometry": g.as_dict(), "init": init.name if init else None, "shapeNegatives": shape_negatives,
              "objectsFraction": objects_fraction if objects is not None else 0,
              "steps": steps, "batch": batch, "lr": lr,
              "seed": seed, "seconds": round(time.time() - start, 1), "log": log}
    (out / f"{Path(save).stem}_log.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vocab", type=Path, help="learned vocabulary (default: OUT/world_vocab.txt.gz, learned if missing)")
    ap.add_argument("--scenes", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--objects", type=int, default=8000, help="object-centric photos (0: whole scenes only)")
    ap.add_argument("--objects-fraction", type=float, default=0.5, help="their share of each batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from .bpe import learn_merges, write_vocab

    train_data = load_or_render(args.out / "world", args.seed, "train", args.scenes)
    val_data = load_or_render(args.out / "world", args.seed, "val", 256)
    vocab = args.vocab or args.out / "world_vocab.txt.gz"
    if not vocab.exists():
        write_vocab(vocab, learn_merges([c for caps in train_data.captions[:1000] for c in caps], 1000))
    merges = sum(1 for _ in load_tokenizer(vocab).bpe_ranks)
    objects = load_or_render(args.out / "world", args.seed, "objects", args.objects) if args.objects else None
    objects_val = load_or_render(args.out / "world", args.seed, "objects-val", 256)
    train(train_data, val_data, vocab, merges, args.out, steps=args.steps, batch=args.batch, seed=args.seed,
          objects=objects, objects_fraction=args.objects_fraction, objects_val=objects_val)


if __name__ == "__main__":
    run(main)
