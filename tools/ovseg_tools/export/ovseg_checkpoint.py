"""OVSeg's released checkpoints: which config they run with, and every key accounted for.

A full OVSeg checkpoint (`ckpt["model"]`) holds the mask generator (`backbone.*`,
`sem_seg_head.*`), the mask-adapted CLIP (`clip_adapter.clip_model.*`, with
`visual.mask_embedding`), the no-object embedding and a few constants. Every key is either used by
the export, or on `UNUSED` with the reason; an unknown, missing or mis-shaped key is an error that
names it, raised before anything is written.

The YAML configs (`--config`) give what the weights do not: attention heads, the res5 multi-grid,
and the inference defaults the manifest carries (mask threshold, ensemble weight, mode,
processing size). Without one, the variant is inferred from the weights and its evaluation config
(`CONFIGS`) is used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..clip_reference import CLIP, Geometry, random_state_dict
from ..constants import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
from .maskformer import BACKBONE, HEAD, GeneratorSpec, HeadSpec, MaskFormerGenerator, ResNetSpec, SwinSpec, \
    relative_position_index

CLIP_PREFIX = "clip_adapter.clip_model."
NO_OBJECT = "clip_adapter.non_object_embedding"
# Keys a released checkpoint has that inference does not read.
UNUSED = {
    "criterion.empty_weight": "the training loss's class weights (MaskFormer's SetCriterion)",
    CLIP_PREFIX + "logit_scale": "CLIP's learned temperature: OVSeg classifies with a fixed 100 (docs/ovseg.md 1.3, 1.6)",
}
# Constants stored as buffers: checked equal to what the manifest says instead of read.
CLIP_NORMALIZATION = {
    "clip_adapter.pixel_mean": [255.0 * c for c in CLIP_MEAN],
    "clip_adapter.pixel_std": [255.0 * c for c in CLIP_STD],
}


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class OVSegConfig:
    """What one of OVSeg's YAML configs says about inference."""
    name: str
    backbone: str  # "swin" | "resnet"
    mode: str  # "semantic" (OVSeg) | "demo" (OVSegDEMO)
    threshold: float  # CLIP_ADAPTER.MASK_THR
    ensemble_weight: float  # CLIP_ADAPTER.CLIP_ENSEMBLE_WEIGHT
    short_side: int  # INPUT.MIN_SIZE_TEST
    max_size: int  # INPUT.MAX_SIZE_TEST
    decoder_heads: int = 8  # MASK_FORMER.NHEADS
    swin_heads: tuple[int, ...] = (4, 8, 16, 32)  # SWIN.NUM_HEADS
    multi_grid: tuple[int, ...] = (1, 2, 4)  # RESNETS.RES5_MULTI_GRID
    pixel_mean: tuple[float, ...] = tuple(IMAGENET_MEAN)
    pixel_std: tuple[float, ...] = tuple(IMAGENET_STD)

    def defaults(self) -> dict:
        """The manifest's `defaults` (format version 2)."""
        return {"mode": self.mode, self.mode: {"threshold": self.threshold, "lambda": self.ensemble_weight}}


# The evaluation configs of the two released checkpoints, and the demo config (ov-seg's configs/).
CONFIGS = {
    "ovseg_swinB_vitL_bs32_120k.yaml": OVSegConfig("ovseg_swinB_vitL_bs32_120k.yaml", "swin", "semantic", 0.4, 0.7, 640, 2560),
    "ovseg_swinB_vitL_demo.yaml": OVSegConfig("ovseg_swinB_vitL_demo.yaml", "swin", "demo", 0.35, 0.0, 640, 2560),
    "ovseg_R101c_vitB_bs32_120k.yaml": OVSegConfig("ovseg_R101c_vitB_bs32_120k.yaml", "resnet", "semantic", 0.5, 0.7, 512, 2048),
}
EVAL_CONFIG = {"swin": "ovseg_swinB_vitL_bs32_120k.yaml", "resnet": "ovseg_R101c_vitB_bs32_120k.yaml"}


class _Loader(yaml.SafeLoader):
    pass


# MIN_SIZE_TRAIN is written as `!!python/object/apply:eval [...]`: a training-only value, never evaluated.
_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def read_config(path: Path) -> OVSegConfig:
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not a YAML file ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("MODEL"), dict):
        raise ValueError(f"{path}: not a detectron2 config (no MODEL section)")
    model, inp = doc["MODEL"], doc.get("INPUT") or {}

    def get(section: dict, dotted: str, default=None):
        node = section
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    arch = get(model, "META_ARCHITECTURE")
    if arch not in ("OVSeg", "OVSegDEMO"):
        raise ValueError(f"{path}: MODEL.META_ARCHITECTURE is {arch!r}, not OVSeg's (OVSeg or OVSegDEMO)")
    backbone_name = get(model, "BACKBONE.NAME")
    backbones = {"D2SwinTransformer": "swin", "build_resnet_deeplab_backbone": "resnet"}
    if backbone_name not in backbones:
        raise ValueError(f"{path}: MODEL.BACKBONE.NAME {backbone_name!r} is not one this exporter builds "
                         f"({', '.join(backbones)})")
    if get(model, "MASK_FORMER.PRE_NORM", False) or get(model, "MASK_FORMER.ENC_LAYERS", 0):
        raise ValueError(f"{path}: a pre-norm decoder or transformer-encoder layers are not OVSeg's released head")
    if get(model, "RESNETS.RES5_DILATION", 1) != 1 or get(model, "RESNETS.STRIDE_IN_1X1", False):
        raise ValueError(f"{path}: RESNETS.RES5_DILATION / STRIDE_IN_1X1 differ from the released R101c")
    try:
        return OVSegConfig(
            name=path.name,
            backbone=backbones[backbone_name],
            mode="demo" if arch == "OVSegDEMO" else "semantic",
            threshold=float(get(model, "CLIP_ADAPTER.MASK_THR", 0.4)),
            ensemble_weight=float(get(model, "CLIP_ADAPTER.CLIP_ENSEMBLE_WEIGHT", 0.7))
            if get(model, "CLIP_ADAPTER.CLIP_ENSEMBLE", True) else 0.0,
            short_side=int(get(inp, "MIN_SIZE_TEST", 640)),
            max_size=int(get(inp, "MAX_SIZE_TEST", 2560)),
            decoder_heads=int(get(model, "MASK_FORMER.NHEADS", 8)),
            swin_heads=tuple(int(v) for v in get(model, "SWIN.NUM_HEADS", [4, 8, 16, 32])),
            multi_grid=tuple(int(v) for v in get(model, "RESNETS.RES5_MULTI_GRID", [1, 2, 4])),
            pixel_mean=tuple(float(v) for v in get(model, "PIXEL_MEAN", IMAGENET_MEAN)),
            pixel_std=tuple(float(v) for v in get(model, "PIXEL_STD", IMAGENET_STD)),
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: a value of the wrong type ({exc})") from exc


def _count(sd: dict, prefix: str) -> int:
    """How many numbered children `prefix{i}.` has (0, 1, ... without gaps)."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in sd):
        n += 1
    return n


def _shape(sd: dict, key: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"checkpoint key {key} is missing")
    return tuple(sd[key].shape)


def generator_spec(sd: dict, config: OVSegConfig | None) -> GeneratorSpec:
    """The generator's geometry from the weights' shapes; heads and multi-grid from the config."""
    if BACKBONE + "patch_embed.proj.weight" in sd:
        embed, _, patch, _ = _shape(sd, BACKBONE + "patch_embed.proj.weight")
        stages = _count(sd, BACKBONE + "layers.")
        depths = tuple(_count(sd, f"{BACKBONE}layers.{i}.blocks.") for i in range(stages))
        table, heads0 = _shape(sd, BACKBONE + "layers.0.blocks.0.attn.relative_position_bias_table")
        window = (math.isqrt(table) + 1) // 2
        heads = config.swin_heads if config else SwinSpec().heads
        found = tuple(_shape(sd, f"{BACKBONE}layers.{i}.blocks.0.attn.relative_position_bias_table")[1]
                      for i in range(stages))
        if found != tuple(heads):  # the bias table has one column per head
            raise CheckpointError(f"the Swin bias tables have {found} heads per stage, the config says {heads}")
        hidden = _shape(sd, BACKBONE + "layers.0.blocks.0.mlp.fc1.weight")[0]
        backbone: SwinSpec | ResNetSpec = SwinSpec(embed, depths, tuple(heads), window, patch, hidden // embed)
    elif BACKBONE + "stem.conv1.weight" in sd:
        stages = [f"{BACKBONE}res{i}." for i in range(2, 6)]
        backbone = ResNetSpec(
            blocks=tuple(_count(sd, s) for s in stages),
            stem_channels=_shape(sd, BACKBONE + "stem.conv3.weight")[0],
            res2_channels=_shape(sd, BACKBONE + "res2.0.conv3.weight")[0],
            bottleneck=_shape(sd, BACKBONE + "res2.0.conv1.weight")[0],
            multi_grid=config.multi_grid if config else ResNetSpec().multi_grid)
        if len(backbone.multi_grid) != backbone.blocks[-1]:
            raise CheckpointError(f"res5 has {backbone.blocks[-1]} blocks but the multi-grid {backbone.multi_grid} "
                                  f"has {len(backbone.multi_grid)}")
    else:
        raise CheckpointError("no mask generator in the checkpoint: neither backbone.patch_embed.proj.weight (Swin) "
                              "nor backbone.stem.conv1.weight (DeepLab ResNet)")
    p = HEAD + "predictor."
    queries, hidden_dim = _shape(sd, p + "query_embed.weight")
    embed_layers = _count(sd, p + "class_embed.layers.")
    head = HeadSpec(
        text_dim=_shape(sd, f"{p}class_embed.layers.{embed_layers - 1}.weight")[0],
        conv_dim=_shape(sd, HEAD + "pixel_decoder.mask_features.weight")[1],
        mask_dim=_shape(sd, HEAD + "pixel_decoder.mask_features.weight")[0],
        hidden_dim=hidden_dim,
        queries=queries,
        heads=config.decoder_heads if config else HeadSpec().heads,
        ffn=_shape(sd, p + "transformer.decoder.layers.0.linear1.weight")[0],
        decoder_layers=_count(sd, p + "transformer.decoder.layers."),
        embed_hidden=_shape(sd, p + "class_embed.layers.0.weight")[0],
        embed_layers=embed_layers,
    )
    if hidden_dim % head.heads:
        raise CheckpointError(f"hidden size {hidden_dim} does not split into {head.heads} decoder heads")
    return GeneratorSpec(backbone, head)


def _check_keys(got: dict, want: dict, what: str) -> None:
    """`got` and `want` map keys to tensors (want: the module's own state dict)."""
    missing = [k for k in want if k not in got]
    unknown = [k for k in got if k not in want]
    if missing:
        raise CheckpointError(f"{what}: checkpoint key {missing[0]} is missing" +
                              (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unknown:
        raise CheckpointError(f"{what}: checkpoint key {unknown[0]} is not one this exporter knows" +
                              (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    for k, v in want.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{what}: checkpoint key {k} has shape {list(got[k].shape)}, expected {list(v.shape)}")
        if not torch.is_tensor(got[k]) or got[k].dtype.is_floating_point != v.dtype.is_floating_point:
            raise CheckpointError(f"{what}: checkpoint key {k} is {getattr(got[k], 'dtype', type(got[k]))}, "
                                  f"expected {v.dtype}")


def load_generator(sd: dict, config: OVSegConfig | None) -> MaskFormerGenerator:
    """The generator from the checkpoint's `backbone.*` / `sem_seg_head.*` keys, strictly."""
    spec = generator_spec(sd, config)
    if config and config.backbone != spec.variant:
        raise CheckpointError(f"the config {config.name} is for a {config.backbone} backbone, the checkpoint has a "
                              f"{spec.variant} one")
    generator = MaskFormerGenerator(spec).eval()
    want = generator.state_dict()
    got = {k: v for k, v in sd.items() if k.startswith((BACKBONE, HEAD))}
    _check_keys(got, want, "mask generator")
    if spec.variant == "swin":  # buffers recomputed by the code; a different table would mean other code
        index = relative_position_index(spec.backbone.window)
        for k in got:
            if k.endswith("relative_position_index") and not torch.equal(got[k].long(), index):
                raise CheckpointError(f"checkpoint key {k} differs from Swin's relative position index")
    generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in got.items()})
    return generator


def check_clip_keys(clip_sd: dict, g: Geometry) -> None:
    """The CLIP state dict (OpenAI's layout, prefix removed) has exactly the keys of geometry `g`."""
    want = CLIP(g).state_dict()
    got = {k: v for k, v in clip_sd.items() if k != "visual.mask_embedding" and k != "logit_scale"}
    want = {k: v for k, v in want.items() if k != "logit_scale"}
    _check_keys(got, want, "CLIP")
    prompts = clip_sd.get("visual.mask_embedding")
    if prompts is not None and (prompts.dim() != 3 or prompts.shape[1] not in (1, g.grid ** 2)
                                or prompts.shape[2] != g.vision_width or not 1 <= prompts.shape[0] <= g.vision_layers):
        raise CheckpointError(f"CLIP: checkpoint key visual.mask_embedding has shape {list(prompts.shape)}, expected "
                              f"[depth <= {g.vision_layers}, 1 or {g.grid ** 2}, {g.vision_width}]")


def check_ovseg_keys(model: dict) -> None:
    """Everything outside the generator and CLIP: known, with the right shape and value."""
    for key, value in CLIP_NORMALIZATION.items():
        if key in model and not torch.allclose(model[key].flatten().double(), torch.tensor(value, dtype=torch.float64),
                                                atol=1e-3):
            raise CheckpointError(f"checkpoint key {key} is {model[key].flatten().tolist()}, not CLIP's normalization")
    known = set(UNUSED) | set(CLIP_NORMALIZATION) | {NO_OBJECT}
    for key in model:
        if not key.startswith((BACKBONE, HEAD, CLIP_PREFIX)) and key not in known:
            raise CheckpointError(f"checkpoint key {key} is not one this exporter knows")


ATTENTION_GAIN = 3.0
MASK_GAIN = 0.25


def random_checkpoint(spec: GeneratorSpec, g: Geometry, seed: int, prompt_depth: int = 3) -> dict:
    """Random weights in the released layout (`ckpt["model"]`): the generator with scales that keep
    activations finite and varied through its depth, a random CLIP of geometry `g`, the no-object
    embedding and the constants the released files hold."""
    torch.manual_seed(seed)
    generator = MaskFormerGenerator(spec)
    # Past 16 blocks a random ResNet's residual stream grows until float rounding decides its
    # attention (PyTorch's 1- and 2-thread logits then differ by 5e-3 to 7e-3): smaller branches
    # keep the full R101c as calm as the CI-sized one.
    blocks = sum(spec.backbone.blocks) if spec.variant == "resnet" else 0
    residual_gain = min(1.0, (16 / blocks) ** 0.5) if blocks else 1.0
    model = {}
    for key, value in generator.state_dict().items():
        name = key.rsplit(".", 1)[-1]
        if not value.is_floating_point():
            model[key] = value.clone()
        elif name == "running_var":
            model[key] = torch.rand(value.shape) + 0.5
        elif name == "running_mean":
            model[key] = torch.randn(value.shape) * 0.1
        elif key.endswith("conv3.norm.weight"):  # a ResNet block's residual branch
            model[key] = residual_gain * (1 + 0.1 * torch.randn(value.shape))
        elif value.dim() == 1 and ("norm" in key or name == "weight"):  # LayerNorm / GroupNorm / FrozenBN scales
            model[key] = 1 + 0.1 * torch.randn(value.shape) if name == "weight" else 0.05 * torch.randn(value.shape)
        elif name == "relative_position_bias_table":
            model[key] = 0.5 * torch.randn(value.shape)
        elif key.endswith("query_embed.weight"):  # unit scale: distinct queries, distinct masks
            model[key] = torch.randn(value.shape)
        elif key.endswith("attn.in_proj_weight"):  # peaked attention, as trained: queries read different places
            model[key] = ATTENTION_GAIN * torch.randn(value.shape) / math.sqrt(value.shape[1])
        elif key.endswith("mask_embed.layers.2.weight"):  # mask logits of a few units, as trained, not tens
            model[key] = MASK_GAIN * torch.randn(value.shape) / math.sqrt(value.shape[1])
        elif value.dim() == 1:  # biases
            model[key] = 0.02 * torch.randn(value.shape)
        else:  # Linear / Conv / embedding weights: fan-in scaling
            model[key] = torch.randn(value.shape) / math.sqrt(value[0].numel())
    clip = random_state_dict(g, seed + 1, prompt_depth)
    model.update({CLIP_PREFIX + k: v for k, v in clip.items()})
    model[NO_OBJECT] = torch.randn(1, g.embed_dim) * g.text_width ** -0.5
    model.update({k: torch.tensor(v).reshape(1, 3, 1, 1) for k, v in CLIP_NORMALIZATION.items()})
    model["criterion.empty_weight"] = torch.cat([torch.ones(171), torch.tensor([0.1])])
    return model

