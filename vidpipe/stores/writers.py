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
import tarfile
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


def npy_parts(array: np.ndarray) -> tuple[bytes, memoryview]:
    """The .npy file of an array as (header, the array's own bytes): what np.save writes, with no copy."""
    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.getvalue(), memoryview(array.reshape(-1).view(np.uint8))


class TarStream:
    """A tar written member by member: each member's header, then its bytes as given (no copy into a
    buffer), padded to 512-byte blocks; closed by two zero blocks and padding to a 10 KiB record. The
    bytes are those of webdataset's TarWriter (Python's tarfile, PAX format) for the same members, mtime,
    mode and owner (tested)."""

    def __init__(self, fh, mtime: int = 0, user: str = "vidpipe", group: str = "vidpipe", mode: int = 0o644):
        self._fh, self._mtime, self._user, self._group, self._mode = fh, mtime, user, group, mode
        self.offset = 0

    def add(self, name: str, *parts) -> None:
        """One member whose bytes are the concatenation of `parts` (bytes or memoryviews)."""
        size = sum(memoryview(p).nbytes for p in parts)
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uname, info.gname = size, self._mtime, self._mode, self._user, self._group
        self._write(info.tobuf(tarfile.DEFAULT_FORMAT, tarfile.ENCODING, "surrogateescape"))
        for part in parts:
            self._write(part)
        if size % tarfile.BLOCKSIZE:
            self._write(tarfile.NUL * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def close(self) -> None:
        self._write(tarfile.NUL * 2 * tarfile.BLOCKSIZE)
        if self.offset % tarfile.RECORDSIZE:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - self.offset % tarfile.RECORDSIZE))

    def _write(self, data) -> None:
        self._fh.write(data)
        self.offset += memoryview(data).nbytes


class _HashingFile:
    """A write-only file that hashes what passes through, so a shard is never read back for its checksum."""

    def __init__(self, path: Path):
        self._fh = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.discarded = False

    def write(self, data) -> int:
        if self.discarded:  # an aborted shard: nothing more reaches the file that is about to be deleted
            return len(data)
        self.sha256.update(data)
        self.bytes += memoryview(data).nbytes
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
        self.final = store / unit.split / f"{unit.name}.tar"
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(self.final.name + ".tmp")
        self._fh = _HashingFile(self.tmp)
        # integer mtime: a float one costs every member an extra pax header, parsed again at every read
        self._tar = TarStream(self._fh, mtime=0, user="vidpipe", group="vidpipe", mode=0o644)
        self.store, self.count = store, 0

    def add(self, position: int, record, clip: np.ndarray | list[bytes], meta: dict) -> None:
        frames = {f"{t:04d}.jpg": (b,) for t, b in enumerate(clip)} if isinstance(clip, list) else {"frames.npy": npy_parts(clip)}
        members = {**frames, "cls": (str(record.label).encode(),), "json": (json.dumps(meta, sort_keys=True).encode(),)}
        key = sample_key(record.id)
        for suffix in sorted(members):  # the order webdataset's TarWriter writes them in
            self._tar.add(f"{key}.{suffix}", *members[suffix])
        self.count += 1

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
            self.buffer = [None] * n  # each video's EncodedFrames; None for a failed one
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

    def add(self, position: int, record, clip: np.ndarray | list[bytes] | EncodedFrames, meta: dict) -> None:
        # fps stores: a video fills its own T frames of the row; the rest stays empty (zeros, b"")
        if isinstance(clip, EncodedFrames):
            assert self.frame_chunks, "frames encoded as chunks go to a store with one chunk per frame"
            self.buffer[position] = clip
        elif isinstance(clip, list):
            self.buffer[position, : len(clip)] = np.array(clip + [b""], dtype=object)[:-1]  # keeps bytes as elements
        elif self.frame_chunks:  # a clip not encoded where it was decoded
            self.buffer[position] = EncodedFrames.of(clip)
        else:
            self.buffer[position, : len(clip)] = clip

    def commit(self) -> list[dict]:
        if self.frame_chunks:
            written = write_frame_shard(self.final, self.buffer, self.array.shards[0], self.array.shape[1:])
            return [{"path": str(self.final.relative_to(self.store)), **written}] if written else []
        else:
            start = self.unit.start
            self.array[start : start + len(self.buffer)] = self.buffer  # zarr writes it via temp file + rename
        if not self.final.is_file():  # every video of the unit failed: zarr skips an all-fill shard, so do we
            return []
        return [file_entry(self.store, self.final)]

    def abort(self) -> None:
        pass


@dataclass(frozen=True)
class EncodedFrames:
    """A raw clip as the zstd chunks of its frames (level ZARR_COMPRESSION_LEVEL, zstd's content checksum;
    None for an all-zero frame, which zarr-python would not write either), compressed where the clip was
    decoded so the thread writing shards only writes."""

    chunks: tuple

    @classmethod
    def of(cls, clip: np.ndarray) -> "EncodedFrames":
        from numcodecs.zstd import Zstd

        zstd = Zstd(level=ZARR_COMPRESSION_LEVEL, checksum=True)
        return cls(tuple(zstd.encode(np.ascontiguousarray(f)) if f.any() else None for f in clip))


def frame_chunked(store: Path, split: str) -> bool:
    """Whether a raw zarr store's array of `split` holds one chunk per frame (the layout `EncodedFrames`
    fill; stores made before it hold one per video)."""
    import zarr

    return zarr.open_array(store / f"{split}.zarr" / "frames", mode="r").chunks[1] == 1


def write_frame_shard(path: Path, videos: list[EncodedFrames | None], per_shard: int, frame_shape: tuple[int, ...]) -> dict | None:
    """One shard of a per-frame-chunked raw array, in the zarr v3 sharding codec's layout: each frame's
    chunk (`EncodedFrames`; None for a failed video), then the index ((offset, nbytes)
    little-endian uint64 per chunk in C order over (video, t), 2**64-1 for a chunk never written) and
    the CRC32C of the index. No file at all when no frame is written. Returns the file's bytes and
    sha256 (hashed as written), or None."""
    t_max = frame_shape[0]
    index = np.full((per_shard * t_max, 2), np.iinfo(np.uint64).max, np.uint64)
    parts, offset = [], 0
    for v, frames in enumerate(videos):
        if frames is None:
            continue
        for t, data in enumerate(frames.chunks):
            if data is not None:
                index[v * t_max + t] = (offset, len(data))
                parts.append(data)
                offset += len(data)
    if not parts:
        path.unlink(missing_ok=True)
        return None
    table = index.astype("<u8").tobytes()
    parts += [table, crc32c(table)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    digest = hashlib.sha256()
    with open(tmp, "wb") as fh:
        for part in parts:
            digest.update(part)
            fh.write(part)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    return {"bytes": offset + len(table) + 4, "sha256": digest.hexdigest()}
