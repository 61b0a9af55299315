"""PyTorch reference forward of OpenAI CLIP with OVSeg's mask-prompted ViT.

Written to follow OpenAI's `clip/model.py` (sequence-first layout, nn.MultiheadAttention,
QuickGELU) and OVSeg's mask prompt tuning (docs/ovseg.md, section 1 step 5) line by line. It is
the parity reference for the ONNX graphs that ovseg runs; the graphs themselves come from a
separate, export-friendly module (export/graphs.py). Shared by the three roles: the references
run it, the exporter takes its geometries and random weights, the recipe trains it.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Geometry:
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    embed_dim: int
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_heads: int

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def as_dict(self) -> dict:
        return asdict(self)


VIT_B_16 = Geometry(224, 16, 768, 12, 12, 512, 77, 49408, 512, 12, 8)
VIT_L_14 = Geometry(224, 14, 1024, 24, 16, 768, 77, 49408, 768, 12, 12)
# Small enough to commit (a few MB, most of it the 49,408-row token embedding), with the real vocabulary.
TINY = Geometry(64, 16, 32, 3, 2, 16, 77, 49408, 16, 2, 2)


def geometry_from_state_dict(sd: dict, vision_heads: int | None = None, text_heads: int | None = None) -> Geometry:
    """OpenAI's `build_model` inference of the geometry; heads default to width // 64 as in OpenAI CLIP."""
    vision_width = sd["visual.conv1.weight"].shape[0]
    vision_layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = sd["ln_final.weight"].shape[0]
    return Geometry(
        image_size=patch * grid,
        patch_size=patch,
        vision_width=vision_width,
        vision_layers=vision_layers,
        vision_heads=vision_heads or vision_width // 64,
        embed_dim=sd["text_projection"].shape[1],
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        text_width=text_width,
        text_layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
        text_heads=text_heads or text_width // 64,
    )


class LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor | None = None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        # Sliced: a text batch may be cut below the context (encode_texts(cut=True)).
        mask = self.attn_mask[: len(x), : len(x)].to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor | None = None):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """OpenAI's ViT plus OVSeg's mask prompts (`mask_embedding`, [depth, grid*grid or 1, width])."""

    def __init__(self, g: Geometry):
        super().__init__()
        width = g.vision_width
        self.patch_size = g.patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=g.patch_size, stride=g.patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(g.grid ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, g.vision_layers, g.vision_heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, g.embed_dim))
        self.mask_embedding: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, 3, S, S] normalized pixels; mask: [B, 1, S, S] binary foreground (or None)."""
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, grid**2, width]
        prompts = self.mask_embedding
        use_prompts = mask is not None and prompts is not None and prompts.shape[0] > 0
        if use_prompts:
            # A patch is kept if ANY of its pixels is foreground: ceil of the average pool.
            m = torch.ceil(F.avg_pool2d(mask.float(), kernel_size=self.patch_size, stride=self.patch_size))
            m = m.reshape(m.shape[0], -1).unsqueeze(-1)  # [B, grid**2, 1]
            if prompts.shape[1] == 1:
                prompts = prompts.repeat(1, x.shape[1], 1)
            x = x * m + prompts[0].unsqueeze(0) * (1 - m)
        cls = self.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)  # NLD -> LND
        if use_prompts:
            m_lnd = m.permute(1, 0, 2)
            for i, block in enumerate(self.transformer.resblocks):
                x = block(x)
                d = i + 1
                if d < prompts.shape[0]:
                    x = torch.cat([x[:1], x[1:] * m_lnd + prompts[d].unsqueeze(1) * (1 - m_lnd)], dim=0)
        else:
            x = self.transformer(x)
        x = x.permute(1, 0, 2)
        x = self.ln_post(x[:, 0, :])
        return x @ self.proj


class CLIP(nn.Module):
    def __init__(self, g: Geometry):
        super().__init__()
        self.geometry = g
        self.visual = VisionTransformer(g)
        mask = torch.empty(g.context_length, g.context_length).fill_(float("-inf")).triu_(1)
        self.transformer = Transformer(g.text_width, g.text_layers, g.text_heads, attn_mask=mask)
        self.token_embedding = nn.Embedding(g.vocab_size, g.text_width)
        self.positional_embedding = nn.Parameter(torch.empty(g.context_length, g.text_width))
        self.ln_final = LayerNorm(g.text_width)
        self.text_projection = nn.Parameter(torch.empty(g.text_width, g.embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * 4.6052)

    def encode_image(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.visual(image, mask)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(text)
        x = x + self.positional_embedding[: text.shape[1]]
        x = x.permute(1, 0, 2)
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x)
        # Features at the end-of-text token (the highest id in each row).
        return x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)] @ self.text_projection


def tokenize(tok, texts: list[str], context: int) -> torch.Tensor:
    """`[len(texts), context]` ids: <sot> ids <eot>, zero-padded, cut to the context (eot kept last)."""
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    out = torch.zeros(len(texts), context, dtype=torch.int64)
    for i, text in enumerate(texts):
        ids = [sot] + tok.encode(text) + [eot]
        if len(ids) > context:
            ids = ids[:context]
            ids[-1] = eot
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def encode_texts(model: "CLIP", tok, texts: list[str], cut: bool = False) -> torch.Tensor:
    """Text features `[len(texts), E]` (not normalized), tokenized at the model's context, on its device.
    `cut`: drop the padding after the batch's longest text (attention is causal, so the features are
    the same up to rounding; training runs several times faster on short captions)."""
    ids = tokenize(tok, texts, model.positional_embedding.shape[0])
    if cut:
        ids = ids[:, : int(ids.argmax(dim=1).max()) + 1]  # through the last end-of-text (the highest id)
    return model.encode_text(ids.to(model.positional_embedding.device))


@torch.no_grad()
def class_embeddings(model: "CLIP", tok, names: list[str], templates: list[str]) -> torch.Tensor:
    """`[len(names), E]` unit rows, OVSeg's template ensembling: per class, the normalized mean of its
    normalized template embeddings."""
    rows = []
    for name in names:
        feats = F.normalize(encode_texts(model, tok, [t.format(name) for t in templates]), dim=-1)
        rows.append(F.normalize(feats.mean(dim=0), dim=-1))
    return torch.stack(rows)


def load_clip(sd: dict, g: Geometry) -> CLIP:
    """A reference CLIP from an OpenAI-layout state dict (optionally with `visual.mask_embedding`)."""
    model = CLIP(g)
    sd = dict(sd)
    prompts = sd.pop("visual.mask_embedding", None)
    for key in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(key, None)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    model.visual.mask_embedding = prompts.float() if prompts is not None else None
    return model.eval()


def random_state_dict(g: Geometry, seed: int, prompt_depth: int = 0, shared_prompt: bool = False) -> dict:
    """Random weights in OpenAI's layout with CLIP's initialization scales (fixed seed)."""
    torch.manual_seed(seed)
    model = CLIP(g)
    nn.init.normal_(model.token_embedding.weight, std=0.02)
    nn.init.normal_(model.positional_embedding, std=0.01)
    for transformer, width in ((model.transformer, g.text_width), (model.visual.transformer, g.vision_width)):
        layers = len(transformer.resblocks)
        proj_std = (width ** -0.5) * ((2 * layers) ** -0.5)
        for block in transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.in_proj_bias, std=0.02)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_fc.bias, std=0.02)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
            for ln in (block.ln_1, block.ln_2):
                nn.init.normal_(ln.weight, mean=1.0, std=0.05)
                nn.init.normal_(ln.bias, std=0.05)
    nn.init.normal_(model.text_projection, std=g.text_width ** -0.5)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if prompt_depth > 0:
        sd["visual.mask_embedding"] = torch.randn(prompt_depth, 1 if shared_prompt else g.grid ** 2, g.vision_width)
    return sd
