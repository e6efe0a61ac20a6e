"""The Perceiver head of the R(2+1)D study (seed "hmdb51-recognition"), over a CNN's token map.

Jaegle et al., "Perceiver: General Perception with Iterative Attention" (ICML 2021), as the study built it
(lucidrains' perceiver-pytorch modules):
- tokens: the map (B, C, T, H, W) read in (t, h, w) order, each token concatenated with Fourier position
  features per axis: x = linspace(-1, 1, size), [sin(pi x f_k), cos(pi x f_k)] for f = linspace(1, max_freq / 2,
  bands), then x itself (2 bands + 1 per axis; 39 for 3 axes and 6 bands);
- `num_latents` learned latents (randn) cross-attend the tokens: pre-norm on latents and on tokens, 1 head of
  64, residual; then a pre-norm GEGLU feed-forward (x4), residual;
- a CLS (randn) is prepended to the latents and `self_layers` pre-norm self-attention layers (8 heads of 64) +
  GEGLU feed-forwards follow; logits = Linear(LayerNorm(CLS)).

Variants (the study's ablation):
- `cross_layers` > 1 repeats [cross, self_layers self layers]; later cross layers update CLS and latents alike.
- cross only (`self_layers=0`): no CLS; logits = Linear(LayerNorm(mean of the latents)), the study's
  cross-attention module on its own.
- self only (`cross_layers=0`): no latents and no position features; CLS + the tokens themselves (projected
  only when their width differs from `dim`) run through the self layers: attention over an unordered set.

One implementation serves two models: `perceiver` on the token maps of a `cache-features --backbone
r2plus1d_18` store (B, clips, C, t, h, w: the clips' times laid end to end) and `r2plus1d_perceiver` end to
end on clips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidpipe.models.registry import register_model
from vidpipe.typed import check


@dataclass
class PerceiverConfig:
    num_latents: int = 256
    dim: int = 512  # latent width
    cross_layers: int = 1  # 0: self only
    self_layers: int = 1  # self layers after each cross layer (all of them when cross_layers = 0); 0: cross only
    cross_heads: int = 1
    cross_head_dim: int = 64
    heads: int = 8  # self-attention
    head_dim: int = 64
    ff_mult: int = 4  # GEGLU hidden width = ff_mult x dim
    freq_bands: int = 6
    max_freq: float = 10.0
    dropout: float = 0.0  # on attention weights and feed-forward outputs (the study: 0)

    def __post_init__(self):
        p = "model_options."
        for name in ("num_latents", "dim", "cross_heads", "cross_head_dim", "heads", "head_dim", "ff_mult", "freq_bands"):
            check(getattr(self, name) >= 1, f"{p}{name} must be at least 1; got {getattr(self, name)}")
        check(self.cross_layers >= 0 and self.self_layers >= 0 and self.cross_layers + self.self_layers >= 1,
              f"{p}cross_layers and {p}self_layers must be >= 0, not both 0; got {self.cross_layers} and {self.self_layers}")
        check(self.max_freq > 0, f"{p}max_freq must be > 0; got {self.max_freq}")
        check(0 <= self.dropout < 1, f"{p}dropout must be in [0, 1); got {self.dropout}")


def fourier_positions(sizes: tuple[int, ...], bands: int, max_freq: float, device=None, dtype=None) -> torch.Tensor:
    """(prod(sizes), len(sizes) * (2 bands + 1)) features of a grid, axis by axis: sin, cos, position."""
    # an axis of one position is [-1], as linspace gives it; written out because ONNX's linspace divides by n - 1
    axes = [torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) if n > 1 else torch.full((1,), -1.0, device=device, dtype=dtype)
            for n in sizes]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).unsqueeze(-1)  # (*sizes, axes, 1)
    scaled = pos * torch.linspace(1.0, max_freq / 2, bands, device=device, dtype=dtype) * math.pi  # (*sizes, axes, bands)
    return torch.cat([scaled.sin(), scaled.cos(), pos], dim=-1).reshape(math.prod(sizes), -1)


class Attention(nn.Module):
    """Multi-head attention of queries x over context (itself when None): to_q, to_kv without bias, to_out."""

    def __init__(self, dim: int, context_dim: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:  # (B, N, dim), (B, M, ctx)
        context = x if context is None else context
        k, v = self.to_kv(context).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (self.to_q(x), k, v))  # (B, heads, n, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)  # scale head_dim^-0.5
        return self.to_out(out.transpose(1, 2).flatten(2))


class GEGLUFeedForward(nn.Module):
    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2, self.drop = nn.Linear(dim, 2 * mult * dim), nn.Linear(mult * dim, dim), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.fc1(x).chunk(2, dim=-1)
        return self.drop(self.fc2(x * F.gelu(gate)))


class Layer(nn.Module):
    """Pre-norm attention + residual, pre-norm GEGLU feed-forward + residual; cross-attention when context_dim is given."""

    def __init__(self, cfg: PerceiverConfig, context_dim: int | None = None):
        super().__init__()
        cross = context_dim is not None
        self.norm = nn.LayerNorm(cfg.dim)
        self.norm_context = nn.LayerNorm(context_dim) if cross else None
        self.attn = Attention(cfg.dim, context_dim if cross else cfg.dim, cfg.cross_heads if cross else cfg.heads,
                              cfg.cross_head_dim if cross else cfg.head_dim, cfg.dropout)
        self.ff_norm = nn.LayerNorm(cfg.dim)
        self.ff = GEGLUFeedForward(cfg.dim, cfg.ff_mult, cfg.dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = None if self.norm_context is None else self.norm_context(context)
        x = x + self.attn(self.norm(x), context)
        return x + self.ff(self.ff_norm(x))


class Perceiver(nn.Module):
    """Token map (B, in_dim, T, H, W) -> logits. forward_features: (B, 1 + latents, dim) with a CLS, (B, latents,
    dim) cross only, (B, 1 + THW, dim) self only; forward_head pools the CLS (or the mean of the latents)."""

    def __init__(self, cfg: PerceiverConfig, num_classes: int, in_dim: int):
        super().__init__()
        self.cfg, self.num_features = cfg, cfg.dim
        context_dim = in_dim + 3 * (2 * cfg.freq_bands + 1)  # tokens + their (t, h, w) Fourier features
        if cfg.cross_layers:
            self.latents = nn.Parameter(torch.randn(cfg.num_latents, cfg.dim))
        elif in_dim != cfg.dim:
            self.proj = nn.Linear(in_dim, cfg.dim)  # self only: the tokens are the sequence
        self.cls = nn.Parameter(torch.randn(1, 1, cfg.dim)) if cfg.self_layers else None
        groups = max(cfg.cross_layers, 1)
        self.cross = nn.ModuleList(Layer(cfg, context_dim) for _ in range(cfg.cross_layers))
        self.layers = nn.ModuleList(nn.ModuleList(Layer(cfg) for _ in range(cfg.self_layers)) for _ in range(groups))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, num_classes)

    def no_weight_decay(self) -> set[str]:
        return {"latents", "cls"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim, T, H, W)
        b = x.shape[0]
        tokens = x.flatten(2).transpose(1, 2)  # (B, THW, in_dim), (t, h, w) order
        if not self.cfg.cross_layers:  # self only
            seq = self.proj(tokens) if hasattr(self, "proj") else tokens
            return self._self_layers(torch.cat([self.cls.expand(b, -1, -1), seq], 1), self.layers[0])
        pos = fourier_positions(tuple(x.shape[2:]), self.cfg.freq_bands, self.cfg.max_freq, x.device).to(x.dtype)  # float32, then AMP's dtype
        context = torch.cat([tokens, pos.expand(b, -1, -1)], dim=-1)  # (B, THW, in_dim + 39)
        seq = self.latents.expand(b, -1, -1)  # (B, N, dim)
        for i, (cross, layers) in enumerate(zip(self.cross, self.layers)):
            seq = cross(seq, context)
            if i == 0 and self.cls is not None:
                seq = torch.cat([self.cls.expand(b, -1, -1), seq], 1)  # (B, 1 + N, dim)
            seq = self._self_layers(seq, layers)
        return seq

    @staticmethod
    def _self_layers(seq: torch.Tensor, layers: nn.ModuleList) -> torch.Tensor:
        for layer in layers:
            seq = layer(seq)
        return seq

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x[:, 0] if self.cls is not None else x.mean(dim=1))  # (B, dim)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ClipTokensPerceiver(Perceiver):
    """The head on a token store: (B, clips, C, t, h, w), each video's clips laid end to end in time."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, clips, C, t, h, w)
        b, n, c, t, h, w = x.shape
        return super().forward_features(x.transpose(1, 2).reshape(b, c, n * t, h, w))


@register_model("perceiver", PerceiverConfig, "clip_tokens",
                "the R(2+1)D study's Perceiver head (Fourier positions, latents, cross + self attention) on cached token maps",
                transforms=None)  # reads every clip's token map as the feature store holds it
def perceiver(cfg: PerceiverConfig, *, num_classes: int, in_dim: int) -> ClipTokensPerceiver:
    return ClipTokensPerceiver(cfg, num_classes, in_dim)
