"""vidpipe's own WebDataset shards, read strictly: only the members vidpipe writes, never unpickled.

A shard is a plain tar whose samples are consecutive members `<key>.<ext>`. vidpipe writes exactly
  <key>.frames.npy              raw uint8 frames (T, H, W, 3), a C-order .npy
  <key>.0000.jpg, .0001.jpg ... one JPEG per frame (JPEG stores)
  <key>.cls                     the label index, ASCII
  <key>.json                    the video's metadata (its id among them)
and nothing else. Shards are shared and downloaded, so they are untrusted input: webdataset's default
decoders would unpickle a `.pyd` member and run its code, and its URL opener runs `pipe:` commands. The
readers here parse a shard with `tarfile` (a local file, or the bytes of an object fetched by `stores.remote`, never a
URL webdataset would open), refuse any member vidpipe does not write (by name),
any member that is not a regular file, and load `.npy` with `allow_pickle=False`.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np

from vidpipe.errors import VidpipeError

_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's convention: key = up to the first dot of the base name
_FRAME = re.compile(r"^(\d{4,})\.jpg$")
KNOWN = ("frames.npy", "NNNN.jpg", "cls", "json")


class ForeignMember(VidpipeError):
    pass


def damaged_shard(path, error: Exception) -> VidpipeError:
    path = Path(path)
    if isinstance(error, VidpipeError) and str(path) in str(error):
        return error
    return VidpipeError(f"shard {path} is damaged ({str(error).strip() or type(error).__name__}); "
                        f"run `vidpipe verify {path.parent.parent}` to list every damaged file, then re-extract")


def split_member(shard, member: tarfile.TarInfo) -> tuple[str, str]:
    """(key, extension) of a member vidpipe writes; anything else is refused in one line by its name."""
    m = _MEMBER.match(member.name)
    ext = m.group(2) if m else ""
    if not member.isfile() or not (ext in ("frames.npy", "cls", "json") or _FRAME.match(ext)):
        what = "a link or folder" if not member.isfile() else "a member"
        raise ForeignMember(f"shard {shard} holds {what} {member.name!r} that vidpipe does not write (it reads only "
                            f"{', '.join(KNOWN)} members and never unpickles); re-extract the store or remove that member")
    return m.group(1), ext


def index_shard(path: str, size: int, data: bytes | None = None) -> list[dict]:
    """Every sample of a shard as handles: its cls and json bytes, its frames as a byte offset (npy) or
    (offset, size) spans (JPEG frames, an (n, 2) int64 array in frame order). Frames are read later.
    `data`: the shard's bytes, fetched whole (from a bucket), instead of the file at `path`."""
    samples: dict[str, dict] = {}
    with tarfile.open(path, "r:") if data is None else tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            key, ext = split_member(path, member)
            entry = samples.setdefault(key, {"__key__": key, "__url__": path})
            if ext == "frames.npy" or ext.endswith(".jpg"):
                if member.offset_data + member.size > size:  # the file ends inside the frames
                    raise tarfile.ReadError("unexpected end of data")
                if ext == "frames.npy":
                    entry["offset"] = member.offset_data
                else:  # "0007.jpg": frame 7
                    entry.setdefault("jpegs", {})[int(ext.split(".")[0])] = (member.offset_data, member.size)
            else:
                entry[ext] = tar.extractfile(member).read()
    out = []
    for entry in samples.values():
        _check_sample(path, entry)
        if "jpegs" in entry:
            spans = entry["jpegs"]
            entry["jpegs"] = np.array([spans[t] for t in range(len(spans))], np.int64).reshape(-1, 2)
        out.append(entry)
    return out


NPY_HEADER_MAX = 1 << 16  # bytes; numpy refuses headers over 10,000, once it has read them
_NPY_HEADERS: dict[bytes, tuple] = {}  # a header's bytes -> numpy's reading of it (a store has a handful of shapes)


def npy_frames_shape(fh, where: str) -> tuple[int, ...]:
    """The shape of the frames.npy member `fh` is positioned at, leaving `fh` at its first frame. A header
    numpy refuses, or frames that are not C-order uint8, is one line naming `where` (a shard and sample).
    numpy parses each distinct header once per process (its literal_eval was a sixth of a raw sample's
    read); a header met again is looked up by its bytes."""
    head, known = fh.read(12), None  # magic (6), version (2), header length (2 in version 1, 4 in version 2)
    if head[:6] == np.lib.format.MAGIC_PREFIX:  # else numpy's read_magic below says what is wrong, as it always did
        size = int.from_bytes(head[8:10], "little") + 10 if head[6:7] == b"\x01" else int.from_bytes(head[8:12], "little") + 12
        if size > NPY_HEADER_MAX:  # a damaged length: numpy would read that much before refusing it
            raise VidpipeError(f"{where} has a damaged frames.npy (a header of {size} bytes); run `vidpipe verify` on the store")
        head += fh.read(max(0, size - len(head)))
        known = _NPY_HEADERS.get(head)
    if known is None:  # numpy reads the bytes just read (a wrong magic fails in read_magic, as it always did)
        header = io.BytesIO(head)
        major, _ = np.lib.format.read_magic(header)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        try:
            shape, fortran, dtype = read_header(header)
        except ValueError as e:  # numpy refuses a header that is not a plain array description
            raise VidpipeError(f"{where} has a damaged frames.npy ({e}); run `vidpipe verify` on the store") from None
        known = (shape, fortran, dtype)
        if len(_NPY_HEADERS) < 4096:
            _NPY_HEADERS[head] = known
    shape, fortran, dtype = known
    if dtype != np.uint8 or fortran:
        raise VidpipeError(f"{where} holds {dtype} frames, not C-order uint8; run `vidpipe verify` on the store")
    return shape


def raw_samples(path: str, fileobj=None) -> Iterator[dict]:
    """Each sample of a shard as its members' bytes, in order: {"__key__", "cls", "json", and "frames.npy"
    or "jpegs" {t: bytes}}. `fileobj`: the shard already open (an object in a bucket), read in one pass."""
    with tarfile.open(path, "r:") if fileobj is None else tarfile.open(fileobj=fileobj, mode="r|") as tar:
        sample: dict = {}
        for member in tar:
            key, ext = split_member(path, member)
            if sample and sample["__key__"] != key:
                _check_sample(path, sample)
                yield sample
                sample = {}
            sample.setdefault("__key__", key)
            data = tar.extractfile(member).read()
            if len(data) != member.size:
                raise tarfile.ReadError("unexpected end of data")
            if ext.endswith(".jpg"):
                sample.setdefault("jpegs", {})[int(ext.split(".")[0])] = data
            else:
                sample[ext] = data
        if sample:
            _check_sample(path, sample)
            yield sample


def read_samples(path: str, fileobj=None) -> Iterator[dict]:
    """Each sample of a shard, in order: {"__key__", "frames": uint8 (T, H, W, 3) or [JPEG bytes, ...],
    "cls": int, "json": dict}."""
    for sample in raw_samples(path, fileobj):
        yield _decoded(path, sample)


def _check_sample(path, entry: dict) -> None:
    key = entry["__key__"]
    missing = [m for m in ("cls", "json") if m not in entry]
    has_npy, jpegs = "offset" in entry or "frames.npy" in entry, entry.get("jpegs")
    if missing or has_npy == bool(jpegs):
        what = ", ".join(missing) or ("both frames.npy and JPEG frames" if has_npy else "no frames")
        raise VidpipeError(f"shard {path}: sample {key!r} is incomplete ({what}); run `vidpipe verify` on the store, then re-extract")
    if jpegs and sorted(jpegs) != list(range(len(jpegs))):
        raise VidpipeError(f"shard {path}: sample {key!r} has gaps in its JPEG frames; run `vidpipe verify` on the store, then re-extract")


def sample_meta(data: bytes) -> dict:
    """A sample's json member: an object with a string id, else a ValueError saying what is wrong."""
    meta = json.loads(data)
    if not isinstance(meta, dict) or not isinstance(meta.get("id"), str):
        raise ValueError("its json has no id")
    return meta


def _decoded(path, sample: dict) -> dict:
    key = sample["__key__"]
    try:
        label = int(sample["cls"].decode("ascii").strip())
        meta = sample_meta(sample["json"])
        if "frames.npy" in sample:
            frames = np.load(io.BytesIO(sample["frames.npy"]), allow_pickle=False)
        else:
            frames = [sample["jpegs"][t] for t in range(len(sample["jpegs"]))]
    except (ValueError, UnicodeDecodeError, EOFError, OSError) as e:
        raise VidpipeError(f"shard {path}: sample {key!r} does not read ({e}); run `vidpipe verify` on the store, then re-extract") from None
    return {"__key__": key, "frames": frames, "cls": label, "json": meta}
