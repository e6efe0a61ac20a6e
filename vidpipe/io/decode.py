"""Decode one video into the store's (T, H, W, 3) uint8 clip, with the metadata to reproduce it.

Sampling, uniform mode: T indices spread uniformly over the whole video, one at the centre of each of
T equal segments (TSN's test-time convention); a video with fewer than T frames loops (index mod n).
fps mode: the video resampled to a constant F frames per second, T = its duration x F (at most a
centred window of max_seconds): stored frame k is the source frame on screen at window start + k / F.
Geometry: resize to cover H x W keeping the display aspect (pixel aspect and rotation applied),
then centre-crop. Mean/std normalisation is not applied: stores hold plain RGB.
A video may also be a folder of numbered images at a stated rate (`io.frames`): it is sampled and
resized the same way, each chosen image decoded by FFmpeg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vidpipe.io import ffmpeg, frames as frame_folders, pyav
from vidpipe.io.ffmpeg import TRUNCATION_SLACK, DecodeError, Geometry, VideoInfo, count_decodable_frames, looks_short, probe


@dataclass(frozen=True)
class ClipSpec:
    frames: int  # T (uniform mode); the most frames a video may have (fps mode)
    height: int
    width: int
    fps: float | None = None  # None: uniform mode
    max_seconds: float | None = None  # fps mode: longer videos keep a centred window this long

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


def fps_indices(num_frames: int, source_fps: float, fps: float, max_seconds: float | None) -> tuple[list[int], list[float], float]:
    """(source index of each stored frame, its time in the source (s), window start (s)) for a video
    resampled to `fps`: stored frame k is the source frame on screen at start + k / fps (the latest one
    whose nominal time index / source_fps is not after it), over a centred window of at most max_seconds."""
    if num_frames <= 0 or source_fps <= 0:
        raise ValueError("a video needs at least one frame and a frame rate")
    duration = num_frames / source_fps
    window = duration if max_seconds is None else min(duration, max_seconds)
    start = (duration - window) / 2
    count = max(1, math.floor(window * fps + 1e-6))
    times = [start + k / fps for k in range(count)]
    indices = [min(num_frames - 1, math.floor(t * source_fps + 1e-6)) for t in times]
    return indices, times, start


def check_usable(info: VideoInfo, allow_stills: bool = False) -> None:
    """Raise DecodeError (the reason recorded in failures.jsonl) for a probed video no backend may store:
    no frames, a still picture (unless allowed), a demuxer complaint, or fewer packets than the header's
    duration implies (truncated)."""
    if info.num_frames == 0:
        raise DecodeError("no video frames")
    if info.still:
        if not allow_stills:
            raise DecodeError(f"{info.still} (pass --allow-stills to store it as one repeated frame)")
        return  # a picture has no duration to be truncated against
    if info.damage:
        raise DecodeError(f"corrupt or truncated: {info.damage}")
    if looks_short(info) and (info.packets_end is None or info.packets_end < TRUNCATION_SLACK * info.duration):
        # fewer packets than duration x nominal fps is normal for variable frame rate; truncation is when they end early
        ends = f"packets end at {info.packets_end:.2f}s" if info.packets_end is not None else f"only {info.num_frames} frames present"
        raise DecodeError(f"truncated: the header says {info.duration:.2f}s, {ends}")


def decode_clip(path, spec: ClipSpec, threads: int = 1, info: VideoInfo | None = None, decoder: str = "ffmpeg",
                allow_stills: bool = False) -> tuple[np.ndarray, dict]:
    """Decode one video with FFmpeg, in-process (decoder="pyav") or as a subprocess ("ffmpeg"); `info`
    from an earlier probe saves a process. meta["backend"] says which decoded it: a video PyAV cannot
    take (a display rotation, or an error PyAV raises) goes to the subprocess, the reason in meta["rerouted"].

    Raises DecodeError with the reason when the video cannot be used.
    """
    if frame_folders.is_frame_folder(path):
        if info is None:
            raise ValueError("a frame folder is probed with its frame rate first: io.frames.probe(path, fps)")
        check_usable(info, allow_stills)
        return _decode_clip(path, spec, threads, info, frame_folders.decode_frames, "frames")
    info = info or probe(path)
    check_usable(info, allow_stills)
    if decoder == "pyav":
        if info.rotation:
            clip, meta = decode_clip(path, spec, threads, info, "ffmpeg", allow_stills)
            return clip, {**meta, "rerouted": "display rotation: ffmpeg applies it"}
        try:
            return _decode_clip(path, spec, threads, info, pyav.decode_frames, "pyav")
        except DecodeError as e:
            clip, meta = decode_clip(path, spec, threads, info, "ffmpeg", allow_stills)
            return clip, {**meta, "rerouted": str(e)[:200]}
    return _decode_clip(path, spec, threads, info, ffmpeg.decode_frames, "ffmpeg")


def _decode_clip(path, spec: ClipSpec, threads: int, info: VideoInfo, decode_frames, backend: str) -> tuple[np.ndarray, dict]:
    num_frames = info.num_frames
    geometry = Geometry.cover(info.display_size, spec.height, spec.width)
    if spec.fps is not None and not info.fps:
        raise DecodeError("no frame rate in the container: cannot resample it to --fps")

    def plan(n: int) -> tuple[list[int], bool, dict]:
        """(source indices, looped, what fps mode records) for a video of n frames."""
        if not spec.fps:
            return (*uniform_indices(n, spec.frames), {})
        indices, times, start = fps_indices(n, info.fps, spec.fps, spec.max_seconds)
        return indices, False, {"store_fps": spec.fps, "window_start": round(start, 6), "times": [round(t, 6) for t in times],
                                "windowed": n / info.fps > (spec.max_seconds or math.inf)}

    indices, looped, timing = plan(num_frames)
    unique = sorted(set(indices))
    frames = decode_frames(path, unique, geometry, threads, info.stream)
    count_source = "packets"
    if len(frames) < len(unique):
        # The container counted more frames than decode; trust the decoder unless it reported damage.
        decodable, damaged = count_decodable_frames(path, threads, info.stream)
        if damaged or decodable == 0:
            raise DecodeError(f"corrupt: container lists {num_frames} frames, {decodable} decode")
        num_frames, count_source = decodable, "decode"
        indices, looped, timing = plan(num_frames)
        unique = sorted(set(indices))
        frames = decode_frames(path, unique, geometry, threads, info.stream)
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
        "backend": backend,
        **timing,
    }
    return clip, meta
