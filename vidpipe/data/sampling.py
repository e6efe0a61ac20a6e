"""Train-time temporal sampling over the T frames a store holds, with mmaction2's conventions.

A `Sampling` is `clip_len x frame_interval x num_clips` (mmaction2's `SampleFrames`):
- TSN "1x1x8" = `Sampling.tsn(8)`: 8 equal segments, one frame each (random offset in training,
  segment centre at test).
- dense "16x4x1" = `Sampling(16, 4, 1)`: one clip of 16 frames 4 apart (random start in training,
  centred at test); at test `num_clips` clips spread uniformly.
Indices past the end loop (`out_of_bound_opt='loop'`). Frame units are the store's frames: a
32-frame store of a 3-second video has ~10 frames per second, so intervals are coarser than on the
raw video; pick T and the interval together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidpipe.errors import VidpipeError


@dataclass(frozen=True)
class Sampling:
    clip_len: int = 1
    frame_interval: int = 1
    num_clips: int = 8

    def __post_init__(self):
        if min(self.clip_len, self.frame_interval, self.num_clips) < 1:
            raise VidpipeError(f"sampling {self.name} needs positive clip_len, frame_interval and num_clips")

    @classmethod
    def tsn(cls, num_segments: int) -> "Sampling":
        return cls(1, 1, num_segments)

    @classmethod
    def parse(cls, text: str) -> "Sampling":
        """'16x4x1' (clip_len x frame_interval x num_clips)."""
        try:
            a, b, c = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise VidpipeError(f"sampling must look like 16x4x1 (clip_len x frame_interval x num_clips); got '{text}'") from None
        return cls(a, b, c)

    @property
    def name(self) -> str:
        return f"{self.clip_len}x{self.frame_interval}x{self.num_clips}"

    @property
    def is_tsn(self) -> bool:
        return self.clip_len == 1

    def frames_per_view(self) -> int:
        """Frames in one network input: TSN stacks its segments; a dense clip is one view per clip."""
        return self.num_clips if self.is_tsn else self.clip_len

    def views(self, test: bool) -> int:
        return 1 if self.is_tsn or not test else self.num_clips


def clip_offsets(num_frames: int, s: Sampling, train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """Start offsets of the num_clips clips (mmaction2 SampleFrames._get_train_clips / _get_test_clips)."""
    ori_clip_len = s.clip_len * s.frame_interval
    if train:
        rng = rng or np.random.default_rng()
        avg_interval = (num_frames - ori_clip_len + 1) // s.num_clips
        if avg_interval > 0:
            return np.arange(s.num_clips) * avg_interval + rng.integers(avg_interval, size=s.num_clips)
        if num_frames > max(s.num_clips, ori_clip_len):
            return np.sort(rng.integers(num_frames - ori_clip_len + 1, size=s.num_clips))
        if avg_interval == 0:
            ratio = (num_frames - ori_clip_len + 1.0) / s.num_clips
            return np.around(np.arange(s.num_clips) * ratio)
        return np.zeros(s.num_clips, dtype=np.int64)
    if s.clip_len == 1:  # 2D (TSN): segment centres
        avg_interval = num_frames / float(s.num_clips)
        return np.arange(s.num_clips) * avg_interval + avg_interval / 2.0
    max_offset = max(num_frames - ori_clip_len, 0)
    if s.num_clips > 1:
        return np.round(np.arange(s.num_clips) * (max_offset / float(s.num_clips - 1)))
    return np.array([max_offset // 2])


def frame_indices(num_frames: int, s: Sampling, train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices (num_clips, clip_len) into the stored frames, looped when out of range."""
    offsets = clip_offsets(num_frames, s, train, rng)
    inds = offsets[:, None] + np.arange(s.clip_len)[None, :] * s.frame_interval
    return np.mod(inds.astype(np.int64), num_frames)


def view_indices(num_frames: int, s: Sampling, train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices (views, frames_per_view): TSN -> (1, num_segments); dense -> (num_clips, clip_len).

    Each dense clip is its own view; at test the model's scores over views are averaged.
    """
    inds = frame_indices(num_frames, s, train, rng)
    return inds.reshape(1, -1) if s.is_tsn else inds
