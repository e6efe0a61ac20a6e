"""Decode one video into the store's fixed (T, H, W, 3) uint8 clip, with the metadata to reproduce it.

Sampling: T indices spread uniformly over the whole video, one at the centre of each of T equal
segments (TSN's test-time convention); a video with fewer than T frames loops (index mod n).
Geometry: resize to cover H x W keeping the display aspect (pixel aspect and rotation applied),
then centre-crop. Mean/std normalisation is not applied: stores hold plain RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidpipe.io.ffmpeg import (TRUNCATION_SLACK, DecodeError, Geometry, VideoInfo, count_decodable_frames, decode_frames,
                                     looks_short, probe)



@dataclass(frozen=True)
class ClipSpec:
    frames: int
    height: int
    width: int

    @property
    def nbytes(self) -> int:
        return self.frames * self.height * self.width * 3


def uniform_indices(num_frames: int, t: int) -> tuple[list[int], bool]:
    """(T source indices, looped). Centre of each of T equal segments; loops when num_frames < T."""
    if num_frames <= 0:
        raise ValueError("a video needs at least one frame")
    if num_frames < t:
        return [i % num_frames for i in range(t)], True
    return [int((i + 0.5) * num_frames / t) for i in range(t)], False


def check_usable(info: VideoInfo) -> None:
    """Raise DecodeError (the reason recorded in failures.jsonl) for a probed video no backend may store:
    no frames, a demuxer complaint, or fewer packets than the header's duration implies (truncated)."""
    if info.num_frames == 0:
        raise DecodeError("no video frames")
    if info.damage:
        raise DecodeError(f"corrupt or truncated: {info.damage}")
    if looks_short(info) and (info.packets_end is None or info.packets_end < TRUNCATION_SLACK * info.duration):
        # fewer packets than duration x nominal fps is normal for variable frame rate; truncation is when they end early
        ends = f"packets end at {info.packets_end:.2f}s" if info.packets_end is not None else f"only {info.num_frames} frames present"
        raise DecodeError(f"truncated: the header says {info.duration:.2f}s, {ends}")


def decode_clip_ffmpeg(path, spec: ClipSpec, threads: int = 1, info: VideoInfo | None = None) -> tuple[np.ndarray, dict]:
    """Decode one video with ffmpeg (`info` from an earlier probe saves a process).

    Raises DecodeError with the reason when the video cannot be used.
    """
    info = info or probe(path)
    check_usable(info)
    num_frames = info.num_frames
    geometry = Geometry.cover(info.display_size, spec.height, spec.width)
    indices, looped = uniform_indices(num_frames, spec.frames)
    unique = sorted(set(indices))
    frames = decode_frames(path, unique, geometry, threads)
    count_source = "packets"
    if len(frames) < len(unique):
        # The container counted more frames than decode; trust the decoder unless it reported damage.
        decodable, damaged = count_decodable_frames(path, threads)
        if damaged or decodable == 0:
            raise DecodeError(f"corrupt: container lists {num_frames} frames, {decodable} decode")
        num_frames, count_source = decodable, "decode"
        indices, looped = uniform_indices(num_frames, spec.frames)
        unique = sorted(set(indices))
        frames = decode_frames(path, unique, geometry, threads)
        if len(frames) < len(unique):
            raise DecodeError(f"decoded {len(frames)} of {len(unique)} requested frames")
    position = {u: k for k, u in enumerate(unique)}
    take = [position[i] for i in indices]
    clip = frames if take == list(range(len(frames))) else frames[take]  # copy only when frames repeat
    meta = {
        "fps": info.fps,
        "num_frames": num_frames,
        "frame_count_source": count_source,
        "indices": indices,
        "timestamps": [round(i / info.fps, 6) for i in indices] if info.fps else None,  # nominal: index / fps
        "looped": looped,
        "codec": info.codec,
        "original_size": [info.width, info.height],
        "display_size": list(info.display_size),
        "sar": info.sar,
        "rotation": info.rotation,
        "backend": "ffmpeg",
    }
    return clip, meta
