"""Stage 4 of the recipe: the mask-adapted CLIP (docs/ovseg.md, section 7).
On the mined region/noun pairs, with the text encoder frozen:

- fine-tuning: the whole image encoder, on the masked crops (background = CLIP's mean colour);
- mask prompt tuning: only learned prompts (depth D, one per patch, normal(std 0.02) at start)
  that replace the zero tokens (patches with no foreground pixel) of the first D layers.

The loss is OVSeg's contrastive loss over the phrases of a batch: each crop against the frozen
text embeddings of all distinct phrases in the batch. A phrase whose words are all in the crop's
phrase ("star" for "red star") also names that crop, so the target spreads over every such phrase
instead of pushing the crop away from a correct name.

  ../.venv/bin/python -m ovseg_tools.recipe.adapt_clip --out ../build/recipe --init clip.pt --save clip_ft.pt --fine-tune
  ../.venv/bin/python -m ovseg_tools.recipe.adapt_clip --out ../build/recipe --init clip_ft.pt --save clip_ft_pt.pt \
      --prompt-depth 3   (from tools/)
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
from ..clip_reference import encode_texts, geometry_from_state_dict, load_clip
from .bpe import load_tokenizer
from .mine import PHRASE_TEMPLATE, load_mined
from .train_clip import warmup_cosine

LOGIT_SCALE = 100.0
PROMPT_INIT_STD = 0.02


def compatible(phrases: list[str]) -> torch.Tensor:
    """`[P, P]` bool: row i, column j is True when every word of phrase j is in phrase i."""
    words = [set(p.split()) for p in phrases]
    return torch.tensor([[b <= a for b in words] for a in words])


def phrase_loss(image_features: torch.Tensor, text_features: torch.Tensor, batch_phrases: torch.Tensor,
                names: torch.Tensor) -> torch.Tensor:
    """image_features [B, E]; text_features [P, E] unit rows of the batch's distinct phrases;
    batch_phrases [B] the index of each crop's phrase; names [P, P] from `compatible`."""
    logits = LOGIT_SCALE * F.normalize(image_features, dim=-1) @ text_features.T
    target = names[batch_phrases].float()
    target = target / target.sum(dim=1, keepdim=True)
    return -(target * logits.log_softmax(dim=-1)).sum(dim=1).mean()


@torch.no_grad()
def phrase_features(model, tok, phrases: list[str], chunk: int = 512) -> torch.Tensor:
    prompts = [PHRASE_TEMPLATE.format(p) for p in phrases]
    return torch.cat([F.normalize(encode_texts(model, tok, prompts[i:i + chunk]), dim=-1)
                      for i in range(0, len(prompts), chunk)])


def adapt(out: Path, init: str, save: str, *, fine_tune: bool, prompt_depth: int, steps: int, batch: int = 128,
          lr: float | None = None, seed: int = 0, log_every: int = 100, device: str = "cpu", mined: str = "mined") -> dict:
    """Trains from OUT/init on the pairs of OUT/<mined>.{npz,json} and writes OUT/save (an
    OpenAI-layout state dict, prompts as `visual.mask_embedding`) and OUT/<save stem>_log.json."""
    if fine_tune == (prompt_depth > 0):
        raise ValueError("choose fine-tuning or prompt tuning (a prompt depth), one per run")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sd = torch.load(out / init, map_location="cpu")
    g = geometry_from_state_dict(sd, 4, 4)
    if prompt_depth > g.vision_layers:
        raise ValueError(f"prompt depth {prompt_depth} is deeper than the ViT's {g.vision_layers} blocks")
    model = load_clip(sd, g).to(device)
    tok = load_tokenizer(out / "world_vocab.txt.gz")
    crops, masks, pair_crop, pair_phrase = load_mined(out, mined)
    distinct = sorted(set(pair_phrase))
    phrase_index = torch.from_numpy(np.searchsorted(np.array(distinct), np.array(pair_phrase)))
    text = phrase_features(model.eval(), tok, distinct)
    for p in model.parameters():
        p.requires_grad_(False)
    if fine_tune:
        params = list(model.visual.parameters())
        for p in params:
            p.requires_grad_(True)
        lr = lr if lr is not None else 1e-4
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.2)
    else:
        prompts = torch.nn.Parameter((torch.randn(prompt_depth, g.grid ** 2, g.vision_width) * PROMPT_INIT_STD).to(device))
        model.visual.mask_embedding = prompts
        params = [prompts]
        lr = lr if lr is not None else 2e-2
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = warmup_cosine(opt, steps)
    model.train()
    log, start = [], time.time()
    for step in range(1, steps + 1):
        idx = rng.choice(len(pair_crop), size=min(batch, len(pair_crop)), replace=False)
        local, inverse = np.unique(phrase_index[idx].numpy(), return_inverse=True)
        names = compatible([distinct[k] for k in local]).to(device)
        pixels = torch.from_numpy(crops[pair_crop[idx]]).to(device)
        mask = torch.from_numpy(masks[pair_crop[idx]]).float()[:, None].to(device) if prompt_depth else None
        loss = phrase_loss(model.encode_image(pixels, mask), text[torch.from_numpy(local).to(device)],
                           torch.from_numpy(inverse).to(device), names)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            log.append({"step": step, "loss": float(loss), "seconds": round(time.time() - start, 1)})
            print(json.dumps(log[-1]), flush=True)
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, out / save)
    result = {"init": init, "mined": mined, "fineTune": fine_tune, "promptDepth": prompt_depth, "steps": steps, "batch": batch,
              "lr": lr, "seed": seed, "pairs": len(pair_crop), "phrases": len(distinct),
              "seconds": round(time.time() - start, 1), "log": log}
    (out / f"{Path(save).stem}_log.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the recipe folder (mined.npz, the CLIP to start from)")
    ap.add_argument("--init", required=True, help="state dict in OUT to start from")
    ap.add_argument("--save", required=True, help="state dict in OUT to write")
    ap.add_argument("--fine-tune", action="store_true", help="fine-tune the image encoder")
    ap.add_argument("--prompt-depth", type=int, default=0, help="train only mask prompts of this depth")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mined", default="mined", help="the pairs to train on: OUT/<MINED>.{npz,json}")
    args = ap.parse_args()
    adapt(args.out, args.init, args.save, fine_tune=args.fine_tune, prompt_depth=args.prompt_depth, steps=args.steps,
          batch=args.batch, lr=args.lr, seed=args.seed, mined=args.mined)


if __name__ == "__main__":
    run(main)
