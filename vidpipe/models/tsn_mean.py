"""TSN-style order-blind baseline: the mean of per-frame features, then a linear classifier.

Wang et al., "Temporal Segment Networks" (ECCV 2016), segmental consensus by averaging. Any
permutation of the frames gives the same output, so it is the control for temporal models.
"""

from dataclasses import dataclass

import torch
from torch import nn

from vidpipe.models.registry import register_model
from vidpipe.typed import check_layers


@dataclass
class TSNMeanConfig:
    dropout: float = 0.5

    def __post_init__(self):
        check_layers(self)


class TSNMean(nn.Module):
    def __init__(self, cfg: TSNMeanConfig, num_classes: int, in_dim: int):
        super().__init__()
        self.num_features = in_dim
        self.norm = nn.LayerNorm(in_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(in_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D): the frozen features, per frame
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:  # (B, T, D) -> (B, num_classes)
        x = self.drop(self.norm(x.mean(dim=1)))  # the segmental consensus: mean over time, (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("tsn_mean", TSNMeanConfig, "frame_features", "order-blind mean of frame features + linear")
def tsn_mean(cfg: TSNMeanConfig, *, num_classes: int, in_dim: int) -> TSNMean:
    return TSNMean(cfg, num_classes, in_dim)
