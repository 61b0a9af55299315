"""The exporter: reproducible tiny model, OpenAI and OVSeg checkpoint layouts, manifest contents."""
import json
from pathlib import Path

import numpy as np
import torch

from ovseg_tools.clip_reference import TINY, random_state_dict
from ovseg_tools.export.model_dir import main as export_main

ROOT = Path(__file__).resolve().parents[2]
TINY_DIR = ROOT / "models" / "tiny-random"


def test_committed_tiny_model_is_reproducible(tmp_path):
    # The exact command in README.md / models/README.md.
    export_main(["--random", "tiny", "--seed", "0", "--prompt-depth", "3", "--no-object", "--generator-queries", "16",
                 "--out", str(tmp_path), "--name", "tiny-random"])
    committed = sorted(p.name for p in TINY_DIR.iterdir())
    assert committed == sorted(p.name for p in tmp_path.iterdir())
    for name in committed:
        assert (tmp_path / name).read_bytes() == (TINY_DIR / name).read_bytes(), name
    assert sum(p.stat().st_size for p in TINY_DIR.iterdir()) < 6_000_000


def test_ovseg_checkpoint_layout(tmp_path):
    sd = random_state_dict(TINY, seed=3, prompt_depth=2)
    no_object = torch.randn(1, TINY.embed_dim)
    model = {f"clip_adapter.clip_model.{k}": v for k, v in sd.items()}
    model["clip_adapter.non_object_embedding"] = no_object
    model["clip_adapter.pixel_mean"] = torch.tensor([122.7709, 116.7460, 104.0937]).reshape(1, 3, 1, 1)
    model["clip_adapter.clip_model.logit_scale"] = torch.tensor(4.6052)
    ckpt = tmp_path / "ovseg.pth"
    torch.save({"model": model, "iteration": 1}, ckpt)
    out = tmp_path / "model"
    export_main(["--checkpoint", str(ckpt), "--out", str(out), "--vision-heads", "2", "--text-heads", "2"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["maskPrompts"] == {"file": "mask_prompts.npy", "depth": 2}
    assert manifest["noObjectEmbedding"] == "no_object.npy"
    assert manifest["clip"]["imageSize"] == TINY.image_size and manifest["tokenizer"]["merges"] == 48894
    assert len(manifest["templates"]) == 14 and manifest["templates"][1] == "This is a photo of a {}"
    np.testing.assert_array_equal(np.load(out / "mask_prompts.npy"), sd["visual.mask_embedding"].numpy())
    np.testing.assert_array_equal(np.load(out / "no_object.npy"), no_object.numpy())
    assert "generator" not in manifest and manifest["version"] == 3  # a CLIP-only OVSeg file


def test_openai_torchscript_checkpoint(tmp_path):
    """OpenAI publishes TorchScript archives (state dict keys as in clip/model.py); the exporter reads them."""
    from ovseg_tools.clip_reference import load_clip

    sd = random_state_dict(TINY, seed=4)
    ids = torch.zeros(1, 77, dtype=torch.int64)
    ids[0, :2] = torch.tensor([49406, 49407])
    path = tmp_path / "clip.pt"
    torch.jit.trace_module(load_clip(sd, TINY), {"encode_text": ids}).save(str(path))
    out = tmp_path / "model"
    export_main(["--checkpoint", str(path), "--out", str(out), "--vision-heads", "2", "--text-heads", "2"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clip"]["visionLayers"] == TINY.vision_layers and manifest["clip"]["embedDim"] == TINY.embed_dim
    assert manifest["maskPrompts"] is None and manifest["noObjectEmbedding"] is None
    assert (out / "image_encoder.onnx").stat().st_size > 0 and (out / "text_encoder.onnx").stat().st_size > 0


def test_generator_contract_and_manifest(tmp_path):
    from ovseg_tools.constants import MASK_STRIDE
    from ovseg_tools.export.mask_generator import random_generator

    generator = random_generator(TINY.embed_dim, seed=1, queries=5)
    with torch.no_grad():
        for h, w in [(32, 64), (96, 32)]:
            logits, embeddings = generator(torch.zeros(1, 3, h, w))
            assert logits.shape == (1, 5, h // MASK_STRIDE, w // MASK_STRIDE)
            assert embeddings.shape == (1, 5, TINY.embed_dim)
    export_main(["--random", "tiny", "--no-object", "--generator-queries", "5", "--processing", "128", "512",
                 "--out", str(tmp_path)])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["processing"] == {"shortSide": 128, "maxSize": 512}
    assert manifest["generator"] == {"file": "mask_generator.onnx", "pixelMean": [123.675, 116.28, 103.53],
                                     "pixelStd": [58.395, 57.12, 57.375], "sizeDivisibility": 32, "maskStride": 4}
    assert (tmp_path / "mask_generator.onnx").stat().st_size > 0


def test_unusable_checkpoints_raise_value_errors(tmp_path):
    import pytest

    from ovseg_tools.export.model_dir import read_checkpoint

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="neither a PyTorch checkpoint nor a TorchScript archive"):
        read_checkpoint(garbage)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match="not a state dict or checkpoint"):
        read_checkpoint(listed)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="no visual.conv1.weight"):
        read_checkpoint(other)
