"""NVIDIA DALI decoding for extraction, with per-file routing to ffmpeg.

DALI decodes the same frame indices the ffmpeg backend would pick (`decode.uniform_indices` over the
probed frame count) and resizes them (antialiased linear) to the same cover geometry; the centre crop
is a slice. On a GPU the mixed backend (NVDEC) handles H.264, HEVC, VP8/9, AV1; without one DALI's CPU
decoder handles only VP8/VP9/MJPEG. Everything else (Xvid/MPEG-4 Part 2 AVI as in HMDB51/UCF101,
H.264 without a GPU, rotated videos, files DALI rejects at run time) goes to ffmpeg, and each such
file is counted with its reason.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from vidpipe.errors import VidpipeError
from vidpipe.io.decode import ClipSpec, uniform_indices
from vidpipe.io.ffmpeg import Geometry, VideoInfo

CPU_CODECS = {"vp8", "vp9", "mjpeg"}
GPU_CODECS = {"h264", "hevc", "vp8", "vp9", "av1", "mjpeg"}
INSTALL_HINT = 'install it with `pip install "vidpipe[dali]"` (nvidia-dali-cuda130)'


@functools.lru_cache(maxsize=1)
def dali_installed() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def gpu_present() -> bool:
    try:
        import torch
    except ImportError:  # extraction itself does not need torch
        return False
    return torch.cuda.is_available()


def require_dali() -> None:
    if not dali_installed():
        raise VidpipeError(f"--backend dali needs NVIDIA DALI, which is not installed; {INSTALL_HINT}")


def route(info: VideoInfo, gpu: bool) -> str | None:
    """None when DALI should decode this file here, else the reason it goes to ffmpeg."""
    codecs = GPU_CODECS if gpu else CPU_CODECS
    if info.codec not in codecs:
        where = "the GPU decoder" if gpu else "DALI's CPU decoder (no GPU here)"
        return f"codec {info.codec} is not supported by {where}"
    if info.rotation:
        return f"rotation metadata ({info.rotation} degrees) is not applied by DALI"
    if info.damage:
        return "damaged stream"
    return None


def rejection_reason(error: Exception) -> str:
    """The informative sentence of a DALI error, whose text ends in C++ positions and boilerplate."""
    text = re.sub(r"\[/[^\]]*\]\s*", "", str(error)).replace("Current pipeline object is no longer valid.", "")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("C++ context")]
    if not lines:
        return type(error).__name__
    sentence = re.split(r"(?<=\.)\s", lines[-1], maxsplit=1)[0]
    return re.sub(r'^Assert on ".*?" failed:\s*', "", sentence)[:200]


class DaliDecoder:
    """A DALI pipeline fed one batch of encoded files at a time (use one per thread)."""

    def __init__(self, spec: ClipSpec, batch_size: int, gpu: bool, num_threads: int = 1):
        require_dali()
        self.spec, self.batch_size, self.gpu, self.num_threads = spec, batch_size, gpu, num_threads
        self._pipe = None

    def _build(self):
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, device_id=0 if self.gpu else None,
                      exec_dynamic=True, prefetch_queue_depth=1)
        def pipeline():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8)
            frames = fn.external_source(name="frames", dtype=types.INT32)
            width = fn.external_source(name="width", dtype=types.FLOAT)
            height = fn.external_source(name="height", dtype=types.FLOAT)
            # pad_mode="none": a frame past what DALI can decode is an error (the file then goes to ffmpeg),
            # never a black frame in the store
            video = fn.decoders.video(encoded, device="mixed" if self.gpu else "cpu", frames=frames, pad_mode="none")
            return fn.resize(video, resize_x=width, resize_y=height, antialias=True, interp_type=types.INTERP_LINEAR)

        pipe = pipeline()
        pipe.build()
        return pipe

    def _run(self, items) -> list[np.ndarray]:
        if self._pipe is None:
            self._pipe = self._build()
        pipe = self._pipe
        pipe.feed_input("encoded", [np.fromfile(path, np.uint8) for path, _, _, _ in items])
        pipe.feed_input("frames", [np.asarray(unique, np.int32) for _, _, unique, _ in items])
        pipe.feed_input("width", [np.array(g.scaled_w, np.float32) for _, _, _, g in items])
        pipe.feed_input("height", [np.array(g.scaled_h, np.float32) for _, _, _, g in items])
        (out,) = pipe.run()
        if self.gpu:
            out = out.as_cpu()
        return [np.array(out[i]) for i in range(len(items))]

    def decode(self, jobs: list[tuple[str, VideoInfo]]) -> list[tuple[np.ndarray, dict] | str]:
        """For each (path, info): (clip, meta) or the reason DALI rejected it (the caller reroutes it)."""
        spec, items = self.spec, []
        for path, info in jobs:
            indices, looped = uniform_indices(info.num_frames, spec.frames)
            items.append((path, info, sorted(set(indices)), Geometry.cover(info.display_size, spec.height, spec.width)))
        try:
            decoded = self._run(items)
        except Exception as e:  # DALI invalidates a pipeline after an error: rebuild, then retry one by one
            self._pipe = None
            if len(items) == 1:
                return [f"DALI rejected it at run time: {rejection_reason(e)}"]
            return [r for job in jobs for r in self.decode([job])]
        results = []
        for (path, info, unique, g), frames in zip(items, decoded):
            if len(frames) != len(unique):
                results.append(f"DALI returned {len(frames)} of {len(unique)} frames")
                continue
            indices, looped = uniform_indices(info.num_frames, spec.frames)
            position = {u: k for k, u in enumerate(unique)}
            frames = frames[:, g.crop_y : g.crop_y + spec.height, g.crop_x : g.crop_x + spec.width]
            clip = np.ascontiguousarray(frames[[position[i] for i in indices]])
            results.append((clip, {
                "fps": info.fps, "num_frames": info.num_frames, "frame_count_source": "packets", "indices": indices,
                "timestamps": [round(i / info.fps, 6) for i in indices] if info.fps else None, "looped": looped,
                "codec": info.codec, "original_size": [info.width, info.height], "display_size": list(info.display_size),
                "sar": info.sar, "rotation": info.rotation, "backend": "dali-gpu" if self.gpu else "dali-cpu",
            }))
        return results
