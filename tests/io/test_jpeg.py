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


def test_subsampling_follows_the_source_pixel_format():
    assert [jpeg.subsampling_of(f) for f in ("yuv420p", "yuvj420p", "nv12", "yuv420p10le", "yuv411p")] == ["420"] * 5
    assert [jpeg.subsampling_of(f) for f in ("yuv422p", "yuvj422p")] == ["422"] * 2
    assert [jpeg.subsampling_of(f) for f in ("yuv444p", "rgb24", "gbrp", "gray", None)] == ["444"] * 5


def test_jpeg_stores_keep_the_sources_chroma_and_old_stores_stay_444(synth_h264, tmp_path):
    """--jpeg-subsampling auto on 4:2:0 H.264: 4:2:0 JPEGs (read back by Pillow's own sampling report), fewer bytes
    than 4:4:4, close to the raw frames; a 4:4:4 store (what every JPEG store was before the choice) resumed with
    the default carries on 4:4:4 to the bytes of an uninterrupted run, and a mismatch is refused by name."""
    import io
    import json

    import pytest
    from PIL import Image, JpegImagePlugin

    from vidpipe.datasets.adapters import build_manifest
    from vidpipe.errors import VidpipeError
    from vidpipe.stores.clips import Store
    from vidpipe.stores.extract import ExtractConfig, extract

    m = build_manifest("synthetic", synth_h264)
    small = dict(frames=4, size=48, workers=1, shard_size="100KB")
    for name, sub in (("raw", None), ("auto", "auto"), ("444", "444")):
        extract(m, tmp_path / name, ExtractConfig(**small, **({"frame_codec": "jpeg", "jpeg_subsampling": sub} if sub else {})))
    stores = {name: Store.open(tmp_path / name) for name in ("raw", "auto", "444")}
    assert stores["auto"].index["clip"]["jpeg_subsampling"] == "auto" and "jpeg_subsampling" not in stores["444"].index["clip"]
    tar = next((tmp_path / "auto" / "train").glob("*.tar"))
    import tarfile

    with tarfile.open(tar) as t:
        member = next(mm for mm in t.getmembers() if mm.name.endswith(".jpg"))
        sampling = JpegImagePlugin.get_sampling(Image.open(io.BytesIO(t.extractfile(member).read())))
        meta = json.loads(t.extractfile(next(mm for mm in t.getmembers() if mm.name.endswith(".json"))).read())
    assert sampling == 2 and meta["jpeg_subsampling"] == "420"  # 4:2:0
    size = {n: sum(f["bytes"] for e in s.index["splits"].values() for f in e["files"]) for n, s in stores.items() if n != "raw"}
    assert size["auto"] < size["444"]
    raw = {vid: clip for vid, clip, _, _ in stores["raw"].samples("train")}
    for vid, clip, _, _ in stores["auto"].samples("train"):
        mse = np.mean((clip.astype(float) - raw[vid]) ** 2)
        assert 10 * np.log10(255**2 / max(mse, 1e-9)) >= 31  # 4:2:0 at q90 on 48-row noisy frames: 32.1 dB at worst when measured
    # a 4:4:4 store begun (part 0) then resumed with the default: 4:4:4 to the end, the bytes of one run
    extract(m, tmp_path / "resumed", ExtractConfig(**small, frame_codec="jpeg", jpeg_subsampling="444"), part=(0, 2))
    assert extract(m, tmp_path / "resumed", ExtractConfig(**small, frame_codec="jpeg"), part=(1, 2)).finalized
    assert (tmp_path / "resumed" / "store.json").read_text().replace("resumed", "444") == (tmp_path / "444" / "store.json").read_text()
    with pytest.raises(VidpipeError, match="jpeg_subsampling auto -> 420|jpeg_subsampling .*420"):
        extract(m, tmp_path / "auto", ExtractConfig(**small, frame_codec="jpeg", jpeg_subsampling="420"))
