"""Where `vidpipe predict` gets its videos and frames.

- `list_videos(inputs)`: the video files named by paths, folders (searched recursively for the
  extensions extraction accepts) and `-` (one path per line on stdin).
- `FrameReader`: every frame of a file, a pipe or an ffmpeg-readable stream, in order and one at a time,
  resized and cropped to the store's frame size by one ffmpeg process: memory is one frame whatever the
  length. For a probed file the geometry is the store's own (`Geometry.cover`, display aspect applied),
  so each frame has the pixels extraction gives it; a stream that cannot be probed first gets the same
  cover-then-crop rule written as an ffmpeg scale expression (rounding may differ by a pixel).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from vidpipe.datasets.adapters import VIDEO_EXTENSIONS
from vidpipe.errors import VidpipeError
from vidpipe.io.ffmpeg import DecodeError, Geometry, ffmpeg_binary, first_error_line, video_map


def list_videos(inputs: list[str], stdin=None, allow_outside_root: bool = False) -> list[Path]:
    """Video files in the order given; folders expand to their videos, sorted. Raises on an input that
    does not exist or a folder without videos. A folder is a root, as a manifest's is: a link in it that
    leads outside it is refused unless `allow_outside_root` (files named one by one are the user's choice)."""
    paths: list[Path] = []
    for item in inputs:
        if item == "-":
            paths += [Path(line.strip()) for line in (stdin or sys.stdin) if line.strip()]
            continue
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_EXTENSIONS and q.is_file())
            if not found:
                raise VidpipeError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) in {p}; pass video files or a folder that holds some")
            outside = [q for q in found if not q.resolve().is_relative_to(p.resolve())]
            if outside and not allow_outside_root:
                raise VidpipeError(f"{outside[0]} in {p} is a link that leads outside it ({len(outside)} such); pass --allow-outside-root "
                                   "if that is meant, or name those files one by one")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise VidpipeError(f"{p} not found; pass video files, folders or - (paths on stdin)")
    if not paths:
        raise VidpipeError("no videos to predict: pass video files, folders or - (paths on stdin)")
    return paths


def parse_raw(text: str) -> tuple[int, int, float]:
    """'640x480@25' -> (width, height, fps) of raw rgb24 frames on stdin."""
    try:
        size, fps = text.lower().split("@")
        w, h = (int(v) for v in size.split("x"))
        rate = float(fps)
        if not (w > 0 and h > 0 and 0 < rate < float("inf")):
            raise ValueError
    except ValueError:
        raise VidpipeError(f"--raw must look like WIDTHxHEIGHT@FPS (640x480@25); got '{text}'") from None
    return w, h, rate


def cover_filter(height: int, width: int) -> str:
    """Geometry.cover as an ffmpeg filter, for inputs whose size is known only to ffmpeg (pipes, streams):
    scale to cover width x height keeping the display aspect (sar applied), then centre-crop."""
    s = f"max({height}/ih\\,{width}/(iw*sar))"
    return (f"scale=w='max({width}\\,round(iw*sar*{s}))':h='max({height}\\,round(ih*{s}))':flags=area,setsar=1,"
            f"crop={width}:{height}")


class FrameReader:
    """Iterate (index, frame uint8 (H, W, 3)) over a video's frames through one ffmpeg process.

    source: a file path, a URL ffmpeg reads, or "-" (a video stream on stdin; with `raw`=(w, h, fps),
    raw rgb24 frames). rate: resample to this many frames per second (ffmpeg's fps filter) or None for
    every decoded frame. geometry: the store's resize and crop for a probed file; else `cover_filter`.
    stream: the probed file's moving video stream (else ffmpeg's first that is not a picture).
    """

    def __init__(self, source: str | Path, height: int, width: int, rate: float | None = None,
                 geometry: Geometry | None = None, raw: tuple[int, int, float] | None = None, stream: int | None = None):
        self.source, self.height, self.width, self.raw = str(source), height, width, raw
        if raw:
            inputs = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", f"{raw[0]}x{raw[1]}", "-framerate", f"{raw[2]:g}", "-i", "pipe:0"]
        else:
            inputs = ["-i", "pipe:0" if self.source == "-" else self.source]
        filters = ([f"fps={rate:g}"] if rate else []) + [geometry.filters() if geometry else cover_filter(height, width)]
        self.cmd = [ffmpeg_binary(), "-hide_banner", "-v", "error", *inputs, "-map", video_map(stream), "-filter_threads", "1",
                    "-vf", ",".join(filters), *([] if rate else ["-fps_mode", "passthrough"]),
                    "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        stdin, pump, copied = subprocess.DEVNULL, None, [0]
        if self.source == "-":
            try:
                if self.raw:  # raw frames are copied over and counted: a partial frame must not vanish silently
                    raise ValueError
                stdin = sys.stdin.buffer.fileno()  # ffmpeg reads our stdin directly
            except (AttributeError, OSError, ValueError):  # stdin is not a file (a test harness): copy it over
                stdin, pump = subprocess.PIPE, sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
        with tempfile.TemporaryFile() as errfile:
            proc = subprocess.Popen(self.cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=errfile, bufsize=0)
            copier = None
            if pump is not None:
                copier = threading.Thread(target=_copy, args=(pump, proc.stdin, copied), daemon=True)
                copier.start()
            size, k = self.height * self.width * 3, 0
            try:
                while True:
                    frame = np.empty((self.height, self.width, 3), np.uint8)
                    view, got = memoryview(frame).cast("B"), 0
                    while got < size:
                        n = proc.stdout.readinto(view[got:])
                        if not n:
                            break
                        got += n
                    if got < size:
                        break
                    yield k, frame
                    k += 1
                proc.wait()
                if copier is not None:
                    copier.join()
                self._check_raw_bytes(copied[0])
            finally:
                if proc.poll() is None:  # the consumer stopped early
                    proc.kill()
                    proc.wait()
            if proc.returncode != 0 and k == 0:
                errfile.seek(0)
                raise DecodeError(f"decode failed: {first_error_line(errfile.read().decode(errors='replace'))}")
            if k == 0:
                raise DecodeError("no video frames")


    def _check_raw_bytes(self, total: int) -> None:
        if not self.raw:
            return
        w, h, _ = self.raw
        if total % (w * h * 3):
            raise VidpipeError(f"raw input on stdin: {total} bytes is not a whole number of {w}x{h} rgb24 frames ({w * h * 3} bytes "
                               f"each; {total % (w * h * 3)} left over); check --raw WIDTHxHEIGHT against the frames sent")


def _copy(src, dst, copied: list) -> None:
    try:
        while chunk := src.read(1 << 16):
            copied[0] += len(chunk)
            dst.write(chunk)
    except (BrokenPipeError, ValueError):
        pass
    finally:
        try:
            dst.close()
        except BrokenPipeError:
            pass
