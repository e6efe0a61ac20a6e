"""Transformer pieces shared by vidpipe's ViT-family models (TimeSformer, its hybrid, ViViT).

Names and numerics follow timm's `vision_transformer` (and the original TimeSformer code, which uses
them): `attn.qkv` / `attn.proj`, `mlp.fc1` / `mlp.fc2`, `norm1` / `norm2`, exact GELU, so checkpoints
of those layouts map key for key.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a whole sample's residual branch with probability p (rescaled)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection ([q; k; v] rows, head-major)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, fused: bool = True):
        super().__init__()
        self.heads, self.fused = heads, fused
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, L, d/heads)
        if self.fused:  # no (L, L) matrix kept for backward where a fused kernel runs
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # the (B, heads, L, L) probabilities are materialised (and saved for backward)
            y = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm ViT block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, drop_path_rate: float = 0.0, eps: float = 1e-6, fused: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, True, fused)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim)
        self.drop_path = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


def init_vit_(module: nn.Module) -> None:
    """timm's ViT initialisation: trunc_normal(0.02) linears with zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ------------------------------------------------------------------ image ViT checkpoints in timm's keys
_TV_MLP = {"mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2", "mlp.linear_1": "mlp.fc1", "mlp.linear_2": "mlp.fc2"}  # torchvision's names, new and old


def _renamed(key: str, top: dict) -> str:
    """`module.leaf` with the module renamed by `top`; a module it does not know is not this layout."""
    base, _, leaf = key.rpartition(".")
    if base not in top:
        raise ValueError(f"unknown key {key}")
    return f"{top[base]}.{leaf}"


def vit_from_torchvision(state: dict) -> dict:
    """torchvision `VisionTransformer` keys (conv_proj, class_token, encoder.layers.encoder_layer_i.*,
    encoder.ln, heads.head) -> timm's (patch_embed.proj, cls_token, pos_embed, blocks.i.*, norm, head)."""
    if "conv_proj.weight" not in state:
        raise ValueError("no conv_proj.weight")
    top = {"conv_proj": "patch_embed.proj", "encoder.ln": "norm", "heads.head": "head"}
    block = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj": "attn.qkv", "self_attention.out_proj": "attn.proj", **_TV_MLP}
    out = {}
    for key, value in state.items():
        if key in ("class_token", "encoder.pos_embedding"):
            out["cls_token" if key == "class_token" else "pos_embed"] = value
            continue
        m = re.match(r"encoder\.layers\.encoder_layer_(\d+)\.(.+?)(?:_|\.)(weight|bias)$", key)
        if m and m.group(2) in block:
            out[f"blocks.{m.group(1)}.{block[m.group(2)]}.{m.group(3)}"] = value
            continue
        out[_renamed(key, top)] = value
    return out


def vit_from_hf(state: dict) -> dict:
    """Hugging Face `ViTModel` / `ViTForImageClassification` keys ([vit.]embeddings.*, [vit.]encoder.layer.i.*
    with separate query/key/value, [vit.]layernorm, classifier) -> timm's; the pooler is dropped."""
    state = {k.removeprefix("vit."): v for k, v in state.items()}
    if "embeddings.cls_token" not in state:
        raise ValueError("no embeddings.cls_token")
    top = {"embeddings.patch_embeddings.projection": "patch_embed.proj", "layernorm": "norm", "classifier": "head"}
    block = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.output.dense": "attn.proj",
             "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}
    out = {"cls_token": state["embeddings.cls_token"], "pos_embed": state["embeddings.position_embeddings"]}
    for key, value in state.items():
        if key.startswith("embeddings.") and not key.startswith("embeddings.patch_embeddings.") or key.startswith("pooler."):
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m and m.group(2) == "attention.attention.query":
            i, leaf = m.group(1), m.group(3)
            qkv = [state[f"encoder.layer.{i}.attention.attention.{p}.{leaf}"] for p in ("query", "key", "value")]
            out[f"blocks.{i}.attn.qkv.{leaf}"] = torch.cat(qkv, 0)  # rows [q; k; v], as timm fuses them
            continue
        if m and m.group(2) in ("attention.attention.key", "attention.attention.value"):
            continue
        if m and m.group(2) in block:
            out[f"blocks.{m.group(1)}.{block[m.group(2)]}.{m.group(3)}"] = value
            continue
        out[_renamed(key, top)] = value
    return out
