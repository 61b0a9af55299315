"""Segment Anything (SAM) as a proposal model: `python -m ovseg_tools.export.sam CHECKPOINT OUT`.

Reads one of Meta's checkpoints (`sam_vit_b_01ec64.pth`, `sam_vit_l_0b3195.pth`,
`sam_vit_h_4b8939.pth`: a state dict with `image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`)
or MobileSAM's (`mobile_sam.pt`: the same layout with a TinyViT image encoder) and writes a
proposal-model directory: two ONNX graphs and `sam.json` (docs/model-format.md, "SAM proposal
models"). The geometry (ViT: width, depth, heads, windowed and global blocks; TinyViT: each
stage's width, depth, heads and window) is read from the weights' shapes, so the released models
and CI-sized random checkpoints in the same layout load alike; a TinyViT's input size is not in
its weights (`--image-size`, MobileSAM's 1024 by default). `--random GEOMETRY OUT` writes a random
checkpoint instead (`tiny`, `vit_b`, `vit_l`, `vit_h`, `tiny_vit`, `mobile_sam`), for tests and
benchmarks.

The graphs are written here from the state dict, independent of the reference packages the
parity test (tools/tests/test_sam_export.py) uses: `segment-anything` for SAM, and for TinyViT the
port of MobileSAM's encoder in `ultralytics` (MobileSAM itself is not on PyPI).

Image encoder graph:
  image             float32 [1, 3, S, S]   resized (longest side S), normalized with `pixelMean` /
                                           `pixelStd`, zero-padded at the bottom and right
  -> image_embeddings float32 [1, C, G, G]  (G = S / patch)

Mask decoder graph (SAM's prompt encoder for points and box corners, and its mask decoder with
the three multimask outputs, as the automatic mask generator uses them):
  image_embeddings  float32 [1, C, G, G]
  point_coords      float32 [B, N, 2]      (x, y) in the resized image's pixels
  point_labels      float32 [B, N]         1 foreground, 0 background, 2 / 3 box corners, -1 padding
  -> iou_predictions float32 [B, 3]
  -> low_res_masks   float32 [B, 3, 4G, 4G] mask logits (threshold `maskThreshold`)
A point-only prompt ends with one padding point (label -1), as SAM's prompt encoder appends one
when no box is given.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..cli import run
from .model_dir import staged

# SAM's preprocessing (build_sam.py): pixel statistics on 0..255, longest side 1024.
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]
MASK_THRESHOLD = 0.0
# SAM's decoder: 8 heads in every released model (not readable from the weights' shapes).
DECODER_HEADS = 8
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SamGeometry:
    image_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    window: int
    global_blocks: tuple
    embed_dim: int
    decoder_depth: int
    decoder_mlp: int
    mask_tokens: int
    iou_hidden: int
    iou_depth: int
    mask_in_chans: int
    # TinyViT (MobileSAM): "tiny_vit", and per stage (width, depth, heads, window).
    encoder: str = "vit"
    stages: tuple = ()
    mlp_ratio: int = 4
    mbconv_expand: int = 4
    local_conv: int = 3

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


# The released models (build_sam.py) and a CI-sized one in the same layout.
GEOMETRIES = {
    "vit_b": dict(width=768, depth=12, heads=12, global_blocks=(2, 5, 8, 11)),
    "vit_l": dict(width=1024, depth=24, heads=16, global_blocks=(5, 11, 17, 23)),
    "vit_h": dict(width=1280, depth=32, heads=16, global_blocks=(7, 15, 23, 31)),
    "tiny": dict(width=32, depth=2, heads=2, global_blocks=(1,), image_size=256, window=6),
}
# MobileSAM (build_sam_vit_t) and a CI-sized TinyViT. MobileSAM's code merges stage 3 into stage 4
# without a stride when stage 4 is 320, 448 or 576 wide: the CI-sized one keeps 320 so as to take
# that path.
TINY_VITS = {
    "mobile_sam": dict(image_size=1024, stages=((64, 2, 2, 7), (128, 2, 4, 7), (160, 6, 5, 14), (320, 2, 10, 7))),
    "tiny_vit": dict(image_size=256, stages=((16, 1, 1, 7), (32, 1, 2, 7), (48, 2, 3, 14), (320, 1, 10, 7))),
}
UNSTRIDED_MERGE_WIDTHS = (320, 448, 576)


def _count(sd: dict, pattern: str) -> int:
    indexes = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    if indexes != set(range(len(indexes))):
        raise ValueError(f"the checkpoint's blocks {sorted(indexes)} are not numbered 0..n-1")
    return len(indexes)


def _decoder_geometry(sd: dict) -> dict:
    return dict(
        embed_dim=int(sd["image_encoder.neck.0.weight"].shape[0]),
        decoder_depth=_count(sd, r"mask_decoder\.transformer\.layers\.(\d+)\."),
        decoder_mlp=int(sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
        mask_tokens=int(sd["mask_decoder.mask_tokens.weight"].shape[0]),
        iou_hidden=int(sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
        iou_depth=_count(sd, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
        mask_in_chans=int(sd["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
    )


def _tiny_vit_geometry(sd: dict, image_size: int) -> SamGeometry:
    """MobileSAM's TinyViT: a convolutional stage then three attention stages."""
    e = "image_encoder"
    if _count(sd, rf"{e}\.layers\.(\d+)\.") != 4:
        raise ValueError("expected a TinyViT of 4 stages (MobileSAM's)")
    stages = []
    for i in range(4):
        depth = _count(sd, rf"{e}\.layers\.{i}\.blocks\.(\d+)\.")
        if i == 0:
            width, heads, window = int(sd[f"{e}.layers.0.blocks.0.conv1.c.weight"].shape[1]), 0, 0
        else:
            width = int(sd[f"{e}.layers.{i}.blocks.0.attn.proj.weight"].shape[0])
            biases = sd[f"{e}.layers.{i}.blocks.0.attn.attention_biases"]
            # One bias per head and per offset (|dy|, |dx|) inside a window: window^2 offsets.
            heads, window = int(biases.shape[0]), math.isqrt(int(biases.shape[1]))
        stages.append((width, depth, heads, window))
    if image_size % 64:
        raise ValueError(f"a TinyViT's image size must be a multiple of 64, not {image_size}")
    return SamGeometry(
        image_size=image_size, patch_size=16, width=stages[-1][0], depth=sum(s[1] for s in stages), heads=stages[-1][2],
        window=stages[-1][3], global_blocks=(), encoder="tiny_vit", stages=tuple(stages),
        mlp_ratio=int(sd[f"{e}.layers.1.blocks.0.mlp.fc1.weight"].shape[0]) // stages[1][0],
        mbconv_expand=int(sd[f"{e}.layers.0.blocks.0.conv1.c.weight"].shape[0]) // stages[0][0],
        local_conv=int(sd[f"{e}.layers.1.blocks.0.local_conv.c.weight"].shape[-1]),
        **_decoder_geometry(sd),
    )


def geometry_of(sd: dict, image_size: int = 1024) -> SamGeometry:
    """The geometry a SAM-layout state dict implies (ValueError when it is not one); `image_size`
    only for a TinyViT, whose weights do not say it."""
    try:
        if "image_encoder.patch_embed.seq.0.c.weight" in sd:
            return _tiny_vit_geometry(sd, image_size)
        patch = sd["image_encoder.patch_embed.proj.weight"]
        width, patch_size = int(patch.shape[0]), int(patch.shape[2])
        grid = int(sd["image_encoder.pos_embed"].shape[1])
        depth = _count(sd, r"image_encoder\.blocks\.(\d+)\.")
        head_dim = int(sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1])
        # rel_pos tables span 2 * size - 1 positions: the grid for global blocks, the window otherwise.
        sizes = [(int(sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) + 1) // 2 for i in range(depth)]
        windows = {s for s in sizes if s != grid}
        if len(windows) > 1:
            raise ValueError(f"blocks with different window sizes {sorted(windows)}")
        return SamGeometry(
            image_size=grid * patch_size,
            patch_size=patch_size,
            width=width,
            depth=depth,
            heads=width // head_dim,
            window=windows.pop() if windows else 0,
            global_blocks=tuple(i for i, s in enumerate(sizes) if s == grid),
            **_decoder_geometry(sd),
        )
    except KeyError as exc:
        raise ValueError(f"not a SAM checkpoint (no {exc.args[0]}): expected the layout of Meta's sam_vit_* files "
                         "or MobileSAM's mobile_sam.pt") from exc


def _buffers(module: nn.Module, sd: dict, prefix: str, names: list) -> None:
    for name in names:
        module.register_buffer(name.replace(".", "_"), sd[f"{prefix}.{name}"].float().clone())


def _ln2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm over channels of [B, C, H, W] (eps 1e-6)."""
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    return weight[:, None, None] * ((x - mean) / torch.sqrt(var + 1e-6)) + bias[:, None, None]


class _EncoderBlock(nn.Module):
    """x + attn(norm1(x)) over windows (or the whole grid), then x + mlp(norm2(x)); [1, G, G, W]."""

    def __init__(self, sd: dict, prefix: str, g: SamGeometry, window: int):
        super().__init__()
        # Static sizes (the image size is fixed): the export gets constant shapes.
        self.heads, self.window, self.width, self.grid = g.heads, window, g.width, g.grid
        _buffers(self, sd, prefix, ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                                    "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.lin1.weight", "mlp.lin1.bias",
                                    "mlp.lin2.weight", "mlp.lin2.bias"])
        size = window or g.grid
        # Decomposed relative positions: row i, column j of a size x size window attend with
        # rel_pos[i - i' + size - 1] along each axis.
        index = (torch.arange(size)[:, None] - torch.arange(size)[None, :] + size - 1).reshape(-1)
        self.register_buffer("rel_h", sd[f"{prefix}.attn.rel_pos_h"].float()[index].reshape(size, size, -1).clone())
        self.register_buffer("rel_w", sd[f"{prefix}.attn.rel_pos_w"].float()[index].reshape(size, size, -1).clone())

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], self.width
        h = w = self.window or self.grid
        head = c // self.heads
        qkv = F.linear(x, self.attn_qkv_weight, self.attn_qkv_bias).reshape(n, h * w, 3, self.heads, head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).reshape(3, n * self.heads, h * w, head).unbind(0)
        scores = (q * head ** -0.5) @ k.transpose(-2, -1)
        r = q.reshape(n * self.heads, h, w, head)
        along_h = torch.einsum("bhwc,hkc->bhwk", r, self.rel_h)
        along_w = torch.einsum("bhwc,wkc->bhwk", r, self.rel_w)
        scores = (scores.reshape(-1, h, w, h, w) + along_h[:, :, :, :, None] + along_w[:, :, :, None, :]).reshape(-1, h * w, h * w)
        out = (scores.softmax(dim=-1) @ v).reshape(n, self.heads, h, w, head).permute(0, 2, 3, 1, 4).reshape(n, h, w, c)
        return F.linear(out, self.attn_proj_weight, self.attn_proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, gh, gw, c = 1, self.grid, self.grid, self.width
        y = F.layer_norm(x, (c,), self.norm1_weight, self.norm1_bias, 1e-6)
        if self.window:
            s = self.window
            ph, pw = (s - gh % s) % s, (s - gw % s) % s
            y = F.pad(y, (0, 0, 0, pw, 0, ph))
            hp, wp = gh + ph, gw + pw
            y = y.reshape(b, hp // s, s, wp // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s, s, c)
            y = self._attention(y)
            y = y.reshape(b, hp // s, wp // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)[:, :gh, :gw, :]
        else:
            y = self._attention(y)
        x = x + y
        y = F.layer_norm(x, (c,), self.norm2_weight, self.norm2_bias, 1e-6)
        return x + F.linear(F.gelu(F.linear(y, self.mlp_lin1_weight, self.mlp_lin1_bias)), self.mlp_lin2_weight, self.mlp_lin2_bias)


class ImageEncoderGraph(nn.Module):
    def __init__(self, sd: dict, g: SamGeometry):
        super().__init__()
        self.patch = g.patch_size
        _buffers(self, sd, "image_encoder", ["patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed",
                                             "neck.0.weight", "neck.1.weight", "neck.1.bias", "neck.2.weight",
                                             "neck.3.weight", "neck.3.bias"])
        self.blocks = nn.ModuleList(
            _EncoderBlock(sd, f"image_encoder.blocks.{i}", g, 0 if i in g.global_blocks else g.window) for i in range(g.depth)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(image, self.patch_embed_proj_weight, self.patch_embed_proj_bias, stride=self.patch).permute(0, 2, 3, 1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        x = _ln2d(F.conv2d(x, self.neck_0_weight), self.neck_1_weight, self.neck_1_bias)
        return _ln2d(F.conv2d(x, self.neck_2_weight, padding=1), self.neck_3_weight, self.neck_3_bias)


def _conv_bn(sd: dict, prefix: str) -> tuple:
    """A convolution and its batch norm (eval, eps 1e-5) folded into one weight and bias."""
    scale = sd[f"{prefix}.bn.weight"].float() / torch.sqrt(sd[f"{prefix}.bn.running_var"].float() + 1e-5)
    weight = sd[f"{prefix}.c.weight"].float() * scale[:, None, None, None]
    return weight.clone(), (sd[f"{prefix}.bn.bias"].float() - sd[f"{prefix}.bn.running_mean"].float() * scale).clone()


class _ConvBN(nn.Module):
    def __init__(self, sd: dict, prefix: str, stride: int = 1, depthwise: bool = False):
        super().__init__()
        weight, bias = _conv_bn(sd, prefix)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.stride, self.groups, self.pad = stride, weight.shape[0] if depthwise else 1, weight.shape[-1] // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.pad, groups=self.groups)


class _TinyVitBlock(nn.Module):
    """TinyViT's block on [1, H*W, C]: x + attention over windows (LeViT-style: a bias per head and
    offset), a depthwise convolution, then x + MLP (its own norm)."""

    def __init__(self, sd: dict, prefix: str, width: int, heads: int, window: int, resolution: int):
        super().__init__()
        self.width, self.heads, self.window, self.resolution = width, heads, window, resolution
        _buffers(self, sd, prefix, [f"{p}.{t}" for p in ("attn.norm", "attn.qkv", "attn.proj", "mlp.norm", "mlp.fc1", "mlp.fc2")
                                    for t in ("weight", "bias")])
        # The bias of each pair of window positions: their offset (|dy|, |dx|), numbered in the
        # order TinyViT first meets them.
        points = [(y, x) for y in range(window) for x in range(window)]
        offsets: dict = {}
        index = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in points for b in points]
        biases = sd[f"{prefix}.attn.attention_biases"].float()
        self.register_buffer("attention_bias", biases[:, torch.tensor(index)].reshape(heads, len(points), len(points)).clone())
        self.local_conv = _ConvBN(sd, f"{prefix}.local_conv", depthwise=True)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        head = c // self.heads
        x = F.layer_norm(x, (c,), self.attn_norm_weight, self.attn_norm_bias, 1e-5)
        # The projection's output is laid out head by head, each head's q, k, v in turn.
        q, k, v = F.linear(x, self.attn_qkv_weight, self.attn_qkv_bias).reshape(n, length, self.heads, 3 * head).split(head, dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * head ** -0.5 + self.attention_bias
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, length, c)
        return F.linear(out, self.attn_proj_weight, self.attn_proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, s, c = self.resolution, self.window, self.width
        pad = (s - r % s) % s
        y = F.pad(x.reshape(1, r, r, c), (0, 0, 0, pad, 0, pad))
        p = r + pad
        y = y.reshape(1, p // s, s, p // s, s, c).transpose(2, 3).reshape(-1, s * s, c)
        y = self._attention(y)
        y = y.reshape(1, p // s, p // s, s, s, c).transpose(2, 3).reshape(1, p, p, c)[:, :r, :r].reshape(1, r * r, c)
        x = x + y
        x = self.local_conv(x.transpose(1, 2).reshape(1, c, r, r)).reshape(1, c, r * r).transpose(1, 2)
        y = F.layer_norm(x, (c,), self.mlp_norm_weight, self.mlp_norm_bias, 1e-5)
        return x + F.linear(F.gelu(F.linear(y, self.mlp_fc1_weight, self.mlp_fc1_bias)), self.mlp_fc2_weight, self.mlp_fc2_bias)


class _MBConv(nn.Module):
    def __init__(self, sd: dict, prefix: str):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = (_ConvBN(sd, f"{prefix}.conv{i}", depthwise=i == 2) for i in (1, 2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x + self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x))))))


class _PatchMerging(nn.Module):
    def __init__(self, sd: dict, prefix: str, out_width: int):
        super().__init__()
        stride = 1 if out_width in UNSTRIDED_MERGE_WIDTHS else 2
        self.conv1, self.conv3 = _ConvBN(sd, f"{prefix}.conv1"), _ConvBN(sd, f"{prefix}.conv3")
        self.conv2 = _ConvBN(sd, f"{prefix}.conv2", stride=stride, depthwise=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class TinyVitEncoderGraph(nn.Module):
    """MobileSAM's image encoder: a stride-4 convolutional stem, MBConv blocks, then attention
    stages joined by patch merging, and SAM's neck; [1, 3, S, S] -> [1, 256, S / 16, S / 16]."""

    def __init__(self, sd: dict, g: SamGeometry):
        super().__init__()
        e = "image_encoder"
        self.stem = nn.ModuleList([_ConvBN(sd, f"{e}.patch_embed.seq.0", stride=2), _ConvBN(sd, f"{e}.patch_embed.seq.2", stride=2)])
        self.mbconvs = nn.ModuleList(_MBConv(sd, f"{e}.layers.0.blocks.{j}") for j in range(g.stages[0][1]))
        self.merges = nn.ModuleList(_PatchMerging(sd, f"{e}.layers.{i}.downsample", g.stages[i + 1][0]) for i in range(3))
        resolution = g.image_size // 4
        self.stages = nn.ModuleList()
        self.resolutions = []
        for i, (width, depth, heads, window) in enumerate(g.stages):
            if i > 0:
                if g.stages[i][0] not in UNSTRIDED_MERGE_WIDTHS:
                    resolution //= 2
                self.stages.append(nn.ModuleList(
                    _TinyVitBlock(sd, f"{e}.layers.{i}.blocks.{j}", width, heads, window, resolution) for j in range(depth)))
            self.resolutions.append(resolution)
        if resolution != g.grid:
            raise ValueError(f"this TinyViT gives a {resolution} x {resolution} grid, not SAM's {g.grid} x {g.grid}")
        _buffers(self, sd, e, ["neck.0.weight", "neck.1.weight", "neck.1.bias", "neck.2.weight", "neck.3.weight", "neck.3.bias"])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem[1](F.gelu(self.stem[0](image)))
        for block in self.mbconvs:
            x = block(x)
        for i, blocks in enumerate(self.stages):
            x = self.merges[i](x)  # [1, C, R, R]
            r = self.resolutions[i + 1]
            x = x.flatten(2).transpose(1, 2)
            for block in blocks:
                x = block(x)
            x = x.transpose(1, 2).reshape(1, -1, r, r)
        x = _ln2d(F.conv2d(x, self.neck_0_weight), self.neck_1_weight, self.neck_1_bias)
        return _ln2d(F.conv2d(x, self.neck_2_weight, padding=1), self.neck_3_weight, self.neck_3_bias)


class _Attention(nn.Module):
    """The decoder's attention: projections to width / downsample, heads, out projection."""

    def __init__(self, sd: dict, prefix: str):
        super().__init__()
        self.inner = int(sd[f"{prefix}.q_proj.weight"].shape[0])  # static, so the export has constant shapes
        _buffers(self, sd, prefix, [f"{p}.{t}" for p in ("q_proj", "k_proj", "v_proj", "out_proj") for t in ("weight", "bias")])

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = F.linear(q, self.q_proj_weight, self.q_proj_bias)
        k = F.linear(k, self.k_proj_weight, self.k_proj_bias)
        v = F.linear(v, self.v_proj_weight, self.v_proj_bias)
        b, nq, inner = q.shape[0], q.shape[1], self.inner
        head = inner // DECODER_HEADS
        q = q.reshape(b, nq, DECODER_HEADS, head).transpose(1, 2)
        k = k.reshape(b, -1, DECODER_HEADS, head).transpose(1, 2)
        v = v.reshape(b, -1, DECODER_HEADS, head).transpose(1, 2)
        attn = ((q @ k.transpose(-1, -2)) / math.sqrt(head)).softmax(dim=-1)
        return F.linear((attn @ v).transpose(1, 2).reshape(b, nq, inner), self.out_proj_weight, self.out_proj_bias)


class _TwoWayBlock(nn.Module):
    def __init__(self, sd: dict, prefix: str, first: bool):
        super().__init__()
        self.first = first
        self.dim = int(sd[f"{prefix}.norm1.weight"].shape[0])
        self.self_attn = _Attention(sd, f"{prefix}.self_attn")
        self.token_to_image = _Attention(sd, f"{prefix}.cross_attn_token_to_image")
        self.image_to_token = _Attention(sd, f"{prefix}.cross_attn_image_to_token")
        _buffers(self, sd, prefix, [f"{p}.{t}" for p in ("norm1", "norm2", "norm3", "norm4", "mlp.lin1", "mlp.lin2") for t in ("weight", "bias")])

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias"), 1e-5)

    def forward(self, queries, keys, query_pe, key_pe):
        if self.first:  # the first block's self-attention sees no positional encoding and has no residual
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self._norm(queries, "norm1")
        queries = self._norm(queries + self.token_to_image(queries + query_pe, keys + key_pe, keys), "norm2")
        mlp = F.linear(F.relu(F.linear(queries, self.mlp_lin1_weight, self.mlp_lin1_bias)), self.mlp_lin2_weight, self.mlp_lin2_bias)
        queries = self._norm(queries + mlp, "norm3")
        keys = self._norm(keys + self.image_to_token(keys + key_pe, queries + query_pe, queries), "norm4")
        return queries, keys


def _mlp(x: torch.Tensor, layers: list) -> torch.Tensor:
    for i, (w, b) in enumerate(layers):
        x = F.linear(x, w, b)
        if i < len(layers) - 1:
            x = F.relu(x)
    return x


class MaskDecoderGraph(nn.Module):
    def __init__(self, sd: dict, g: SamGeometry):
        super().__init__()
        self.g = g
        pe = "prompt_encoder"
        _buffers(self, sd, pe, ["pe_layer.positional_encoding_gaussian_matrix", "not_a_point_embed.weight", "no_mask_embed.weight"])
        self.register_buffer("point_embeddings", torch.cat([sd[f"{pe}.point_embeddings.{i}.weight"].float() for i in range(4)]).clone())
        md = "mask_decoder"
        _buffers(self, sd, md, ["iou_token.weight", "mask_tokens.weight", "output_upscaling.0.weight", "output_upscaling.0.bias",
                                "output_upscaling.1.weight", "output_upscaling.1.bias", "output_upscaling.3.weight",
                                "output_upscaling.3.bias", "transformer.norm_final_attn.weight", "transformer.norm_final_attn.bias"])
        self.blocks = nn.ModuleList(_TwoWayBlock(sd, f"{md}.transformer.layers.{i}", i == 0) for i in range(g.decoder_depth))
        self.final_attn = _Attention(sd, f"{md}.transformer.final_attn_token_to_image")
        _buffers(self, sd, md, [f"output_hypernetworks_mlps.{t}.layers.{j}.{p}" for t in range(g.mask_tokens) for j in range(3) for p in ("weight", "bias")])
        _buffers(self, sd, md, [f"iou_prediction_head.layers.{j}.{p}" for j in range(g.iou_depth) for p in ("weight", "bias")])
        # The dense positional encoding of the embedding grid: cell centres in [0, 1].
        grid = g.grid
        centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
        xy = torch.stack([centres[None, :].expand(grid, grid), centres[:, None].expand(grid, grid)], dim=-1)
        self.register_buffer("image_pe", self._encode(xy).permute(2, 0, 1).reshape(1, -1, grid * grid).transpose(1, 2).clone())

    def _encode(self, unit: torch.Tensor) -> torch.Tensor:
        """SAM's random-Fourier positional encoding of points in [0, 1]^2."""
        proj = 2 * math.pi * ((2 * unit - 1) @ self.pe_layer_positional_encoding_gaussian_matrix)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def _layers(self, prefix: str, count: int) -> list:
        return [(getattr(self, f"{prefix}_{j}_weight"), getattr(self, f"{prefix}_{j}_bias")) for j in range(count)]

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor):
        g = self.g
        labels = point_labels[..., None]
        points = self._encode((point_coords + 0.5) / g.image_size)
        sparse = points * (labels != -1) + self.not_a_point_embed_weight * (labels == -1)
        for i in range(4):
            sparse = sparse + self.point_embeddings[i] * (labels == i)
        b = point_coords.shape[0]
        c = g.embed_dim
        tokens = torch.cat([self.iou_token_weight, self.mask_tokens_weight])[None].expand(b, -1, -1)
        queries = torch.cat([tokens, sparse], dim=1)
        # Every prompt sees the image with no mask input: SAM's "no mask" embedding on every cell.
        keys = (image_embeddings + self.no_mask_embed_weight.reshape(1, -1, 1, 1)).reshape(1, c, -1).transpose(1, 2).expand(b, -1, -1)
        key_pe = self.image_pe.expand(b, -1, -1)
        query_pe = queries
        for block in self.blocks:
            queries, keys = block(queries, keys, query_pe, key_pe)
        queries = queries + self.final_attn(queries + query_pe, keys + key_pe, keys)
        queries = F.layer_norm(queries, (c,), self.transformer_norm_final_attn_weight, self.transformer_norm_final_attn_bias, 1e-5)
        grid = g.grid
        x = keys.transpose(1, 2).reshape(b, c, grid, grid)
        x = F.conv_transpose2d(x, self.output_upscaling_0_weight, self.output_upscaling_0_bias, stride=2)
        x = F.gelu(_ln2d(x, self.output_upscaling_1_weight, self.output_upscaling_1_bias))
        x = F.gelu(F.conv_transpose2d(x, self.output_upscaling_3_weight, self.output_upscaling_3_bias, stride=2))
        hyper = torch.stack([_mlp(queries[:, 1 + t], self._layers(f"output_hypernetworks_mlps_{t}_layers", 3)) for t in range(g.mask_tokens)], dim=1)
        masks = (hyper @ x.reshape(b, x.shape[1], -1)).reshape(b, g.mask_tokens, 4 * grid, 4 * grid)
        iou = _mlp(queries[:, 0], self._layers("iou_prediction_head_layers", g.iou_depth))
        # The multimask outputs (tokens 1..3), as the automatic mask generator asks for them.
        return iou[:, 1:], masks[:, 1:]


def _reference_tiny_vit(spec: dict) -> nn.Module:
    """MobileSAM's TinyViT as `ultralytics` ports it (its `build_mobile_sam` arguments)."""
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "ovseg-ultralytics"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from ultralytics.models.sam.modules.tiny_encoder import TinyViT
    except ImportError as exc:
        raise RuntimeError("the TinyViT reference needs the ultralytics package (scripts/setup.sh installs it)") from exc
    widths, depths, heads, windows = zip(*spec["stages"])
    return TinyViT(img_size=spec["image_size"], in_chans=3, num_classes=1000, embed_dims=list(widths), depths=list(depths),
                   num_heads=list(heads), window_sizes=list(windows), mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0,
                   use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)


def reference_sam(name: str):
    """SAM of geometry `name` built by the reference packages (dev/test dependencies), with their
    own initialisation: `segment-anything`'s Sam, with `ultralytics`' TinyViT for MobileSAM's
    geometries. Load weights, then call `.eval()` again: TinyViT caches its attention biases there."""
    try:
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    except ImportError as exc:
        raise RuntimeError("random SAM checkpoints need the segment-anything package (tools/requirements.txt)") from exc
    if name in TINY_VITS:
        spec = TINY_VITS[name]
        encoder = _reference_tiny_vit(spec)
    else:
        spec = {"image_size": 1024, "window": 14, **GEOMETRIES[name]}
        encoder = ImageEncoderViT(
            depth=spec["depth"], embed_dim=spec["width"], img_size=spec["image_size"], mlp_ratio=4,
            norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6), num_heads=spec["heads"], patch_size=16, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=spec["global_blocks"], window_size=spec["window"], out_chans=256,
        )
    grid = spec["image_size"] // 16
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(spec["image_size"],) * 2, mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD,
    ).eval()


def random_state_dict(name: str, seed: int = 0) -> dict:
    """Random weights in the layout of Meta's checkpoints (the reference's keys and shapes), every
    tensor drawn anew so that none is all zeros or ones (SAM starts rel_pos at zero, which would
    hide a wrong use of them). Norm scales are drawn around 1."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sd = reference_sam(name).state_dict()
    gen = torch.Generator().manual_seed(seed)
    for key, value in sd.items():
        if not value.is_floating_point():
            continue
        scale = 0.5 if key.endswith(("positional_encoding_gaussian_matrix", "pos_embed", "attention_biases")) else 0.05
        centre = 1.0 if value.dim() == 1 and key.endswith((".weight", "running_var")) else 0.0
        sd[key] = torch.randn(value.shape, generator=gen) * scale + centre
    return sd


def export(sd: dict, final: Path, name: str, opset: int = 17, image_size: int = 1024) -> dict:
    """Writes the directory beside `final` and renames it into place: a failed export leaves nothing.
    `image_size`: a TinyViT's input size (a ViT's is read from its weights)."""
    g = geometry_of(sd, image_size)
    if final.exists() and not (final.is_dir() and (not any(final.iterdir()) or (final / "sam.json").is_file())):
        raise ValueError(f"{final} exists and is not a SAM proposal-model directory: not replacing it")
    out = staged(final)
    with torch.no_grad():
        torch.onnx.export(
            (TinyVitEncoderGraph if g.encoder == "tiny_vit" else ImageEncoderGraph)(sd, g).eval(), (torch.zeros(1, 3, g.image_size, g.image_size),), str(out / "sam_image_encoder.onnx"),
            opset_version=opset, input_names=["image"], output_names=["image_embeddings"],
        )
        torch.onnx.export(
            MaskDecoderGraph(sd, g).eval(),
            (torch.zeros(1, g.embed_dim, g.grid, g.grid), torch.zeros(2, 2, 2), torch.tensor([[1.0, -1.0], [1.0, -1.0]])),
            str(out / "sam_mask_decoder.onnx"), opset_version=opset,
            input_names=["image_embeddings", "point_coords", "point_labels"], output_names=["iou_predictions", "low_res_masks"],
            dynamic_axes={"point_coords": {0: "prompts", 1: "points"}, "point_labels": {0: "prompts", 1: "points"},
                          "iou_predictions": {0: "prompts"}, "low_res_masks": {0: "prompts"}},
        )
    geometry = asdict(g)
    if g.encoder == "tiny_vit":
        geometry = {"encoder": "tiny_vit", "stages": [dict(zip(("width", "depth", "heads", "window"), s)) for s in g.stages]}
    else:
        geometry = {k: geometry[k] for k in ("width", "depth", "heads", "window", "patch_size")}
        geometry["global_blocks"] = list(g.global_blocks)
    manifest = {
        "format": "ovseg-sam",
        "version": FORMAT_VERSION,
        "name": name,
        "imageSize": g.image_size,
        "embedding": {"channels": g.embed_dim, "grid": g.grid},
        "maskSize": 4 * g.grid,
        "pixelMean": PIXEL_MEAN,
        "pixelStd": PIXEL_STD,
        "maskThreshold": MASK_THRESHOLD,
        "graphs": {"imageEncoder": "sam_image_encoder.onnx", "maskDecoder": "sam_mask_decoder.onnx"},
        "geometry": geometry,
    }
    (out / "sam.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(out, final)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ovseg_tools.export.sam", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a SAM or MobileSAM checkpoint (.pth / .pt), or with --random the geometry: "
                        + ", ".join([*GEOMETRIES, *TINY_VITS]))
    parser.add_argument("out", type=Path, help="the proposal-model directory to write")
    parser.add_argument("--random", action="store_true", help="random weights in the checkpoint layout instead of a file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="the manifest's name (default: the checkpoint's file name)")
    parser.add_argument("--image-size", type=int, default=None, help="a TinyViT's input size (default 1024, MobileSAM's)")
    a = parser.parse_args()
    image_size = a.image_size or 1024
    if a.random:
        if a.checkpoint not in GEOMETRIES and a.checkpoint not in TINY_VITS:
            raise ValueError(f"--random takes one of {', '.join([*GEOMETRIES, *TINY_VITS])}, not {a.checkpoint!r}")
        sd, name = random_state_dict(a.checkpoint, a.seed), a.name or f"sam-{a.checkpoint}-random"
        image_size = a.image_size or TINY_VITS.get(a.checkpoint, {}).get("image_size", 1024)
    else:
        sd = torch.load(a.checkpoint, map_location="cpu")
        if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
            sd = sd["model"]
        name = a.name or Path(a.checkpoint).stem
    m = export(sd, a.out, name, image_size=image_size)
    geometry = m["geometry"]
    encoder = (f"TinyViT {'/'.join(str(s['width']) for s in geometry['stages'])}" if "stages" in geometry
               else f"ViT {geometry['width']} x {geometry['depth']}")
    print(f"wrote {a.out}: {m['name']}, {m['imageSize']} px, {encoder}")


if __name__ == "__main__":
    run(main)
