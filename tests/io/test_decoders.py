"""The two CPU decoders (PyAV in-process, an ffmpeg process per video): the same frames, the fallback
from one to the other, and stores begun with one carried on with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from tests.conftest import psnr
from vidpipe.datasets.adapters import build_manifest
from vidpipe.io import ffmpeg, pyav
from vidpipe.io.decode import ClipSpec, decode_clip, fps_indices, uniform_indices
from vidpipe.io.ffmpeg import DecodeError, Geometry, encode_video, probe, read_all_frames
from vidpipe.stores.clips import Store
from vidpipe.stores.extract import ExtractConfig, extract


def _reference(path, indices, height, width):
    """Independent path: every frame decoded by the ffmpeg binary at full size, torchvision's antialiased resize."""
    frames = read_all_frames(path)[indices]
    g = Geometry.cover((frames.shape[2], frames.shape[1]), height, width)
    x = TF.resize(torch.from_numpy(frames).permute(0, 3, 1, 2), [g.scaled_h, g.scaled_w], antialias=True)
    return x[:, :, g.crop_y : g.crop_y + height, g.crop_x : g.crop_x + width].permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def videos(synth_h264, tmp_path_factory):
    """A synthetic H.264 mp4 (24 frames at 25 fps, 128x96) and its Xvid AVI re-encode (HMDB51's codec)."""
    mp4 = next((synth_h264 / "train" / "size_grow").glob("*.mp4"))
    return [mp4, encode_video(read_all_frames(mp4), tmp_path_factory.mktemp("decoders") / "clip.avi", "mpeg4", fps=25.0)]


@pytest.mark.parametrize("mode", ["uniform", "fps"])
def test_pyav_and_the_ffmpeg_process_give_the_same_frames(videos, mode):
    spec = ClipSpec(16, 48, 64) if mode == "uniform" else ClipSpec(15, 48, 64, fps=10.0, max_seconds=1.0)
    for path in videos:
        a, meta_a = decode_clip(path, spec, decoder="pyav")
        b, meta_b = decode_clip(path, spec, decoder="ffmpeg")
        assert (meta_a["backend"], meta_b["backend"]) == ("pyav", "ffmpeg") and "rerouted" not in meta_a
        assert meta_a["indices"] == meta_b["indices"] and a.shape == b.shape
        expected = uniform_indices(24, 16)[0] if mode == "uniform" else fps_indices(24, 25.0, 10.0, 1.0)[0]
        assert meta_a["indices"] == expected
        np.testing.assert_array_equal(a, b)  # the same libavfilter chain in-process and in the process
        ref = _reference(path, meta_a["indices"], 48, 64)
        assert psnr(a, ref) >= 35 and psnr(b, ref) >= 35


def test_frames_past_the_end_come_back_short_from_both(videos):
    g = Geometry.cover((128, 96), 48, 64)
    for decode_frames in (pyav.decode_frames, ffmpeg.decode_frames):
        assert decode_frames(videos[0], [0, 23, 24, 60], g).shape == (2, 48, 64, 3)


def test_pyav_raises_decode_error_on_a_file_it_cannot_open(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_text("not a video")
    with pytest.raises(DecodeError, match="PyAV"):
        pyav.decode_frames(bad, [0], Geometry.cover((160, 120), 48, 64))


def test_a_video_pyav_fails_on_is_decoded_by_an_ffmpeg_process(synth_h264, tmp_path, monkeypatch):
    m = build_manifest("synthetic", synth_h264)
    real = pyav.decode_frames
    victim = m.abspath(m.split_records("train")[0])

    def flaky(path, *args, **kw):  # PyAV refuses one file the probe found usable
        if str(path) == str(victim):
            raise DecodeError("PyAV: [Errno 1094995529] Invalid data found when processing input")
        return real(path, *args, **kw)

    monkeypatch.setattr(pyav, "decode_frames", flaky)
    index = extract(m, tmp_path / "s", ExtractConfig(frames=8, size=48, backend="pyav")).summary
    assert index["backends"] == {"ffmpeg": 1, "pyav": 29} and index["failures"] == []
    assert index["rerouted"] == [{"id": m.split_records("train")[0].id, "codec": "h264",
                                  "reason": "PyAV: [Errno 1094995529] Invalid data found when processing input"}]
    got = {vid: clip for vid, clip, *_ in Store.open(tmp_path / "s").samples("train")}
    direct, _ = decode_clip(victim, ClipSpec(8, 48, 64), decoder="ffmpeg")
    np.testing.assert_array_equal(got[m.split_records("train")[0].id], direct)


def test_auto_carries_on_with_the_decoder_a_store_was_begun_with(synth_h264, tmp_path):
    m = build_manifest("synthetic", synth_h264)
    out = tmp_path / "s"
    first = extract(m, out, ExtractConfig(frames=8, size=48, backend="ffmpeg", shard_size="200KB"))
    before = (out / "store.json").read_text()
    again = extract(m, out, ExtractConfig(frames=8, size=48, shard_size="200KB"))  # auto would pick pyav on a new store
    assert first.finalized and again.nothing_to_do and (out / "store.json").read_text() == before
    assert json.loads(before)["settings"]["backend"] == "ffmpeg"


def test_probe_and_pyav_agree_on_the_frame_count(videos):
    import av

    for path in videos:
        with av.open(str(path)) as c:
            decoded = sum(1 for _ in c.decode(video=0))
        assert probe(path).num_frames == decoded == 24


@pytest.mark.parametrize("size", [(341, 256), (255, 191), (683, 512), (170, 128), (1001, 563)])
def test_the_stored_geometry_and_the_stream_expression_agree_on_odd_sizes(size, tmp_path):
    """`Geometry.cover` (files) and `cover_filter` (pipes and streams, an ffmpeg expression) round alike:
    341x256 to 128 rows is 171 wide on both (Python's round, half to even, made it 170 on one)."""
    import subprocess

    from vidpipe.predict.frames import FrameReader

    w, h = size
    video = tmp_path / "odd.mkv"
    frames = np.random.default_rng(w).integers(0, 256, (3, h, w, 3), np.uint8)  # detail everywhere: any shift shows
    subprocess.run([ffmpeg.ffmpeg_binary(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "5", "-i", "pipe:0",
                    "-c:v", "ffv1", "-pix_fmt", "bgr0", str(video)], input=frames.tobytes(), check=True)  # lossless RGB keeps odd sizes
    assert probe(video).display_size == (w, h)
    g = Geometry.cover((w, h), 128, 170)
    stored = np.stack([f for _, f in FrameReader(video, 128, 170, geometry=g)])
    streamed = np.stack([f for _, f in FrameReader(video, 128, 170)])  # geometry unknown: the expression
    np.testing.assert_array_equal(stored, streamed)
    assert g.scaled_w == int(np.floor(w * max(128 / h, 170 / w) + 0.5))
