"""OVSeg's released mask generator (MaskFormer with an open-vocabulary class head), written from
its description in docs/ovseg.md section 8 and loaded from the released checkpoints' keys.

Two backbones: Swin-B (`ovseg_swinbase_vitL14_ft_mpt.pth`) and the DeepLab ResNet-101 "R101c"
(`ovseg_R101c_vitB16_ft_mpt.pth`). The head is the same: a GroupNorm FPN pixel decoder, a 6-layer
post-norm DETR decoder over the res5 features with 100 queries, a mask MLP and a class-embedding
MLP into CLIP's text space. Output contract: export/mask_generator.py (`image` -> `mask_logits`,
`query_embeddings`). The forward keeps every shape dynamic so that one ONNX graph takes any
input size that is a multiple of 32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

BACKBONE = "backbone."
HEAD = "sem_seg_head."


@dataclass(frozen=True)
class SwinSpec:
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    heads: tuple[int, ...] = (4, 8, 16, 32)
    window: int = 12
    patch: int = 4
    mlp_ratio: int = 4

    @property
    def channels(self) -> list[int]:
        return [self.embed_dim * 2 ** i for i in range(len(self.depths))]


@dataclass(frozen=True)
class ResNetSpec:
    """detectron2's DeepLab ResNet as OVSeg's R101c config builds it: DeepLab stem (three 3x3
    convs, max-pool), stride on the 3x3 conv, frozen BatchNorm, res5 blocks dilated by the multi-grid."""
    blocks: tuple[int, ...] = (3, 4, 23, 3)
    stem_channels: int = 128
    res2_channels: int = 256
    bottleneck: int = 64
    multi_grid: tuple[int, ...] = (1, 2, 4)

    @property
    def channels(self) -> list[int]:
        return [self.res2_channels * 2 ** i for i in range(len(self.blocks))]


@dataclass(frozen=True)
class HeadSpec:
    text_dim: int = 768
    conv_dim: int = 256
    mask_dim: int = 256
    hidden_dim: int = 256
    queries: int = 100
    heads: int = 8
    ffn: int = 2048
    decoder_layers: int = 6
    embed_hidden: int = 1024
    embed_layers: int = 2
    groups: int = 32  # detectron2's get_norm("GN")


@dataclass(frozen=True)
class GeneratorSpec:
    backbone: SwinSpec | ResNetSpec
    head: HeadSpec

    @property
    def variant(self) -> str:
        return "swin" if isinstance(self.backbone, SwinSpec) else "resnet"


SWIN_B = GeneratorSpec(SwinSpec(), HeadSpec(text_dim=768))
R101C = GeneratorSpec(ResNetSpec(), HeadSpec(text_dim=512))
# Same key names and shapes, fewer blocks: what CI exports and runs (OVSeg's code builds them with
# SWIN.DEPTHS [2, 2, 2, 2] / RESNETS.DEPTH 50).
SWIN_B_CI = replace(SWIN_B, backbone=replace(SWIN_B.backbone, depths=(2, 2, 2, 2)))
R101C_CI = replace(R101C, backbone=replace(R101C.backbone, blocks=(3, 4, 6, 3)))


# --- Swin ---------------------------------------------------------------------------------------

def relative_position_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * windows, ws * ws, C]"""
    _, h, w, c = x.shape
    x = x.view(-1, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h, w) -> torch.Tensor:
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(hp, wp, ws: int, shift: int, device) -> torch.Tensor:
    """Swin's attention mask for the cyclic shift: the padded grid is cut into 3 x 3 regions
    (rows/columns before the last window, then the last window minus the shift, then the shift);
    tokens of different regions in one window get -100 (not -inf). Built from comparisons instead
    of slice assignment so that the grid size stays dynamic in the exported graph."""
    rows = torch.arange(hp, device=device)
    cols = torch.arange(wp, device=device)
    region_h = (rows >= hp - ws).long() + (rows >= hp - shift).long()
    region_w = (cols >= wp - ws).long() + (cols >= wp - shift).long()
    region = (region_h[:, None] * 3 + region_w[None, :]).float()[None, :, :, None]
    windows = window_partition(region, ws)[..., 0]  # [windows, ws * ws]
    diff = windows[:, None, :] - windows[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.window = window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        n_win = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n_win, n_win, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(-1, windows, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h, w, mask: torch.Tensor) -> torch.Tensor:
        _, _, c = x.shape
        ws = self.window
        y = self.norm1(x).view(-1, h, w, c)
        # Padded after the norm: the pad tokens are zeros that the windows attend to (no mask).
        pad_r = (ws - w % ws) % ws
        pad_b = (ws - h % ws) % ws
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = y.shape[1], y.shape[2]
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, ws), mask if self.shift else None)
        y = window_reverse(y, ws, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :h, :w, :].reshape(-1, h * w, c)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h, w) -> torch.Tensor:
        # h and w are even: the input is a multiple of 32 (the generator contract).
        c = x.shape[-1]
        x = x.view(-1, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(x.shape[0], -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: int, downsample: bool):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList([SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio)
                                     for i in range(depth)])
        self.downsample = PatchMerging(dim) if downsample else None


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)


class Swin(nn.Module):
    def __init__(self, spec: SwinSpec):
        super().__init__()
        self.spec = spec
        self.patch_embed = PatchEmbed(spec.patch, spec.embed_dim)
        last = len(spec.depths) - 1
        self.layers = nn.ModuleList([
            SwinStage(dim, depth, heads, spec.window, spec.mlp_ratio, i < last)
            for i, (dim, depth, heads) in enumerate(zip(spec.channels, spec.depths, spec.heads))])
        for i, dim in enumerate(spec.channels):  # a LayerNorm per output stage
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed.proj(image)
        h, w = x.shape[2], x.shape[3]
        x = self.patch_embed.norm(x.flatten(2).transpose(1, 2))
        ws = self.spec.window
        outs = []
        for i, stage in enumerate(self.layers):
            hp = (h + ws - 1) // ws * ws
            wp = (w + ws - 1) // ws * ws
            mask = shifted_window_mask(hp, wp, ws, ws // 2, x.device)
            for block in stage.blocks:
                x = block(x, h, w, mask)
            dim = self.spec.channels[i]
            outs.append(getattr(self, f"norm{i}")(x).view(-1, h, w, dim).permute(0, 3, 1, 2).contiguous())
            if stage.downsample is not None:
                x = stage.downsample(x, h, w)
                h, w = (h + 1) // 2, (w + 1) // 2
        return outs


# --- DeepLab ResNet ---------------------------------------------------------------------------------

class FrozenBatchNorm2d(nn.Module):
    """detectron2's FrozenBatchNorm2d (eps 1e-5), as a scale and a shift."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


class ConvNorm(nn.Conv2d):
    """detectron2's Conv2d with a norm (no bias when normed)."""

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, dilation: int = 1, norm: str = "frozen_bn",
                 groups: int = 32):
        padding = dilation * (kernel // 2)
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.norm = FrozenBatchNorm2d(cout) if norm == "frozen_bn" else nn.GroupNorm(groups, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class DeepLabStem(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvNorm(3, channels // 2, 3, stride=2)
        self.conv2 = ConvNorm(channels // 2, channels // 2, 3)
        self.conv3 = ConvNorm(channels // 2, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, bottleneck: int, stride: int, dilation: int):
        super().__init__()
        self.shortcut = ConvNorm(cin, cout, 1, stride=stride) if cin != cout else None
        self.conv1 = ConvNorm(cin, bottleneck, 1)
        self.conv2 = ConvNorm(bottleneck, bottleneck, 3, stride=stride, dilation=dilation)
        self.conv3 = ConvNorm(bottleneck, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class DeepLabResNet(nn.Module):
    def __init__(self, spec: ResNetSpec):
        super().__init__()
        self.stem = DeepLabStem(spec.stem_channels)
        cin, bottleneck = spec.stem_channels, spec.bottleneck
        self.stage_names = []
        for i, (blocks, cout) in enumerate(zip(spec.blocks, spec.channels)):
            last = i == len(spec.blocks) - 1
            dilations = [m for m in spec.multi_grid] if last else [1] * blocks
            stage = nn.Sequential(*[Bottleneck(cin if b == 0 else cout, cout, bottleneck, 2 if (b == 0 and i > 0) else 1,
                                               dilations[b]) for b in range(blocks)])
            self.add_module(f"res{i + 2}", stage)
            self.stage_names.append(f"res{i + 2}")
            cin, bottleneck = cout, bottleneck * 2

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(image)
        outs = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            outs.append(x)
        return outs


# --- head ---------------------------------------------------------------------------------------

class PixelDecoder(nn.Module):
    """detectron2-style FPN (BasePixelDecoder): lateral 1x1 + output 3x3 convs with GroupNorm,
    nearest upsampling, then a 3x3 mask-features conv with a bias and no norm."""

    def __init__(self, channels: list[int], h: HeadSpec):
        super().__init__()
        n = len(channels)
        for i, cin in enumerate(channels):
            if i < n - 1:
                self.add_module(f"adapter_{i + 1}", ConvNorm(cin, h.conv_dim, 1, norm="gn", groups=h.groups))
            self.add_module(f"layer_{i + 1}", ConvNorm(cin if i == n - 1 else h.conv_dim, h.conv_dim, 3, norm="gn",
                                                       groups=h.groups))
        self.mask_features = nn.Conv2d(h.conv_dim, h.mask_dim, 3, padding=1)
        self.levels = n

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        y = F.relu(getattr(self, f"layer_{self.levels}")(features[-1]))
        for i in range(self.levels - 1, 0, -1):
            lateral = getattr(self, f"adapter_{i}")(features[i - 1])
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = F.relu(getattr(self, f"layer_{i}")(y))
        return self.mask_features(y)


def sine_position(x: torch.Tensor, features: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalized sine encoding with no padding mask (a cumulative sum of ones is 1..n)."""
    h, w = x.shape[2], x.shape[3]
    eps, scale = 1e-6, 2 * math.pi
    y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=x.device)
    x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=x.device)
    y_embed = y_embed / (y_embed[-1:] + eps) * scale
    x_embed = x_embed / (x_embed[-1:] + eps) * scale
    dim_t = torch.arange(features, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / features)
    pos_y = y_embed[:, None] / dim_t  # [h, features]
    pos_x = x_embed[:, None] / dim_t
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat((pos_y[:, None, :].expand(-1, w, -1), pos_x[None, :, :].expand(h, -1, -1)), dim=2)
    return pos.permute(2, 0, 1).unsqueeze(0)  # [1, 2 * features, h, w]


class DecoderLayer(nn.Module):
    """DETR's post-norm decoder layer (ReLU FFN)."""

    def __init__(self, h: HeadSpec):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(h.hidden_dim, h.heads)
        self.multihead_attn = nn.MultiheadAttention(h.hidden_dim, h.heads)
        self.linear1 = nn.Linear(h.hidden_dim, h.ffn)
        self.linear2 = nn.Linear(h.ffn, h.hidden_dim)
        self.norm1 = nn.LayerNorm(h.hidden_dim)
        self.norm2 = nn.LayerNorm(h.hidden_dim)
        self.norm3 = nn.LayerNorm(h.hidden_dim)

    def forward(self, tgt, memory, pos, query_pos):
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, k, value=tgt, need_weights=False)[0])
        tgt2 = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory, need_weights=False)[0]
        tgt = self.norm2(tgt + tgt2)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class Decoder(nn.Module):
    def __init__(self, h: HeadSpec):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(h) for _ in range(h.decoder_layers)])
        self.norm = nn.LayerNorm(h.hidden_dim)


class Transformer(nn.Module):
    def __init__(self, h: HeadSpec):
        super().__init__()
        self.decoder = Decoder(h)  # no encoder layers (ENC_LAYERS 0): the memory is the projected res5


class MLP(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, layers: int):
        super().__init__()
        dims = [cin] + [hidden] * (layers - 1) + [cout]
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class Predictor(nn.Module):
    def __init__(self, res5_channels: int, h: HeadSpec):
        super().__init__()
        self.hidden = h.hidden_dim
        self.input_proj = nn.Conv2d(res5_channels, h.hidden_dim, 1)
        self.transformer = Transformer(h)
        self.query_embed = nn.Embedding(h.queries, h.hidden_dim)
        self.mask_embed = MLP(h.hidden_dim, h.hidden_dim, h.mask_dim, 3)
        self.class_embed = MLP(h.hidden_dim, h.embed_hidden, h.text_dim, h.embed_layers)

    def forward(self, res5: torch.Tensor, mask_features: torch.Tensor):
        pos = sine_position(res5, self.hidden // 2).flatten(2).permute(2, 0, 1)  # [hw, 1, C]
        memory = self.input_proj(res5).flatten(2).permute(2, 0, 1)
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, memory.shape[1], 1)  # [Q, B, C]
        x = torch.zeros_like(query_pos)
        for layer in self.transformer.decoder.layers:
            x = layer(x, memory, pos, query_pos)
        x = self.transformer.decoder.norm(x).transpose(0, 1)  # [B, Q, C]
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(x), mask_features)
        return masks, self.class_embed(x)


class Head(nn.Module):
    def __init__(self, channels: list[int], h: HeadSpec):
        super().__init__()
        self.pixel_decoder = PixelDecoder(channels, h)
        self.predictor = Predictor(channels[-1], h)


class MaskFormerGenerator(nn.Module):
    """`image` (normalized, padded to a multiple of 32) -> stride-4 mask logits [B, Q, H/4, W/4] and
    query embeddings [B, Q, text_dim] (the class head's output; classified against CLIP text)."""

    def __init__(self, spec: GeneratorSpec):
        super().__init__()
        self.spec = spec
        self.backbone = Swin(spec.backbone) if spec.variant == "swin" else DeepLabResNet(spec.backbone)
        self.sem_seg_head = Head(spec.backbone.channels, spec.head)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(image)
        mask_features = self.sem_seg_head.pixel_decoder(features)
        return self.sem_seg_head.predictor(features[-1], mask_features)
