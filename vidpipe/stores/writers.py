"""Store writers: one shard at a time, written under a temporary name and published by rename.

A *unit* is one planned shard: a fixed, deterministic slice of a split's records. Both formats write
exactly one data file per unit, so a unit is either complete (file present, recorded in its part
record) or redone from scratch on resume; the bytes of a unit depend only on its records and settings.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidpipe.files import sha256_file
from vidpipe.io.decode import ClipSpec
from vidpipe.stores.chunks import crc32c

ZARR_COMPRESSION_LEVEL = 1  # zstd: video frames barely compress; level 1 keeps reads fast


@dataclass(frozen=True)
class Unit:
    split: str
    index: int  # shard number within the split
    start: int  # position of its first record within the split
    records: tuple  # manifest Records

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"


def file_entry(store: Path, path: Path) -> dict:
    return {"path": str(path.relative_to(store)), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def sample_key(video_id: str) -> str:
    """The WebDataset key of a video id. webdataset splits a member name at the first dot of its base
    name, so dots are percent-encoded ("%" first, then "."): injective, so "clip.1" and "clip_1" stay
    two samples. The sample's json keeps the id itself."""
    return video_id.replace("%", "%25").replace(".", "%2E")


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class _HashingFile:
    """A write-only file that hashes what passes through, so a shard is never read back for its checksum."""

    def __init__(self, path: Path):
        self._fh = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.discarded = False

    def write(self, data) -> int:
        if self.discarded:  # an aborted shard: the tar stream's own late flush goes nowhere
            return len(data)
        self.sha256.update(data)
        self.bytes += len(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()


class WebDatasetShard:
    """STORE/<split>/<split>-NNNNNN.tar; members <key>.frames.npy (raw) or <key>.0000.jpg ... (one JPEG per
    frame, in order), <key>.cls, <key>.json."""

    def __init__(self, store: Path, unit: Unit):
        import webdataset as wds

        self.final = store / unit.split / f"{unit.name}.tar"
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(self.final.name + ".tmp")
        self._fh = _HashingFile(self.tmp)
        # integer mtime: a float one costs every member an extra pax header, parsed again at every read
        self._tar = wds.TarWriter(self._fh, mtime=0, user="vidpipe", group="vidpipe", mode=0o644)
        self.store, self.count = store, 0

    def add(self, position: int, record, clip: np.ndarray | list[bytes], meta: dict) -> None:
        frames = {f"{t:04d}.jpg": b for t, b in enumerate(clip)} if isinstance(clip, list) else {"frames.npy": npy_bytes(clip)}
        self.count += 1
        self._tar.write({
            "__key__": sample_key(record.id),
            **frames,
            "cls": str(record.label).encode(),
            "json": json.dumps(meta, sort_keys=True).encode(),
        })

    def commit(self) -> list[dict]:
        self._tar.close()
        self._fh.close()  # flushed and fsynced before the rename publishes it
        self.tmp.replace(self.final)
        return [{"path": str(self.final.relative_to(self.store)), "bytes": self._fh.bytes, "sha256": self._fh.sha256.hexdigest(),
                 "count": self.count}]

    def abort(self) -> None:
        self._fh.discarded = True
        try:
            self._fh.close()
        except OSError:  # a full disk fails the final flush too; the file goes either way
            pass
        self.tmp.unlink(missing_ok=True)


def zarr_frames_array(store: Path, split: str, count: int, spec: ClipSpec, per_shard: int, create: bool = False, codec: str = "raw"):
    """STORE/<split>.zarr/frames: (N, T, H, W, 3) uint8, one zstd chunk per frame inside shards of
    `per_shard` videos, one file each, so a clip decompresses only the frames it samples. vidpipe writes
    and reads these shards itself (`ZarrShard`, `chunks.ChunkReader`): zarr-python's per-chunk cost
    (~1.5-4 ms a read, ~0.5 ms a chunk written) would outweigh it. Any zarr v3 reader reads them.
    Stores made before per-frame chunks (one chunk per video) read as they always did.
    Every chunk carries a checksum (zstd's own; CRC32C for JPEG chunks), so a damaged chunk fails its read
    instead of decoding to wrong pixels.
    JPEG frames: (N, T) variable-length bytes, one JPEG per element, one chunk per video (reading a
    chunk only parses bytes: just the sampled frames are JPEG-decoded).
    Created (create=True) once, when the store is prepared; parts only open it."""
    import zarr
    from zarr.codecs import ZstdCodec

    path = store / f"{split}.zarr"
    if codec == "jpeg":
        return _zarr_jpeg_array(path, count, spec, per_shard, create)
    shape = (count, spec.frames, spec.height, spec.width, 3)
    if not create:
        arr = zarr.open_array(path / "frames", mode="r+")
        assert arr.shape == shape, f"existing {path}/frames has shape {arr.shape}, plan says {shape}"
        return arr
    group = zarr.open_group(path, mode="a")
    return group.create_array(
        "frames", shape=shape, dtype="uint8", chunks=(1, 1, *shape[2:]), shards=(per_shard, *shape[1:]),
        compressors=ZstdCodec(level=ZARR_COMPRESSION_LEVEL, checksum=True), fill_value=0, dimension_names=("video", "t", "h", "w", "c"),
        overwrite=True,
    )


def _zarr_jpeg_array(path: Path, count: int, spec: ClipSpec, per_shard: int, create: bool):
    import warnings

    import zarr
    from zarr.codecs import Crc32cCodec
    from zarr.dtype import VariableLengthBytes

    with warnings.catch_warnings():  # zarr-python reads it; other zarr libraries may not (README says so)
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        if not create:
            return zarr.open_array(path / "frames", mode="r+")
        group = zarr.open_group(path, mode="a")
        return group.create_array("frames", shape=(count, spec.frames), dtype=VariableLengthBytes(), chunks=(1, spec.frames),
                                  shards=(per_shard, spec.frames), compressors=Crc32cCodec(),  # JPEG is compressed already; a CRC per chunk
                                  dimension_names=("video", "t"), overwrite=True)


class ZarrShard:
    """Buffers one unit's clips and writes them as one shard file: raw frames by `write_frame_shard` (one
    chunk per frame), JPEG frames (one chunk per video) through zarr-python, under a temporary name
    published by rename either way."""

    def __init__(self, store: Path, unit: Unit, spec: ClipSpec, codec: str = "raw"):
        import zarr

        self.store, self.unit, self.codec = store, unit, codec
        self.array = zarr.open_array(store / f"{unit.split}.zarr" / "frames", mode="r+")
        n = len(unit.records)
        # raw frames in one chunk per frame, unless the array was created (by an older vidpipe, whose run
        # this resumes) with one chunk per video: zarr-python writes that layout, as it did then
        self.frame_chunks = codec == "raw" and self.array.chunks[1] == 1
        if self.frame_chunks:
            self.buffer = [None] * n  # each video's (T', H, W, 3) frames; None for a failed one
        elif codec == "jpeg":
            self.buffer = np.empty((n, spec.frames), dtype=object)
            self.buffer[...] = b""  # a failed video's frames read as empty bytes (and `valid` says so)
        else:
            self.buffer = np.zeros((n, spec.frames, spec.height, spec.width, 3), np.uint8)
        self.final = self.shard_path(store, unit, codec)

    @staticmethod
    def shard_path(store: Path, unit: Unit, codec: str = "raw") -> Path:
        # key encoding "/": chunk grid coordinates of shard `index` along the video axis (frames are
        # (N, T, H, W, 3) raw, (N, T) JPEG; one shard spans all of the other axes)
        other_axes = ["0"] * (1 if codec == "jpeg" else 4)
        return store.joinpath(f"{unit.split}.zarr", "frames", "c", str(unit.index), *other_axes)

    def add(self, position: int, record, clip: np.ndarray | list[bytes], meta: dict) -> None:
        # fps stores: a video fills its own T frames of the row; the rest stays empty (zeros, b"")
        if isinstance(clip, list):
            self.buffer[position, : len(clip)] = np.array(clip + [b""], dtype=object)[:-1]  # keeps bytes as elements
        elif self.frame_chunks:
            self.buffer[position] = clip
        else:
            self.buffer[position, : len(clip)] = clip

    def commit(self) -> list[dict]:
        if self.frame_chunks:
            write_frame_shard(self.final, self.buffer, self.array.shards[0], self.array.shape[1:])
        else:
            start = self.unit.start
            self.array[start : start + len(self.buffer)] = self.buffer  # zarr writes it via temp file + rename
        if not self.final.is_file():  # every video of the unit failed: zarr skips an all-fill shard, so do we
            return []
        return [file_entry(self.store, self.final)]

    def abort(self) -> None:
        pass


def write_frame_shard(path: Path, videos: list, per_shard: int, frame_shape: tuple[int, ...]) -> None:
    """One shard of a per-frame-chunked raw array, in the zarr v3 sharding codec's layout: each frame's
    zstd chunk (level ZARR_COMPRESSION_LEVEL, with zstd's content checksum), then the index ((offset,
    nbytes) little-endian uint64 per chunk in C order over (video, t), 2**64-1 for a chunk never
    written) and the CRC32C of the index. Frames equal to the fill value (all zero) are not written, as
    zarr-python does not write them. No file at all when no frame is written."""
    from numcodecs.zstd import Zstd

    zstd = Zstd(level=ZARR_COMPRESSION_LEVEL, checksum=True)
    t_max = frame_shape[0]
    index = np.full((per_shard * t_max, 2), np.iinfo(np.uint64).max, np.uint64)
    parts, offset = [], 0
    for v, frames in enumerate(videos):
        for t in range(0 if frames is None else len(frames)):
            frame = np.ascontiguousarray(frames[t])
            if not frame.any():
                continue
            data = zstd.encode(frame)
            index[v * t_max + t] = (offset, len(data))
            parts.append(data)
            offset += len(data)
    if not parts:
        path.unlink(missing_ok=True)
        return
    table = index.astype("<u8").tobytes()
    parts += [table, crc32c(table)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
