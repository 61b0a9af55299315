"""A small class-agnostic mask generator with OVSeg's output contract (docs/model-format.md,
"mask_generator.onnx"), and its export.

Contract: `image` [B, 3, H, W] (normalized with ImageNet's mean/std in 0..255 units, zero-padded so H
and W are multiples of 32) -> `mask_logits` [B, Q, H/4, W/4] and `query_embeddings` [B, Q, E] in
CLIP's text space (classified as 100 * cos against the class embeddings plus a no-object row).
MaskFormer (OVSeg's generator) has this shape with Q = 100; this one is a few convolutions and
learned queries, small enough to train on 2 CPU cores.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD, MASK_STRIDE, SIZE_DIVISIBILITY


class TinyMaskGenerator(nn.Module):
    def __init__(self, embed_dim: int, queries: int = 16, width: int = 32):
        super().__init__()
        self.pixel = nn.Sequential(  # stride 4 pixel features
            nn.Conv2d(3, width, 4, stride=4), nn.GELU(), nn.Conv2d(width, width, 3, padding=1),
            nn.InstanceNorm2d(width))
        self.context = nn.Sequential(  # stride 32 context, pooled
            nn.Conv2d(width, width, 8, stride=8), nn.GELU())
        self.queries = nn.Parameter(torch.randn(queries, width))
        self.query_context = nn.Linear(width, width)
        self.mask_head = nn.Linear(width, width)
        self.embed_head = nn.Linear(width, embed_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.pixel(image)
        context = self.context(pixels).mean(dim=(2, 3))
        q = self.queries[None] + self.query_context(context)[:, None]
        logits = torch.einsum("bqc,bchw->bqhw", self.mask_head(q), pixels) * (4 / math.sqrt(pixels.shape[1]))
        return logits, self.embed_head(q)


class SceneMaskGenerator(nn.Module):
    """The default model's generator: a stride-4 convolutional pixel decoder with dilated context,
    and queries that read the pixel features through a two-layer transformer decoder (MaskFormer's
    shape, at a size 2 CPU cores train in minutes)."""

    def __init__(self, embed_dim: int, queries: int = 24, width: int = 64, layers: int = 2):
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation),
                                 nn.GroupNorm(8, cout), nn.GELU())

        self.stem = nn.Sequential(block(3, width // 2, stride=2), block(width // 2, width, stride=2))
        self.context = nn.ModuleList([block(width, width, dilation=d) for d in (1, 2, 4, 8)])
        self.position = nn.Conv2d(2, width, 1)
        self.queries = nn.Parameter(torch.randn(queries, width) * 0.5)
        # Sequence-first: PyTorch's batch-first attention fast path has no ONNX export.
        self.decoder = nn.ModuleList([nn.TransformerDecoderLayer(width, 4, 2 * width, dropout=0.0)
                                      for _ in range(layers)])
        self.mask_head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.embed_head = nn.Linear(width, embed_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(image)
        for layer in self.context:
            x = x + layer(x)
        b, c, h, w = x.shape
        # Cell centres in [-1, 1] (arange, not linspace: the exported graph keeps H and W dynamic).
        ys = ((torch.arange(h, device=x.device) + 0.5) * (2 / h) - 1).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = ((torch.arange(w, device=x.device) + 0.5) * (2 / w) - 1).view(1, 1, 1, w).expand(b, 1, h, w)
        memory = (x + self.position(torch.cat([xs, ys], dim=1))).flatten(2).permute(2, 0, 1)  # [hw, B, C]
        q = self.queries[:, None].expand(-1, b, -1)
        for layer in self.decoder:
            q = layer(q, memory)
        q = q.transpose(0, 1)  # [B, Q, C]
        logits = torch.einsum("bqc,bchw->bqhw", self.mask_head(q), x) / math.sqrt(c)
        return logits, self.embed_head(q)


GENERATORS = {"tiny": TinyMaskGenerator, "scene": SceneMaskGenerator}


def random_generator(embed_dim: int, seed: int, queries: int = 16) -> TinyMaskGenerator:
    torch.manual_seed(seed)
    return TinyMaskGenerator(embed_dim, queries).eval()


def export_generator(generator: nn.Module, out: Path, opset: int = 17,
                     normalization: tuple[list[float], list[float]] | None = None) -> dict:
    """Writes `mask_generator.onnx` into `out`; returns the manifest's `generator` section
    (normalization: the generator's pixel mean and std, default ImageNet's)."""
    with torch.no_grad():
        torch.onnx.export(
            generator, (torch.zeros(1, 3, 64, 96),), str(out / "mask_generator.onnx"), opset_version=opset,
            input_names=["image"], output_names=["mask_logits", "query_embeddings"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                          "mask_logits": {0: "batch", 2: "mask_height", 3: "mask_width"},
                          "query_embeddings": {0: "batch"}},
        )
    mean, std = normalization or (IMAGENET_MEAN, IMAGENET_STD)
    return {"file": "mask_generator.onnx", "pixelMean": mean, "pixelStd": std,
            "sizeDivisibility": SIZE_DIVISIBILITY, "maskStride": MASK_STRIDE}
