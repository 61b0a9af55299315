"""The whole recipe, from nothing to the shipped default model, stage by stage with fixed seeds
(docs/recipe.md). Each stage writes its output into OUT and is skipped when that output exists, so
a run resumes where it stopped; delete a stage's output to redo it and the stages after it.

  ../.venv/bin/python -m ovseg_tools.recipe --out ../build/recipe [--scale full|smoke] [--ship ../models/world-ovseg]   (from tools/)

Stages: world (scenes, object-centric photos, BPE vocabulary, the test split as PNGs), clip
(stage 1), generator (stage 2), mine (stage 3, in rounds: mine-1 and fine-tune-1, mine-2 ... each
mining with the CLIP fine-tuned on the previous round's pairs; the last, mine, writes mined.*),
adapt (stage 4: fine-tune, prompt tuning, the ablation variants and the control run), gap
(object-centric vs masked-crop accuracy), lambda (the ensemble weight, chosen on the val split),
export (every variant as a model directory under OUT/models; --ship also writes the default
model). OUT/recipe_log.json holds each stage's wall time on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..clip_reference import geometry_from_state_dict, load_clip
from ..export.model_dir import export_model
from . import adapt_clip, choose_lambda, gap, mine, train_clip, train_generator
from .bpe import learn_merges, load_tokenizer, write_vocab
from .world import CLASSES, SIZE, scene
from .world_data import WorldSplit, load_or_render, write_test_split

VOCAB = "world_vocab.txt.gz"
HEADS = 4
PROCESSING = (SIZE, 4 * SIZE)  # segment() at the scale the scenes are drawn and the generator trained


@dataclass
class Scale:
    train_scenes: int
    test_scenes: int
    clip_steps: int
    generator_steps: int
    mine_scenes: int
    fine_tune_steps: int
    prompt_steps: int
    extra_prompt_depths: tuple[int, ...]
    generator_scenes: int = 4000
    object_scenes: int = 8000
    objects_fraction: float = 0.5
    agnostic_fraction: float = 0.3  # generator images recoloured, trained class-agnostic
    mine_rule: str = mine.RECIPE_RULE  # one of mine.MATCH_RULES
    mine_rounds: int = 3  # round r > 1 mines with round r - 1's fine-tuned CLIP (docs/recipe.md)
    fine_tune_lr: float = 3e-4  # chosen on the val split against 1e-4 (docs/recipe.md)
    val_scenes: int = 256
    batch: int = 128
    generator_batch: int = 16


SCALES = {
    "full": Scale(train_scenes=8000, test_scenes=300, clip_steps=1500, generator_steps=1500, mine_scenes=4000,
                  fine_tune_steps=600, prompt_steps=400, extra_prompt_depths=(1, 4)),  # 4 = every block of this ViT
    # Seconds: every stage runs, nothing is learned (pytest runs this).
    "smoke": Scale(train_scenes=24, test_scenes=4, clip_steps=2, generator_steps=2, mine_scenes=8, mine_rounds=2,
                   fine_tune_steps=2, prompt_steps=2, extra_prompt_depths=(), generator_scenes=16, object_scenes=16, val_scenes=8, batch=8, generator_batch=4),
}

SHIPPED = "fine-tuned-prompt-tuned"
SHIPPED_STATE = "clip_ft_pt3.pt"


EXAMPLE_SCENE = 10_000 + 11  # a test-split scene beyond the evaluated ones: seen and unseen classes


def write_example(folder: Path, seed: int) -> None:
    """The README's example: world-scene.png (a test-split scene drawn at 2x, so it is resized as
    photos are), world-scene.truth.png (its labels, same size) and world-classes.txt."""
    example = scene(seed, "test", EXAMPLE_SCENE)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(example.image.repeat(2, 0).repeat(2, 1)).save(folder / "world-scene.png")
    Image.fromarray(example.labels.repeat(2, 0).repeat(2, 1)).save(folder / "world-scene.truth.png")
    (folder / "world-classes.txt").write_text("\n".join(CLASSES) + "\n")


class Recipe:
    def __init__(self, out: Path, scale: Scale, seed: int, device: str = "cpu", stop_after: str | None = None):
        self.out, self.scale, self.seed, self.device, self.stop_after = out, scale, seed, device, stop_after
        self.log_path = out / "recipe_log.json"
        self.log = json.loads(self.log_path.read_text()) if self.log_path.exists() else {"stages": {}}
        self.log["scale"] = asdict(scale)
        self.log["seed"] = seed
        self.log["device"] = device

    def stage(self, name: str, done: Path, run) -> None:
        if self.stopped:
            return
        self.stopped = name == self.stop_after
        if done.exists():
            print(f"[{name}] done before: {done.name}", flush=True)
            return
        print(f"[{name}] ...", flush=True)
        start = time.time()
        run()
        self.log["stages"][name] = {"seconds": round(time.time() - start, 1), "threads": torch.get_num_threads(),
                                    "device": self.device}
        self.log_path.write_text(json.dumps(self.log, indent=1))
        print(f"[{name}] {self.log['stages'][name]['seconds']} s", flush=True)

    @cached_property
    def train_split(self) -> WorldSplit:
        return load_or_render(self.out / "world", self.seed, "train", self.scale.train_scenes)

    @cached_property
    def generator_split(self) -> WorldSplit:
        return load_or_render(self.out / "world", self.seed, "generator", self.scale.generator_scenes)

    @cached_property
    def objects_split(self) -> WorldSplit:
        return load_or_render(self.out / "world", self.seed, "objects", self.scale.object_scenes)

    @cached_property
    def objects_val_split(self) -> WorldSplit:
        return load_or_render(self.out / "world", self.seed, "objects-val", self.scale.val_scenes)

    def pretraining(self) -> dict:
        """Stage 1's data besides the scenes (and the control run's: more of the same training)."""
        return dict(objects=self.objects_split, objects_fraction=self.scale.objects_fraction,
                    objects_val=self.objects_val_split)

    def world(self) -> None:
        train = self.train_split
        # Rendered (and cached on disk) now, as part of this stage.
        self.val_split, self.generator_split, self.objects_split, self.objects_val_split
        write_vocab(self.out / VOCAB, learn_merges([c for caps in train.captions[:1000] for c in caps], 1000))
        write_test_split(load_or_render(self.out / "world", self.seed, "test", self.scale.test_scenes),
                         self.out / "test")

    @cached_property
    def val_split(self) -> WorldSplit:
        return load_or_render(self.out / "world", self.seed, "val", self.scale.val_scenes)

    def merges(self) -> int:
        return sum(1 for _ in load_tokenizer(self.out / VOCAB).bpe_ranks)

    def run(self, ship: Path | None, example: Path | None = None) -> None:
        s, out = self.scale, self.out
        out.mkdir(parents=True, exist_ok=True)
        self.stopped = False
        self.stage("world", out / "test" / "classes.txt", self.world)
        self.stage("clip", out / "clip.pt", lambda: train_clip.train(
            self.train_split, self.val_split, out / VOCAB, self.merges(), out, steps=s.clip_steps, batch=s.batch,
            seed=self.seed, device=self.device, **self.pretraining()))
        self.stage("generator", out / "generator.pt", lambda: train_generator.train(
            self.generator_split, out / "clip.pt", out / VOCAB, out, steps=s.generator_steps, batch=s.generator_batch,
            val_data=self.val_split, seed=self.seed, device=self.device, agnostic_fraction=s.agnostic_fraction))

        def miner(r: int) -> str:  # the CLIP that pairs round r
            return "clip.pt" if r == 1 else f"clip_ft_r{r - 1}.pt"

        def adapt(save: str, **kw) -> dict:
            return adapt_clip.adapt(out, save=save, batch=s.batch, seed=self.seed, device=self.device, **kw)

        fine_tune = dict(init="clip.pt", fine_tune=True, prompt_depth=0, steps=s.fine_tune_steps, lr=s.fine_tune_lr)
        for r in range(1, s.mine_rounds):  # earlier rounds: only their pairs' labels go on, not weights
            self.stage(f"mine-{r}", out / f"mined_r{r}.json", lambda r=r: self.mine(miner(r), f"mined_r{r}"))
            self.stage(f"fine-tune-{r}", out / f"clip_ft_r{r}.pt",
                       lambda r=r: adapt(f"clip_ft_r{r}.pt", mined=f"mined_r{r}", **fine_tune))
        self.stage("mine", out / "mined.json", lambda: self.mine(miner(s.mine_rounds), "mined"))
        stage4 = [
            ("fine-tune", "clip_ft.pt", fine_tune),
            ("prompt-tune", "clip_ft_pt3.pt", dict(init="clip_ft.pt", fine_tune=False, prompt_depth=3,
                                                   steps=s.prompt_steps)),
            ("prompt-tune-only", "clip_pt3.pt", dict(init="clip.pt", fine_tune=False, prompt_depth=3,
                                                     steps=s.prompt_steps)),
            *[(f"prompt-tune-only-depth-{d}", f"clip_pt{d}.pt", dict(init="clip.pt", fine_tune=False, prompt_depth=d,
                                                                    steps=s.prompt_steps))
              for d in s.extra_prompt_depths],
        ]
        for name, save, kw in stage4:
            self.stage(name, out / save, lambda save=save, kw=kw: adapt(save, **kw))
        self.stage("control", out / "clip_control.pt", lambda: train_clip.train(
            self.train_split, self.val_split, out / VOCAB, self.merges(), out, steps=s.fine_tune_steps,
            batch=s.batch, seed=self.seed + 1, init=out / "clip.pt", save="clip_control.pt", device=self.device,
            **self.pretraining()))
        self.stage("gap", out / "gap.json", lambda: gap.write(out, self.val_split, self.objects_val_split))
        self.stage("lambda", out / "lambda.json", lambda: choose_lambda.choose(out, SHIPPED_STATE, self.val_split,
                                                                              PROCESSING))
        self.stage("export", out / "models" / "done", self.export_all)
        if ship and not self.stopped:
            self.export(SHIPPED, SHIPPED_STATE, ship, name=ship.name)
        if example and not self.stopped:
            write_example(example, self.seed)

    def mine(self, miner: str, stem: str) -> None:
        sd = torch.load(self.out / miner, map_location="cpu")
        g = geometry_from_state_dict(sd, HEADS, HEADS)
        generator, _ = mine.load_generator(self.out / "generator.pt")
        result = mine.mine(self.train_split.head(self.scale.mine_scenes), load_clip(sd, g).eval(),
                           load_tokenizer(self.out / VOCAB), generator, image_size=g.image_size,
                           rule=self.scale.mine_rule)
        mine.save(result, self.out, stem, clip=miner)

    def export(self, variant: str, state: str, folder: Path, name: str) -> None:
        sd = torch.load(self.out / state, map_location="cpu")
        generator, no_object = mine.load_generator(self.out / "generator.pt")
        if folder.exists():
            shutil.rmtree(folder)
        export_model(sd, geometry_from_state_dict(sd, HEADS, HEADS), folder, name=name, vocab=self.out / VOCAB,
                     merges=self.merges(), no_object=no_object, generator=generator,
                     processing=PROCESSING, templates=train_clip.WORLD_TEMPLATES,
                     defaults={"semantic": {"lambda": json.loads((self.out / "lambda.json").read_text())["lambda"]}},
                     source={"recipe": variant, "seed": self.seed, "scale": asdict(self.scale)})

    def export_all(self) -> None:
        states = {"base": "clip.pt", "fine-tuned": "clip_ft.pt", "prompt-tuned": "clip_pt3.pt",
                  "fine-tuned-prompt-tuned": "clip_ft_pt3.pt", "control": "clip_control.pt",
                  **{f"prompt-tuned-depth-{d}": f"clip_pt{d}.pt" for d in self.scale.extra_prompt_depths}}
        for variant, state in states.items():
            self.export(variant, state, self.out / "models" / variant, name=f"world-{variant}")
        (self.out / "models" / "done").write_text(json.dumps(states, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m ovseg_tools.recipe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--ship", type=Path, help="also write the default model (fine-tuned, then prompt-tuned) here")
    ap.add_argument("--example", type=Path, help="also write the README's example scene into this folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stop-after", metavar="STAGE", help="stop after this stage (e.g. world, clip, mine)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch CPU threads (default: every CPU)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="where training runs (auto: CUDA when PyTorch sees a GPU; mining always runs on the CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    Recipe(args.out, SCALES[args.scale], args.seed, device, args.stop_after).run(args.ship, args.example)

