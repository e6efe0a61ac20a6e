"""Temporal sampling against indices computed by hand with mmaction2's SampleFrames rules."""

import numpy as np
import pytest

from vidpipe.errors import VidpipeError
from vidpipe.data.sampling import Sampling, frame_indices, view_indices


def test_tsn_1x1x8_test_takes_segment_centres():
    # 32 frames, 8 segments of 4: centres int(4 * i + 2)
    assert frame_indices(32, Sampling.tsn(8), train=False).ravel().tolist() == [2, 6, 10, 14, 18, 22, 26, 30]
    # 20 frames: segment 2.5 wide, centres int(2.5 * i + 1.25)
    assert frame_indices(20, Sampling.tsn(8), train=False).ravel().tolist() == [1, 3, 6, 8, 11, 13, 16, 18]


def test_tsn_1x1x8_train_is_one_uniform_random_frame_per_segment():
    draws = np.stack([frame_indices(32, Sampling.tsn(8), train=True, rng=np.random.default_rng(seed)).ravel() for seed in range(4000)])
    assert ((draws // 4) == np.arange(8)).all()  # always inside its own segment of 4 frames
    offsets = draws % 4  # within the segment: uniform over the 4 frames, independently per segment
    for k in range(4):
        assert abs((offsets == k).mean() - 0.25) < 0.02
    assert abs(np.corrcoef(offsets[:, 0], offsets[:, 1])[0, 1]) < 0.05
    # uneven segments (20 frames, 8 segments): mmaction2 draws an offset in [0, 20 // 8) from each base 2 * i
    draws = np.stack([frame_indices(20, Sampling.tsn(8), train=True, rng=np.random.default_rng(seed)).ravel() for seed in range(500)])
    assert set(np.unique(draws - 2 * np.arange(8))) == {0, 1}


def test_dense_16x4x1():
    s = Sampling.parse("16x4x1")
    # test on 80 frames: max_offset = 80 - 64 = 16, single clip centred at 16 // 2 = 8
    assert frame_indices(80, s, train=False).ravel().tolist() == list(range(8, 72, 4))
    # train on 80 frames: one random start in [0, 17)
    starts = {int(frame_indices(80, s, train=True, rng=np.random.default_rng(k))[0, 0]) for k in range(200)}
    assert starts <= set(range(17)) and len(starts) > 10
    # fewer frames than the clip spans: offset 0, indices loop (out_of_bound_opt='loop')
    assert frame_indices(32, s, train=True, rng=np.random.default_rng(0)).ravel().tolist() == [i % 32 for i in range(0, 64, 4)]


def test_ten_clip_test_spreads_uniformly():
    s = Sampling(16, 4, 10)
    # max_offset 16 over 9 gaps of 16/9, rounded: 0, 1.78, 3.56, 5.33, 7.11, 8.89, 10.67, 12.44, 14.22, 16
    inds = frame_indices(80, s, train=False)
    assert inds[:, 0].tolist() == [0, 2, 4, 5, 7, 9, 11, 12, 14, 16]
    assert inds.shape == (10, 16) and (np.diff(inds, axis=1) == 4).all()
    assert view_indices(80, s, train=False).shape == (10, 16) and s.views(test=True) == 10


def test_loop_when_short_and_tsn_views():
    assert frame_indices(8, Sampling(8, 2, 1), train=False).ravel().tolist() == [0, 2, 4, 6, 0, 2, 4, 6]
    assert view_indices(32, Sampling.tsn(8), train=False).shape == (1, 8)
    with pytest.raises(VidpipeError, match="16x4x1"):
        Sampling.parse("16-4-1")


def test_clips_that_need_more_frames_than_the_store_keeps_are_warned_about():
    from vidpipe.data.build import input_warnings
    from vidpipe.data.inputs import InputSpec

    def spec(sampling, frames=8, mode="uniform"):
        return InputSpec("clips", {"frames": frames, "mode": mode, "height": 32, "width": 42}, None, sampling, sampling, {})

    assert input_warnings(spec("1x1x8")) == [] and input_warnings(spec("4x2x1")) == []  # 8 segments; frames 0, 2, 4, 6
    assert "9 TSN segments" in input_warnings(spec("1x1x9"))[0]
    assert "spanning 9 frames" in input_warnings(spec("5x2x1"))[0]
    assert input_warnings(spec("1x1x9", mode="fps")) == []  # fps stores: each video its own length
