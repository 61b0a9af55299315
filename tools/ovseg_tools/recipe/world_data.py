"""The synthetic world rendered once per split into arrays the training stages read (scenes are
deterministic, so the cache is only a speed-up: delete it and it is remade identically)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import world
from .world import object_scene, scene

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
