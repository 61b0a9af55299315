"""The SAM exporter against the reference packages: on random weights in the layout of Meta's
checkpoints (ViT) and of MobileSAM's (TinyViT), the exported graphs run by ONNX Runtime give the
image embeddings of `segment-anything`'s Sam (with `ultralytics`' port of MobileSAM's TinyViT),
and its mask logits and IoU predictions for point and box prompts (the predictor's path: prompt
encoder with its padding point, mask decoder, multimask outputs), within 1e-4. The geometry of the
released models is read from their shapes."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ovseg_tools.export import sam as S

TOOLS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", params=["tiny", "tiny_vit"])
def tiny(request, tmp_path_factory):
    sd = S.random_state_dict(request.param, seed=3)
    out = tmp_path_factory.mktemp(f"sam-{request.param}")
    manifest = S.export(sd, out, request.param, image_size=256)
    reference = S.reference_sam(request.param)
    reference.load_state_dict(sd)
    reference.eval()  # TinyViT caches its attention biases here
    return out, manifest, reference


def test_image_encoder_matches_segment_anything(tiny):
    out, manifest, reference = tiny
    image = torch.randn(1, 3, manifest["imageSize"], manifest["imageSize"], generator=torch.Generator().manual_seed(0))
    got = ort.InferenceSession(str(out / "sam_image_encoder.onnx")).run(None, {"image": image.numpy()})[0]
    with torch.no_grad():
        want = reference.image_encoder(image).numpy()
    assert got.shape == (1, manifest["embedding"]["channels"], manifest["embedding"]["grid"], manifest["embedding"]["grid"])
    assert np.abs(want).max() > 0.5  # not a degenerate comparison
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def decode(out: Path, embeddings: np.ndarray, coords: np.ndarray, labels: np.ndarray):
    session = ort.InferenceSession(str(out / "sam_mask_decoder.onnx"))
    return session.run(None, {"image_embeddings": embeddings, "point_coords": coords.astype(np.float32), "point_labels": labels.astype(np.float32)})


@pytest.mark.parametrize("points", [1, 3])
def test_mask_decoder_matches_segment_anything_for_points(tiny, points):
    out, manifest, reference = tiny
    size = manifest["imageSize"]
    gen = torch.Generator().manual_seed(points)
    embeddings = torch.randn(1, manifest["embedding"]["channels"], manifest["embedding"]["grid"], manifest["embedding"]["grid"], generator=gen)
    coords = torch.rand(6, points, 2, generator=gen) * size
    labels = (torch.rand(6, points, generator=gen) > 0.3).float()  # foreground and background points
    with torch.no_grad():
        sparse, dense = reference.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        masks, iou = reference.mask_decoder(image_embeddings=embeddings, image_pe=reference.prompt_encoder.get_dense_pe(),
                                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)
    # The prompt encoder appends a padding point to point-only prompts: the graph's caller does.
    padded = torch.cat([coords, torch.zeros(6, 1, 2)], dim=1).numpy()
    padded_labels = torch.cat([labels, -torch.ones(6, 1)], dim=1).numpy()
    got_iou, got_masks = decode(out, embeddings.numpy(), padded, padded_labels)
    assert got_masks.shape == (6, 3, manifest["maskSize"], manifest["maskSize"])
    assert np.abs(masks.numpy()).max() > 0.1
    np.testing.assert_allclose(got_masks, masks.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_iou, iou.numpy(), atol=1e-4, rtol=0)


def test_mask_decoder_matches_segment_anything_for_boxes(tiny):
    out, manifest, reference = tiny
    gen = torch.Generator().manual_seed(7)
    embeddings = torch.randn(1, manifest["embedding"]["channels"], manifest["embedding"]["grid"], manifest["embedding"]["grid"], generator=gen)
    corners = torch.sort(torch.rand(4, 2, 2, generator=gen) * manifest["imageSize"], dim=1).values
    boxes = corners.reshape(4, 4)  # x0, y0, x1, y1
    with torch.no_grad():
        sparse, dense = reference.prompt_encoder(points=None, boxes=boxes, masks=None)
        masks, iou = reference.mask_decoder(image_embeddings=embeddings, image_pe=reference.prompt_encoder.get_dense_pe(),
                                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)
    got_iou, got_masks = decode(out, embeddings.numpy(), corners.numpy(), np.tile([2.0, 3.0], (4, 1)))
    np.testing.assert_allclose(got_masks, masks.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got_iou, iou.numpy(), atol=1e-4, rtol=0)


def test_released_geometries_are_read_from_the_weights():
    g = S.geometry_of(S.random_state_dict("vit_b"))
    assert (g.image_size, g.patch_size, g.width, g.depth, g.heads, g.window, g.global_blocks) == (1024, 16, 768, 12, 12, 14, (2, 5, 8, 11))
    assert (g.embed_dim, g.grid, g.decoder_depth, g.mask_tokens) == (256, 64, 2, 4)


def test_mobile_sam_geometry_is_read_from_the_weights():
    g = S.geometry_of(S.random_state_dict("mobile_sam"))
    assert (g.encoder, g.image_size, g.grid, g.stages) == ("tiny_vit", 1024, 64, ((64, 2, 0, 0), (128, 2, 4, 7), (160, 6, 5, 14), (320, 2, 10, 7)))
    assert (g.mlp_ratio, g.mbconv_expand, g.local_conv, g.embed_dim, g.mask_tokens) == (4, 4, 3, 256, 4)
    with pytest.raises(ValueError, match="multiple of 64"):
        S.geometry_of(S.random_state_dict("tiny_vit"), image_size=200)


def test_not_a_sam_checkpoint_is_a_value_error():
    sd = S.random_state_dict("tiny")
    del sd["image_encoder.pos_embed"]
    with pytest.raises(ValueError, match="not a SAM checkpoint"):
        S.geometry_of(sd)
    sd = S.random_state_dict("tiny")
    sd["image_encoder.blocks.5.attn.rel_pos_h"] = sd["image_encoder.blocks.0.attn.rel_pos_h"]
    with pytest.raises(ValueError, match="numbered"):
        S.geometry_of(sd)


def test_command_line_writes_a_directory_from_a_checkpoint_file(tmp_path):
    checkpoint = tmp_path / "sam_tiny.pth"
    torch.save(S.random_state_dict("tiny", seed=1), checkpoint)
    run = subprocess.run([sys.executable, "-m", "ovseg_tools.export.sam", str(checkpoint), str(tmp_path / "out")],
                         cwd=TOOLS, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((tmp_path / "out" / "sam.json").read_text())
    assert manifest["format"] == "ovseg-sam" and manifest["name"] == "sam_tiny"
    assert manifest["graphs"] == {"imageEncoder": "sam_image_encoder.onnx", "maskDecoder": "sam_mask_decoder.onnx"}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a model")
    refused = subprocess.run([sys.executable, "-m", "ovseg_tools.export.sam", str(checkpoint), str(tmp_path / "other")], cwd=TOOLS, capture_output=True, text=True)
    assert refused.returncode == 1 and "not replacing it" in refused.stderr
    assert (tmp_path / "other" / "keep.txt").is_file()
    bad = subprocess.run([sys.executable, "-m", "ovseg_tools.export.sam", "vit_q", str(tmp_path / "x"), "--random"], cwd=TOOLS, capture_output=True, text=True)
    assert bad.returncode == 1 and "--random takes one of" in bad.stderr
    # A MobileSAM-layout file at a CI size.
    mobile = tmp_path / "mobile_sam.pt"
    torch.save(S.random_state_dict("tiny_vit", seed=2), mobile)
    run = subprocess.run([sys.executable, "-m", "ovseg_tools.export.sam", str(mobile), str(tmp_path / "mobile"), "--image-size", "256"],
                         cwd=TOOLS, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    manifest = json.loads((tmp_path / "mobile" / "sam.json").read_text())
    assert (manifest["imageSize"], manifest["embedding"], manifest["geometry"]["encoder"]) == (256, {"channels": 256, "grid": 16}, "tiny_vit")
