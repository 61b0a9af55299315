"""The recipe's synthetic world (docs/recipe.md): determinism, labels vs instances, the
open-vocabulary splits, captions and noun-phrase extraction."""
import re

import numpy as np

from ovseg_tools.recipe.world import (CLASSES, DISTRACTOR_SHAPES, HELD_OUT_PAIRS, IGNORE, SEEN_CLASSES, SHAPES, SIZE,
                                      STUFF, TEST_TEMPLATES, TRAIN_TEMPLATES, noun_phrases,
                                      object_scene, scene)


def test_scenes_are_pure_functions_of_seed_split_index():
    a, b = scene(7, "train", 3), scene(7, "train", 3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels) and a.captions == b.captions
    assert not np.array_equal(a.image, scene(7, "train", 4).image)
    assert not np.array_equal(a.image, scene(8, "train", 3).image)
    assert not np.array_equal(a.image, scene(7, "val", 3).image)


def test_labels_agree_with_the_instance_masks():
    for i in range(20):
        s = scene(0, "train", i)
        assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
        cover = np.zeros((SIZE, SIZE), int)
        for inst in s.instances:
            cover += inst.mask
            want = IGNORE if inst.name in DISTRACTOR_SHAPES else CLASSES.index(inst.name)
            assert (s.labels[inst.mask] == want).all(), (i, inst.name)
        assert (cover == 1).all(), f"scene {i}: instance masks must tile the image"


def test_held_out_compositions_only_in_test():
    def pairs(split, n):
        return {(t.color, t.name) for i in range(n) for t in scene(0, split, i).instances if t.color}
    assert not pairs("train", 150) & HELD_OUT_PAIRS
    assert not pairs("val", 50) & HELD_OUT_PAIRS
    assert len(pairs("test", 80) & HELD_OUT_PAIRS) >= 4


def test_captions_phrasing_and_coverage():
    starts = lambda templates: {t.split("{")[0] for t in templates if not t.startswith("{")}  # noqa: E731
    train_caps = [c.lower() for i in range(60) for c in scene(0, "train", i).captions]
    test_caps = [c.lower() for i in range(30) for c in scene(0, "test", i).captions]
    assert not any(c.startswith(p) for c in train_caps for p in starts(TEST_TEMPLATES))
    assert any(c.startswith(p) for c in test_caps for p in starts(TEST_TEMPLATES))
    assert not any(c.startswith(p) for c in test_caps for p in starts(TRAIN_TEMPLATES))
    for i in range(40):
        s = scene(0, "train", i)
        things = [t for t in s.instances if t.color]
        for caption in s.captions:
            named = [w for w in re.findall(r"[a-z]+", caption.lower()) if w in SHAPES]
            assert len(named) >= min(2, len(things)), caption
    # Some captions leave an object out; some name an object with only some of its attributes.
    assert any({t.name for t in scene(0, "train", i).instances if t.color} - set(re.findall(r"[a-z]+", c.lower()))
               for i in range(40) for c in scene(0, "train", i).captions)
    assert any(t.phrase() not in c.lower() and f"{t.name}" in c.lower() for i in range(10)
               for t in scene(0, "train", i).instances if t.color for c in scene(0, "train", i).captions)


def test_vocabulary_splits():
    assert set(SEEN_CLASSES) < set(CLASSES) and set(STUFF) < set(CLASSES)
    assert len(set(CLASSES)) == len(CLASSES) < IGNORE


def test_noun_phrases():
    assert noun_phrases("A small striped red star and the grass.") == ["small striped red star", "grass"]
    assert noun_phrases("we can see a large blue ring, a cross and a heart resting over the water.") == [
        "large blue ring", "cross", "heart", "water"]
    assert noun_phrases("a picture of an orange circle near the sand under the wall.") == [
        "orange circle", "sand", "wall"]
    assert noun_phrases("there is nothing on the road.") == ["road"]


def test_generator_split_has_only_seen_classes_and_every_pixel_labeled():
    names = set()
    for i in range(40):
        s = scene(0, "generator", i)
        names |= {t.name for t in s.instances}
        assert (s.labels != IGNORE).all()
    assert names <= set(SEEN_CLASSES) and {"sky", "circle"} <= names


def test_object_centric_photos_name_every_thing_and_keep_the_held_out_compositions_out():
    shapes_seen = set()
    for i in range(40):
        s = object_scene(0, "objects", i)
        assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
        things = [t for t in s.instances if t.color]
        assert 1 <= len(things) <= 2 and all((t.color, t.name) not in HELD_OUT_PAIRS for t in things)
        assert min(t.mask.mean() for t in things) > 0.02, "the things are large"
        for inst in s.instances:
            assert (s.labels[inst.mask] == CLASSES.index(inst.name)).all()
        for caption in s.captions:
            words = set(re.findall(r"[a-z]+", caption.lower()))
            assert {t.name for t in things} <= words and not words & {"we", "see", "resting", "scene", "showing"}
        shapes_seen |= {t.name for t in things}
    assert shapes_seen == set(SHAPES)
    a, b = object_scene(0, "objects", 3), object_scene(0, "objects-val", 3)
    assert np.array_equal(a.image, object_scene(0, "objects", 3).image) and not np.array_equal(a.image, b.image)


def test_a_test_split_of_another_seed_is_written_as_ovseg_eval_reads_it(tmp_path, monkeypatch):
    import sys

    from PIL import Image

    from ovseg_tools.recipe.world_data import main

    monkeypatch.setattr(sys, "argv", ["world_data", str(tmp_path), "--seed", "7", "--scenes", "3"])
    main()
    assert (tmp_path / "classes.txt").read_text().split("\n")[:-1] == CLASSES
    assert (tmp_path / "seen-classes.txt").read_text().split("\n")[:-1] == SEEN_CLASSES
    for i in range(3):
        want = scene(7, "test", i)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / f"{i:04d}.png")), want.image)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "labels" / f"{i:04d}.png")), want.labels)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["0000.png", "0001.png", "0002.png"]
