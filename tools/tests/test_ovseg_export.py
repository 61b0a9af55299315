"""OVSeg's released checkpoints through the exporter: the generator's geometry, its configs, and
strict key accounting (an unknown, missing or mis-shaped key is an error naming it; nothing is left
half-written). The export itself and its parity run in the maskformer fixture set."""
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ovseg_tools.clip_reference import TINY
from ovseg_tools.export.maskformer import R101C, R101C_CI, SWIN_B, SWIN_B_CI, MaskFormerGenerator
from ovseg_tools.export.model_dir import main as export_main
from ovseg_tools.export.ovseg_checkpoint import CONFIGS, generator_spec, random_checkpoint, read_config


LAYOUT = json.loads((Path(__file__).parent / "data" / "ovseg_generator_layout.json").read_text())


@pytest.mark.parametrize("name,spec,ci", [("swinb", SWIN_B, SWIN_B_CI), ("r101c", R101C, R101C_CI)])
def test_released_layout(name, spec, ci):
    """Every key, shape and dtype of the released generators, as OVSeg's own code lists them; the
    CI-sized variants have a subset of those keys (fewer blocks), with the same shapes."""
    released = LAYOUT["variants"][name]
    model = MaskFormerGenerator(spec)
    sd = model.state_dict()
    assert {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in sd.items()} == released["keys"]
    assert sum(p.numel() for p in model.parameters()) == released["parameters"]
    assert generator_spec(sd, None) == spec  # the geometry is read back from the shapes
    ci_sd = MaskFormerGenerator(ci).state_dict()
    assert all(released["keys"][k][0] == list(v.shape) for k, v in ci_sd.items())


@pytest.mark.parametrize("spec", [SWIN_B_CI, R101C_CI], ids=["swin", "resnet"])
def test_ci_geometry_outputs(spec):
    model = MaskFormerGenerator(spec).eval()
    with torch.no_grad():
        for h, w in [(64, 96), (96, 160)]:
            logits, embeddings = model(torch.zeros(1, 3, h, w))
            assert logits.shape == (1, 100, h // 4, w // 4) and embeddings.shape == (1, 100, spec.head.text_dim)


YAML = """MODEL:
  META_ARCHITECTURE: "{arch}"
  BACKBONE:
    NAME: "{backbone}"
  RESNETS:
    RES5_MULTI_GRID: [1, 2, 4]
  MASK_FORMER:
    NHEADS: 8
    PRE_NORM: False
  CLIP_ADAPTER:
    MASK_THR: {thr}
    CLIP_ENSEMBLE: True
    CLIP_ENSEMBLE_WEIGHT: {weight}
INPUT:
  MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * 640) for x in range(5, 21)]"]
  MIN_SIZE_TEST: {short}
  MAX_SIZE_TEST: {long}
"""


def test_configs_read_like_ovseg(tmp_path):
    """The YAML fields the exporter reads, written as OVSeg's configs write them (with the
    `!!python/object/apply:eval` tag that a safe loader must skip)."""
    cases = {
        "ovseg_swinB_vitL_bs32_120k.yaml": ("OVSeg", "D2SwinTransformer", 0.4, 0.7, 640, 2560),
        "ovseg_swinB_vitL_demo.yaml": ("OVSegDEMO", "D2SwinTransformer", 0.35, 0.0, 640, 2560),
        "ovseg_R101c_vitB_bs32_120k.yaml": ("OVSeg", "build_resnet_deeplab_backbone", 0.5, 0.7, 512, 2048),
    }
    for name, (arch, backbone, thr, weight, short, long) in cases.items():
        path = tmp_path / name
        path.write_text(YAML.format(arch=arch, backbone=backbone, thr=thr, weight=weight, short=short, long=long))
        assert read_config(path) == CONFIGS[name]
    assert CONFIGS["ovseg_swinB_vitL_demo.yaml"].defaults() == {"mode": "demo", "demo": {"threshold": 0.35, "lambda": 0.0}}
    bad = tmp_path / "other.yaml"
    bad.write_text(YAML.format(arch="MaskFormer", backbone="D2SwinTransformer", thr=0.4, weight=0.7, short=640, long=2560))
    with pytest.raises(ValueError, match="META_ARCHITECTURE"):
        read_config(bad)


@pytest.fixture(scope="module")
def checkpoint():
    g = replace(TINY, embed_dim=R101C_CI.head.text_dim)
    return random_checkpoint(R101C_CI, g, seed=5)


def export_fails(tmp_path, model: dict, match: str):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": model}, path)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        export_main(["--checkpoint", str(path), "--out", str(out), "--vision-heads", "2", "--text-heads", "2"])
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_renamed_key(tmp_path, checkpoint):
    model = dict(checkpoint)
    model["sem_seg_head.predictor.query_embedding.weight"] = model.pop("sem_seg_head.predictor.query_embed.weight")
    export_fails(tmp_path, model, "sem_seg_head.predictor.query_embed.weight is missing")
    model = dict(checkpoint)
    model["backbone.res4.1.conv2.norm.running_variance"] = model.pop("backbone.res4.1.conv2.norm.running_var")
    export_fails(tmp_path, model, "backbone.res4.1.conv2.norm.running_var is missing")


def test_missing_key(tmp_path, checkpoint):
    model = dict(checkpoint)
    del model["sem_seg_head.pixel_decoder.layer_2.norm.bias"]
    export_fails(tmp_path, model, "sem_seg_head.pixel_decoder.layer_2.norm.bias is missing")
    model = dict(checkpoint)
    del model["clip_adapter.clip_model.visual.ln_post.weight"]
    export_fails(tmp_path, model, "visual.ln_post.weight is missing")
    model = dict(checkpoint)
    del model["clip_adapter.non_object_embedding"]
    export_fails(tmp_path, model, "clip_adapter.non_object_embedding is missing")


def test_wrong_shape(tmp_path, checkpoint):
    model = dict(checkpoint)
    model["sem_seg_head.predictor.transformer.decoder.layers.3.linear2.weight"] = torch.zeros(256, 1024)
    export_fails(tmp_path, model, r"decoder.layers.3.linear2.weight has shape \[256, 1024\], expected \[256, 2048\]")
    model = dict(checkpoint)
    model["clip_adapter.clip_model.visual.ln_post.bias"] = torch.zeros(31)
    export_fails(tmp_path, model, r"visual.ln_post.bias has shape \[31\], expected \[32\]")


def test_unknown_key(tmp_path, checkpoint):
    model = dict(checkpoint)
    model["sem_seg_head.predictor.class_embed.layers.2.weight"] = torch.zeros(512, 512)
    export_fails(tmp_path, model, "class_embed")
    model = dict(checkpoint)
    model["clip_adapter.prompt_learner.ctx"] = torch.zeros(4, 512)
    export_fails(tmp_path, model, "clip_adapter.prompt_learner.ctx is not one this exporter knows")


def test_config_must_match_the_weights(tmp_path, checkpoint):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": checkpoint}, path)
    with pytest.raises(ValueError, match="for a swin backbone"):
        export_main(["--checkpoint", str(path), "--out", str(tmp_path / "out"), "--vision-heads", "2",
                     "--text-heads", "2", "--config", "ovseg_swinB_vitL_demo.yaml"])
    assert not (tmp_path / "out").exists()
