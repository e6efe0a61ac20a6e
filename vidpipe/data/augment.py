"""Spatial augmentation that runs where the model runs, on uint8 batches.

Clips travel host -> device as uint8 (4x less traffic than float32). Random choices (crop box, flip)
are drawn per sample on the host from that sample's seeded generator, so they do not depend on the
number of workers; the device only applies them: crop, resize, flip, then float and mean/std.

- train: random resized crop (area and aspect ranges) or multi-scale crop (TSN), resize to size x size,
  horizontal flip with probability 1/2 (with a label map for flip-sensitive classes, applied by the dataset);
- test: resize the short side to `test_short_side`, then a centre crop or three crops along the long side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from vidpipe.errors import VidpipeError
from vidpipe.models.weights import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class AugmentConfig:
    size: int = 112  # output crop side
    train_crop: str = "random_resized"  # or "multiscale"
    area: tuple[float, float] = (0.08, 1.0)  # random resized crop: fraction of the frame's area
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # random resized crop: aspect ratio range
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)  # multi-scale crop: sides as fractions of the short side
    flip: bool = True
    test_short_side: int = 128  # resize before the test crop (128 -> 112 is the R(2+1)D convention)
    test_crop: str = "center"  # or "three"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.train_crop not in ("random_resized", "multiscale"):
            raise VidpipeError(f"train_crop must be random_resized or multiscale; got '{self.train_crop}'")
        if self.test_crop not in ("center", "three"):
            raise VidpipeError(f"test_crop must be center or three; got '{self.test_crop}'")

    @property
    def test_crops(self) -> int:
        return 3 if self.test_crop == "three" else 1


def random_resized_box(rng: np.random.Generator, h: int, w: int, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, height, width) like torchvision's RandomResizedCrop.get_params, from a numpy generator."""
    for _ in range(10):
        target = h * w * rng.uniform(*area)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    side = min(h, w)  # fallback: centre square, as torchvision does for out-of-range ratios
    return (h - side) // 2, (w - side) // 2, side, side


def multiscale_box(rng: np.random.Generator, h: int, w: int, scales=(1.0, 0.875, 0.75, 0.66), max_distort: int = 1) -> tuple[int, int, int, int]:
    """TSN's MultiScaleCrop: crop sides drawn from scales x short side (aspect distortion <= max_distort)."""
    base = min(h, w)
    sizes = [int(base * s) for s in scales]
    pairs = [(ch, cw) for i, ch in enumerate(sizes) for j, cw in enumerate(sizes) if abs(i - j) <= max_distort]
    ch, cw = pairs[int(rng.integers(len(pairs)))]
    return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw


def train_params(rng: np.random.Generator, h: int, w: int, cfg: AugmentConfig) -> tuple[np.ndarray, bool]:
    box = random_resized_box(rng, h, w, cfg.area, cfg.ratio) if cfg.train_crop == "random_resized" else multiscale_box(rng, h, w, cfg.scales)
    flip = bool(cfg.flip and rng.random() < 0.5)
    return np.array(box, np.int64), flip


def test_boxes(h: int, w: int, cfg: AugmentConfig) -> list[tuple[int, int, int, int]]:
    """Crop boxes in the resized (short side = test_short_side) frame: centre, or three along the long side."""
    s = cfg.size
    if cfg.test_crop == "center":
        return [((h - s) // 2, (w - s) // 2, s, s)]
    # mmaction2's ThreeCrop: offsets 0, step and 2 * step along the long side, step = (long - size) // 2
    if w >= h:
        step = (w - s) // 2
        return [((h - s) // 2, x, s, s) for x in (0, step, 2 * step)]
    step = (h - s) // 2
    return [(y, (w - s) // 2, s, s) for y in (0, step, 2 * step)]


class DeviceTransform:
    """uint8 (B, V, T, H, W, 3) -> normalised float (B * V * crops, 3, T, size, size) on the clips' device."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self._mean = torch.tensor(cfg.mean).view(1, 3, 1, 1, 1)
        self._std = torch.tensor(cfg.std).view(1, 3, 1, 1, 1)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, 3, S, S) uint8 -> (N, 3, T, S, S) float
        return (x.permute(0, 2, 1, 3, 4).float().div_(255.0) - self._mean.to(x.device)) / self._std.to(x.device)

    def train(self, clips: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        b, v, t, h, w, c = clips.shape
        s = self.cfg.size
        out = []
        for i in range(b):
            top, left, ch, cw = (int(x) for x in boxes[i])
            x = clips[i].reshape(v * t, h, w, c).permute(0, 3, 1, 2)  # (V*T, 3, H, W)
            x = TF.resized_crop(x, top, left, ch, cw, [s, s], antialias=True)
            if flips[i]:
                x = x.flip(-1)
            out.append(x.reshape(v, t, c, s, s))
        return self._normalise(torch.cat(out))

    def test(self, clips: torch.Tensor) -> torch.Tensor:
        b, v, t, h, w, c = clips.shape
        short = self.cfg.test_short_side
        nh, nw = (short, round(w * short / h)) if h <= w else (round(h * short / w), short)
        x = clips.reshape(b * v * t, h, w, c).permute(0, 3, 1, 2)
        if (nh, nw) != (h, w):
            x = TF.resize(x, [nh, nw], antialias=True)
        crops = [x[:, :, y : y + ch, xx : xx + cw] for y, xx, ch, cw in test_boxes(nh, nw, self.cfg)]
        s = self.cfg.size
        x = torch.stack(crops, 1).reshape(b, v, t, len(crops), c, s, s)  # views x crops per video
        x = x.permute(0, 1, 3, 2, 4, 5, 6).reshape(b * v * len(crops), t, c, s, s)
        return self._normalise(x)
