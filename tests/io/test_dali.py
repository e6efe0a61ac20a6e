"""The DALI backend on the CPU (VP9), its routing to ffmpeg, and agreement with the ffmpeg backend."""

import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import psnr
from vidpipe.cli.main import cli
from vidpipe.errors import VidpipeError
from vidpipe.io import dali
from vidpipe.datasets.adapters import build_manifest
from vidpipe.io.decode import ClipSpec
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.io.ffmpeg import encode_video, ffmpeg_binary, probe, read_all_frames
from vidpipe.stores.clips import Store
from vidpipe.datasets.synth import SynthConfig, synth

needs_dali = pytest.mark.skipif(not dali.dali_installed(), reason="NVIDIA DALI not installed (pip install -e .[dali])")




@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory):
    """VP9 synthetic videos plus files DALI's CPU decoder must not get: H.264, Xvid AVI, a rotated VP9."""
    root = tmp_path_factory.mktemp("mixed")
    synth(root, SynthConfig(videos_per_class=2, codec="vp9", frames=24, seed=2))
    frames = read_all_frames(next((root / "train" / "size_grow").glob("*.webm")))
    encode_video(frames, root / "train" / "size_grow" / "as_h264.mp4", "h264")
    encode_video(frames, root / "train" / "size_grow" / "as_xvid.avi", "mpeg4")
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-display_rotation", "90", "-i",
                    str(next((root / "train" / "size_shrink").glob("*.webm"))), "-c", "copy",
                    str(root / "train" / "size_shrink" / "rotated.webm")], check=True)
    return root


@needs_dali
def test_dali_cpu_store_matches_ffmpeg_store(mixed_root, tmp_path):
    m = build_manifest("synthetic", mixed_root)
    settings = dict(frames=8, size=48, format="webdataset")
    extract(m, tmp_path / "ffmpeg", ExtractConfig(backend="ffmpeg", **settings))
    report = extract(m, tmp_path / "dali", ExtractConfig(backend="dali", **settings))
    index = report.summary
    assert index["settings"]["backend"] == "dali"
    assert index["backends"] == {"dali-cpu": 20, "ffmpeg": 3}
    reasons = {r["id"]: r["reason"] for r in index["rerouted"]}
    assert set(reasons) == {"size_grow/as_h264", "size_grow/as_xvid", "size_shrink/rotated"}
    assert "codec h264" in reasons["size_grow/as_h264"] and "no GPU" in reasons["size_grow/as_h264"]
    assert "codec mpeg4" in reasons["size_grow/as_xvid"] and "rotation" in reasons["size_shrink/rotated"]
    assert report.rerouted == 3

    ff = {vid: (clip, meta) for vid, clip, _, meta in Store.open(tmp_path / "ffmpeg").samples("train")}
    worst = 99.0
    for vid, clip, label, meta in Store.open(tmp_path / "dali").samples("train"):
        assert meta["indices"] == ff[vid][1]["indices"]  # the same sampled frames
        assert clip.shape == (8, 48, 64, 3) and clip.dtype == np.uint8
        if meta["backend"] == "dali-cpu":
            worst = min(worst, psnr(clip, ff[vid][0]))
    assert worst >= 30, worst
    assert Store.open(tmp_path / "dali").verify() == []


@needs_dali
def test_run_time_rejection_is_retried_alone_and_reported(mixed_root):
    """A file DALI cannot decode (H.264 on the CPU, forced past routing) does not sink its batch."""
    vp9 = next((mixed_root / "train" / "size_grow").glob("*.webm"))
    h264 = mixed_root / "train" / "size_grow" / "as_h264.mp4"
    decoder = dali.DaliDecoder(ClipSpec(4, 32, 42), batch_size=4, gpu=False)
    results = decoder.decode([(vp9, probe(vp9)), (h264, probe(h264)), (vp9, probe(vp9))])
    assert isinstance(results[1], str) and results[1].startswith("DALI rejected it at run time: ")
    assert "no longer valid" not in results[1] and "[/" not in results[1]  # DALI's boilerplate and C++ positions
    assert "Failed to create video decoder" in results[1]
    assert results[0][0].shape == (4, 32, 42, 3) and np.array_equal(results[0][0], results[2][0])


@needs_dali
def test_frames_dali_cannot_reach_are_rejected_not_padded(mixed_root, tmp_path):
    """When the probed frame count overstates what DALI can decode (here: a truncated copy given the
    whole file's probe), DALI must reject the file, not fill the missing frames with black."""
    vp9 = next((mixed_root / "train" / "size_grow").glob("*.webm"))
    cut = tmp_path / "cut.webm"
    cut.write_bytes(vp9.read_bytes()[: vp9.stat().st_size // 3])
    decoder = dali.DaliDecoder(ClipSpec(8, 32, 42), batch_size=4, gpu=False)
    (result,) = decoder.decode([(cut, probe(vp9))])
    assert isinstance(result, str) and "out-of-bounds frame index" in result, result


def test_dali_requested_but_missing_is_one_line(monkeypatch, tmp_path, synth_h264):
    monkeypatch.setattr(dali, "dali_installed", lambda: False)
    res = CliRunner().invoke(cli, ["extract", "--dataset", "synthetic", "--root", str(synth_h264), "--out",
                                   str(tmp_path / "s"), "--backend", "dali"])
    assert res.exit_code == 1 and "pip install \"vidpipe[dali]\"" in res.output and "Traceback" not in res.output


def test_auto_is_pyav_then_ffmpeg_without_a_gpu(monkeypatch):
    from vidpipe.io import pyav
    from vidpipe.stores.extract import resolve_backend

    monkeypatch.setattr(dali, "gpu_present", lambda: False)
    assert resolve_backend("auto") == "pyav"
    monkeypatch.setattr(pyav, "pyav_installed", lambda: False)
    assert resolve_backend("auto") == "ffmpeg"
    with pytest.raises(VidpipeError, match="pip install av"):
        resolve_backend("pyav")
    monkeypatch.setattr(dali, "gpu_present", lambda: True)
    monkeypatch.setattr(dali, "dali_installed", lambda: True)
    assert resolve_backend("auto") == "dali"
    assert resolve_backend("auto", fps=15.0) == "ffmpeg"  # DALI does not make fps stores


def test_routing_rules():
    from vidpipe.io.ffmpeg import VideoInfo

    base = dict(width=320, height=240, sar=1.0, rotation=0, fps=30.0, num_frames=90, duration=3.0)
    assert dali.route(VideoInfo(codec="vp9", **base), gpu=False) is None
    assert "codec h264" in dali.route(VideoInfo(codec="h264", **base), gpu=False)
    assert dali.route(VideoInfo(codec="h264", **base), gpu=True) is None
    assert "codec mpeg4" in dali.route(VideoInfo(codec="mpeg4", **base), gpu=True)
    assert "rotation" in dali.route(VideoInfo(codec="vp9", **{**base, "rotation": 90}), gpu=True)


@needs_dali
def test_both_backends_fail_the_same_files_with_reasons(tmp_path, monkeypatch):
    """A VP9 file cut in half is refused by both backends (DALI once stored it), and a probe that finds
    no frames is one recorded failure on the DALI path, not the end of the run."""
    root = tmp_path / "data"
    synth(root, SynthConfig(videos_per_class=2, codec="vp9", frames=24, seed=3))
    whole = next((root / "train" / "size_grow").glob("*.webm"))
    (root / "train" / "size_grow" / "cut_in_half.webm").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    m = build_manifest("synthetic", root)
    failed = {}
    for backend in ("ffmpeg", "dali"):
        index = extract(m, tmp_path / backend, ExtractConfig(backend=backend, frames=8, size=32, max_failures=0.5)).summary
        failed[backend] = {f["id"]: f["reason"] for f in index["failures"]}
        assert index["splits"]["train"]["count"] == 10  # every other video landed
    assert set(failed["ffmpeg"]) == set(failed["dali"]) == {"size_grow/cut_in_half"}
    assert failed["dali"]["size_grow/cut_in_half"] == failed["ffmpeg"]["size_grow/cut_in_half"]
    assert "truncated" in failed["dali"]["size_grow/cut_in_half"]

    from vidpipe.stores import extract as extract_mod
    from vidpipe.io.ffmpeg import VideoInfo

    no_frames = VideoInfo(codec="vp9", width=128, height=96, sar=1.0, rotation=0, fps=25.0, num_frames=0, duration=0.0)
    monkeypatch.setattr(extract_mod, "probe_many", lambda paths: [no_frames for _ in paths])
    monkeypatch.setattr(extract_mod.pyav, "probe", lambda path: None)  # the in-process probe leaves it to probe_many
    record = m.split_records("train")[0]
    (result,) = extract_mod._decode_chunk(m, [(None, 0, record)], ClipSpec(8, 32, 42), 1, "dali")
    assert result[1] is None and result[2]["reason"] == "no video frames"


@needs_dali
def test_dali_honours_webm_pixel_aspect(tmp_path):
    """A VP9 WebM at SAR 2:1 (WebM writes "SAR 2:1" without brackets) is stored at its display aspect by
    DALI too: a real synthetic clip re-encoded with non-square pixels, against the ffmpeg store."""
    synth(tmp_path / "src", SynthConfig(videos_per_class=2, codec="vp9", frames=24, seed=4))
    frames = read_all_frames(next((tmp_path / "src" / "train" / "move_left_to_right").glob("*.webm")))
    root = tmp_path / "data"
    (root / "train" / "a").mkdir(parents=True)
    squeezed = frames[:, :, ::2]  # 64 coded columns of the 128-wide frames, shown 2x wide
    encode_video(squeezed, root / "train" / "a" / "anamorphic.webm", "vp9", extra=["-aspect", "4:3"])
    m = build_manifest("folder", root)
    stores = {}
    for backend in ("ffmpeg", "dali"):
        index = extract(m, tmp_path / backend, ExtractConfig(backend=backend, frames=8, size=48)).summary
        assert index["backends"] == ({"dali-cpu": 1} if backend == "dali" else {"ffmpeg": 1})
        vid, clip, _, meta = next(Store.open(tmp_path / backend).samples("train"))
        assert meta["display_size"] == [128, 96]
        stores[backend] = clip
    assert psnr(stores["dali"], stores["ffmpeg"]) >= 30
