"""JPEG frames for stores: encoded once at extraction, decoded at train time, only the frames a clip
samples. Pillow (libjpeg-turbo) both ways; torchvision's own JPEG codec is deprecated since 0.29.

Chroma is kept at full resolution (4:4:4): on small frames (128 px) 4:2:0 subsampling costs 3-4 dB of
PSNR on coloured edges for ~15 % fewer bytes.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def encode(frames: np.ndarray, quality: int) -> list[bytes]:
    """(T, H, W, 3) uint8 RGB -> T baseline JPEGs."""
    from PIL import Image

    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality, subsampling=0)
        out.append(buf.getvalue())
    return out


def decode(blobs: Sequence[bytes]) -> np.ndarray:
    """JPEGs of one size -> (n, H, W, 3) uint8 RGB."""
    from PIL import Image

    if len(blobs) == 0:
        raise ValueError("no JPEG frames to decode")
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
