"""JPEG frames: simplejpeg's decode is Pillow's pixels, and the Pillow fallback works without it."""

import sys

import numpy as np

from vidpipe.io import jpeg
from vidpipe.io.ffmpeg import read_all_frames


def test_decode_equals_pillow_and_the_fallback(synth_h264, monkeypatch):
    from PIL import Image
    import io

    frames = read_all_frames(next((synth_h264 / "train" / "size_grow").glob("*.mp4")))[:6]
    blobs = jpeg.encode(frames, 90)
    reference = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
    np.testing.assert_array_equal(jpeg.decode(blobs), reference)
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # as if not installed
    np.testing.assert_array_equal(jpeg.decode(blobs), reference)
    assert 30 < 10 * np.log10(255**2 / np.mean((reference.astype(float) - frames) ** 2)) < 99  # lossy, but close
