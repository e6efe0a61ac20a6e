"""TSM on ResNet-50 ("tsm_r50"): Lin et al., "TSM: Temporal Shift Module for Efficient Video Understanding"
(ICCV 2019), computed as mmaction2's `ResNetTSM` + `TSMHead`.

A clip of T segments (TSN sampling, one frame each) runs through torchvision's ResNet-50 as B*T images.
In every bottleneck ("blockres" placement), inside the residual branch and before conv1, the first
C/shift_div channels take the next segment's values and the next C/shift_div the previous segment's,
zero at the ends; the identity path (and the downsample) sees the unshifted input. The head averages
the spatially pooled features, applies dropout (0.5) and a linear classifier per segment, and averages
the T segment logits (average consensus; equal to classifying the averaged features, the classifier
being linear). `is_shift=False` is TSN: ResNet-50 per segment, logits averaged.

Weights: torchvision's ResNet-50 (the ImageNet init mmaction2 uses, `torchvision://resnet50`), mmaction2
checkpoints of TSM, TIN or TSN (`backbone.*`, `cls_head.fc_cls.*`; ConvModule's `conv`/`bn` names), and
the original mit-han-lab/temporal-shift-module checkpoints (`base_model.*`, `new_fc.*`). vidpipe's own
keys are torchvision's under `backbone.`, with the classifier `head`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vidpipe.models.registry import register_model
from vidpipe.models.weights import IMAGENET_MEAN, IMAGENET_STD, Layout, Transforms, Weights
from vidpipe.typed import check


@dataclass
class TSMConfig:
    shift_div: int = 8  # 1/shift_div of the channels move forward in time, 1/shift_div backward
    is_shift: bool = True  # False: TSN (no shift), the order-blind baseline
    dropout: float = 0.5  # before the classifier (mmaction2's TSMHead)

    def __post_init__(self):
        check(self.shift_div >= 2, f"model_options.shift_div must be at least 2 (two channel folds are shifted); got {self.shift_div}")
        check(0 <= self.dropout < 1, f"model_options.dropout must be in [0, 1); got {self.dropout}")


def temporal_shift(x: torch.Tensor, t: int, fold: int) -> torch.Tensor:  # (B*T, C, H, W) -> same
    """TSM's shift: channels [0, fold) take frame t+1's values, [fold, 2 fold) frame t-1's, zero at the ends."""
    x = x.view(-1, t, *x.shape[1:])  # (B, T, C, H, W)
    ahead = F.pad(x[:, 1:, :fold], (0, 0, 0, 0, 0, 0, 0, 1))  # out[:, t] = x[:, t + 1], the last frame zero
    behind = F.pad(x[:, :-1, fold:2 * fold], (0, 0, 0, 0, 0, 0, 1, 0))  # out[:, t] = x[:, t - 1], the first frame zero
    return torch.cat([ahead, behind, x[:, :, 2 * fold:]], 2).flatten(0, 1)


class SegmentResNet(nn.Module):
    """torchvision's ResNet-50 over B*T segment images, a temporal mixer before each bottleneck's conv1
    (`mix`), and mmaction2's TSMHead: dropout, linear, logits averaged over the segments."""

    backbone_prefixes = ("backbone.",)  # all but the classifier, for parameter reports (`vidpipe compare`)

    def __init__(self, dropout: float, num_classes: int):
        super().__init__()
        import torchvision

        self.backbone = torchvision.models.resnet50(weights=None)  # built without I/O
        del self.backbone.fc
        self.num_features = 2048
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2048, num_classes)
        nn.init.normal_(self.head.weight, std=0.001)  # TSMHead's init_std
        nn.init.zeros_(self.head.bias)

    def blocks(self):
        for layer in (self.backbone.layer1, self.backbone.layer2, self.backbone.layer3, self.backbone.layer4):
            yield from layer

    def mix(self, block: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:  # (B*T, C, H, W) -> same
        return x

    def bottleneck(self, block: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
        """torchvision's Bottleneck with the temporal mixer in the residual branch, before conv1."""
        identity = x if block.downsample is None else block.downsample(x)
        out = block.relu(block.bn1(block.conv1(self.mix(block, x, t))))
        out = block.relu(block.bn2(block.conv2(out)))
        return block.relu(block.bn3(block.conv3(out)) + identity)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, T, 2048)
        b, _, t, h, w = x.shape
        r = self.backbone
        x = r.maxpool(r.relu(r.bn1(r.conv1(x.transpose(1, 2).reshape(b * t, 3, h, w)))))  # (B*T, 64, H/4, W/4)
        for block in self.blocks():
            x = self.bottleneck(block, x, t)
        return r.avgpool(x).flatten(1).view(b, t, -1)  # each segment's pooled features

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:  # (B, T, 2048) -> (B, classes)
        if pre_logits:
            return x.mean(1)
        return self.head(self.drop(x)).mean(1)  # average consensus over the segments' logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class TSM(SegmentResNet):
    def __init__(self, cfg: TSMConfig, num_classes: int):
        super().__init__(cfg.dropout, num_classes)
        self.cfg = cfg

    def mix(self, block: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
        return temporal_shift(x, t, x.shape[1] // self.cfg.shift_div) if self.cfg.is_shift else x


# ------------------------------------------------------------------ checkpoint layouts
def from_torchvision(state: dict) -> dict:
    """torchvision ResNet-50 (conv1, bn1, layer1-4, fc) -> backbone.*, fc -> head."""
    if "layer1.0.conv1.weight" not in state:
        raise ValueError("no layer1.0.conv1.weight")
    return {("head." + k[3:] if k.startswith("fc.") else f"backbone.{k}"): v for k, v in state.items()}


_MM_BLOCK = re.compile(r"backbone\.(layer\d\.\d+)\.(conv\d|downsample)\.(conv|bn)\.(.+)$")


def from_mmaction2(state: dict) -> dict:
    """mmaction2 Recognizer2D (ResNetTSM / ResNetTIN / ResNet: ConvModule `conv`/`bn` pairs; the shifted conv
    under `conv.net` (TSM) or `conv.net2` with the interlace under `conv.net1` (TIN); cls_head.fc_cls)."""
    if "backbone.conv1.conv.weight" not in state:
        raise ValueError("no backbone.conv1.conv.weight")
    out = {}
    for key, value in state.items():
        if key.startswith("cls_head.fc_cls."):
            out["head." + key.removeprefix("cls_head.fc_cls.")] = value
        elif key.startswith("backbone.conv1."):  # the stem's ConvModule
            out["backbone." + ("conv1." if ".conv." in key else "bn1.") + key.rsplit(".", 1)[1]] = value
        elif m := _MM_BLOCK.match(key):
            block, name, kind, rest = m.groups()
            if name == "downsample":
                out[f"backbone.{block}.downsample.{0 if kind == 'conv' else 1}.{rest}"] = value
            elif kind == "bn":
                out[f"backbone.{block}.bn{name[-1]}.{rest}"] = value
            elif rest.startswith("net1."):  # TIN's interlace
                out[f"backbone.{block}.interlace.{rest.removeprefix('net1.')}"] = value
            else:  # the conv itself: plain (TSN), `net.` (TSM), `net2.` (TIN)
                out[f"backbone.{block}.{name}.{rest.removeprefix('net.').removeprefix('net2.')}"] = value
        else:
            raise ValueError(f"unknown key {key}")
    return out


def from_tsm_official(state: dict) -> dict:
    """mit-han-lab/temporal-shift-module checkpoints (`module.` removed on reading): base_model.* with the
    shifted conv under `conv1.net`, new_fc."""
    if not any(k.startswith("base_model.") for k in state):
        raise ValueError("no base_model.* keys")
    out = {}
    for key, value in state.items():
        if key.startswith("new_fc."):
            out["head." + key.removeprefix("new_fc.")] = value
        elif key.startswith("base_model."):
            if key.startswith("base_model.fc."):
                continue  # the ImageNet classifier the original keeps unused beside new_fc
            out["backbone." + key.removeprefix("base_model.").replace(".conv1.net.", ".conv1.")] = value
        else:
            raise ValueError(f"unknown key {key}")
    return out


TORCHVISION = Layout("torchvision", from_torchvision, "torchvision ResNet-50 state dict (conv1, bn1, layer1-4, fc): the ImageNet init")
MMACTION2 = Layout("mmaction2", from_mmaction2, "mmaction2 checkpoint (.pth, state_dict: backbone.* ConvModule conv/bn, cls_head.fc_cls)")
OFFICIAL = Layout("official", from_tsm_official, "mit-han-lab/temporal-shift-module checkpoint (base_model.*, new_fc)")

# mmaction2's ImageNet normalisation on 0-255 ([123.675, 116.28, 103.53] / [58.395, 57.12, 57.375]) is ImageNet's on 0-1
MM_TEST = Transforms("tsn", frames=8, short_side=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, layout="mmaction2 NCHW (B*T, 3, H, W)")
IMAGENET1K_V1 = Weights(
    tag="IMAGENET1K_V1",
    source="torchvision:ResNet50_Weights.IMAGENET1K_V1",
    layout=TORCHVISION,
    transforms=MM_TEST,
    num_classes=1000,
    meta={"dataset": "ImageNet-1k (image model: mmaction2's torchvision://resnet50 init)", "top1": 76.13,
          "protocol": "torchvision's ImageNet-1k val, the image model", "params": 25_557_032},
)
K400 = Weights(
    tag="K400",
    source="mmaction2:tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb",
    layout=MMACTION2,
    transforms=MM_TEST,
    num_classes=400,
    meta={"dataset": "Kinetics-400", "top1": 73.18, "protocol": "1x1x8, 8 clips x 10 crops (mmaction2)", "params": 24_327_632},
)
SCRATCH_TRANSFORMS = Transforms("tsn", frames=8, short_side=128, crop=112)


@register_model("tsm_r50", TSMConfig, "clips", "TSM: ResNet-50 with temporal shift in every bottleneck (mmaction2 ResNetTSM + TSMHead)",
                transforms=SCRATCH_TRANSFORMS, weights=(IMAGENET1K_V1, K400), layouts=(TORCHVISION, MMACTION2, OFFICIAL))
def tsm_r50(cfg: TSMConfig, *, num_classes: int, in_dim: None = None) -> TSM:
    return TSM(cfg, num_classes)
