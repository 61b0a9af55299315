"""The PyTorch reference follows OpenAI CLIP and OVSeg; the export graphs follow the reference."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from ovseg_tools.clip_reference import TINY, VIT_B_16, Geometry, load_clip, random_state_dict
from ovseg_tools.export.graphs import ImageGraph, TextGraph


def openai_model_module():
    spec = importlib.util.find_spec("clip")
    assert spec is not None, "the PyPI package openai-clip must be installed (tools/requirements.txt)"
    path = spec.submodule_search_locations[0] + "/model.py"
    module_spec = importlib.util.spec_from_file_location("openai_clip_model", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def masks_for(g: Geometry, n: int, seed: int) -> torch.Tensor:
    """Varied binary masks: full, empty, a box, a single pixel, a border strip, random blobs."""
    s = g.image_size
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, s, s)
    masks[0] = 1
    masks[2, :, s // 4: s // 2, s // 3: s - 3] = 1
    masks[3, :, s // 2, s // 2] = 1
    masks[4, :, :, :2] = 1
    for i in range(5, n):
        masks[i] = (torch.rand(1, s, s, generator=gen) > 0.8).float()
    return masks


def graph_inputs(g: Geometry, prompts, masks):
    p = g.grid ** 2
    keep = torch.ceil(F.avg_pool2d(masks, g.patch_size, g.patch_size)).reshape(masks.shape[0], p)
    padded = torch.zeros(g.vision_layers, p, g.vision_width)
    gate = torch.zeros(g.vision_layers)
    if prompts is not None:
        padded[: prompts.shape[0]] = prompts.expand(-1, p, -1)
        gate[: prompts.shape[0]] = 1
    return keep, padded, gate


@pytest.mark.parametrize("depth,shared", [(0, False), (1, False), (3, False), (3, True)])
def test_image_graph_matches_reference(depth, shared):
    g = TINY
    sd = random_state_dict(g, seed=1, prompt_depth=depth, shared_prompt=shared)
    ref = load_clip(sd, g)
    graph = ImageGraph(sd, g).eval()
    pixels = torch.randn(8, 3, g.image_size, g.image_size, generator=torch.Generator().manual_seed(2))
    masks = masks_for(g, 8, 3)
    with torch.no_grad():
        expected = ref.encode_image(pixels, masks if depth else None)
        got = graph(pixels, *graph_inputs(g, ref.visual.mask_embedding, masks))
    assert (got - expected).abs().max().item() < 1e-5


def test_text_graph_matches_reference():
    g = TINY
    sd = random_state_dict(g, seed=4)
    ids = torch.zeros(3, 77, dtype=torch.int64)
    ids[0, :4] = torch.tensor([49406, 320, 2368, 49407])
    ids[1, :2] = torch.tensor([49406, 49407])
    ids[2, :] = torch.randint(1, 49406, (77,))
    ids[2, 0], ids[2, 76] = 49406, 49407
    with torch.no_grad():
        expected = load_clip(sd, g).encode_text(ids)
        got = TextGraph(sd, g).eval()(ids)
    assert (got - expected).abs().max().item() < 1e-5


def test_reference_equals_openai_clip_without_prompts():
    g = VIT_B_16
    sd = random_state_dict(g, seed=5)
    # OpenAI's build_model would round the weights through fp16; build its CLIP class in fp32 instead.
    openai = openai_model_module().CLIP(g.embed_dim, g.image_size, g.vision_layers, g.vision_width, g.patch_size,
                                        g.context_length, g.vocab_size, g.text_width, g.text_heads, g.text_layers)
    openai.load_state_dict(sd)
    openai.eval()
    ours = load_clip(sd, g)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(6))
    ids = torch.zeros(2, 77, dtype=torch.int64)
    ids[0, :7] = torch.tensor([49406, 320, 1125, 539, 320, 2368, 49407])
    ids[1, :3] = torch.tensor([49406, 1929, 49407])
    with torch.no_grad():
        assert torch.equal(ours.encode_image(pixels), openai.encode_image(pixels))
        assert torch.equal(ours.encode_text(ids), openai.encode_text(ids))


def test_all_zero_mask_replaces_every_patch():
    """With depth >= 1 and an empty mask, no pixel reaches the class token: two images agree."""
    g = TINY
    ref = load_clip(random_state_dict(g, seed=7, prompt_depth=1), g)
    pixels = torch.randn(2, 3, g.image_size, g.image_size, generator=torch.Generator().manual_seed(8))
    empty = torch.zeros(2, 1, g.image_size, g.image_size)
    with torch.no_grad():
        out = ref.encode_image(pixels, empty)
        plain = ref.encode_image(pixels)
    assert torch.allclose(out[0], out[1], atol=1e-6)
    assert not torch.allclose(plain[0], plain[1], atol=1e-3)


def test_full_mask_equals_no_prompts():
    g = TINY
    ref = load_clip(random_state_dict(g, seed=9, prompt_depth=3), g)
    pixels = torch.randn(2, 3, g.image_size, g.image_size, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        full = ref.encode_image(pixels, torch.ones(2, 1, g.image_size, g.image_size))
        plain = ref.encode_image(pixels)
    assert torch.equal(full, plain)


def test_mask_crop_reference_semantics():
    """OVSeg's crop: strict threshold, tight box, background exactly 0, nearest-resized binary mask."""
    import numpy as np

    from ovseg_tools.reference.mask_crop import mask_crops

    image = np.full((6, 8, 3), 200, np.uint8)
    masks = np.zeros((3, 6, 8), np.float32)
    masks[0, 1:3, 2:7] = 0.9
    masks[0, 2, 3] = 0.4  # exactly the threshold: background
    masks[1] = 0.4  # nothing strictly above: invalid
    masks[2, 5, 7] = 1.0  # one pixel in the corner
    boxes, pixels, binaries = mask_crops(image, masks, 0.4, size=10)
    assert boxes == [[2, 1, 7, 3], None, [7, 5, 8, 6]]
    assert pixels.shape == (2, 3, 10, 10) and binaries.shape == (2, 10, 10)
    assert set(np.unique(binaries)) <= {0, 1} and binaries[1].all()
    # the one-pixel crop is a constant foreground: (200 - mean*255) / (std*255) everywhere
    expected = (200 - 0.48145466 * 255) / (0.26862954 * 255)
    assert np.allclose(pixels[1, 0], expected, atol=1e-5)
    # a background pixel inside a box normalizes to exactly 0 before resizing
    assert binaries[0].min() == 0
