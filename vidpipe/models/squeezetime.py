"""SqueezeTime ("squeezetime"): Zhai et al., "No Time to Waste: Squeeze Time into Channel for Mobile Video
Understanding" (2024). Standalone and CPU-capable; the official code (xinghaochen/SqueezeTime) is an
mmaction2 plug-in that calls `.cuda()` unconditionally.

- Squeeze: (B, 3, T, H, W) viewed as (B, 3T, H, W): input channel c*T + t is colour c of frame t (all T
  red planes, then green, then blue).
- Stem: Conv2d(3T, 64, 5x5, stride 2, pad 2, no bias), BN, ReLU, MaxPool(3, 2, 1).
- A ResNet-50-like body: Bottleneck stages [3, 4, 6, 3], planes 64/128/256/512 (x4 out), strides 1/2/2/2.
  A stage's first block has `shortcut_conv` (1x1 + BN, unstrided); a strided block first downsamples
  its input with a depthwise 2x2 stride-2 conv (with bias) + BN, which both paths then use.
- Bottleneck: 1x1 + BN + ReLU -> CTL + BN + ReLU -> 1x1 + BN, + residual, ReLU.
- CTL (Channel-Time Learning), C -> C: a temporal-focus gate p = sigmoid(1x1(ReLU(BN(1x1(avgpool(x)))))),
  then temporal_conv(x p) + short_conv(x) * IOI(x p), where temporal_conv is 1x1 (no bias), short_conv
  3x3, and IOI (inter-temporal object interaction) = 3x3(C, 16) -> BN -> ReLU -> (+ a learned position
  embedding (1, 16, P, P), bilinearly resized with align_corners=True when the map is not P x P) ->
  7x7 -> BN -> ReLU -> 3x3(16, C) -> sigmoid.
- Head (I2DHead): global average pool, dropout 0.5, linear (init std 0.01).
Init as the official: convolutions kaiming_normal (fan_out, relu), BN 1/0, position embeddings kaiming_normal.

Weights: the official checkpoints as users meet them: the bare backbone (`conv1.weight`,
`layer1.0.conv2.param_conv.1.weight`, ...; no classifier) and mmaction2's recognizer (`backbone.net.*`,
`cls_head.fc_cls.*`). Everything loads, BatchNorm running statistics included, strictly (the official
loader copies parameters only and skips what does not fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidpipe.errors import VidpipeError
from vidpipe.models.registry import register_model
from vidpipe.models.weights import IMAGENET_MEAN, IMAGENET_STD, Layout, Transforms, Weights
from vidpipe.typed import check

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # planes, blocks, stride
EXPANSION = 4


@dataclass
class SqueezeTimeConfig:
    frames: int = 16  # T: the stem reads 3T channels, so every clip has exactly T frames
    pos_dim: tuple[int, int, int, int] = (56, 28, 14, 7)  # each stage's position-embedding side (224 input; others resize)
    dropout: float = 0.5

    def __post_init__(self):
        check(self.frames >= 1, f"model_options.frames must be at least 1; got {self.frames}")
        check(all(p >= 1 for p in self.pos_dim), f"model_options.pos_dim must be positive; got {self.pos_dim}")
        check(0 <= self.dropout < 1, f"model_options.dropout must be in [0, 1); got {self.dropout}")


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class IOI(nn.Module):
    """Inter-temporal object interaction: short_conv(x) gated by a sigmoid map of the gated input."""

    def __init__(self, c: int, pos_dim: int):
        super().__init__()
        self.short_conv = nn.Conv2d(c, c, 3, padding=1)
        self.glo_conv = nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), _bn(16), nn.ReLU(),
                                      nn.Conv2d(16, 16, 7, padding=3), _bn(16), nn.ReLU(),
                                      nn.Conv2d(16, c, 3, padding=1), nn.Sigmoid())
        self.pos_embed = nn.Parameter(torch.zeros(1, 16, pos_dim, pos_dim))

    def forward(self, x: torch.Tensor, gated: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) x 2 -> (B, C, H, W)
        g = self.glo_conv[:3](gated)  # (B, 16, H, W)
        pos = self.pos_embed
        if pos.shape[-2:] != g.shape[-2:]:
            pos = F.interpolate(pos, size=g.shape[-2:], mode="bilinear", align_corners=True)
        return self.short_conv(x) * self.glo_conv[3:](g + pos)


class CTL(nn.Module):
    """Channel-Time Learning: the bottleneck's 3x3 conv replaced (C -> C, stride 1)."""

    def __init__(self, c: int, pos_dim: int):
        super().__init__()
        self.param_conv = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1, bias=False), _bn(c), nn.ReLU(),
                                        nn.Conv2d(c, c, 1, bias=False), nn.Sigmoid())
        self.temporal_conv = nn.Conv2d(c, c, 1, bias=False)
        self.spatial_conv = IOI(c, pos_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.param_conv(x)  # (B, C, 1, 1): which channels (times) to focus on
        return self.temporal_conv(x * p) + self.spatial_conv(x, x * p)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, pos_dim: int, shortcut: bool):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), _bn(planes)
        self.conv2, self.bn2 = CTL(planes, pos_dim), _bn(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * EXPANSION, 1, bias=False), _bn(planes * EXPANSION)
        self.shortcut_conv = nn.Sequential(nn.Conv2d(inplanes, planes * EXPANSION, 1, bias=False), _bn(planes * EXPANSION)) if shortcut else None
        self.downsample = nn.Sequential(nn.Conv2d(inplanes, inplanes, 2, stride=2, groups=inplanes), _bn(inplanes)) if stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)  # both paths see the downsampled input
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.shortcut_conv is None else self.shortcut_conv(x)))


class Backbone(nn.Module):
    def __init__(self, cfg: SqueezeTimeConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(3 * cfg.frames, 64, 5, stride=2, padding=2, bias=False)
        self.bn1 = _bn(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, ((planes, blocks, stride), pos_dim) in enumerate(zip(STAGES, cfg.pos_dim)):
            layer = []
            for b in range(blocks):
                first = b == 0
                layer.append(Bottleneck(inplanes, planes, stride if first else 1, pos_dim, first and inplanes != planes * EXPANSION))
                inplanes = planes * EXPANSION
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3T, H, W) -> (B, 2048, H/32, W/32)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class SqueezeTime(nn.Module):
    backbone_prefixes = ("backbone.",)  # all but the classifier, for parameter reports (`vidpipe compare`)
    min_train_batch = 2  # the CTL gate's BatchNorm sees one value per channel and clip: a batch of one has no statistics

    def __init__(self, cfg: SqueezeTimeConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.num_features = 512 * EXPANSION
        self.backbone = Backbone(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(self.num_features, num_classes)
        for m in self.backbone.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, IOI):
                nn.init.kaiming_normal_(m.pos_embed, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, 3T, H, W), channel c*T + t
        b, c, t, h, w = x.shape
        if t != self.cfg.frames:
            raise VidpipeError(f"squeezetime takes exactly {self.cfg.frames} frames (its stem reads 3 x {self.cfg.frames} channels); "
                               f"got {t} (set data.frames, or model_options.frames for a new model)")
        return x.reshape(b, c * t, h, w)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, 2048, H/32, W/32)
        return self.backbone(self.squeeze(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # global average pool, (B, 2048)
        return x if pre_logits else self.head(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------ checkpoint layouts
def from_official(state: dict) -> dict:
    """The bare official backbone (conv1.weight, layer1.0.conv2.param_conv.1.weight, ...): no classifier."""
    if "conv1.weight" not in state or "layer1.0.conv2.param_conv.1.weight" not in state:
        raise ValueError("no conv1.weight / layer1.0.conv2.param_conv.1.weight")
    return {f"backbone.{k}": v for k, v in state.items()}


def from_mmaction2(state: dict) -> dict:
    """The official mmaction2 recognizer: backbone.net.* and cls_head.fc_cls.*."""
    if "backbone.net.conv1.weight" not in state:
        raise ValueError("no backbone.net.conv1.weight")
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.net."):
            out["backbone." + key.removeprefix("backbone.net.")] = value
        elif key.startswith("cls_head.fc_cls."):
            out["head." + key.removeprefix("cls_head.fc_cls.")] = value
        else:
            raise ValueError(f"unknown key {key}")
    return out


OFFICIAL = Layout("official", from_official, "the official SqueezeTime backbone state dict (conv1, layer1-4 with CTL conv2; no classifier)")
MMACTION2 = Layout("mmaction2", from_mmaction2, "the official mmaction2 recognizer checkpoint (backbone.net.*, cls_head.fc_cls)")

# The official configs: 16 frames 4 apart at the source rate, short side 256 -> centre crop 224 (val; test: 10 clips x 3 crops at 224)
OFFICIAL_TRANSFORMS = Transforms("dense", frames=16, interval=4, interval_unit="source", short_side=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                 layout="mmaction2 NCTHW (B, 3, T, H, W), squeezed to (B, 3T, H, W)")
K400 = Weights(
    tag="K400",
    source="official:SqueezeTime_K400 (xinghaochen/SqueezeTime release)",
    layout=MMACTION2,
    transforms=OFFICIAL_TRANSFORMS,
    num_classes=400,
    meta={"dataset": "Kinetics-400", "top1": 71.64, "protocol": "16x4, 10 clips x 3 crops at 224 (the paper)", "params": 28_887_088 + 2048 * 400 + 400},
)
# From scratch: the official sampling (16 frames 4 source frames apart, in the store's frames), at 112
SCRATCH_TRANSFORMS = Transforms("dense", frames=16, interval=4, interval_unit="source", short_side=128, crop=112)


@register_model("squeezetime", SqueezeTimeConfig, "clips", "SqueezeTime: time squeezed into channels, CTL blocks (mobile; standalone, CPU-capable)",
                transforms=SCRATCH_TRANSFORMS, weights=(K400,), layouts=(OFFICIAL, MMACTION2))
def squeezetime(cfg: SqueezeTimeConfig, *, num_classes: int, in_dim: None = None) -> SqueezeTime:
    return SqueezeTime(cfg, num_classes)
