"""A seeded synthetic world for training and measuring the mask-adapted CLIP recipe (docs/recipe.md).

Each scene: "stuff" regions (a sky or a wall above a horizon, one or two grounds below) and a few
"thing" objects (shape x colour x texture x size, possibly overlapping, some small, some
camouflaged on a ground of their own colour, some distractors outside the vocabulary), with
per-pixel semantic labels, instance masks and several captions of varied phrasing. Captions
mention several objects each and may leave objects out, so no caption ties one colour to one
shape by itself and region/noun matching is a real search, as with natural captions.

Classes are the shapes and the stuff (colours, textures and sizes are attributes that captions
use). The generator sees a fixed list of SEEN_CLASSES; the test vocabulary is every class. The
test split has colour-shape compositions (HELD_OUT_PAIRS) and caption templates that the train
and val splits never use. Distractor pixels are labeled IGNORE.

Everything is a pure function of (seed, split, index): `scene(seed, split, index)`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

SIZE = 128
IGNORE = 255

SHAPES = ["circle", "square", "triangle", "star", "ring", "cross", "heart", "diamond"]
SKIES = ["sky", "wall"]
GROUNDS = ["grass", "water", "sand", "road", "snow"]
STUFF = SKIES + GROUNDS
CLASSES = SHAPES + STUFF
SEEN_CLASSES = ["circle", "square", "triangle", "star", "ring", "sky", "grass", "water", "sand"]
DISTRACTOR_SHAPES = ["crescent", "arrow"]  # drawn, never named, labeled IGNORE

COLORS = {
    "red": (200, 40, 40), "green": (50, 160, 60), "blue": (40, 70, 200), "yellow": (230, 210, 50),
    "purple": (130, 50, 170), "orange": (240, 130, 30), "white": (240, 240, 240), "black": (25, 25, 25),
}
TEXTURES = ["plain", "striped", "dotted"]
SIZES = ["small", "large"]
# Colour of each stuff class (a thing of the nearest colour on it is camouflaged).
STUFF_COLORS = {
    "sky": (120, 170, 235), "wall": (150, 70, 55), "grass": (60, 150, 60), "water": (40, 90, 170),
    "sand": (215, 190, 130), "road": (90, 90, 95), "snow": (235, 235, 240),
}
CAMOUFLAGE = {"grass": "green", "water": "blue", "snow": "white", "road": "black", "wall": "red", "sand": "yellow"}

# Colour-shape pairs that only the test split draws (open-vocabulary compositions).
HELD_OUT_PAIRS = {("purple", "star"), ("orange", "circle"), ("white", "triangle"), ("yellow", "heart"),
                  ("blue", "diamond"), ("red", "ring"), ("green", "cross"), ("black", "square")}

TRAIN_TEMPLATES = [
    "{objects} {on} the {ground}.",
    "a picture of {objects} {on} the {ground} under the {top}.",
    "{objects}, with the {top} behind.",
    "there is {objects} {on} the {ground}.",
    "the {ground} with {objects}.",
    "{objects} in front of the {top}.",
]
TEST_TEMPLATES = [
    "we can see {objects} resting {on} the {ground}.",
    "a scene showing {objects} and the {top}.",
]
# Captions say each attribute of an object with this probability: whole-scene training then has to
# tell shapes apart (with every attribute said, colour and texture alone identify a scene).
ATTRIBUTE_SAID = 0.5
PREPOSITIONS = ["on", "over", "near", "above"]
SPLITS = {"train": 0, "val": 1, "test": 2, "generator": 3, "objects": 4, "objects-val": 5}
# Object-centric photos (the "objects" split): as web image-caption data has product shots and
# close-ups besides cluttered scenes, one or two large things fill the picture and the caption
# names each of them. Only stage 1 sees them; every word here is one the scene captions use.
OBJECT_TEMPLATES = ["{objects}.", "a picture of {objects}.", "there is {objects}.", "{objects} {on} the {ground}."]


@dataclass
class Instance:
    name: str  # class name, or a distractor shape
    mask: np.ndarray  # [SIZE, SIZE] bool, the visible pixels
    color: str | None = None
    texture: str | None = None
    size: str | None = None
    camouflaged: bool = False

    def phrase(self, rng: np.random.Generator | None = None) -> str:
        """How a caption names it: "a small striped red star", "the grass". With `rng`, each attribute
        is said with probability ATTRIBUTE_SAID, as people leave some out ("a star", "a red star")."""
        if self.name in STUFF:
            return f"the {self.name}"
        words = [w for w in (self.size, None if self.texture == "plain" else self.texture, self.color)
                 if w and (rng is None or rng.random() < ATTRIBUTE_SAID)]
        article = "an" if (words[0] if words else self.name)[0] in "aeiou" else "a"
        return " ".join([article, *words, self.name])


@dataclass
class Scene:
    image: np.ndarray  # [SIZE, SIZE, 3] uint8
    labels: np.ndarray  # [SIZE, SIZE] uint8 class index, IGNORE for distractors
    instances: list[Instance]
    captions: list[str]
    split: str
    index: int
    held_out_pairs: list[tuple[str, str]] = field(default_factory=list)


def _noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1] at SIZE x SIZE: a random cells x cells grid, bilinearly upsampled."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1))
    t = np.linspace(0, cells, SIZE)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]


def _stuff_texture(name: str, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    base = np.array(STUFF_COLORS[name], np.float32)
    if name == "sky":
        shade = 1.0 + 0.25 * (yy / SIZE - 0.5) + 0.15 * np.maximum(_noise(rng, 4), 0)
        out = base * shade[..., None] + 60 * np.maximum(_noise(rng, 6), 0.3)[..., None] - 18
    elif name == "wall":  # bricks
        row = (yy // 8).astype(int)
        mortar = ((yy % 8) < 1) | (((xx + 8 * (row % 2)) % 16) < 1)
        out = np.where(mortar[..., None], np.float32(200), base * (1 + 0.1 * _noise(rng, 16))[..., None])
    elif name == "water":
        out = base * (1 + 0.2 * np.sin(yy / 2.5 + 2 * _noise(rng, 5)))[..., None]
    elif name == "grass":
        out = base * (1 + 0.25 * _noise(rng, 32) + 0.1 * np.sin(xx * 1.7))[..., None]
    elif name == "road":
        out = base * (1 + 0.08 * rng.normal(size=(SIZE, SIZE)))[..., None]
        out[(np.abs(yy % 24 - 12) < 1.5) & (xx % 20 < 10)] = 220
    else:  # sand, snow: speckle
        out = base * (1 + 0.12 * rng.normal(size=(SIZE, SIZE)) + 0.1 * _noise(rng, 8))[..., None]
    return out


def _shape_mask(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    x, y = xx - cx, yy - cy
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y  # rotated coordinates
    d = np.hypot(x, y)
    theta = np.arctan2(v, u)
    if shape == "circle":
        return d <= r
    if shape == "square":
        return (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
    if shape == "triangle":
        k = [(np.cos(a) * u + np.sin(a) * v) for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3)]
        return (k[0] <= r / 2) & (k[1] <= r / 2) & (k[2] <= r / 2)
    if shape == "star":
        return d <= r * (0.55 + 0.45 * np.cos(5 * theta) ** 2)
    if shape == "ring":
        return (d <= r) & (d >= r * 0.55)
    if shape == "cross":
        return ((np.abs(u) <= r) & (np.abs(v) <= r * 0.3)) | ((np.abs(v) <= r) & (np.abs(u) <= r * 0.3))
    if shape == "heart":
        a, b = u / r, -v / r + 0.2
        return (a**2 + b**2 - 0.6) ** 3 - a**2 * b**3 * 0.9 <= 0
    if shape == "diamond":
        return np.abs(u) + np.abs(v) * 0.7 <= r
    if shape == "crescent":
        return (d <= r) & (np.hypot(u - r * 0.45, v) > r * 0.8)
    if shape == "arrow":
        return ((np.abs(v) <= r * 0.2) & (u >= -r) & (u <= r * 0.3)) | ((u > r * 0.3) & (np.abs(v) <= (r - u) * 1.0))
    raise ValueError(shape)


def _thing_pixels(color: str, texture: str, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    base = np.array(COLORS[color], np.float32)
    shade = np.full((SIZE, SIZE), 1.0, np.float32)
    if texture == "striped":
        a = rng.uniform(0, np.pi)
        shade = np.where(np.sin((np.cos(a) * xx + np.sin(a) * yy) / 1.6) > 0, 1.0, 0.55)
    elif texture == "dotted":
        shade = np.where(((xx % 6) - 3) ** 2 + ((yy % 6) - 3) ** 2 <= 2.5, 0.5, 1.0)
    dark = color == "black"
    out = base * shade[..., None] if not dark else base + (1 - shade[..., None]) * 120
    return out + rng.normal(0, 6, (SIZE, SIZE, 3))


def _pick_thing(rng: np.random.Generator, split: str, ground: str) -> tuple[str, str, str, str, bool]:
    shapes = _vocabulary(split, SHAPES)
    while True:
        shape = shapes[rng.integers(len(shapes))]
        camouflaged = rng.random() < 0.15 and ground in CAMOUFLAGE
        color = CAMOUFLAGE[ground] if camouflaged else list(COLORS)[rng.integers(len(COLORS))]
        held_out = (color, shape) in HELD_OUT_PAIRS
        # The test split favours its held-out compositions; train/val never draw them.
        if split != "test" and held_out:
            continue
        if split == "test" and not held_out and rng.random() < 0.6:
            continue
        return shape, color, TEXTURES[rng.integers(3)], SIZES[rng.integers(2)], camouflaged


def _caption(rng: np.random.Generator, split: str, things: list[Instance], top: str, grounds: list[str]) -> str:
    templates = TEST_TEMPLATES if split == "test" else TRAIN_TEMPLATES
    template = templates[rng.integers(len(templates))]
    # Two or more objects when the scene has them; sometimes one is left out.
    k = len(things) if len(things) <= 2 else int(rng.integers(2, len(things) + 1))
    chosen = [things[i] for i in sorted(rng.choice(len(things), size=k, replace=False))] if things else []
    phrases = [t.phrase(rng) for t in chosen]
    if not phrases:
        objects = "nothing"
    elif len(phrases) == 1:
        objects = phrases[0]
    else:
        objects = ", ".join(phrases[:-1]) + " and " + phrases[-1]
    ground = grounds[rng.integers(len(grounds))]
    text = template.format(objects=objects, on=PREPOSITIONS[rng.integers(len(PREPOSITIONS))], ground=ground, top=top)
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def _vocabulary(split: str, names: list[str]) -> list[str]:
    """The classes a split draws from: all of them, or for the generator's split the seen ones."""
    return [n for n in names if n in SEEN_CLASSES] if split == "generator" else names


def scene(seed: int, split: str, index: int) -> Scene:
    """Scene `index` of `split` for `seed`; the same arguments give the same scene. Splits: 'train',
    'val', 'test', and 'generator': the generator's training set, drawn from the seen classes only
    and with no distractors, so every pixel has a seen label (as COCO-Stuff-171 labels OVSeg's
    generator's training images)."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    labels = np.zeros((SIZE, SIZE), np.uint8)
    image = np.zeros((SIZE, SIZE, 3), np.float32)
    instances: list[Instance] = []

    # Stuff: a top region above a wavy horizon, one or two grounds below (split left/right).
    skies, ground_names = _vocabulary(split, SKIES), _vocabulary(split, GROUNDS)
    top = skies[rng.integers(len(skies))] if rng.random() < 0.35 else "sky"
    yy, xx = np.mgrid[:SIZE, :SIZE]
    horizon = (rng.uniform(0.3, 0.6) * SIZE + 4 * np.sin(xx / rng.uniform(6, 14)))
    top_mask = yy < horizon
    grounds = list(rng.choice(ground_names, size=1 + int(rng.random() < 0.4), replace=False))
    ground_masks = [~top_mask]
    if len(grounds) == 2:
        split_x = rng.uniform(0.3, 0.7) * SIZE + 3 * np.sin(yy / 7)
        ground_masks = [~top_mask & (xx < split_x), ~top_mask & (xx >= split_x)]
    for name, mask in [(top, top_mask), *zip(grounds, ground_masks)]:
        image[mask] = _stuff_texture(name, rng)[mask]
        labels[mask] = CLASSES.index(name)
        instances.append(Instance(name, mask.copy()))

    # Things, back to front (later ones occlude earlier ones), plus distractors.
    things: list[Instance] = []
    held_out: list[tuple[str, str]] = []
    for _ in range(int(rng.integers(2, 6))):
        ground = grounds[0]
        shape, color, texture, size, camouflaged = _pick_thing(rng, split, ground)
        r = rng.uniform(6, 11) if size == "small" else rng.uniform(14, 24)
        cx, cy = rng.uniform(r, SIZE - r), rng.uniform(max(r, horizon.mean() - r / 2), SIZE - r / 2)
        if camouflaged:  # on its ground
            cy = rng.uniform(horizon.max() + r * 0.5, SIZE - r * 0.5) if horizon.max() + r < SIZE else cy
        mask = _shape_mask(shape, cx, cy, r, rng.uniform(0, 2 * np.pi))
        if mask.sum() < 12:
            continue
        pixels = _thing_pixels(color, texture, rng)
        image[mask] = pixels[mask]
        labels[mask] = CLASSES.index(shape)
        for other in instances + things:
            other.mask &= ~mask
        thing = Instance(shape, mask, color, texture, size, camouflaged)
        things.append(thing)
        if (color, shape) in HELD_OUT_PAIRS:
            held_out.append((color, shape))
    for _ in range(0 if split == "generator" else int(rng.random() < 0.4) + int(rng.random() < 0.15)):
        shape = DISTRACTOR_SHAPES[rng.integers(len(DISTRACTOR_SHAPES))]
        r = rng.uniform(6, 14)
        mask = _shape_mask(shape, rng.uniform(r, SIZE - r), rng.uniform(r, SIZE - r), r, rng.uniform(0, 2 * np.pi))
        image[mask] = _thing_pixels(list(COLORS)[rng.integers(len(COLORS))], "plain", rng)[mask]
        labels[mask] = IGNORE
        for other in instances + things:
            other.mask &= ~mask
        instances.append(Instance(shape, mask))
    visible = [t for t in things if t.mask.any()]
    instances.extend(visible)
    captions = [_caption(rng, split, visible, top, grounds) for _ in range(5)]
    return Scene(np.clip(image, 0, 255).astype(np.uint8), labels, instances, captions, split, index, held_out)


def object_scene(seed: int, split: str, index: int) -> Scene:
    """Object-centric photo `index` of the "objects" (or "objects-val") split: one large thing (or two
    side by side) on a stuff background or a plain backdrop, every thing named in every caption
    (attributes said with ATTRIBUTE_SAID, so shape is the word a caption always has). Photos come in
    twins, 2k and 2k + 1: the same picture and captions but for the shapes, so that a batch holding
    both can only be matched by shape (colour, texture and ground are what whole scenes are matched
    by first). Held-out compositions are never drawn."""
    rng = np.random.default_rng([seed, SPLITS[split], index // 2])
    twin = np.random.default_rng([seed, SPLITS[split], index // 2, 1]) if index % 2 else None
    backdrop = STUFF[rng.integers(len(STUFF))] if rng.random() < 0.6 else None
    if backdrop:
        image = _stuff_texture(backdrop, rng)
        labels = np.full((SIZE, SIZE), CLASSES.index(backdrop), np.uint8)
    else:
        tone = rng.uniform(40, 230, 3)
        image = tone + 40 * _noise(rng, 3)[..., None]
        labels = np.full((SIZE, SIZE), IGNORE, np.uint8)
    count = 1 + int(rng.random() < 0.3)
    background = np.ones((SIZE, SIZE), bool)
    things: list[Instance] = []
    for k in range(count):
        shape, color, texture, size, _ = _pick_thing(rng, "train", backdrop or "sky")
        while twin is not None:  # another shape, same everything else
            other = SHAPES[(SHAPES.index(shape) + 1 + twin.integers(len(SHAPES) - 1)) % len(SHAPES)]
            if (color, other) not in HELD_OUT_PAIRS:
                shape = other
                break
        r = rng.uniform(36, 52) if count == 1 else rng.uniform(22, 30)
        cx = SIZE / 2 if count == 1 else SIZE * (0.27 + 0.46 * k)
        cx, cy = cx + rng.uniform(-8, 8), SIZE / 2 + rng.uniform(-8, 8)
        mask = _shape_mask(shape, cx, cy, r, rng.uniform(0, 2 * np.pi))
        image[mask] = _thing_pixels(color, texture, rng)[mask]
        labels[mask] = CLASSES.index(shape)
        background &= ~mask
        for other in things:
            other.mask &= ~mask
        things.append(Instance(shape, mask, color, texture, size="large"))
    instances = ([Instance(backdrop, background)] if backdrop else []) + things
    captions = []
    for _ in range(5):
        template = OBJECT_TEMPLATES[rng.integers(len(OBJECT_TEMPLATES) - (backdrop is None))]
        phrases = [t.phrase(rng) for t in things]
        objects = phrases[0] if count == 1 else f"{phrases[0]} and {phrases[1]}"
        text = template.format(objects=objects, on=PREPOSITIONS[rng.integers(len(PREPOSITIONS))], ground=backdrop)
        captions.append(text[0].upper() + text[1:] if rng.random() < 0.5 else text)
    return Scene(np.clip(image, 0, 255).astype(np.uint8), labels, instances, captions, split, index)


# Words that never start or end a noun phrase in these captions.
_FUNCTION_WORDS = {"a", "an", "the", "there", "is", "are", "with", "on", "over", "near", "above", "under",
                   "in", "front", "of", "behind", "and", "picture", "we", "can", "see", "resting", "scene",
                   "showing", "nothing"}


def noun_phrases(caption: str) -> list[str]:
    """Noun phrases of a caption, by chunking at function words and punctuation (the captions'
    grammar is simple; OVSeg used spaCy on COCO captions): "a small red star and the grass" ->
    ["small red star", "grass"]. Attributes stay with their noun; the head noun is the last word."""
    words = re.findall(r"[a-z]+|[,.]", caption.lower())
    phrases: list[str] = []
    current: list[str] = []
    for w in words + ["."]:
        if w in _FUNCTION_WORDS or w in {",", "."}:
            if current:
                phrases.append(" ".join(current))
            current = []
        else:
            current.append(w)
    return phrases
