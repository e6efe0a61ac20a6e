"""One video's chunk of a zarr clip store, read straight from its shard file.

vidpipe's zarr arrays (`writers.zarr_frames_array`) are sharded: STORE/<split>.zarr/frames/c/<shard>/0/...
holds `per_shard` videos, followed by the shard index the zarr v3 sharding codec defines: (offset,
nbytes) little-endian uint64 per chunk, in chunk order, then a CRC32C of those bytes. A chunk is one
zstd-compressed raw frame (with zstd's own content checksum; one whole video in stores made before
per-frame chunks) or, in JPEG stores, the vlen-bytes encoding of a video's T JPEGs followed by a CRC32C.

zarr-python reads the same bytes through its async pipeline: measured at ~85% of a raw sample's time
(the main thread waiting on zarr's event-loop thread) on the loader benchmark. `ChunkReader` reads the
index once per shard and process, then one `pread` and one decompression per video. It opens only the
layout vidpipe writes (checked in `frames/zarr.json`); for anything else `ChunkReader.open` returns
None and callers use zarr-python. Every checksum zarr checks is checked here too, so damage still fails
the read. Tests compare every row with zarr-python's own read.

The shard index, the shard files' paths and the per-frame chunks make reads cost what the clip needs:
`frames(row, wanted)` decompresses only the frames `wanted` of a per-frame-chunked video.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

EMPTY = 2**64 - 1  # the sharding codec's (offset, nbytes) of a chunk never written


def _named(codecs: list, *names: str) -> bool:
    return [c.get("name") for c in codecs] == list(names)


class ChunkReader:
    """`frames(row)`: (T, H, W, 3) uint8 (raw stores) or a (T,) object array of JPEG bytes (JPEG stores),
    as zarr-python returns them."""

    def __init__(self, array: Path, shape: tuple[int, ...], per_shard: int, jpeg: bool, frame_chunks: bool = False):
        self.array, self.shape, self.per_shard, self.jpeg = array, shape, per_shard, jpeg
        self.frame_chunks = frame_chunks  # one chunk per frame (else one per video)
        self._index: dict[int, np.ndarray] = {}  # shard -> its (offset, nbytes) rows, read once per process

    @classmethod
    def open(cls, array: str | Path) -> "ChunkReader | None":
        """A reader for STORE/<split>.zarr/frames, or None when its layout is not the one vidpipe writes."""
        array = Path(array)
        try:
            meta = json.loads((array / "zarr.json").read_text())
            shape = tuple(meta["shape"])
            (sharding,) = meta["codecs"]
            config = sharding["configuration"]
            chunk, shard = config["chunk_shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
            key = meta["chunk_key_encoding"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        frame_chunks = len(shape) == 5 and chunk == [1, 1, *shape[2:]]
        layout = (sharding.get("name") == "sharding_indexed" and config.get("index_location", "end") == "end"
                  and key.get("name") == "default" and key.get("configuration", {}).get("separator", "/") == "/"
                  and _named(config.get("index_codecs", []), "bytes", "crc32c") and shard[1:] == list(shape[1:])
                  and (chunk == [1, *shape[1:]] or frame_chunks))
        if not layout or not (isinstance(shard[0], int) and shard[0] >= 1):
            return None
        inner = config["codecs"]
        if meta["data_type"] == "uint8" and len(shape) == 5 and _named(inner, "bytes", "zstd") and meta.get("fill_value") == 0:
            return cls(array, shape, shard[0], jpeg=False, frame_chunks=frame_chunks)
        if len(shape) == 2 and _named(inner, "vlen-bytes", "crc32c"):
            return cls(array, shape, shard[0], jpeg=True)
        return None

    def _shard_file(self, shard: int) -> Path:
        return self.array.joinpath("c", str(shard), *["0"] * (len(self.shape) - 1))

    def _shard_index(self, shard: int, fd: int, size: int) -> np.ndarray:
        index = self._index.get(shard)
        if index is None:
            nbytes = 16 * self.per_shard * (self.shape[1] if self.frame_chunks else 1)  # chunks in a shard
            raw = os.pread(fd, nbytes + 4, size - nbytes - 4)
            if len(raw) != nbytes + 4:
                raise ValueError(f"{self._shard_file(shard)} is shorter than its shard index")
            body = _crc_checked(raw, f"shard index of {self._shard_file(shard)}")
            index = self._index[shard] = np.frombuffer(body, "<u8").reshape(-1, 2)
        return index

    def chunks(self, row: int, frames: list[int] | None = None) -> list[bytes | None]:
        """The stored bytes of video `row`'s chunks (its `frames`' chunks where there is one per frame, else
        its one chunk); None for a chunk never written (a failed video, a frame past an fps video's end)."""
        if not 0 <= row < self.shape[0]:
            raise IndexError(f"row {row} outside 0..{self.shape[0] - 1}")
        shard, inner = divmod(row, self.per_shard)
        inners = [inner * self.shape[1] + t for t in frames] if self.frame_chunks else [inner]
        try:
            fd = os.open(self._shard_file(shard), os.O_RDONLY)
        except FileNotFoundError:  # zarr writes no shard whose chunks are all fill
            return [None] * len(inners)
        try:
            size = os.fstat(fd).st_size
            index = self._shard_index(shard, fd, size)
            out = []
            for k in inners:
                offset, nbytes = (int(v) for v in index[k])
                if offset == EMPTY and nbytes == EMPTY:
                    out.append(None)
                    continue
                if offset + nbytes > size:  # an index (untrusted, though its CRC matched) pointing past the file
                    raise ValueError(f"{self._shard_file(shard)} ends inside chunk {k}")
                out.append(os.pread(fd, nbytes, offset))
            return out
        finally:
            os.close(fd)

    def frames(self, row: int, wanted=None):
        """Video `row`: all its frames, or only the frames `wanted` (a sequence of indices), as zarr-python
        returns `array[row]` (or `array[row][wanted]`)."""
        wanted = list(range(self.shape[1])) if wanted is None else [int(t) for t in wanted]
        if self.jpeg:
            (data,) = self.chunks(row)
            out = np.empty(self.shape[1], object)
            out[:] = [b""] * self.shape[1] if data is None else _vlen_bytes(_crc_checked(data, "a JPEG chunk"), self.shape[1])
            return out[wanted]
        frame_shape = self.shape[2:]
        if not self.frame_chunks:
            (data,) = self.chunks(row)
            if data is None:
                return np.zeros((len(wanted), *frame_shape), np.uint8)
            return self._decoded(data, self.shape[1:])[wanted]
        out = np.empty((len(wanted), *frame_shape), np.uint8)
        for k, data in enumerate(self.chunks(row, wanted)):
            if data is None:  # never written: zarr's fill value
                out[k] = 0
            else:
                self._decode_into(data, out[k])
        return out

    def _decoded(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        out = np.empty(shape, np.uint8)
        self._decode_into(data, out)
        return out

    def _decode_into(self, data: bytes, out: np.ndarray) -> None:
        """zstd straight into `out`, checking zstd's content checksum where the frame has one (zarr's zstd
        codec writes it). numcodecs' module function, not its codec object: the codec's buffer checks cost
        a quarter of the decompression (58 of 231 us for a 65 KB frame). A chunk larger than `out` fails."""
        from numcodecs.zstd import decompress

        try:
            decompress(data, out)
        except ValueError as e:  # numcodecs: the destination is smaller than the chunk's content
            raise ValueError(f"a chunk does not decompress to one {out.shape} array ({e})") from None


def crc32c(data) -> bytes:
    """The 4 bytes zarr's crc32c codec appends to `data` (bytes or a read-only uint8 array): little-endian."""
    import google_crc32c

    return int(google_crc32c.value(data)).to_bytes(4, "little")


def _crc_checked(data: bytes, what: str) -> memoryview:
    """`data` without its trailing CRC32C, once the CRC matches; else a ValueError naming `what`."""
    body = np.frombuffer(data, np.uint8)[:-4]  # a read-only view, as google_crc32c wants
    if crc32c(body) != data[-4:]:
        raise ValueError(f"{what} does not match its CRC32C")
    return memoryview(body)


def _vlen_bytes(body: memoryview, count: int) -> list[bytes]:
    """numcodecs' vlen-bytes layout: uint32 item count, then (uint32 length, bytes) per item."""
    n = int.from_bytes(body[:4], "little")
    if n != count:
        raise ValueError(f"a JPEG chunk holds {n} frames, not {count}")
    out, pos = [], 4
    for _ in range(n):
        size = int.from_bytes(body[pos : pos + 4], "little")
        pos += 4
        if pos + size > len(body):
            raise ValueError("a JPEG chunk ends inside a frame")
        out.append(bytes(body[pos : pos + size]))
        pos += size
    return out
