"""Extraction against independent references: an ffmpeg full decode, the stock webdataset and zarr readers."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from click.testing import CliRunner

from tests.conftest import psnr
from vidpipe.cli.main import cli
from vidpipe.errors import VidpipeError
from vidpipe.datasets.adapters import build_manifest
from vidpipe.io.decode import uniform_indices
from vidpipe.stores.extract import ExtractConfig, extract, finalize
from vidpipe.io.ffmpeg import Geometry, encode_video, ffmpeg_binary, probe, read_all_frames
from vidpipe.stores.clips import Store

SMALL = dict(frames=8, size=48)  # 8 x 48 x 64 clips




def reference_clip(path, indices, height, width):
    """Independent path: full ffmpeg decode at display size, pick frames, torchvision antialiased resize, crop."""
    frames = read_all_frames(path)[indices]
    g = Geometry.cover((frames.shape[2], frames.shape[1]), height, width)
    x = TF.resize(torch.from_numpy(frames).permute(0, 3, 1, 2), [g.scaled_h, g.scaled_w], antialias=True)
    x = x[:, :, g.crop_y : g.crop_y + height, g.crop_x : g.crop_x + width]
    return x.permute(0, 2, 3, 1).numpy()


def file_checksums(store):
    index = json.loads((store / "store.json").read_text())
    return {f["path"]: f["sha256"] for s in index["splits"].values() for f in s["files"]}


@pytest.fixture(scope="module")
def stores(synth_h264, tmp_path_factory):
    m = build_manifest("synthetic", synth_h264)
    base = tmp_path_factory.mktemp("stores")
    for fmt in ("webdataset", "zarr"):
        extract(m, base / fmt, ExtractConfig(format=fmt, shard_size="200KB", workers=2, **SMALL))
    return m, base


def test_uniform_indices_by_hand():
    assert uniform_indices(80, 8) == ([5, 15, 25, 35, 45, 55, 65, 75], False)
    assert uniform_indices(10, 4) == ([1, 3, 6, 8], False)  # int((i + .5) * 2.5)
    assert uniform_indices(3, 7) == ([0, 1, 2, 0, 1, 2, 0], True)
    assert uniform_indices(8, 8) == (list(range(8)), False)


def test_frames_match_independent_ffmpeg_decode(stores):
    m, base = stores
    store = Store.open(base / "webdataset")
    checked = 0
    for vid, clip, label, meta in store.samples("train"):
        assert clip.shape == (8, 48, 64, 3) and clip.dtype == np.uint8
        assert meta["indices"] == uniform_indices(24, 8)[0] and meta["num_frames"] == 24
        assert np.allclose(meta["timestamps"], [i / 25 for i in meta["indices"]], atol=1e-3)
        ref = reference_clip(m.abspath(next(r for r in m.records if r.id == vid)), meta["indices"], 48, 64)
        assert psnr(clip, ref) >= 35, vid
        checked += 1
    assert checked == 20


def test_formats_hold_identical_frames_and_labels(stores):
    _, base = stores
    wds_store, zarr_store = Store.open(base / "webdataset"), Store.open(base / "zarr")
    for split in ("train", "test"):
        a = {vid: (clip, label) for vid, clip, label, _ in wds_store.samples(split)}
        b = {vid: (clip, label) for vid, clip, label, _ in zarr_store.samples(split)}
        assert a.keys() == b.keys() and len(a) == (20 if split == "train" else 10)
        for vid in a:
            np.testing.assert_array_equal(a[vid][0], b[vid][0])
            assert a[vid][1] == b[vid][1]


def test_stock_readers(stores):
    import webdataset as wds
    import zarr

    m, base = stores
    index = json.loads((base / "webdataset" / "store.json").read_text())
    shards = [str(base / "webdataset" / f["path"]) for f in index["splits"]["test"]["files"]]
    assert len(shards) > 1  # 200KB shards force several
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
    assert names[0].endswith(".cls") and any(n.endswith(".frames.npy") for n in names)
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode())
    assert len(samples) == 10
    s = samples[0]
    assert s["frames.npy"].shape == (8, 48, 64, 3) and int(s["cls"]) == s["json"]["label"]
    assert s["__key__"] == s["json"]["id"]

    group = zarr.open_group(base / "zarr" / "test.zarr", mode="r")
    assert group["frames"].shape == (10, 8, 48, 64, 3) and group["frames"].dtype == np.uint8
    assert group["frames"].chunks == (1, 1, 48, 64, 3)  # one chunk per frame: a clip decompresses only its frames
    ids = list(group["ids"][:])
    test_ids = [r.id for r in m.split_records("test")]
    assert ids == test_ids and list(group["labels"][:]) == [r.label for r in m.split_records("test")]
    wds_frames = {x["json"]["id"]: x["frames.npy"] for x in samples}
    np.testing.assert_array_equal(group["frames"][3], wds_frames[ids[3]])


def test_store_json_is_self_describing(stores):
    _, base = stores
    index = json.loads((base / "zarr" / "store.json").read_text())
    assert index["clip"] == {"frames": 8, "height": 48, "width": 64, "channels": 3, "layout": "THWC", "dtype": "uint8", "normalized": False,
                             "codec": "raw", "mode": "uniform"}
    assert index["settings"]["backend"] == "pyav" and index["backends"] == {"pyav": 30}  # auto on a CPU machine
    assert index["pyav"]["pyav"] and index["ffmpeg"]["version"]
    assert index["splits"]["train"]["count"] == 20 and len(index["classes"]) == 10
    m, _ = stores
    records = m.split_records("train")
    assert index["splits"]["train"]["source_bytes"] == sum(os.path.getsize(m.abspath(r)) for r in records)
    assert index["splits"]["train"]["source_seconds"] == pytest.approx(len(records) * 24 / 25.0)  # synth: 24 frames at 25 fps
    assert all(len(f["sha256"]) == 64 for f in index["splits"]["train"]["files"])
    assert Store.open(base / "zarr").verify() == [] and Store.open(base / "webdataset").verify() == []


def test_rerun_is_a_noop_and_other_settings_are_refused(stores, synth_h264):
    m, base = stores
    before = file_checksums(base / "webdataset")
    report = extract(m, base / "webdataset", ExtractConfig(format="webdataset", shard_size="200KB", **SMALL))
    assert report.nothing_to_do and report.finalized
    assert file_checksums(base / "webdataset") == before
    with pytest.raises(VidpipeError, match="frames 8 -> 4.*--overwrite"):
        extract(m, base / "webdataset", ExtractConfig(format="webdataset", shard_size="200KB", frames=4, size=48))


def test_verify_detects_damage(stores, tmp_path):
    import shutil

    _, base = stores
    copy = tmp_path / "copy"
    shutil.copytree(base / "webdataset", copy)
    shard = sorted((copy / "train").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    index = json.loads((copy / "store.json").read_text())
    index["splits"]["test"]["count"] += 1  # a fault only reading the test split's samples can find
    (copy / "store.json").write_text(json.dumps(index))
    problems = Store.open(copy).verify()
    assert problems == [f"checksum mismatch train/{shard.name}", "test: read 10 samples, store.json says 11"]
    res = CliRunner().invoke(cli, ["verify", str(copy)])
    assert res.exit_code == 1 and "problems" in res.output


def _make_bad_inputs(root, good_video):
    data = good_video.read_bytes()
    bad = root / "train" / "broken"
    bad.mkdir(parents=True)
    (bad / "zero.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("this is not a video\n" * 50)
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 2])
    return bad


@pytest.mark.parametrize("mode", [dict(format="zarr"), dict(format="webdataset", fps=15.0, frame_codec="jpeg"),
                                  dict(format="zarr", backend="ffmpeg", frame_codec="jpeg")], ids=["zarr-raw", "wds-fps-jpeg", "zarr-jpeg-ffmpeg"])
def test_corrupt_inputs_are_recorded_and_skipped(tmp_path, synth_h264, mode):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synth_h264, root)
    avi = root / "train" / "size_grow" / "xvid.avi"
    frames = read_all_frames(next((root / "train" / "size_grow").glob("*.mp4")))
    encode_video(frames, avi, "mpeg4")
    avi_bytes = avi.read_bytes()
    _make_bad_inputs(root, next((root / "train" / "size_grow").glob("*.mp4")))
    (root / "train" / "broken" / "cut_xvid.avi").write_bytes(avi_bytes[: len(avi_bytes) // 2])
    m = build_manifest("synthetic", root)
    out = tmp_path / "store"
    with pytest.raises(VidpipeError, match="4 of 35 videos failed .* > --max-failures 5%"):
        extract(m, out, ExtractConfig(**mode, **SMALL))
    index = json.loads((out / "store.json").read_text())  # written before the exit status says so
    reasons = {f["id"]: f["reason"] for f in index["failures"]}
    assert set(reasons) == {"broken/zero", "broken/text", "broken/truncated", "broken/cut_xvid"}
    assert "zero-byte" in reasons["broken/zero"] and "not a readable video" in reasons["broken/text"]
    assert "corrupt or truncated" in reasons["broken/cut_xvid"]
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 4 and all(f["reason"] for f in failures)
    stored = {vid for vid, *_ in Store.open(out).samples("train")}
    good = {r.id for r in m.split_records("train") if not r.id.startswith("broken/")}
    assert stored == good  # every good video landed, the xvid one included
    assert Store.open(out).verify() == []
    # a generous threshold: same store, exit status zero
    report = extract(m, out, ExtractConfig(**mode, max_failures=0.2, **SMALL))
    assert report.nothing_to_do and report.finalized


def test_short_video_loops_and_geometry_honours_aspect(tmp_path):
    root = tmp_path / "data" / "train"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    rng = np.random.default_rng(0)
    encode_video(rng.integers(0, 255, (5, 96, 128, 3), dtype=np.uint8), root / "a" / "short.mp4")
    # 16:9 frames: a wider video is cropped at the sides
    wide = np.zeros((12, 72, 128, 3), np.uint8)
    wide[:, :, :12] = 255  # cover-scaled to 85x48 and cropped 10 px a side = 15 source px: the band goes
    encode_video(wide, root / "b" / "wide.mp4")
    # 64x96 coded pixels with a 2:1 sample aspect ratio display as 128x96
    sar = np.zeros((12, 96, 64, 3), np.uint8)
    sar[:, :, 24:40] = 255  # a centred band a quarter of the coded width
    encode_video(sar, root / "b" / "anamorphic.mp4", extra=["-aspect", "4:3"])  # DAR 4:3 on 64x96 = SAR 2:1
    # a phone video: landscape pixels with a 90-degree display rotation in the container
    portrait = np.zeros((12, 96, 128, 3), np.uint8)
    portrait[:, :10] = 255
    encode_video(portrait, tmp_path / "landscape.mp4")
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-display_rotation", "90", "-i", str(tmp_path / "landscape.mp4"),
                    "-c", "copy", str(root / "b" / "rotated.mp4")], check=True)
    m = build_manifest("folder", tmp_path / "data")
    out = tmp_path / "store"
    extract(m, out, ExtractConfig(frames=8, size=48, format="webdataset"))
    got = {vid: (clip, meta) for vid, clip, _, meta in Store.open(out).samples("train")}
    clip, meta = got["a/short"]
    assert meta["looped"] and meta["indices"] == [0, 1, 2, 3, 4, 0, 1, 2]
    np.testing.assert_array_equal(clip[0], clip[5])
    wide_clip, wide_meta = got["b/wide"]
    assert wide_meta["display_size"] == [128, 72] and wide_clip[..., :4, :].max() < 40  # band cropped away
    anamorphic, a_meta = got["b/anamorphic"]
    assert a_meta["sar"] == 2.0 and a_meta["display_size"] == [128, 96]
    row = anamorphic[0, 24, :, 0].astype(int)
    bright = np.flatnonzero(row > 128)
    assert 14 <= len(bright) <= 18 and abs(bright.mean() - 31.5) < 2  # 16 of 64 px wide, centred: stretched 2x
    rotated, r_meta = got["b/rotated"]
    assert r_meta["rotation"] in (90, 270) and r_meta["display_size"] == [96, 128]
    assert r_meta["backend"] == "ffmpeg" and r_meta["rerouted"].startswith("display rotation")  # PyAV leaves rotation to ffmpeg
    ref = reference_clip(root / "b" / "rotated.mp4", r_meta["indices"], 48, 64)
    assert psnr(rotated, ref) >= 35


def test_scale_out_parts_then_finalize_equal_single_run(synth_h264, tmp_path, stores):
    m, base = stores
    cfg = ExtractConfig(format="webdataset", shard_size="200KB", **SMALL)
    out = tmp_path / "parts"
    r0 = extract(m, out, cfg, part=(0, 2))
    assert not r0.finalized and not (out / "store.json").exists()
    with pytest.raises(VidpipeError, match="not extracted yet"):
        finalize(out)
    r1 = extract(m, out, cfg, part=(1, 2))
    assert r1.finalized  # the last part to finish writes store.json
    assert file_checksums(out) == file_checksums(base / "webdataset")


@pytest.mark.parametrize("fmt, extra", [("zarr", dict(frame_codec="jpeg")), ("webdataset", dict(fps=15.0)),
                                         ("zarr", dict(fps=15.0, frame_codec="jpeg"))])
def test_parts_then_finalize_equal_a_single_run_in_every_mode(synth_h264, tmp_path, fmt, extra):
    m = build_manifest("synthetic", synth_h264)
    settings = dict(format=fmt, shard_size="60KB", size=48, **extra, **({} if "fps" in extra else {"frames": 8}))
    extract(m, tmp_path / "one", ExtractConfig(**settings))
    assert not extract(m, tmp_path / "parts", ExtractConfig(**settings), part=(0, 2)).finalized
    assert extract(m, tmp_path / "parts", ExtractConfig(**settings), part=(1, 2)).finalized
    assert file_checksums(tmp_path / "parts") == file_checksums(tmp_path / "one")
    assert Store.open(tmp_path / "parts").verify() == [] and Store.open(tmp_path / "one").index["splits"]["train"]["shards"] > 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--format", "zarr", "--fps", "15", "--frame-codec", "jpeg"]], ids=["uniform-raw", "fps-jpeg-zarr"])
def test_kill_9_then_resume_gives_identical_content(synth_h264, tmp_path, stores, mode):
    _, base = stores
    out = tmp_path / "killed"

    def command(store):
        return [sys.executable, "-m", "vidpipe", "extract", "--dataset", "synthetic", "--root", str(synth_h264), "--out", str(store),
                "--size", "48", "--shard-size", "20KB" if mode else "200KB", "--workers", "1", *(mode or ["--frames", "8"])]

    cmd = command(out)
    reference = base / "webdataset"
    if mode:  # the same settings, uninterrupted
        reference = tmp_path / "reference"
        subprocess.run(command(reference), check=True, capture_output=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = out / "_extract" / "parts"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(parts.glob("*.json"))) < 2:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, ffmpeg children included
    proc.wait()
    done_at_kill = len(list(parts.glob("*.json")))
    assert 2 <= done_at_kill < 14 and not (out / "store.json").exists()
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert file_checksums(out) == file_checksums(reference)
    assert not list(out.rglob("*.tmp"))
    assert Store.open(out).verify() == []


def test_cli_extract_errors_are_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["extract", "--dataset", "hmdb51", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "s")])
    assert res.exit_code == 1 and "does not exist" in res.output and "Traceback" not in res.output
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "precious.txt").write_text("keep me")
    m = tmp_path / "m.jsonl"
    res = runner.invoke(cli, ["manifest", "--dataset", "folder", "--root", str(tmp_path / "occupied"), "-o", str(m)])
    assert res.exit_code == 1
    assert ffmpeg_binary()


def test_cli_extract_inspect_finalize(synth_h264, tmp_path):
    runner = CliRunner()
    out = tmp_path / "store"
    args = ["extract", "--dataset", "synthetic", "--root", str(synth_h264), "--out", str(out), "--frames", "4", "--size", "32",
            "--format", "zarr"]
    res = runner.invoke(cli, args + ["--num-shards", "2", "--shard-id", "1"])
    assert res.exit_code == 0, res.output
    assert "shards done" in res.output and not (out / "store.json").exists()
    res = runner.invoke(cli, args + ["--num-shards", "2", "--shard-id", "0"])
    assert res.exit_code == 0 and "stored" in res.output and (out / "store.json").is_file()
    res = runner.invoke(cli, ["extract", "--finalize", str(out)])
    assert res.exit_code == 0 and "finalized" in res.output
    res = runner.invoke(cli, args)
    assert res.exit_code == 0 and "nothing to do" in res.output
    grid = tmp_path / "grid.png"
    res = runner.invoke(cli, ["inspect", str(out), "--grid", str(grid)])
    assert res.exit_code == 0 and "zarr store of synthetic" in res.output
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and grid.stat().st_size > 10_000
    res = runner.invoke(cli, ["inspect", str(tmp_path)])
    assert res.exit_code == 1 and "not a finished vidpipe store" in res.output


def test_decode_count_reads_ffmpeg_summary_not_paths(synth_h264, tmp_path):
    """A folder called 'errors' must not make a good video look damaged; a cut Xvid AVI must."""
    from vidpipe.io.ffmpeg import count_decodable_frames

    good = tmp_path / "corrupt_errors_invalid" / "clip.mp4"
    good.parent.mkdir()
    good.write_bytes(next((synth_h264 / "train" / "size_grow").glob("*.mp4")).read_bytes())
    assert count_decodable_frames(good) == (24, False)
    avi = encode_video(read_all_frames(good), tmp_path / "x.avi", "mpeg4")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    decoded, damaged = count_decodable_frames(cut)
    assert damaged and 0 < decoded < 24


def _tree_bytes(store):
    """Every file of a store (but the empty lock files, one per part that ran) -> its bytes."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file() and p.suffix != ".lock"}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["webdataset", "zarr"])
def test_parts_started_together_give_the_bytes_of_one_run(synth_h264, tmp_path, fmt):
    """Three parts launched at the same moment (each cleaning up and creating arrays at start-up, the
    last ones finalizing together), then --finalize: byte-identical to a single run, every time."""
    args = ["--dataset", "synthetic", "--root", str(synth_h264), "--frames", "4", "--size", "32", "--shard-size", "30KB",
            "--format", fmt, "--workers", "1"]
    single = tmp_path / "single"
    subprocess.run([sys.executable, "-m", "vidpipe", "extract", *args, "--out", str(single)], check=True, capture_output=True)
    reference = _tree_bytes(single)
    assert len([k for k in reference if k.endswith((".tar", "/0/0/0/0"))]) >= 6  # several units per part
    for attempt in range(3):
        out = tmp_path / f"parts-{attempt}"
        procs = [subprocess.Popen([sys.executable, "-m", "vidpipe", "extract", *args, "--out", str(out), "--num-shards", "3",
                                   "--shard-id", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
        res = subprocess.run([sys.executable, "-m", "vidpipe", "extract", "--finalize", str(out)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        got = _tree_bytes(out)
        assert got.keys() == reference.keys(), set(got) ^ set(reference)
        assert [k for k in got if got[k] != reference[k]] == []


def test_a_part_leaves_other_units_temporary_files_alone(synth_h264, tmp_path):
    """A part cleans only the leftovers of its own units: another part's shard being written survives."""
    m = build_manifest("synthetic", synth_h264)
    cfg = ExtractConfig(format="webdataset", frames=4, size=32, shard_size="30KB")
    out = tmp_path / "store"
    extract(m, out, cfg, part=(0, 2))
    other_units_tmp = out / "train" / "train-000001.tar.tmp"  # unit 1 belongs to part 1 (units are dealt round-robin)
    other_units_tmp.write_bytes(b"being written by part 1")
    own_leftover = out / "test" / "test-000000.tar.tmp"
    (out / "_extract" / "parts" / "test-000000.json").unlink()  # part 0 must redo this unit
    own_leftover.write_bytes(b"left by a killed run")
    extract(m, out, cfg, part=(0, 2))
    assert other_units_tmp.read_bytes() == b"being written by part 1"
    assert not own_leftover.exists()


def test_store_records_the_ffmpeg_it_used_and_skips_an_old_one(synth_h264, tmp_path, monkeypatch):
    from vidpipe.io import ffmpeg

    old = tmp_path / "bin" / "ffmpeg"  # an FFmpeg 4.4 on PATH: its logs are not the ones parsed
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 'ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright (c) 2000-2021'\nexit 1\n")
    old.chmod(0o755)
    monkeypatch.setenv("PATH", f"{old.parent}:{os.environ['PATH']}")
    ffmpeg._select_binary.cache_clear()
    try:
        assert ffmpeg.ffmpeg_binary() != str(old)
        m = build_manifest("synthetic", synth_h264)
        m.records = m.records[:3]
        index = extract(m, tmp_path / "store", ExtractConfig(frames=4, size=32)).summary
        assert index["ffmpeg"]["path"] == ffmpeg.ffmpeg_binary() and int(index["ffmpeg"]["version"].split(".")[0]) >= 7
    finally:
        ffmpeg._select_binary.cache_clear()


def _lavfi(path, *args):
    subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-y", *args, str(path)], check=True)
    return path


def test_real_world_containers_are_judged_by_what_they_hold(tmp_path):
    """Variable frame rate (mp4, mkv) is not truncation; WebM's unbracketed SAR is honoured; an 8x8 video
    is a video; an audio-only file says so; a cut mkv is still caught."""
    root = tmp_path / "data" / "train"
    vfr = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2", "-vf", "setpts='if(lt(N,25),N*2,50+(N-25)*10)/25/TB'",
           "-fps_mode", "vfr", "-c:v", "libx264"]  # 50 frames over ~11 s, first fast then slow
    (root / "vfr").mkdir(parents=True)
    for ext in ("mkv", "mp4"):
        _lavfi(root / "vfr" / f"{ext}.{ext}", *vfr)
    cut = root / "vfr" / "cut.mkv"
    cut.write_bytes((root / "vfr" / "mkv.mkv").read_bytes()[:2500])
    (root / "odd").mkdir()
    band = np.zeros((12, 96, 64, 3), np.uint8)
    band[:, :, 24:40] = 255  # a centred band a quarter of the coded width; SAR 2:1 displays it 2x wider
    encode_video(band, root / "odd" / "sar.webm", "vp9", extra=["-aspect", "4:3"])
    assert probe(root / "odd" / "sar.webm").sar == 2.0
    _lavfi(root / "odd" / "tiny.mp4", "-f", "lavfi", "-i", "testsrc=size=8x8:rate=25:duration=1", "-c:v", "libx264")
    _lavfi(root / "odd" / "audio.mp4", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac")
    m = build_manifest("folder", tmp_path / "data")
    index = extract(m, tmp_path / "store", ExtractConfig(frames=8, size=48, max_failures=1.0)).summary
    reasons = {f["id"]: f["reason"] for f in index["failures"]}
    assert set(reasons) == {"vfr/cut", "odd/audio"}, reasons
    assert reasons["odd/audio"] == "not a readable video: it has no video stream (audio only?)"
    got = {vid: (clip, meta) for vid, clip, _, meta in Store.open(tmp_path / "store").samples("train")}
    assert {"vfr/mkv", "vfr/mp4", "odd/tiny", "odd/sar"} == set(got)
    for ext in ("mkv", "mp4"):
        clip, meta = got[f"vfr/{ext}"]
        assert meta["num_frames"] == 50
        assert psnr(clip, reference_clip(root / "vfr" / f"{ext}.{ext}", meta["indices"], 48, 64)) >= 35
    sar_clip, sar_meta = got["odd/sar"]
    assert sar_meta["display_size"] == [128, 96]
    bright = np.flatnonzero(sar_clip[0, 24, :, 0].astype(int) > 128)
    assert 14 <= len(bright) <= 18 and abs(bright.mean() - 31.5) < 2  # stretched 2x, not squashed


def test_ids_differing_only_by_dot_or_underscore_stay_separate_samples(synth_h264, tmp_path):
    import shutil

    from vidpipe.data.loaders import ClipConfig, clip_loader
    from vidpipe.data.sampling import Sampling

    src = next((synth_h264 / "train" / "size_grow").glob("*.mp4"))
    root = tmp_path / "data" / "train"
    for folder, name in (("a.b", "clip.1"), ("a.b", "clip_1"), ("a_b", "clip.1"), ("a_b", "clip_1")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / folder / f"{name}.mp4")
    m = build_manifest("folder", tmp_path / "data")
    extract(m, tmp_path / "store", ExtractConfig(frames=4, size=32))
    store = Store.open(tmp_path / "store")
    assert store.verify() == []
    assert sorted(vid for vid, *_ in store.samples("train")) == ["a.b/clip.1", "a.b/clip_1", "a_b/clip.1", "a_b/clip_1"]
    ids = [i for b in clip_loader(store, "train", ClipConfig(Sampling.tsn(2)), batch_size=4, workers=0) for i in b["ids"]]
    assert sorted(ids) == ["a.b/clip.1", "a.b/clip_1", "a_b/clip.1", "a_b/clip_1"]


def test_a_preparation_killed_before_its_plan_is_redone_and_a_foreign_folder_is_refused(synth_h264, tmp_path):
    m = build_manifest("synthetic", synth_h264)
    m.records = m.records[:4]
    out = tmp_path / "store"
    (out / "_extract").mkdir(parents=True)
    (out / "_extract" / "store.lock").touch()
    (out / "manifest.jsonl").write_text("half of a manifest")  # killed after the manifest, before plan.json
    (out / "train.zarr").mkdir()
    report = extract(m, out, ExtractConfig(frames=4, size=32, format="zarr"))
    assert report.finalized and Store.open(out).verify() == []
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(VidpipeError, match="not a vidpipe store"):
        extract(m, foreign, ExtractConfig(frames=4, size=32))
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]  # nothing added, nothing removed


@pytest.fixture(scope="module")
def jpeg_stores(stores, tmp_path_factory):
    m, _ = stores
    base = tmp_path_factory.mktemp("jpeg_stores")
    for fmt in ("webdataset", "zarr"):  # 4:4:4, the fidelity these thresholds were set for (tests/io/test_jpeg.py covers auto's 4:2:0)
        extract(m, base / fmt, ExtractConfig(format=fmt, shard_size="200KB", workers=2, frame_codec="jpeg", jpeg_subsampling="444", **SMALL))
    return base


def test_jpeg_frames_are_close_to_the_raw_store_and_both_formats_agree(stores, jpeg_stores):
    _, raw_base = stores
    raw = {vid: frames for vid, frames, _, _ in Store.open(raw_base / "zarr").samples("test")}
    index = json.loads((jpeg_stores / "zarr" / "store.json").read_text())
    assert index["clip"]["codec"] == "jpeg" and index["clip"]["jpeg_quality"] == 90
    for fmt in ("webdataset", "zarr"):
        store = Store.open(jpeg_stores / fmt)
        assert store.verify() == []
        decoded = {vid: frames for vid, frames, _, _ in store.samples("test")}
        assert decoded.keys() == raw.keys()
        for vid in raw:
            assert decoded[vid].shape == raw[vid].shape and decoded[vid].dtype == np.uint8
            # the synthetic videos carry per-pixel noise, JPEG's worst case: every video keeps >= 35 dB
            assert psnr(decoded[vid], raw[vid]) >= 35, f"{fmt} {vid}: {psnr(decoded[vid], raw[vid]):.1f} dB"
        pooled = psnr(np.stack([decoded[v] for v in raw]), np.stack(list(raw.values())))
        assert pooled >= 38, f"{fmt}: {pooled:.1f} dB over the split"
    raw_bytes = sum(f["bytes"] for s in json.loads((raw_base / "webdataset" / "store.json").read_text())["splits"].values() for f in s["files"])
    jpeg_bytes = sum(f["bytes"] for s in json.loads((jpeg_stores / "webdataset" / "store.json").read_text())["splits"].values() for f in s["files"])
    assert jpeg_bytes < raw_bytes / 2


def test_jpeg_stores_read_with_stock_readers(jpeg_stores):
    """WebDataset: one <key>.NNNN.jpg member per frame (any JPEG decoder); zarr: (N, T) JPEG bytes."""
    import io
    import warnings

    import webdataset as wds
    import zarr
    from PIL import Image

    index = json.loads((jpeg_stores / "webdataset" / "store.json").read_text())
    shards = [str(jpeg_stores / "webdataset" / f["path"]) for f in index["splits"]["test"]["files"]]
    sample = next(iter(wds.WebDataset(shards, shardshuffle=False).decode("rgb8")))
    frames = sorted(k for k in sample if k.endswith(".jpg"))
    assert frames == [f"{t:04d}.jpg" for t in range(8)] and sample["0000.jpg"].shape == (48, 64, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr-python warns that variable-length bytes have no v3 spec yet
        group = zarr.open_group(jpeg_stores / "zarr" / "test.zarr", mode="r")
        blob = group["frames"][0][3]  # video 0, frame 3
    assert group["frames"].shape == (10, 8)
    assert np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")).shape == (48, 64, 3)


def test_jpeg_loaders_agree_across_formats(jpeg_stores):
    from vidpipe.data.loaders import ClipConfig, WebDatasetClips, ZarrClips
    from vidpipe.data.sampling import Sampling

    cfg = ClipConfig(sampling=Sampling(4, 2, 1), train=True, seed=2)
    a = {it["ids"]: it for it in WebDatasetClips(Store.open(jpeg_stores / "webdataset"), "train", cfg)}
    zc = ZarrClips(Store.open(jpeg_stores / "zarr"), "train", cfg)
    b = {it["ids"]: it for it in (zc[i] for i in range(len(zc)))}
    assert a.keys() == b.keys() and len(a) == 20
    for vid in a:
        assert a[vid]["clips"].shape == (1, 4, 48, 64, 3)
        np.testing.assert_array_equal(a[vid]["clips"], b[vid]["clips"])


def test_a_store_is_not_reextracted_with_another_frame_codec(stores, tmp_path):
    m, base = stores
    with pytest.raises(VidpipeError, match="frame_codec"):
        extract(m, base / "webdataset", ExtractConfig(format="webdataset", shard_size="200KB", workers=2, frame_codec="jpeg", **SMALL))
