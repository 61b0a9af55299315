"""The synthetic world rendered once per split into arrays the training stages read (scenes are
deterministic, so the cache is only a speed-up: delete it and it is remade identically), and test
splits written as `ovseg eval` reads them.

  ../.venv/bin/python -m ovseg_tools.recipe.world_data OUT --seed 7   (from tools/)

writes the test split of another seed (the recipe's is 0): 300 new scenes of the same distribution,
held-out compositions and phrasings included, for measuring a model on scenes no recipe run drew.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..cli import run
from . import world
from .world import CLASSES, SEEN_CLASSES, object_scene, scene

# A change to the world's code makes a new cache entry.
WORLD_VERSION = hashlib.sha256(Path(world.__file__).read_bytes()).hexdigest()[:8]


@dataclass
class WorldSplit:
    images: np.ndarray  # [N, S, S, 3] uint8
    labels: np.ndarray  # [N, S, S] uint8 (IGNORE for distractors)
    captions: list[list[str]]
    # Per scene, its instances: class name, colour (things), and the mask as packed bits.
    instances: list[list[dict]]

    def __len__(self) -> int:
        return len(self.images)

    def head(self, n: int) -> "WorldSplit":
        """The first n scenes."""
        return WorldSplit(self.images[:n], self.labels[:n], self.captions[:n], self.instances[:n])

    def instance_mask(self, i: int, k: int) -> np.ndarray:
        size = self.images.shape[1]
        bits = np.frombuffer(bytes.fromhex(self.instances[i][k]["mask"]), np.uint8)
        return np.unpackbits(bits)[: size * size].reshape(size, size).astype(bool)


def render(seed: int, split: str, count: int) -> WorldSplit:
    scenes = [object_scene(seed, split, i) if split.startswith("objects") else scene(seed, split, i) for i in range(count)]
    return WorldSplit(
        images=np.stack([s.image for s in scenes]),
        labels=np.stack([s.labels for s in scenes]),
        captions=[s.captions for s in scenes],
        instances=[[{"name": t.name, "color": t.color, "mask": np.packbits(t.mask).tobytes().hex()} for t in s.instances]
                   for s in scenes],
    )


def load_or_render(cache: Path, seed: int, split: str, count: int) -> WorldSplit:
    """`cache/<split>-<seed>-<count>-<world.py hash>.npz` (+ .json), rendered first if missing."""
    stem = cache / f"{split}-{seed}-{count}-{WORLD_VERSION}"
    if not stem.with_suffix(".npz").exists():
        data = render(seed, split, count)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(stem.with_suffix(".npz"), images=data.images, labels=data.labels)
        stem.with_suffix(".json").write_text(json.dumps({"captions": data.captions, "instances": data.instances}))
        return data
    arrays = np.load(stem.with_suffix(".npz"))
    meta = json.loads(stem.with_suffix(".json").read_text())
    return WorldSplit(arrays["images"], arrays["labels"], meta["captions"], meta["instances"])


def write_test_split(data: WorldSplit, folder: Path) -> None:
    """images/NNNN.png, labels/NNNN.png (class index; distractors IGNORE = 255, `ovseg eval`'s default
    ignore index), classes.txt: the layout `ovseg eval` reads; seen-classes.txt: the generator's
    training classes (the evaluation reports seen and unseen classes apart)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(len(data)):
        Image.fromarray(data.images[i]).save(folder / "images" / f"{i:04d}.png")
        Image.fromarray(data.labels[i]).save(folder / "labels" / f"{i:04d}.png")
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (folder / "seen-classes.txt").write_text("\n".join(SEEN_CLASSES) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--scenes", type=int, default=300)
    args = ap.parse_args()
    write_test_split(render(args.seed, "test", args.scenes), args.out)
    print(f"wrote {args.scenes} test scenes of seed {args.seed} to {args.out}")


if __name__ == "__main__":
    run(main)
