"""ffmpeg as a subprocess: locate the binary, probe a file, decode chosen frames, encode frames.

The binary is the one on PATH when it is FFmpeg 7.0 or newer (the log formats parsed here), else the
one bundled in the imageio-ffmpeg wheel, so `pip install` alone is enough. ffprobe is not bundled, so probing parses `ffmpeg -i` with a stream copy (a demux,
no decode) that also counts the video packets.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vidpipe.errors import VidpipeError


# The log lines parsed here ("[in#0/fmt @ ...]" demuxer prefixes, "N frames decoded; M decode errors"
# summaries, -fps_mode) are those of FFmpeg 7.0 and later.
MIN_VERSION = (7, 0)


def _version_of(binary: str) -> tuple[int, int] | None:
    try:
        first = subprocess.run([binary, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"ffmpeg version n?(\d+)\.(\d+)", first)
    return (int(m.group(1)), int(m.group(2))) if m else None  # git snapshots ("N-1234-g...") carry no number


@functools.lru_cache(maxsize=1)
def _select_binary() -> tuple[str, str]:
    """(path, version text): the ffmpeg on PATH when it is recent enough, else the imageio-ffmpeg wheel's."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        version = _version_of(on_path)
        if version is not None and version >= MIN_VERSION:
            return on_path, ".".join(map(str, version))
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - a declared dependency
        if on_path:
            return on_path, "unknown"
        raise VidpipeError("no ffmpeg found: install ffmpeg or `pip install imageio-ffmpeg`") from None
    bundled = imageio_ffmpeg.get_ffmpeg_exe()
    version = _version_of(bundled)
    return bundled, ".".join(map(str, version)) if version else "unknown"


def ffmpeg_binary() -> str:
    return _select_binary()[0]


def ffmpeg_version() -> dict:
    """Which ffmpeg decodes, for store.json: {"path", "version"}."""
    path, version = _select_binary()
    return {"path": path, "version": version}


class DecodeError(Exception):
    """A video that cannot be decoded; the message is the reason recorded in failures.jsonl."""


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int  # coded pixels
    height: int
    sar: float  # sample (pixel) aspect ratio
    rotation: int  # display rotation in degrees, one of 0, 90, 180, 270
    fps: float
    num_frames: int  # video packets in the container (== frames for every codec seen in practice)
    duration: float
    damage: str | None = None  # the demuxer's first complaint (corrupt or truncated data), if any
    # where the video packets really end (s), measured only when their count looks short for the header's
    # duration x nominal fps: a variable-frame-rate file has fewer frames than that, a truncated one ends early
    packets_end: float | None = None
    stream: int = 0  # the container's index of this video stream (a thumbnail or cover art may come first)
    still: str | None = None  # why this "video" is a still picture (an image file, cover art), if it is one
    pix_fmt: str | None = None  # the decoder's pixel format (yuv420p, yuvj444p, rgb24, ...) where the probe says it

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown: square pixels, rotation applied (ffmpeg auto-rotates on decode)."""
        w, h = round(self.width * self.sar), self.height
        return (h, w) if self.rotation in (90, 270) else (w, h)

    def to_dict(self) -> dict:
        return asdict(self)


_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")
_DAMAGE_WORDS = r"(?:corrupt|truncat|invalid data|error while decoding)"
PROBE_BATCH = 16  # files per probing process: an ffmpeg start costs ~10 ms, a demux of a short clip ~1 ms


def _run(cmd: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DecodeError(f"ffmpeg timed out after {timeout:.0f}s") from None


def first_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if any(w in ln.lower() for w in ("invalid", "error", "no such", "not found", "moov atom", "unknown")):
            return ln[:200]
    return lines[-1][:200] if lines else "ffmpeg failed without a message"


def _demuxer_damage(err: str, k: int) -> str | None:
    """The demuxer's first complaint about input #k in a verbose log: the message after the
    "[in#k/fmt @ 0x..] " prefix. Lines that echo a file name are not complaints (paths may say "error")."""
    m = re.search(rf"^\[in#{k}/[^\]]*\] ((?!Input file #)[^\n]*{_DAMAGE_WORDS}[^\n]*)$", err, re.IGNORECASE | re.MULTILINE)
    return m.group(1).strip()[:200] if m else None


# Image codecs: a "video" of one frame in one of these is a picture (a JPEG or PNG named .mp4, say).
IMAGE_CODECS = {"png", "apng", "mjpeg", "jpegls", "jpeg2000", "jpegxl", "bmp", "gif", "tiff", "webp", "ppm", "pgm", "pbm", "pam",
                "qoi", "targa", "sgi", "dpx", "exr", "hdr", "pcx", "xbm", "xpm", "psd", "avif"}


def _parse_input(err: str, k: int) -> VideoInfo:
    """The VideoInfo of input #k from the verbose log of a stream-copy run over several inputs: its first
    video stream that moves (not an attached picture, not one frame of an image codec: cover art, a
    thumbnail), else its first video stream, marked still."""
    start = err.find(f"Input #{k},")
    if start < 0:
        raise DecodeError("not a readable video: ffmpeg did not open it")
    ends = [i for i in (err.find("\nInput #", start + 1), err.find("Stream mapping", start)) if i > 0]
    header = err[start : min(ends) if ends else len(err)]
    streams = list(re.finditer(rf"Stream #{k}:(\d+)[^:]*: Video: (\w+)[^\n]*?, (\d{{1,5}})x(\d{{1,5}})\b[^\n]*", header))
    if not streams:
        raise DecodeError("not a readable video: no video stream")
    def packets(m) -> int:
        found = re.search(rf"Input stream #{k}:{m.group(1)} \(video\): (\d+) packets read", err)
        return int(found.group(1)) if found else 0

    def picture(m) -> str | None:
        if "(attached pic)" in m.group(0):
            return "cover art (an attached picture), not a video"
        if packets(m) <= 1 and m.group(2) in IMAGE_CODECS:
            return f"a still image ({m.group(2)}), not a video"
        return None

    moving = [m for m in streams if picture(m) is None]
    stream = (moving or streams)[0]
    video_line = stream.group(0)
    sar = re.search(r"SAR (\d+):(\d+)", video_line)  # "[SAR 1:1 DAR 4:3]" in most containers, "SAR 2:1 DAR 8:3" in WebM
    fps = re.search(r"([\d.]+) (?:fps|tbr)", video_line)
    rot = re.search(r"rotation of (-?[\d.]+) degrees", header[stream.start():])
    dur = _DURATION.search(header)
    pix = re.search(r", ([a-z][a-z0-9_]*)(?:\([^)]*\))?, \d{1,5}x\d{1,5}\b", video_line)  # "yuv420p(progressive, left), 320x240"
    return VideoInfo(
        codec=stream.group(2),
        width=int(stream.group(3)),
        height=int(stream.group(4)),
        sar=(int(sar.group(1)) / int(sar.group(2))) if sar and int(sar.group(2)) and int(sar.group(1)) else 1.0,
        rotation=int(round(-float(rot.group(1)))) % 360 if rot else 0,
        fps=float(fps.group(1)) if fps else 0.0,
        num_frames=packets(stream),
        duration=(int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))) if dur else 0.0,
        damage=_demuxer_damage(err, k),
        stream=int(stream.group(1)),
        still=picture(stream),
        pix_fmt=pix.group(1) if pix else None,
    )


def probe_many(paths, timeout: float = 600) -> list[VideoInfo | DecodeError]:
    """Probe several files with one ffmpeg process (a stream copy of each to null: header + packet count).

    Returns a VideoInfo or the DecodeError for each path. A file ffmpeg cannot open fails the whole
    command; the batch is then probed one file at a time so the others still get their VideoInfo.
    """
    paths = [Path(p) for p in paths]
    out: list[VideoInfo | DecodeError | None] = [None] * len(paths)
    batch = []
    for i, p in enumerate(paths):
        if not p.is_file():
            out[i] = DecodeError("file not found")
        elif p.stat().st_size == 0:
            out[i] = DecodeError("zero-byte file")
        else:
            batch.append(i)
    for chunk_start in range(0, len(batch), PROBE_BATCH):
        chunk = batch[chunk_start : chunk_start + PROBE_BATCH]
        cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-v", "verbose"]
        for i in chunk:
            cmd += ["-i", str(paths[i])]
        for k in range(len(chunk)):
            cmd += ["-map", f"{k}:v", "-c", "copy", "-f", "null", "-"]  # every video stream: cover art may come first
        try:
            res = _run(cmd, timeout)
        except DecodeError as e:
            res = None
            error = e
        if res is not None and res.returncode == 0:
            err = res.stderr.decode(errors="replace")
            for k, i in enumerate(chunk):
                try:
                    out[i] = _parse_input(err, k)
                except DecodeError as e:
                    out[i] = e
        elif len(chunk) == 1:
            out[chunk[0]] = error if res is None else _open_error(res.stderr.decode(errors="replace"))
        else:
            for i in chunk:
                out[i] = probe_many([paths[i]], timeout)[0]
    for i, info in enumerate(out):
        if isinstance(info, VideoInfo) and looks_short(info):
            out[i] = dataclasses.replace(info, packets_end=_packets_end(paths[i], info.stream, timeout))
    return out


TRUNCATION_SLACK = 0.9  # packets ending before this fraction of the header's duration = truncated


def looks_short(info: VideoInfo) -> bool:
    """Fewer packets than the header's duration x nominal fps imply: truncated, or variable frame rate."""
    return info.duration > 0 and info.fps > 0 and info.num_frames < TRUNCATION_SLACK * info.duration * info.fps - 1


def _packets_end(path: Path, stream: int, timeout: float) -> float | None:
    """Where the video packets really end (s): the largest pts + duration of any packet. Packets come in
    decode order, so with B-frames the last one read is not the last one shown; PyAV reads every packet's
    timestamps (a demux, no decode). Without PyAV: ffmpeg's closing "time=" figure of a stream copy."""
    try:
        import av
    except ImportError:
        av = None
    if av is not None:
        try:
            with av.open(str(path)) as container:
                s = container.streams[stream]
                return packets_end([p.pts + (p.duration or 0) for p in container.demux(s) if p.pts is not None], s)
        except (av.FFmpegError, IndexError, ValueError):
            pass
    try:
        res = _run([ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", str(path), "-map", f"0:{stream}", "-c", "copy", "-f", "null", "-"], timeout)
    except DecodeError:
        return None
    times = re.findall(r"time=(\d+):(\d+):([\d.]+)", res.stderr.decode(errors="replace"))
    if not times:
        return None
    h, m, sec = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(sec)


def packets_end(ends: list[int], stream) -> float | None:
    """Seconds from a PyAV stream's start to the latest end (pts + duration, in its time base) of its packets."""
    return float((max(ends) - (stream.start_time or 0)) * stream.time_base) if ends else None


def _open_error(stderr: str) -> DecodeError:
    if re.search(r"Stream map .* matches no streams", stderr):
        return DecodeError("not a readable video: it has no video stream (audio only?)")
    return DecodeError(f"not a readable video: {first_error_line(stderr)}")


def probe(path: str | Path, timeout: float = 600) -> VideoInfo:
    result = probe_many([path], timeout)[0]
    if isinstance(result, DecodeError):
        raise result
    return result


def round_half_up(x: float) -> int:
    """Round as ffmpeg's expression `round()` does (half away from zero; Python's `round` goes to even), so a
    geometry computed here and one written as an ffmpeg expression (`predict.frames.cover_filter`) agree:
    a 341x256 source covers 170x128 as 171x128 on both paths."""
    return math.floor(x + 0.5)


@dataclass(frozen=True)
class Geometry:
    """Resize to cover (height, width) keeping the display aspect, then centre-crop to it."""

    scaled_w: int
    scaled_h: int
    crop_x: int
    crop_y: int
    width: int
    height: int

    @classmethod
    def cover(cls, display_size: tuple[int, int], height: int, width: int) -> "Geometry":
        dw, dh = display_size
        s = max(height / dh, width / dw)
        sw, sh = max(width, round_half_up(dw * s)), max(height, round_half_up(dh * s))
        return cls(sw, sh, (sw - width) // 2, (sh - height) // 2, width, height)

    def filters(self) -> str:
        # The scale target is in display pixels, so non-square (SAR) pixels are undone here.
        return f"scale={self.scaled_w}:{self.scaled_h}:flags=area,setsar=1,crop={self.width}:{self.height}:{self.crop_x}:{self.crop_y}"


MAX_SELECT_TERMS = 48


def decode_frames(path: str | Path, indices, geometry: Geometry, threads: int = 1, stream: int | None = None, timeout: float = 600) -> np.ndarray:
    """Decode the frames with the given (sorted, unique) indices, resized and cropped: uint8 (n, H, W, 3).

    Frames not selected are decoded (inter-frame codecs need them) but never scaled or copied out.
    Fewer than len(indices) frames come back when the stream holds fewer decodable frames.
    """
    indices = [int(i) for i in indices]
    assert indices == sorted(set(indices)), "indices must be sorted and unique"
    many = len(indices) > MAX_SELECT_TERMS  # ffmpeg's expression parser fails on very long select expressions
    if many:  # keep most frames anyway (fps mode): scale every frame up to the last one wanted, pick here
        vf, wanted = geometry.filters(), indices[-1] + 1
    else:
        vf, wanted = "select='" + "+".join(f"eq(n\\,{i})" for i in indices) + "'," + geometry.filters(), len(indices)
    cmd = [
        ffmpeg_binary(), "-hide_banner", "-nostdin", "-v", "error", "-threads", str(threads), "-i", str(path),
        "-map", video_map(stream), "-filter_threads", "1", "-vf", vf, "-frames:v", str(wanted),
        "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]
    frame_bytes = geometry.height * geometry.width * 3
    frames = np.empty((wanted, geometry.height, geometry.width, 3), np.uint8)
    n, returncode, err = _read_into(cmd, memoryview(frames).cast("B"), timeout)
    if returncode != 0:
        raise DecodeError(f"decode failed: {first_error_line(err)}")
    frames = frames[: n // frame_bytes]
    if many:
        return frames[[i for i in indices if i < len(frames)]]
    return frames


def _read_into(cmd: list[str], buffer: memoryview, timeout: float) -> tuple[int, int, str]:
    """Run cmd, reading its stdout straight into `buffer` (no intermediate bytes objects).

    stderr goes to a temporary file, so a chatty ffmpeg can never block on a full pipe.
    Returns (bytes read, exit status, stderr text).
    """
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errfile, bufsize=0)
        got = 0
        try:
            while got < len(buffer):
                k = proc.stdout.readinto(buffer[got:])
                if not k:
                    break
                got += k
            while proc.stdout.read(1 << 16):  # more output than expected: drain it so ffmpeg can exit
                pass
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise DecodeError(f"ffmpeg timed out after {timeout:.0f}s") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        errfile.seek(0)
        return got, proc.returncode, errfile.read().decode(errors="replace")


def video_map(stream: int | None) -> str:
    """ffmpeg's -map for a video: the probed stream, else the first that is not a picture (`V`, not `v`)."""
    return f"0:{stream}" if stream is not None else "0:V:0"


def count_decodable_frames(path: str | Path, threads: int = 1, stream: int | None = None, timeout: float = 600) -> tuple[int, bool]:
    """(frames that actually decode, whether decoding reported damage) by a full decode to null.

    Both come from ffmpeg's own end-of-run summary ("N frames decoded; M decode errors") and the
    demuxer's complaints, never from free text that also holds the file's path.
    """
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-v", "verbose", "-threads", str(threads), "-i", str(path),
           "-map", video_map(stream), "-f", "null", "-"]
    res = _run(cmd, timeout)
    err = res.stderr.decode(errors="replace")
    summary = re.search(r"Input stream #0:\d+ \(video\): \d+ packets read[^\n]*?(\d+) frames decoded; (\d+) decode errors", err)
    if summary is None:
        return 0, True
    decoded, errors = int(summary.group(1)), int(summary.group(2))
    return decoded, res.returncode != 0 or errors > 0 or _demuxer_damage(err, 0) is not None


ENCODERS = {
    # codec name -> (container extension, ffmpeg output options)
    "h264": (".mp4", ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"]),
    "vp9": (".webm", ["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "30", "-deadline", "realtime", "-cpu-used", "8", "-pix_fmt", "yuv420p"]),
    # MPEG-4 Part 2 with the Xvid FourCC in AVI: what HMDB51 and UCF101 ship.
    "mpeg4": (".avi", ["-c:v", "mpeg4", "-vtag", "XVID", "-q:v", "2", "-pix_fmt", "yuv420p"]),
}


def encode_video(frames: np.ndarray, path: str | Path, codec: str = "h264", fps: float = 25.0, extra: list[str] | None = None) -> Path:
    """Write uint8 frames (T, H, W, 3) as a real encoded video. H and W must be even (4:2:0)."""
    if codec not in ENCODERS:
        raise VidpipeError(f"unknown codec '{codec}'; choose one of {', '.join(ENCODERS)}")
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    t, h, w, _ = frames.shape
    _, options = ENCODERS[codec]
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)  # keep the extension: it picks the muxer
    cmd = [
        ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0",
        *options, *(extra or []), "-threads", "1", str(tmp),
    ]
    res = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise VidpipeError(f"ffmpeg could not encode {path.name}: {first_error_line(res.stderr.decode(errors='replace'))}")
    tmp.replace(path)
    return path


def read_all_frames(path: str | Path) -> np.ndarray:
    """Every frame at its display size, RGB uint8 (T, H, W, 3): a plain reference decode."""
    info = probe(path)
    w, h = info.display_size
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-i", str(path), "-map", video_map(info.stream), "-vf", f"scale={w}:{h},setsar=1",
           "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    res = _run(cmd)
    if res.returncode != 0:
        raise DecodeError(first_error_line(res.stderr.decode(errors="replace")))
    return np.frombuffer(res.stdout, np.uint8).reshape(-1, h, w, 3)
