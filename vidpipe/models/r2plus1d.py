"""R(2+1)D-18 on clips (torchvision `r2plus1d_18`), classifier replaced for the dataset's classes.

Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition" (CVPR 2018).
Optional initial weights as in cache-features: a torchvision name (KINETICS400_V1), a local
.pth/.safetensors state dict, or none. Input (B, 3, T, H, W), e.g. 16 x 112 x 112.
"""

from dataclasses import dataclass

import torch
from torch import nn

from vidpipe.models.registry import register_model
from vidpipe.typed import check_layers


@dataclass
class R2Plus1DConfig:
    weights: str = "none"  # none | KINETICS400_V1 | DEFAULT | PATH
    dropout: float = 0.5

    def __post_init__(self):
        check_layers(self)


class R2Plus1D(nn.Module):
    def __init__(self, cfg: R2Plus1DConfig, num_classes: int):
        super().__init__()
        import torchvision

        from vidpipe.models.backbones import resolve_weights

        net = torchvision.models.video.r2plus1d_18(weights=None)
        if cfg.weights != "none":
            state, _, _ = resolve_weights("r2plus1d_18", cfg.weights, option="model_options.weights=")
            if state is not None:
                net.load_state_dict(state)
        self.stem, self.layers = net.stem, nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.drop = nn.Dropout(cfg.dropout)
        self.num_features = net.fc.in_features
        self.head = nn.Linear(net.fc.in_features, num_classes)  # replaces the 400-way Kinetics classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, 512, T/8, H/16, W/16)
        return self.layers(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.flatten(2).mean(-1))  # (B, 512)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("r2plus1d_18", R2Plus1DConfig, "clips", "torchvision R(2+1)D-18 on clips (optional Kinetics-400 init)")
def r2plus1d_18(cfg: R2Plus1DConfig, num_classes: int, in_dim: int | None = None) -> R2Plus1D:
    return R2Plus1D(cfg, num_classes)
