"""fps-mode stores: every video resampled to a constant rate, ragged in T, checked against an independent
full ffmpeg decode, in both formats and both frame codecs."""

import json
import math
import warnings

import numpy as np
import pytest

from tests.conftest import psnr
from tests.stores.test_extract import reference_clip, stores  # noqa: F401  (the uniform stores fixture)
from vidpipe.data.loaders import ClipConfig, WebDatasetClips, ZarrClips
from vidpipe.data.sampling import Sampling
from vidpipe.datasets.adapters import build_manifest
from vidpipe.errors import VidpipeError
from vidpipe.io.ffmpeg import encode_video
from vidpipe.stores.clips import Store
from vidpipe.stores.extract import ExtractConfig, extract

F = 15.0
# (frames, source fps) per video: 0.96 s, 1.5 s, 2.5 s (longer than MAX_SECONDS: a centred window)
VIDEOS = [(24, 25.0), (45, 30.0), (60, 24.0)]
MAX_SECONDS = 2.0


def moving_frames(n, seed, h=96, w=128):
    """A smooth coloured background with a bright blob moving right: every frame differs, and no hard
    edge makes two resize filters disagree."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = rng.random(3) * 2 * np.pi
    base = np.stack([80 + 60 * np.sin(x / 17 + y / 23 + p) for p in phase], -1)
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        cx = 16 + (t * 3) % (w - 32)
        blob = 110 * np.exp(-((x - cx) ** 2 + (y - h / 2) ** 2) / 60)
        frames[t] = np.clip(base + blob[..., None], 0, 255).astype(np.uint8)
    return frames


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("fps_source")
    for split in ("train", "test"):
        for c, cls in enumerate(("left", "right")):
            (root / split / cls).mkdir(parents=True)
            for k, (n, fps) in enumerate(VIDEOS):
                encode_video(moving_frames(n, seed=100 * c + 10 * k + (split == "test")), root / split / cls / f"{cls}_{split}_{k}.mp4", fps=fps)
    return root


@pytest.fixture(scope="module")
def fps_stores(source, tmp_path_factory):
    m = build_manifest("folder", source)
    base = tmp_path_factory.mktemp("fps_stores")
    for fmt in ("webdataset", "zarr"):
        for codec in ("raw", "jpeg"):
            extract(m, base / f"{fmt}-{codec}", ExtractConfig(format=fmt, size=48, fps=F, max_seconds=MAX_SECONDS, frame_codec=codec, workers=2))
    return m, base


def test_stored_frame_k_is_the_source_frame_on_screen_at_its_time(fps_stores):
    m, base = fps_stores
    store = Store.open(base / "zarr-raw")
    assert store.mode == "fps" and store.index["clip"]["fps"] == F and store.clip_shape[0] == math.ceil(MAX_SECONDS * F)
    by_name = {r.id: r for r in m.records}
    seen = set()
    for vid, frames, _, meta in store.samples("train"):
        n, fps = VIDEOS[int(vid[-1])]
        duration = n / fps
        window = min(duration, MAX_SECONDS)
        start = (duration - window) / 2
        expected_t = math.floor(window * F + 1e-6)
        times = np.array(meta["times"])
        assert len(frames) == expected_t == len(times) and meta["windowed"] == (duration > MAX_SECONDS)
        np.testing.assert_allclose(np.diff(times), 1 / F, atol=1e-5)  # monotonic, 1/F apart
        assert times[0] == pytest.approx(start, abs=1e-5)
        # the frame on screen at time t: the last source frame whose time index / fps is not after t
        indices = [min(n - 1, math.floor((start + k / F) * fps + 1e-6)) for k in range(expected_t)]
        assert meta["indices"] == indices
        reference = reference_clip(m.abspath(by_name[vid]), indices, 48, 64)
        assert psnr(frames, reference) >= 35, vid
        seen.add(len(frames))
    assert seen == {14, 22, 30}  # ragged: each video its own T


def test_dense_clips_are_consecutive_stored_frames_spanning_real_time(fps_stores):
    _, base = fps_stores
    store = Store.open(base / "zarr-raw")
    stored = {vid: (frames, meta) for vid, frames, _, meta in store.samples("test")}
    ds = ZarrClips(store, "test", ClipConfig(sampling=Sampling(16, 1, 1), train=False))
    for i in range(len(ds)):
        item = ds[i]
        frames, meta = stored[item["ids"]]
        if len(frames) < 16:
            continue  # a short video loops, as mmaction2's SampleFrames does
        start = (len(frames) - 16) // 2  # the centred test clip
        np.testing.assert_array_equal(item["clips"][0], frames[start : start + 16])
        assert meta["times"][start + 15] - meta["times"][start] == pytest.approx(15 / F)  # 16 frames = 1 s of video


def test_ragged_stores_agree_across_formats_and_codecs(fps_stores):
    _, base = fps_stores
    cfg = ClipConfig(sampling=Sampling(8, 2, 1), train=True, seed=4)
    for codec in ("raw", "jpeg"):
        a = {it["ids"]: it["clips"] for it in WebDatasetClips(Store.open(base / f"webdataset-{codec}"), "train", cfg)}
        zc = ZarrClips(Store.open(base / f"zarr-{codec}"), "train", cfg)
        b = {it["ids"]: it["clips"] for it in (zc[i] for i in range(len(zc)))}
        assert a.keys() == b.keys() and len(a) == 6
        for vid in a:
            np.testing.assert_array_equal(a[vid], b[vid])
    for fmt in ("webdataset", "zarr"):
        raw = {vid: f for vid, f, _, _ in Store.open(base / f"{fmt}-raw").samples("test")}
        for vid, frames, _, _ in Store.open(base / f"{fmt}-jpeg").samples("test"):
            assert frames.shape == raw[vid].shape and psnr(frames, raw[vid]) >= 35


def test_stock_readers_read_ragged_stores(fps_stores):
    import webdataset as wds
    import zarr

    _, base = fps_stores
    index = json.loads((base / "webdataset-raw" / "store.json").read_text())
    shards = [str(base / "webdataset-raw" / f["path"]) for f in index["splits"]["train"]["files"]]
    lengths = sorted(s["frames.npy"].shape[0] for s in wds.WebDataset(shards, shardshuffle=False).decode())
    assert lengths == [14, 14, 22, 22, 30, 30]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(base / "zarr-raw" / "train.zarr", mode="r")
    assert sorted(group["lengths"][:]) == [14, 14, 22, 22, 30, 30] and group["frames"].shape[1] == 30
    i = int(np.argmin(group["lengths"][:]))
    assert (group["frames"][i][14:] == 0).all() and group["sample_indices"][i][14:].tolist() == [-1] * 16  # padding after T


def test_fps_mode_refuses_contradictions(source, tmp_path):
    with pytest.raises(VidpipeError, match="--max-seconds applies to --fps"):
        ExtractConfig(max_seconds=5)
    with pytest.raises(VidpipeError, match="use --backend pyav, ffmpeg or auto"):
        ExtractConfig(fps=15, backend="dali")
    assert ExtractConfig(fps=15).max_seconds == 10.0


def test_feature_caching_refuses_an_fps_store_in_one_line(fps_stores, tmp_path):
    from vidpipe.stores.features import FeatureConfig, cache_features

    _, base = fps_stores
    with pytest.raises(VidpipeError, match="is an fps store"):
        cache_features(base / "zarr-raw", tmp_path / "f", FeatureConfig(backbone="resnet18", weights="random"))
    assert not (tmp_path / "f").exists()


def test_a_protocol_in_real_time_takes_only_a_store_at_that_rate(fps_stores, stores, tmp_path):
    """R(2+1)D's KINETICS400_V1 record: 16 consecutive frames at 15 fps. The data pipeline builds those
    clips from a 15 fps store and refuses, in one line, a uniform store or another rate."""
    from vidpipe.data.build import build_data
    from vidpipe.train.config import load_config

    m, base = fps_stores

    def data(path):
        cfg = load_config(None, ["init=KINETICS400_V1", "data.workers=0", "data.val_fraction=0", "data.crop_size=32"],
                          base={"model": "r2plus1d_18", "data": {"path": str(path)}})
        return build_data(cfg)

    built = data(base / "zarr-raw")
    assert built.inputs.train == "16x1x1" and list(built.inputs.augment["mean"]) == [0.43216, 0.394666, 0.37645]
    batch = next(iter(built.train))
    assert batch["clips"].shape[1:3] == (1, 16)
    _, uniform = stores
    with pytest.raises(VidpipeError, match="a uniform store.*--fps 15"):
        data(uniform / "zarr")
    extract(m, tmp_path / "ten", ExtractConfig(format="zarr", size=48, fps=10, max_seconds=MAX_SECONDS, workers=2))
    with pytest.raises(VidpipeError, match="a 10 fps store.*--fps 15"):
        data(tmp_path / "ten")


def test_many_frames_are_decoded_without_a_long_select_expression(source):
    """fps mode keeps most frames: above MAX_SELECT_TERMS indices the decoder scales every frame and picks,
    with the same frames as the select-filter path (ffmpeg fails on select expressions of ~150 terms)."""
    from vidpipe.io import ffmpeg

    path = next(source.glob("train/left/*_2.mp4"))  # 60 frames
    g = ffmpeg.Geometry.cover((128, 96), 48, 64)
    many = list(range(0, 60, 1))[:55]
    assert len(many) > ffmpeg.MAX_SELECT_TERMS
    picked = ffmpeg.decode_frames(path, many, g)
    halves = np.concatenate([ffmpeg.decode_frames(path, many[:28], g), ffmpeg.decode_frames(path, many[28:], g)])
    np.testing.assert_array_equal(picked, halves)
    long = list(range(0, 60, 1)) + list(range(60, 400))  # more than the video has: only the frames it holds come back
    assert len(ffmpeg.decode_frames(path, long, g)) == 60


def test_a_contact_sheet_of_an_fps_store_spans_each_videos_own_frames(fps_stores, tmp_path):
    import matplotlib.image

    _, base = fps_stores
    for store in ("webdataset-jpeg", "zarr-raw"):  # videos of 14, 22 and 30 frames in rows 30 long
        sheet = Store.open(base / store).contact_sheet(tmp_path / f"{store}.png", "train", per_class=3, frames=8)
        assert matplotlib.image.imread(sheet).shape[0] > 0


def test_an_interval_in_source_frames_becomes_the_stores_equivalent(fps_stores, stores, tmp_path):
    """SqueezeTime's protocol: 16 frames 4 apart in each video's own frames. On a 15 fps store of videos at
    24-30 fps that is 2 stored frames; on a uniform store of T frames per 24-frame video, 4 T / 24; the
    figures come from the source videos' counts (VIDEOS, the synthetic set's 24 frames), not the store."""
    from vidpipe.data.build import build_data, stored_interval
    from vidpipe.models import model_entry
    from vidpipe.train.config import load_config

    def data(path, *extra):
        cfg = load_config(None, ["data.workers=0", "data.val_fraction=0", "data.crop_size=32", *extra],
                          base={"model": "squeezetime", "data": {"path": str(path)}})
        return build_data(cfg)

    m, base = fps_stores
    rate = sum(n for n, _ in VIDEOS) / sum(n / fps for n, fps in VIDEOS)  # the train split's source frames per second
    built = data(base / "zarr-raw")
    assert built.inputs.train == f"16x{round(4 * F / rate)}x1" == "16x2x1"
    assert next(iter(built.train))["clips"].shape[1:3] == (1, 16)
    extract(m, tmp_path / "thirty", ExtractConfig(format="zarr", size=48, fps=30, max_seconds=MAX_SECONDS, workers=2))
    assert data(tmp_path / "thirty").inputs.train == f"16x{round(4 * 30 / rate)}x1" == "16x5x1"
    _, uniform = stores
    frames = json.loads((uniform / "zarr" / "store.json").read_text())["clip"]["frames"]
    assert data(uniform / "zarr").inputs.train == f"16x{max(1, round(4 * frames / 24))}x1"
    assert data(uniform / "zarr", "data.frame_interval=3").inputs.train == "16x3x1"  # the user's interval is in stored frames
    # a store made before the counts were recorded: one line naming both ways out
    index = json.loads((base / "zarr-raw" / "store.json").read_text())
    del index["splits"]["train"]["source_frames"]
    with pytest.raises(VidpipeError, match="re-extract it, or set data.frame_interval"):
        stored_interval(model_entry("squeezetime").transforms, index, "train")
