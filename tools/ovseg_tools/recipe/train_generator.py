"""Stage 2 of the recipe: a small class-agnostic mask generator with OVSeg's output contract
(export/mask_generator.py), trained MaskFormer-style on the SEEN classes only. Each query is matched to at
most one ground-truth segment (Hungarian matching on class + mask cost); matched queries learn the
segment's mask (BCE + dice) and its class, as 100 * cos(query embedding, text embedding) against
the frozen stage-1 CLIP's template-ensembled class embeddings plus a learned no-object embedding;
unmatched queries learn "no object".

  ../.venv/bin/python -m ovseg_tools.recipe.train_generator --out ../build/recipe [--steps 1500]   (from tools/, after train_clip)

Writes OUT/generator.pt ({"generator": state dict, "no_object": [E], "arch", "queries", "width"}) and
OUT/generator_log.json.
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
from ..clip_reference import class_embeddings, geometry_from_state_dict, load_clip
from ..constants import IMAGENET_MEAN, IMAGENET_STD, MASK_STRIDE
from ..export.mask_generator import GENERATORS
from .bpe import load_tokenizer
from .train_clip import WORLD_TEMPLATES
from .world import CLASSES, SEEN_CLASSES
from .world_data import WorldSplit, load_or_render

NO_OBJECT_WEIGHT = 0.1
LOGIT_SCALE = 100.0


def linear_assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost matching of every row to a distinct column (rows <= columns): the Hungarian
    algorithm with potentials, O(rows^2 * columns)."""
    n, m = cost.shape
    if n > m:
        raise ValueError(f"{n} rows cannot each get one of {m} columns")
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    match = np.zeros(m + 1, dtype=int)  # column -> row (1-based; 0 = free)
    way = np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        match[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            free = ~used[1:]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    return sorted((int(match[j]) - 1, j - 1) for j in range(1, m + 1) if match[j])


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)


def generator_loss(logits: torch.Tensor, embeddings: torch.Tensor, classes: torch.Tensor, masks: torch.Tensor,
                   matrix: torch.Tensor, agnostic: bool = False) -> torch.Tensor:
    """One image. logits [Q, h, w]; embeddings [Q, E]; classes [T] (rows of `matrix`); masks [T, h, w]
    soft targets; matrix [C + 1, E] unit rows, the no-object row last. `agnostic` (a recoloured
    image, whose classes its colours no longer show): matched queries learn "an object" (any class
    rather than no-object), not which one."""
    q, c1 = len(logits), len(matrix)
    scores = LOGIT_SCALE * F.normalize(embeddings, dim=-1) @ matrix.T  # [Q, C + 1]
    target_classes = torch.full((q,), c1 - 1, dtype=torch.int64, device=logits.device)
    weights = torch.ones(c1, device=logits.device)
    weights[-1] = NO_OBJECT_WEIGHT
    if agnostic:
        log_p = scores.log_softmax(-1)
        log_object, log_none = torch.logsumexp(log_p[:, :-1], -1), log_p[:, -1]
    if len(classes) == 0:
        return -log_none.mean() if agnostic else F.cross_entropy(scores, target_classes, weight=weights)
    with torch.no_grad():
        prob = (log_object.exp()[None].expand(len(classes), q) if agnostic
                else scores.softmax(-1)[:, classes].T)  # [T, Q]
        flat = logits.flatten(1)
        bce = torch.stack([F.binary_cross_entropy_with_logits(flat, m.flatten().expand_as(flat), reduction="none").mean(1)
                           for m in masks])  # [T, Q]
        dice = torch.stack([dice_loss(logits, m.expand_as(logits)) for m in masks])
        rows_cols = linear_assignment((-prob + bce + dice).cpu().numpy())
    t_idx = torch.tensor([r for r, _ in rows_cols], device=logits.device)
    q_idx = torch.tensor([c for _, c in rows_cols], device=logits.device)
    target_classes[q_idx] = classes[t_idx]
    matched = logits[q_idx]
    mask_loss = F.binary_cross_entropy_with_logits(matched, masks[t_idx]) + dice_loss(matched, masks[t_idx]).mean()
    if agnostic:  # cross_entropy's weighting: matched queries weigh 1, the rest NO_OBJECT_WEIGHT
        is_matched = torch.zeros(q, dtype=torch.bool, device=logits.device)
        is_matched[q_idx] = True
        w = torch.where(is_matched, 1.0, NO_OBJECT_WEIGHT)
        return (w * torch.where(is_matched, -log_object, -log_none)).sum() / w.sum() + mask_loss
    return F.cross_entropy(scores, target_classes, weight=weights) + mask_loss


def targets(data: WorldSplit, i: int, stride: int = MASK_STRIDE) -> tuple[torch.Tensor, torch.Tensor]:
    """Seen-class segments of scene i: class indices into SEEN_CLASSES and soft masks at 1/stride."""
    classes, masks = [], []
    for k, inst in enumerate(data.instances[i]):
        if inst["name"] in SEEN_CLASSES:
            classes.append(SEEN_CLASSES.index(inst["name"]))
            masks.append(torch.from_numpy(data.instance_mask(i, k)).float())
    if not masks:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, 1, 1)
    pooled = F.avg_pool2d(torch.stack(masks)[:, None], stride)[:, 0]
    return torch.tensor(classes), pooled


@torch.no_grad()
def best_ious(generator, data: WorldSplit, count: int = 100, threshold: float = 0.4) -> dict[str, list[float]]:
    """Per class, for each of its ground-truth instances in the first `count` scenes, the best IoU of
    any proposal binarized at `threshold` (distractors left out)."""
    from ..reference.pipeline import propose  # the runtime's pre/post-processing

    best: dict[str, list[float]] = {c: [] for c in CLASSES}
    for i in range(min(count, len(data))):
        soft, _ = propose(generator, data.images[i])
        binary = (soft > threshold).numpy()
        for k, inst in enumerate(data.instances[i]):
            if inst["name"] not in CLASSES:
                continue  # a distractor
            mask = data.instance_mask(i, k)
            iou = ((binary & mask).sum((1, 2)) / np.maximum((binary | mask).sum((1, 2)), 1)).max()
            best[inst["name"]].append(float(iou))
    return best


def recall_stats(ious: list[float]) -> dict[str, float]:
    """Mean best IoU and the share of instances some proposal covers at IoU > 0.5."""
    a = np.array(ious)
    return {"MeanBestIoU": round(float(a.mean()), 4), "CoveredAt50": round(float((a > 0.5).mean()), 4)}


def seen_unseen_recall(best: dict[str, list[float]]) -> dict:
    """`best_ious`' output as `recall_stats` over the seen and over the unseen classes."""
    groups = {"seen": [v for c in SEEN_CLASSES for v in best[c]],
              "unseen": [v for c in CLASSES if c not in SEEN_CLASSES for v in best[c]]}
    return {f"{group}{stat}": value for group, v in groups.items() for stat, value in recall_stats(v).items()}


def proposal_recall(generator, data: WorldSplit, count: int = 100, threshold: float = 0.4) -> dict:
    """How well the proposals cover the objects and regions of `count` scenes, over seen and over
    unseen classes."""
    return seen_unseen_recall(best_ious(generator.eval(), data, count, threshold))


def recolour(image: np.ndarray, rng: np.random.Generator, grey: float = 0.0) -> np.ndarray:
    """The image with its colour channels shuffled and each scaled by 0.6 to 1.4: regions keep their
    shapes, textures and edges but lose the colours of their classes, so that masks are learned
    from what makes a region one thing (and carry over to classes never trained on). With
    probability `grey` the result is also desaturated and darkened: shuffling and scaling never turn
    the seen classes' colours into a dark grey like road's."""
    out = image[..., rng.permutation(3)].astype(np.float32) * rng.uniform(0.6, 1.4, 3)
    if grey and rng.random() < grey:  # no draw at grey = 0, so earlier runs replay exactly
        mix, light = rng.uniform(0.5, 1.0), rng.uniform(0.35, 1.0)
        out = (out * (1 - mix) + out.mean(-1, keepdims=True) * mix) * light
    return np.clip(out, 0, 255).astype(np.uint8)


def generator_input(images: np.ndarray) -> torch.Tensor:
    """`[B, H, W, 3]` uint8 (H, W multiples of 32) -> ImageNet-normalized `[B, 3, H, W]`."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def train(train_data: WorldSplit, clip_path: Path, vocab: Path, out: Path, *, steps: int, batch: int = 16,
          val_data: WorldSplit | None = None,
          queries: int = 24, width: int = 64, lr: float = 1e-3, seed: int = 0, log_every: int = 100,
          device: str = "cpu", arch: str = "scene", agnostic_fraction: float = 0.0, grey: float = 0.0) -> dict:
    """`agnostic_fraction` of the images are recoloured (`recolour`, `grey` of them also greyed and
    darkened) and train masks and objectness only."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sd = torch.load(clip_path, map_location="cpu")
    clip_model = load_clip(sd, geometry_from_state_dict(sd, 4, 4)).to(device)
    tok = load_tokenizer(vocab)
    seen = class_embeddings(clip_model, tok, SEEN_CLASSES, WORLD_TEMPLATES)
    embed_dim = seen.shape[1]
    generator = GENERATORS[arch](embed_dim, queries, width).to(device).train()
    no_object = torch.nn.Parameter((torch.randn(embed_dim) * 0.1).to(device))
    opt = torch.optim.AdamW([*generator.parameters(), no_object], lr=lr, weight_decay=1e-4)
    log, start = [], time.time()
    for step in range(1, steps + 1):
        idx = rng.choice(len(train_data), size=batch, replace=False)
        agnostic = rng.random(batch) < agnostic_fraction
        images = np.stack([recolour(train_data.images[i], rng, grey) if a else train_data.images[i] for i, a in zip(idx, agnostic)])
        logits, embeddings = generator(generator_input(images).to(device))
        matrix = torch.cat([seen, F.normalize(no_object, dim=-1)[None]])
        loss = torch.stack([generator_loss(logits[b], embeddings[b], *[t.to(device) for t in targets(train_data, int(i))],
                                           matrix, bool(agnostic[b])) for b, i in enumerate(idx)]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps:
            log.append({"step": step, "loss": float(loss), "seconds": round(time.time() - start, 1)})
            print(json.dumps(log[-1]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": {k: v.cpu() for k, v in generator.state_dict().items()},
                "no_object": no_object.detach().cpu().clone(), "arch": arch, "queries": queries,
                "width": width}, out / "generator.pt")
    result = {"arch": arch, "steps": steps, "batch": batch, "queries": queries, "width": width, "seed": seed,
              "agnosticFraction": agnostic_fraction, "grey": grey,
              "seconds": round(time.time() - start, 1), "log": log}
    if val_data is not None:
        result["valProposals"] = proposal_recall(generator.cpu(), val_data)  # propose() runs on the CPU
    (out / "generator_log.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the recipe folder (holds clip.pt and world_vocab.txt.gz)")
    ap.add_argument("--scenes", type=int, default=4000, help="scenes of the generator's split (seen classes only)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--agnostic-fraction", type=float, default=0.0, help="share of recoloured, class-agnostic images")
    ap.add_argument("--grey", type=float, default=0.0, help="share of the recoloured images also greyed and darkened")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_or_render(args.out / "world", args.seed, "generator", args.scenes)
    val = load_or_render(args.out / "world", args.seed, "val", 256)
    train(data, args.out / "clip.pt", args.out / "world_vocab.txt.gz", args.out, steps=args.steps, batch=args.batch,
          val_data=val, seed=args.seed, agnostic_fraction=args.agnostic_fraction, grey=args.grey)


if __name__ == "__main__":
    run(main)
