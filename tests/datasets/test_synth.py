"""The synthetic dataset: real decodable videos whose class pairs differ only in temporal order."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import psnr
from vidpipe.cli.main import cli
from vidpipe.errors import VidpipeError
from vidpipe.datasets.adapters import build_manifest
from vidpipe.io.ffmpeg import probe, read_all_frames
from vidpipe.datasets.synth import CLASSES, PAIRS, SynthConfig, render, video_seed




@pytest.mark.parametrize("codec, ext, codec_name", [("h264", ".mp4", "h264"), ("vp9", ".webm", "vp9"), ("mpeg4", ".avi", "mpeg4")])
def test_synth_decodes_at_stated_size_and_count(tmp_path, codec, ext, codec_name):
    res = CliRunner().invoke(cli, ["synth", str(tmp_path), "--videos-per-class", "2", "--codec", codec,
                                   "--size", "96x64", "--frames", "20", "--seed", "3"])
    assert res.exit_code == 0, res.output
    files = sorted(tmp_path.rglob(f"*{ext}"))
    assert len(files) == 2 * len(CLASSES)
    info = probe(files[0])
    assert (info.codec, info.width, info.height, info.num_frames) == (codec_name, 96, 64, 20)
    frames = read_all_frames(files[0])  # an independent full decode
    assert frames.shape == (20, 64, 96, 3)
    summary = json.loads((tmp_path / "synth.json").read_text())
    assert summary["train_per_class"] == 1 and summary["test_per_class"] == 1


def test_synth_layout_reads_as_synthetic_dataset(synth_h264):
    m = build_manifest("synthetic", synth_h264)
    assert m.classes == sorted(CLASSES)
    assert {s: sum(c.values()) for s, c in m.counts().items()} == {"train": 20, "test": 10}


def test_pair_members_are_time_reversals_of_each_other():
    cfg = SynthConfig(frames=16, width=64, height=48)
    for ci in range(0, len(CLASSES), 2):
        fwd = render(CLASSES[ci], np.random.default_rng(video_seed(0, ci, 5)), cfg)
        rev = render(CLASSES[ci + 1], np.random.default_rng(video_seed(0, ci + 1, 5)), cfg)
        np.testing.assert_array_equal(rev, fwd[::-1])
        assert not np.array_equal(fwd, fwd[::-1]), f"{CLASSES[ci]} is symmetric in time: order carries no signal"
        # order-blind statistics cannot separate the pair: identical frame multisets
        np.testing.assert_array_equal(fwd.mean(0), rev.mean(0))


def test_rendering_is_deterministic_for_a_seed():
    cfg = SynthConfig(frames=8, width=64, height=48)
    a = render("count_rising", np.random.default_rng([7, 4, 1]), cfg)
    b = render("count_rising", np.random.default_rng([7, 4, 1]), cfg)
    c = render("count_rising", np.random.default_rng([8, 4, 1]), cfg)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_encoded_partner_videos_decode_as_reversals(synth_h264):
    """On the files written to disk: video k of a class ~= video k of its partner, reversed."""
    for pair, fwd, rev in PAIRS:
        a = read_all_frames(next((synth_h264 / "train" / f"{pair}_{fwd}").glob("*_0000.mp4")))
        b = read_all_frames(next((synth_h264 / "train" / f"{pair}_{rev}").glob("*_0000.mp4")))
        assert psnr(a, b[::-1]) > 30, pair
        assert psnr(a, b[::-1]) > psnr(a, b) + 3, pair


def _bright_centroid_x(frame):
    lum = frame.astype(np.float32).mean(-1)
    mask = lum > lum.mean() + 40
    return np.nonzero(mask)[1].mean()


def test_classes_mean_what_they_say(synth_h264):
    """Independent of the renderer: measure the decoded pixels."""
    move = read_all_frames(next((synth_h264 / "train" / "move_left_to_right").glob("*.mp4")))
    assert _bright_centroid_x(move[-1]) > _bright_centroid_x(move[0]) + 10
    light = read_all_frames(next((synth_h264 / "train" / "light_darken").glob("*.mp4")))
    assert light[-1].mean() < light[0].mean() - 20
    grow = read_all_frames(next((synth_h264 / "train" / "size_grow").glob("*.mp4")))
    lum = grow.astype(np.float32).mean(-1)
    area = [(f > 140).sum() for f in lum]
    assert area[-1] > 2 * area[0]
    colour = read_all_frames(next((synth_h264 / "train" / "colour_red_to_blue").glob("*.mp4"))).astype(int)
    assert (colour[0, ..., 0] - colour[0, ..., 2]).max() > 100 and (colour[-1, ..., 2] - colour[-1, ..., 0]).max() > 100


def test_bad_synth_settings():
    with pytest.raises(VidpipeError, match="even"):
        SynthConfig(width=127)
    with pytest.raises(VidpipeError, match="codec"):
        SynthConfig(codec="prores")
    res = CliRunner().invoke(cli, ["synth", "/tmp/x", "--size", "big"])
    assert res.exit_code != 0 and "WxH" in res.output


def test_default_synth_and_extract_store_pairs_as_exact_reversals(tmp_path):
    """With the default synth length and the card's stored frame count, the stored clip of a reversed
    video is the forward partner's stored clip played backwards: same source frames, mirrored order
    (32 source frames stored as 16 once kept frames 1, 3, ..., 31 of one member and 0, 2, ..., 30 of the other)."""
    from vidpipe.datasets import cards
    from vidpipe.stores.extract import ExtractConfig, extract
    from vidpipe.stores.clips import Store
    from vidpipe.datasets.synth import reversal_safe, synth

    defaults = cards.load_card("synthetic")["extract"]
    cfg = SynthConfig(videos_per_class=2, width=64, height=48)
    assert reversal_safe(cfg.frames, defaults["frames"]) and not reversal_safe(32, 16)
    synth(tmp_path / "data", cfg)
    extract(build_manifest("synthetic", tmp_path / "data"), tmp_path / "store", ExtractConfig(frames=defaults["frames"], size=48))
    stored = {vid: (clip, meta) for vid, clip, _, meta in Store.open(tmp_path / "store").samples("train")}
    checked = 0
    for pair, fwd, rev in PAIRS:
        a_clip, a_meta = stored[f"{pair}_{fwd}/{pair}_{fwd}_0000"]
        b_clip, b_meta = stored[f"{pair}_{rev}/{pair}_{rev}_0000"]
        n = a_meta["num_frames"]
        assert [n - 1 - i for i in b_meta["indices"]] == a_meta["indices"][::-1]  # the same source frames, reversed
        assert psnr(b_clip[::-1], a_clip) >= 35, pair  # and the pixels agree up to encoding noise
        checked += 1
    assert checked == len(PAIRS)
