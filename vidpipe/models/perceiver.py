"""Perceiver-style head over R(2+1)D token maps (the seed HMDB51 study).

Jaegle et al., "Perceiver: General Perception with Iterative Attention" (ICML 2021), as a head:
N learned latents cross-attend to the CNN tokens (with a learned, factorised 3D position embedding:
time + row + column), then L self-attention layers run over the latents; mean-pool, linear.
Input: (B, C, D, t, h, w) = clips x channels x time x height x width from `cache-features --backbone r2plus1d_18`.
"""

from dataclasses import dataclass

import torch
from torch import nn

from vidpipe.models.registry import register_model
from vidpipe.typed import check_layers


@dataclass
class PerceiverConfig:
    num_latents: int = 16
    dim: int = 256
    heads: int = 4
    cross_layers: int = 1
    self_layers: int = 1
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    max_time: int = 32  # clips x t positions
    max_side: int = 14  # h and w positions

    def __post_init__(self):
        check_layers(self)


class CrossAttentionBlock(nn.Module):
    def __init__(self, cfg: PerceiverConfig):
        super().__init__()
        self.ln_q, self.ln_kv, self.ln_mlp = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = nn.MultiheadAttention(cfg.dim, cfg.heads, dropout=cfg.dropout, batch_first=True)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, cfg.dim))

    def forward(self, latents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:  # (B, N, dim), (B, M, dim)
        kv = self.ln_kv(tokens)
        latents = latents + self.attn(self.ln_q(latents), kv, kv, need_weights=False)[0]
        return latents + self.mlp(self.ln_mlp(latents))


class PerceiverHead(nn.Module):
    def __init__(self, cfg: PerceiverConfig, num_classes: int, in_dim: int):
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.dim
        self.proj = nn.Linear(in_dim, cfg.dim)
        self.pos_t = nn.Parameter(torch.zeros(cfg.max_time, cfg.dim))
        self.pos_h = nn.Parameter(torch.zeros(cfg.max_side, cfg.dim))
        self.pos_w = nn.Parameter(torch.zeros(cfg.max_side, cfg.dim))
        self.latents = nn.Parameter(torch.zeros(cfg.num_latents, cfg.dim))
        for p in (self.pos_t, self.pos_h, self.pos_w, self.latents):
            nn.init.trunc_normal_(p, std=0.02)
        self.cross = nn.ModuleList(CrossAttentionBlock(cfg) for _ in range(cfg.cross_layers))
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, int(cfg.dim * cfg.mlp_ratio), cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.self_attn = nn.TransformerEncoder(layer, cfg.self_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, num_classes)

    def no_weight_decay(self) -> set[str]:
        return {"latents", "pos_t", "pos_h", "pos_w"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, D, t, h, w) -> (B, N, dim)
        b, c, d, t, h, w = x.shape
        assert c * t <= self.cfg.max_time and max(h, w) <= self.cfg.max_side, f"tokens {x.shape} exceed the position tables"
        tokens = self.proj(x.permute(0, 1, 3, 4, 5, 2).reshape(b, c * t, h, w, d))  # (B, C*t, h, w, dim)
        tokens = tokens + self.pos_t[: c * t, None, None] + self.pos_h[None, :h, None] + self.pos_w[None, None, :w]
        tokens = tokens.reshape(b, c * t * h * w, -1)  # (B, M, dim)
        latents = self.latents.expand(b, -1, -1)
        for block in self.cross:
            latents = block(latents, tokens)
        return self.norm(self.self_attn(latents))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)  # (B, dim)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("perceiver", PerceiverConfig, "clip_tokens", "learned latents cross-attend R(2+1)D tokens, then self-attention",
                transforms=None)  # reads every clip's token map as the feature store holds it
def perceiver(cfg: PerceiverConfig, *, num_classes: int, in_dim: int) -> PerceiverHead:
    return PerceiverHead(cfg, num_classes, in_dim)
