"""R(2+1)D-18 cut after its first k BasicBlocks, with the study's Perceiver head, trained end to end on clips.

The R(2+1)D study (seed "hmdb51-recognition") replaces R(2+1)D-18's pooled classifier with a Perceiver
(`vidpipe.models.perceiver`) and ablates how many CNN blocks to keep (`cnn_blocks`: the stem and the first k of
the 8 BasicBlocks, layer1.0 ... layer4.1; k = 8 is the whole network) against how many cross and self layers
to add. Token maps at 16 x 112 x 112: k = 4 -> 128 x 8 x 28 x 28, k = 6 -> 256 x 4 x 14 x 14, k = 7 or 8 ->
512 x 2 x 7 x 7.

a run's `init=KINETICS400_V1` (or a torchvision `r2plus1d_18` state dict) initialises the CNN; the blocks past k
and Kinetics' classifier are not used, and the Perceiver starts from its own initialisation. Every parameter
exists when the model is built, so the optimizer sees all of them (the study's code made its cross-attention
on the first forward, after its optimizer).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch
from torch import nn

from vidpipe.models.perceiver import Perceiver, PerceiverConfig
from vidpipe.models.r2plus1d import KINETICS400_V1 as R2PLUS1D_K400
from vidpipe.models.registry import register_model
from vidpipe.models.weights import KINETICS_MEAN, KINETICS_STD, Layout, Transforms, Weights
from vidpipe.typed import check

BLOCK_CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512)  # output channels of BasicBlock 1..8


@dataclass
class R2Plus1DPerceiverConfig(PerceiverConfig):
    cnn_blocks: int = 8  # the stem and the first k BasicBlocks (4..8)

    def __post_init__(self):
        super().__post_init__()
        check(4 <= self.cnn_blocks <= 8, f"model_options.cnn_blocks must be 4..8 (of R(2+1)D-18's 8 BasicBlocks); got {self.cnn_blocks}")


class R2Plus1DPerceiver(Perceiver):
    """Clips (B, 3, T, H, W) -> the cut CNN's token map -> the Perceiver (its forward_features and head)."""

    backbone_prefixes = ("stem.", "blocks.")  # the CNN, for parameter reports (`vidpipe compare`)

    def __init__(self, cfg: R2Plus1DPerceiverConfig, num_classes: int):
        import torchvision

        super().__init__(cfg, num_classes, in_dim=BLOCK_CHANNELS[cfg.cnn_blocks - 1])
        net = torchvision.models.video.r2plus1d_18(weights=None)  # architecture only: no I/O
        self.stem = net.stem
        self.blocks = nn.Sequential(*[block for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for block in layer][: cfg.cnn_blocks])

    def cnn_parameters(self) -> int:
        return sum(p.numel() for name, p in self.named_parameters() if name.startswith(self.backbone_prefixes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> the Perceiver's sequence
        return super().forward_features(self.blocks(self.stem(x)))  # the map: (B, C_k, T', H', W')

    def adapt_state(self, state: dict) -> dict:
        """A CNN-only checkpoint (no latents or CLS) completed to this model: the blocks past `cnn_blocks` dropped,
        the Perceiver from this model's own initialisation."""
        own = self.state_dict()
        if any(k.startswith(("stem.", "blocks.")) for k in state) and not any(k.startswith(("cross.", "layers.")) for k in state):
            state = {k: v for k, v in state.items() if not (k.startswith("blocks.") and int(k.split(".")[1]) >= self.cfg.cnn_blocks)}
            state.update({k: v for k, v in own.items() if not k.startswith(("stem.", "blocks."))})
        # what a shape probe (built on the meta device) filled in is this model's own initialisation
        return {k: own[k] if v.is_meta and k in own else v for k, v in state.items()}


def from_torchvision(state: dict) -> dict:
    """torchvision r2plus1d_18 keys (stem, layer1-4 of 2 blocks, fc) -> stem, blocks.0-7; Kinetics' fc is not used."""
    if not any(k.startswith("layer1.") for k in state):
        raise ValueError("no layer1.* keys")
    out = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        out[re.sub(r"^layer([1-4])\.([01])\.", lambda m: f"blocks.{2 * (int(m.group(1)) - 1) + int(m.group(2))}.", key)] = value
    return out


TORCHVISION = Layout("torchvision", from_torchvision, "torchvision.models.video.r2plus1d_18 state dict (stem, layer1-4; fc not used)")
# The study's sampling: 16 frames over a 4-second clip (about 8 source frames apart at 30 fps), resize 128x171 -> crop 112
STUDY_TRANSFORMS = Transforms("dense", frames=16, interval=8, interval_unit="source", short_side=128, crop=112, mean=(0.45, 0.45, 0.45),
                              std=(0.225, 0.225, 0.225))
KINETICS400_V1 = Weights(
    tag="KINETICS400_V1",
    source=R2PLUS1D_K400.source,
    layout=TORCHVISION,
    transforms=dataclasses.replace(STUDY_TRANSFORMS, mean=KINETICS_MEAN, std=KINETICS_STD),  # the CNN's own normalisation
    num_classes=400,
    meta={"dataset": "Kinetics-400 (the CNN; the Perceiver is trained on the task)", "params": R2PLUS1D_K400.meta["params"],
          "note": "the study normalised with mean 0.45 / std 0.225; this record keeps the CNN's own Kinetics mean/std"},
)


@register_model("r2plus1d_perceiver", R2Plus1DPerceiverConfig, "clips",
                "R(2+1)D-18 cut after k BasicBlocks + the study's Perceiver head, end to end (the HMDB51 ablation)",
                transforms=STUDY_TRANSFORMS, weights=(KINETICS400_V1,), layouts=(TORCHVISION,))
def r2plus1d_perceiver(cfg: R2Plus1DPerceiverConfig, *, num_classes: int, in_dim: None = None) -> R2Plus1DPerceiver:
    return R2Plus1DPerceiver(cfg, num_classes)
