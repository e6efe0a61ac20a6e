"""ResNet features + a small temporal Transformer (the seed study's "resnet_temporal_vit").

Frozen per-frame ResNet features (B, T, D) are projected to `dim`, a CLS token and learned temporal
position embeddings are added, and a pre-norm Transformer encoder mixes the T frame tokens; the CLS
output is classified. Only the temporal part is trained (features come from the cache).
"""

from dataclasses import dataclass

import torch
from torch import nn

from vidpipe.errors import VidpipeError
from vidpipe.models.registry import register_model
from vidpipe.typed import check_layers


@dataclass
class TemporalViTConfig:
    dim: int = 256
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    max_frames: int = 64

    def __post_init__(self):
        check_layers(self)


class TemporalViT(nn.Module):
    def __init__(self, cfg: TemporalViTConfig, num_classes: int, in_dim: int):
        super().__init__()
        self.cfg = cfg
        self.num_features = cfg.dim
        self.proj = nn.Linear(in_dim, cfg.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_frames + 1, cfg.dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, int(cfg.dim * cfg.mlp_ratio), cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, num_classes)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T + 1, dim)
        b, t, _ = x.shape
        if t > self.cfg.max_frames:  # position embeddings exist for max_frames frames
            raise VidpipeError(f"{t} frames exceed model_options.max_frames={self.cfg.max_frames}; sample fewer (data.frames) "
                               "or raise model_options.max_frames")
        x = self.proj(x)  # (B, T, dim)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1) + self.pos_embed[:, : t + 1]
        return self.norm(self.encoder(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]  # CLS, (B, dim)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("resnet_temporal_vit", TemporalViTConfig, "frame_features", "Transformer over frame features (CLS + learned temporal positions)")
def resnet_temporal_vit(cfg: TemporalViTConfig, *, num_classes: int, in_dim: int) -> TemporalViT:
    return TemporalViT(cfg, num_classes, in_dim)
