"""Frame folders: a video kept as numbered images, at a stated frame rate.

Something-Something V1 ships this way (`<id>/00001.jpg ...` at 12 fps), and so do mmaction2 "rawframes"
trees (`img_00001.jpg ...`). Such a folder goes through extraction like a video file: it is probed
(frame count from the numbering, size from the first image, the stated fps), the same frame indices are
chosen, and each chosen image is decoded by FFmpeg (PyAV) and sent through the same libavfilter chain as a
video's frames (`pyav.filter_graph`: area scale to cover, crop, RGB), so a folder of images and a lossless
video of the same images give the same pixels. Only the chosen images are read.

A gap in the numbering, a mixed naming, an image that does not decode or that changes size is a
`DecodeError`: one recorded failure, as a damaged video file is.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vidpipe.io.ffmpeg import DecodeError, Geometry, VideoInfo

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)(?P<ext>\.(?:jpe?g|png))$", re.IGNORECASE)


def is_frame_folder(path: str | Path) -> bool:
    return Path(path).is_dir()


def frame_files(path: str | Path) -> list[Path]:
    """The folder's images in frame order: one naming (prefix, digits, extension), numbered without gaps."""
    path = Path(path)
    if not path.is_dir():
        raise DecodeError("frame folder not found")
    named = []
    for p in path.iterdir():
        m = _NUMBERED.match(p.name)
        if m and p.is_file():
            named.append((m.group("prefix"), m.group("ext").lower(), int(m.group("number")), p))
    if not named:
        raise DecodeError(f"no numbered images ({', '.join(FRAME_EXTENSIONS)}) in the frame folder")
    kinds = {(prefix, ext) for prefix, ext, _, _ in named}
    if len(kinds) > 1:
        shown = ", ".join(f"{prefix}N{ext}" for prefix, ext in sorted(kinds)[:3])
        raise DecodeError(f"frame folder mixes namings ({shown}); keep one sequence per folder")
    named.sort(key=lambda item: item[2])
    numbers = [n for _, _, n, _ in named]
    if len(set(numbers)) != len(numbers):
        raise DecodeError("frame folder numbers a frame twice (e.g. 1.jpg and 0001.jpg)")
    expected = range(numbers[0], numbers[0] + len(numbers))
    gap = next((want for want, got in zip(expected, numbers) if want != got), None)
    if gap is not None:
        raise DecodeError(f"frame {gap} is missing from the frame folder ({len(numbers)} images numbered {numbers[0]}..{numbers[-1]})")
    return [p for _, _, _, p in named]


def _first_frame(path: Path):
    """(container, stream, decoded frame) of one image file; the caller closes the container."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise DecodeError(f"{path.name} is not a readable image ({e.__class__.__name__})") from None
    try:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
    except (av.FFmpegError, IndexError, StopIteration):
        container.close()
        raise DecodeError(f"{path.name} is not a readable image") from None
    return container, stream, frame


def probe(path: str | Path, fps: float) -> VideoInfo:
    """A frame folder's VideoInfo: as many frames as images, at the stated `fps`, the first image's size."""
    files = frame_files(path)
    container, stream, frame = _first_frame(files[0])
    try:
        sar = stream.codec_context.sample_aspect_ratio  # JPEG's pixel density says it, where it is not square
        return VideoInfo(codec=stream.codec_context.name, width=frame.width, height=frame.height,
                         sar=float(sar) if sar else 1.0, rotation=0, fps=float(fps), num_frames=len(files),
                         duration=len(files) / float(fps), pix_fmt=stream.codec_context.pix_fmt)
    finally:
        container.close()


def decode_frames(path, indices, geometry: Geometry, threads: int = 1, stream: int | None = None) -> np.ndarray:
    """The images with the given (sorted, unique) frame indices, resized and cropped: uint8 (n, H, W, 3)."""
    from vidpipe.io.pyav import filter_graph

    indices = [int(i) for i in indices]
    files = frame_files(path)
    out = np.empty((len(indices), geometry.height, geometry.width, 3), np.uint8)
    graph, size = None, None
    for k, i in enumerate(indices):
        if i >= len(files):
            return out[:k]
        container, first_stream, frame = _first_frame(files[i])
        try:
            if graph is None:  # every image goes through one chain, set up for the first one's size and pixels
                graph, size = filter_graph(first_stream, geometry), (frame.width, frame.height, frame.format.name)
            elif (frame.width, frame.height, frame.format.name) != size:
                raise DecodeError(f"{files[i].name} is {frame.width}x{frame.height} {frame.format.name}, the folder's first "
                                  f"chosen image {size[0]}x{size[1]} {size[2]}; a frame folder holds one size")
            graph.push(frame)
            out[k] = graph.pull().to_ndarray()
        finally:
            container.close()
    return out
