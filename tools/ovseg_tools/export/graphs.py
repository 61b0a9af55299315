"""The two ONNX graphs ovseg runs, as export-friendly PyTorch modules over an OpenAI-layout state dict.

Independent of ovseg_tools/clip_reference.py on purpose (batch-first, explicit attention): the parity test
compares the exported graphs, run by ovseg's Rust core, with that reference.

Image graph inputs (names are part of the model format, docs/model-format.md):
  pixels       float32 [B, 3, S, S]  normalized with CLIP's mean/std
  keep         float32 [B, P]        1 = patch has foreground, 0 = substitute a prompt (P = grid*grid)
  prompts      float32 [L, P, W]     one prompt per depth, per patch (L = number of blocks)
  prompt_gate  float32 [L]           1 = substitute at depth d, 0 = leave depth d alone
output image_features float32 [B, E]  (ln_post(cls) @ proj, not normalized)

Substitution at depth 0 happens after the patch embedding, before the class token, the
positional embedding and ln_pre; at depth d >= 1 on the patch tokens of block d-1's output.
With gate 0 the substitution is `x * 1 + p * 0 = x`, exactly the ungated graph.

Text graph: input_ids int64 [B, N] -> text_features float32 [B, E] (EOT pooling, ln_final, projection);
N is dynamic, 1 to the context length T: the core runs each batch at its longest text.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..clip_reference import Geometry


class _Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)); x + mlp(ln_2(x)); batch-first."""

    def __init__(self, sd: dict, prefix: str, heads: int):
        super().__init__()
        self.heads = heads
        self.width = int(sd[f"{prefix}.ln_1.weight"].shape[0])  # static, so the export has constant shapes
        for name in ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
                     "ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                     "mlp.c_proj.weight", "mlp.c_proj.bias"):
            self.register_buffer(name.replace(".", "_"), sd[f"{prefix}.{name}"].float().clone())

    def forward(self, x: torch.Tensor, causal: torch.Tensor | None = None) -> torch.Tensor:
        b, n, w = x.shape[0], x.shape[1], self.width
        h = F.layer_norm(x, (w,), self.ln_1_weight, self.ln_1_bias, 1e-5)
        q, k, v = F.linear(h, self.attn_in_proj_weight, self.attn_in_proj_bias).chunk(3, dim=-1)
        head = w // self.heads
        q = q.reshape(b, n, self.heads, head).transpose(1, 2) * (head ** -0.5)
        k = k.reshape(b, n, self.heads, head).transpose(1, 2)
        v = v.reshape(b, n, self.heads, head).transpose(1, 2)
        scores = q @ k.transpose(-1, -2)
        if causal is not None:
            scores = scores + causal
        attn = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, w)
        x = x + F.linear(attn, self.attn_out_proj_weight, self.attn_out_proj_bias)
        h = F.layer_norm(x, (w,), self.ln_2_weight, self.ln_2_bias, 1e-5)
        h = F.linear(h, self.mlp_c_fc_weight, self.mlp_c_fc_bias)
        h = h * torch.sigmoid(1.702 * h)
        return x + F.linear(h, self.mlp_c_proj_weight, self.mlp_c_proj_bias)


class ImageGraph(nn.Module):
    def __init__(self, sd: dict, g: Geometry):
        super().__init__()
        self.g = g
        self.register_buffer("conv1", sd["visual.conv1.weight"].float().clone())
        self.register_buffer("class_embedding", sd["visual.class_embedding"].float().clone())
        self.register_buffer("positional_embedding", sd["visual.positional_embedding"].float().clone())
        self.register_buffer("proj", sd["visual.proj"].float().clone())
        for k in ("visual.ln_pre.weight", "visual.ln_pre.bias", "visual.ln_post.weight", "visual.ln_post.bias"):
            self.register_buffer(k.replace(".", "_"), sd[k].float().clone())
        self.blocks = nn.ModuleList(_Block(sd, f"visual.transformer.resblocks.{i}", g.vision_heads)
                                    for i in range(g.vision_layers))

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (self.g.vision_width,), getattr(self, f"visual_{name}_weight"),
                            getattr(self, f"visual_{name}_bias"), 1e-5)

    def forward(self, pixels, keep, prompts, prompt_gate):
        x = F.conv2d(pixels, self.conv1, stride=self.g.patch_size)
        x = x.flatten(2).transpose(1, 2)  # [B, P, W]
        keep = keep.unsqueeze(-1)  # [B, P, 1]

        def substitute(tokens, depth):
            gate = prompt_gate[depth]
            kept = 1 - gate * (1 - keep)
            return tokens * kept + prompts[depth].unsqueeze(0) * (1 - kept)

        x = substitute(x, 0)
        cls = self.class_embedding.reshape(1, 1, -1).expand(x.shape[0], 1, self.g.vision_width)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self._norm(x, "ln_pre")
        for i, block in enumerate(self.blocks):
            x = block(x)
            depth = i + 1
            if depth < self.g.vision_layers:
                x = torch.cat([x[:, :1], substitute(x[:, 1:], depth)], dim=1)
        return self._norm(x[:, 0], "ln_post") @ self.proj


class TextGraph(nn.Module):
    def __init__(self, sd: dict, g: Geometry):
        super().__init__()
        self.register_buffer("token_embedding", sd["token_embedding.weight"].float().clone())
        self.register_buffer("positional_embedding", sd["positional_embedding"].float().clone())
        self.register_buffer("ln_final_weight", sd["ln_final.weight"].float().clone())
        self.register_buffer("ln_final_bias", sd["ln_final.bias"].float().clone())
        self.register_buffer("text_projection", sd["text_projection"].float().clone())
        causal = torch.full((g.context_length, g.context_length), float("-inf")).triu(1)
        self.register_buffer("causal", causal)
        self.blocks = nn.ModuleList(_Block(sd, f"transformer.resblocks.{i}", g.text_heads)
                                    for i in range(g.text_layers))

    def forward(self, input_ids):
        # Any length up to the context: the attention is causal and the features are read at the
        # end-of-text token, so ids past the longest text of a batch cannot change them.
        n = input_ids.shape[1]
        x = self.token_embedding[input_ids] + self.positional_embedding[:n]
        causal = self.causal[:n, :n]
        for block in self.blocks:
            x = block(x, causal)
        x = F.layer_norm(x, (self.ln_final_weight.shape[0],), self.ln_final_weight, self.ln_final_bias, 1e-5)
        eot = input_ids.argmax(dim=-1)
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection
