"""TIN on ResNet-50 ("tin_r50"): Shao et al., "Temporal Interlacing Network" (AAAI 2020), computed as
mmaction2's `ResNetTIN` (a TSM ResNet-50 whose shift is a learned, fractional, per-group interlace).

In every bottleneck, before conv1, the first F = C/4 channels are interlaced and the rest pass through:
- a descriptor, those channels averaged over H and W: (B, F, T);
- OffsetNet: Conv1d(F, 1, 3) -> (B, T) -> Linear(T, T), ReLU -> Linear(T, 2) -> 4 (sigmoid - 0.5): two
  offsets in (-2, 2) per video (the last bias starts at 0.5108), used as (o1, o2, -o1, -o2) by four
  channel groups of F/4;
- WeightNet: Conv1d(F, 2, 3) (bias 0) -> 2 sigmoid: (B, T, 2), used as (w1, w2, w1, w2);
- each group is shifted in time by its fractional offset, linearly interpolated between the two
  neighbouring integer shifts (zeros outside [0, T)), then scaled by its weight at each t.
Because OffsetNet's Linear layers are T x T, a model takes exactly `segments` frames.

mmaction2 calls mmcv's `tin_shift`, a CUDA-only op. `tin_shift` here is pure PyTorch (a gather) and
runs anywhere; its gradient is autograd's, the true adjoint (the gradient moves back by -s). mmcv's CUDA
backward applies the same shift +s to the gradient instead, which is not the derivative of its forward
(mmcv's own test passes its gradcheck only at atol 1): trained weights may differ slightly from mmcv's,
loaded weights give the same forward. Checked by gradcheck in float64 (tests/models/test_tsm_tin.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vidpipe.errors import VidpipeError
from vidpipe.models.registry import register_model
from vidpipe.models.tsm import IMAGENET1K_V1, MM_TEST, MMACTION2, OFFICIAL, SCRATCH_TRANSFORMS, TORCHVISION, SegmentResNet
from vidpipe.models.weights import Weights
from vidpipe.typed import check

GROUPS = 2  # OffsetNet / WeightNet outputs (mmaction2's hard-coded deform_groups); four channel groups use them


@dataclass
class TINConfig:
    segments: int = 8  # the T every clip must have (OffsetNet's Linear layers are T x T)
    shift_div: int = 4  # 1/shift_div of the channels are interlaced
    dropout: float = 0.5

    def __post_init__(self):
        check(self.segments >= 1, f"model_options.segments must be at least 1; got {self.segments}")
        check(self.shift_div >= 1, f"model_options.shift_div must be at least 1; got {self.shift_div}")
        check(0 <= self.dropout < 1, f"model_options.dropout must be in [0, 1); got {self.dropout}")


def tin_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """mmcv's tin_shift in PyTorch: x (N, T, C, ...), integer shift (N, G); channel group g = c // (C/G).
    out[n, t, c] = x[n, t - shift[n, g], c] where 0 <= t - shift < T, else 0 (a positive shift moves
    content later). Differentiable in x (autograd's gather backward: the true adjoint)."""
    n, t, c = x.shape[:3]
    g = shift.shape[1]
    src = torch.arange(t, device=x.device).view(1, t, 1) - shift.view(n, 1, g)  # (N, T, G): the frame each output reads
    valid = ((src >= 0) & (src < t)).repeat_interleave(c // g, dim=2)  # (N, T, C)
    src = src.clamp(0, t - 1).repeat_interleave(c // g, dim=2)
    rest = (1,) * (x.ndim - 3)
    out = torch.gather(x, 1, src.view(n, t, c, *rest).expand_as(x))
    return out * valid.view(n, t, c, *rest).to(x.dtype)


def linear_sampler(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Each channel group of x (N, T, C, ...) shifted by its fractional offset (N, G): (1 - a) shift(x, o0)
    + a shift(x, o0 + 1), o0 = floor(offset), a = offset - o0. Differentiable in x and in the offset."""
    o0 = offset.floor()
    a = offset - o0  # (N, G)
    per_channel = (x.shape[0], 1, x.shape[2]) + (1,) * (x.ndim - 3)
    a = a.repeat_interleave(x.shape[2] // offset.shape[1], dim=1).view(per_channel)
    return (1 - a) * tin_shift(x, o0.long()) + a * tin_shift(x, o0.long() + 1)


class OffsetNet(nn.Module):
    def __init__(self, channels: int, segments: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, 1, 3, padding=1)
        self.fc1 = nn.Linear(segments, segments)
        self.fc2 = nn.Linear(segments, GROUPS)
        nn.init.constant_(self.fc2.bias, 0.5108)  # mmaction2's: 4 (sigmoid(0.5108) - 0.5) = 0.5 frames at the start

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, F, T) -> (N, GROUPS) in (-2, 2)
        x = self.fc2(torch.relu(self.fc1(self.conv(x).flatten(1))))
        return 4 * (torch.sigmoid(x) - 0.5)


class WeightNet(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, GROUPS, 3, padding=1)
        nn.init.zeros_(self.conv.bias)  # weights start at 2 sigmoid(0) = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, F, T) -> (N, T, GROUPS) in (0, 2)
        return 2 * torch.sigmoid(self.conv(x)).transpose(1, 2)


class TemporalInterlace(nn.Module):
    def __init__(self, channels: int, segments: int, shift_div: int):
        super().__init__()
        self.folds = channels // shift_div
        self.offset_net = OffsetNet(self.folds, segments)
        self.weight_net = WeightNet(self.folds)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:  # (B*T, C, H, W) -> same
        f = self.folds
        head = x[:, :f].reshape(-1, t, f, *x.shape[2:])  # (B, T, F, H, W): the interlaced channels
        pooled = head.mean((3, 4)).transpose(1, 2)  # (B, F, T)
        o = self.offset_net(pooled)  # (B, 2)
        shifted = linear_sampler(head, torch.cat([o, -o], 1))  # groups shifted by (o1, o2, -o1, -o2)
        w = self.weight_net(pooled).repeat(1, 1, 2).repeat_interleave(f // (2 * GROUPS), dim=2)  # (B, T, F): (w1, w2, w1, w2)
        return torch.cat([(shifted * w[..., None, None]).flatten(0, 1), x[:, f:]], 1)


class TIN(SegmentResNet):
    def __init__(self, cfg: TINConfig, num_classes: int):
        super().__init__(cfg.dropout, num_classes)
        self.cfg = cfg
        for block in self.blocks():
            block.interlace = TemporalInterlace(block.conv1.in_channels, cfg.segments, cfg.shift_div)

    def mix(self, block: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
        return block.interlace(x, t)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != self.cfg.segments:
            raise VidpipeError(f"tin_r50 takes exactly {self.cfg.segments} segments (its OffsetNet is T x T); got {x.shape[2]} "
                               "(set data.frames, or model_options.segments for a new model)")
        return super().forward_features(x)

    def adapt_state(self, state: dict) -> dict:
        """A checkpoint without any interlace (torchvision's ResNet-50, a TSM, a TSN) gets this model's own
        initialisation of it, as mmaction2 builds TIN-K400 from TSM-K400; one with some interlace keys must
        have them all (only a probe's meta tensors are replaced)."""
        fresh = not any(".interlace." in k for k in state)
        out = dict(state)
        for key, value in self.state_dict().items():
            if ".interlace." in key and (fresh or (key in out and out[key].is_meta)):
                out[key] = value
        return out


K400 = Weights(
    tag="K400",
    source="mmaction2:tin_kinetics400-pretrained-tsm-r50_1x1x8-50e_kinetics400-rgb",
    layout=MMACTION2,
    transforms=MM_TEST,
    num_classes=400,
    meta={"dataset": "Kinetics-400 (fine-tuned from TSM-K400)", "top1": 70.89, "protocol": "1x1x8 (mmaction2)", "params": 24_358_640},
)
SSV2 = Weights(
    tag="SSV2",
    source="mmaction2:tin_imagenet-pretrained-r50_8xb6-1x1x8-40e_sthv2-rgb",
    layout=MMACTION2,
    transforms=MM_TEST,
    num_classes=174,
    meta={"dataset": "Something-Something V2", "top1": 56.70, "protocol": "1x1x8, short side 256, centre crop 224 (mmaction2)",
          "params": 23_539_040 + 2048 * 174 + 174},
)


@register_model("tin_r50", TINConfig, "clips", "TIN: ResNet-50 with learned fractional temporal interlacing (mmaction2 ResNetTIN), pure PyTorch",
                transforms=SCRATCH_TRANSFORMS, weights=(IMAGENET1K_V1, K400, SSV2), layouts=(TORCHVISION, MMACTION2, OFFICIAL))
def tin_r50(cfg: TINConfig, *, num_classes: int, in_dim: None = None) -> TIN:
    return TIN(cfg, num_classes)

