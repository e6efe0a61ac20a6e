"""R(2+1)D-18 on clips (torchvision `r2plus1d_18`), with a classifier for the dataset's classes.

Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition" (CVPR 2018).
Built with random initialisation; a run's `init=KINETICS400_V1` (or a local torchvision state
dict) initialises a training run from Kinetics-400 through the weights record below.
Input (B, 3, T, H, W), e.g. 16 x 112 x 112 -> (B, 512, T/8, H/16, W/16) before the pooled classifier.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch
from torch import nn

from vidpipe.models.registry import register_model
from vidpipe.models.weights import KINETICS_MEAN, KINETICS_STD, Layout, Transforms, Weights
from vidpipe.typed import check_layers


@dataclass
class R2Plus1DConfig:
    dropout: float = 0.5

    def __post_init__(self):
        check_layers(self)


class R2Plus1D(nn.Module):
    backbone_prefixes = ("stem.", "layers.")  # all but the classifier, for parameter reports (`vidpipe compare`)

    def __init__(self, cfg: R2Plus1DConfig, num_classes: int):
        super().__init__()
        import torchvision

        net = torchvision.models.video.r2plus1d_18(weights=None)  # architecture only: no I/O
        self.stem, self.layers = net.stem, nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.drop = nn.Dropout(cfg.dropout)
        self.num_features = net.fc.in_features
        self.head = nn.Linear(net.fc.in_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, 512, T/8, H/16, W/16)
        return self.layers(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.flatten(2).mean(-1))  # (B, 512)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def from_torchvision(state: dict) -> dict:
    """torchvision's keys (stem, layer1-4, fc) -> vidpipe's (stem, layers.0-3, head)."""
    if not any(k.startswith("layer1.") for k in state):
        raise ValueError("no layer1.* keys")
    out = {}
    for key, value in state.items():
        key = re.sub(r"^layer([1-4])\.", lambda m: f"layers.{int(m.group(1)) - 1}.", key)
        out[re.sub(r"^fc\.", "head.", key)] = value
    return out


TORCHVISION = Layout("torchvision", from_torchvision, "torchvision.models.video.r2plus1d_18 state dict (stem, layer1-4, fc)")
KINETICS400_V1 = Weights(
    tag="KINETICS400_V1",
    source="torchvision:R2Plus1D_18_Weights.KINETICS400_V1",
    layout=TORCHVISION,
    # torchvision's video reference: 16 consecutive frames at 15 fps, resize 128x171, centre crop 112, Kinetics mean/std
    transforms=Transforms("dense", frames=16, interval=1, short_side=128, crop=112, mean=KINETICS_MEAN, std=KINETICS_STD, fps=15.0),
    num_classes=400,
    meta={"dataset": "Kinetics-400", "top1": 67.463, "protocol": "clip accuracy, 16x112x112 clips (torchvision)", "params": 31_505_325},
)


@register_model("r2plus1d_18", R2Plus1DConfig, "clips", "torchvision R(2+1)D-18 on clips (optional Kinetics-400 init)",
                # from scratch: the same clips, on any store (a uniform store's frames are not at a fixed rate)
                transforms=dataclasses.replace(KINETICS400_V1.transforms, fps=None), weights=(KINETICS400_V1,), layouts=(TORCHVISION,))
def r2plus1d_18(cfg: R2Plus1DConfig, *, num_classes: int, in_dim: None = None) -> R2Plus1D:
    return R2Plus1D(cfg, num_classes)
