"""JPEG frames for stores: encoded once at extraction, decoded at train time, only the frames a clip
samples. Pillow encodes; simplejpeg decodes (libjpeg-turbo like Pillow, the same pixels, 2.5x faster
on 128 px frames as it skips Pillow's image objects), with Pillow as the fallback where simplejpeg
is not installed. torchvision's own JPEG codec is deprecated since 0.29.

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
    if len(blobs) == 0:
        raise ValueError("no JPEG frames to decode")
    try:
        import simplejpeg
    except ImportError:
        return decode_pillow(blobs)
    first = simplejpeg.decode_jpeg(blobs[0], colorspace="RGB")
    out = np.empty((len(blobs), *first.shape), np.uint8)
    out[0] = first
    for k in range(1, len(blobs)):
        simplejpeg.decode_jpeg(blobs[k], colorspace="RGB", buffer=out[k])
    return out


def decode_pillow(blobs: Sequence[bytes]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
