"""Reading a finished store: its index (store.json), its samples, verification and a contact sheet.

Both formats read through their stock libraries (webdataset, zarr); nothing here depends on how the
store was written beyond the contract in store.json.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from vidpipe.errors import VidpipeError
from vidpipe.files import COMPONENT, inside, read_json, sha256_file
from vidpipe.io import jpeg
from vidpipe.stores.chunks import ChunkReader
from vidpipe.stores.remote import ObjectMissing, Remote, is_url, shown
from vidpipe.stores.shards import damaged_shard, read_samples


def verify_files(root: Path, files: list[dict], progress=None) -> list[str]:
    """Each listed file (path, bytes, sha256 in an index) is inside root, present and has its checksum."""
    problems = []
    for f in files:
        try:
            path = inside(root, f["path"], "a file listed in store.json")
        except VidpipeError as e:
            problems.append(str(e))
            continue
        if not path.is_file():
            problems.append(f"missing file {f['path']}")
        elif path.stat().st_size != f["bytes"]:
            problems.append(f"size mismatch {f['path']}: {path.stat().st_size} bytes, store.json says {f['bytes']}")
        elif sha256_file(path) != f["sha256"]:
            problems.append(f"checksum mismatch {f['path']}")
        if progress:
            progress()
    return problems


def verify_remote_files(remote: Remote, files: list[dict], progress=None) -> list[str]:
    """`verify_files` for a store in a bucket: one listing for the sizes, every object read back for its sha256."""
    sizes, problems = remote.sizes_of([f["path"] for f in files]), []
    for f in files:
        size = sizes.get(f["path"])
        if size is None:
            problems.append(f"missing object {f['path']}")
        elif size != f["bytes"]:
            problems.append(f"size mismatch {f['path']}: {size} bytes, store.json says {f['bytes']}")
        elif remote.sha256(f["path"]) != f["sha256"]:
            problems.append(f"checksum mismatch {f['path']}")
        if progress:
            progress()
    return problems


def open_zarr_group(path: str | Path):
    """A zarr group, read-only, from a folder or a URL (zarr's fsspec store)."""
    import zarr

    if is_url(path):
        from zarr.storage import FsspecStore

        return zarr.open_group(FsspecStore.from_url(str(path), read_only=True), mode="r")
    return zarr.open_group(path, mode="r")


def zarr_lengths(group) -> np.ndarray:
    """Frames per video of a zarr split: its `lengths` array (fps stores), else every row's T."""
    return group["lengths"][:] if "lengths" in group else np.full(group["frames"].shape[0], group["frames"].shape[1])


def damaged_chunk(root: Path, split: str, row: int, error: Exception) -> VidpipeError:
    return VidpipeError(f"{root}/{split}.zarr: video row {row} does not read ({str(error).strip()[:120] or type(error).__name__}); "
                        f"run `vidpipe verify {root}` to list every damaged file, then re-extract")


class IndexMismatch(VidpipeError):
    """store.json and the data it describes disagree; `problem` says how, for `vidpipe verify` to list."""

    def __init__(self, path: str | Path, problem: str):
        store = str(path).rsplit("/", 1)[0]  # a folder's or a URL's store.json
        super().__init__(f"{path} disagrees with its data or is damaged ({problem}); run `vidpipe verify {store}`, then re-extract")
        self.problem = problem


def check_index(path: Path, index: dict) -> None:
    """The shape of a clip store's store.json, before anything trusts it: positive sizes, a class list,
    per split a count and files (path, bytes, sha256)."""
    def need(ok, problem):
        if not ok:
            raise IndexMismatch(path, problem)

    clip, splits, classes = index.get("clip"), index.get("splits"), index.get("classes")
    need(index.get("format") in ("webdataset", "zarr"), f"format {index.get('format')!r}")
    need(isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes), "no class list")
    need(isinstance(clip, dict), "no clip entry")
    for k in ("frames", "height", "width"):
        need(isinstance(clip.get(k), int) and not isinstance(clip.get(k), bool) and clip[k] >= 1, f"clip.{k} = {clip.get(k)!r}")
    need(clip.get("channels", 3) == 3, f"clip.channels = {clip.get('channels')!r}")
    need(isinstance(splits, dict), "no splits")
    for name, e in splits.items():
        need(isinstance(name, str) and COMPONENT.match(name) is not None, f"split name {name!r}")
        need(isinstance(e, dict) and isinstance(e.get("count"), int) and e["count"] >= 0, f"split {name!r}: count {e.get('count') if isinstance(e, dict) else e!r}")
        files = e.get("files")
        need(isinstance(files, list) and all(isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("bytes"), int)
                                             and isinstance(f.get("sha256"), str) for f in files), f"split {name!r}: files")
        need(index["format"] == "webdataset" or isinstance(e.get("array"), str), f"split {name!r}: no array")


@dataclass
class Store:
    root: Path | str  # a folder, or a URL (s3://, gs://, az://, https://)
    index: dict  # store.json
    remote: Remote | None = None  # the store's objects, when root is a URL

    @classmethod
    def open(cls, root: str | Path) -> "Store":
        remote = Remote(str(root)) if is_url(root) else None
        root = remote.url if remote else Path(root)
        path = f"{shown(root)}/store.json" if remote else root / "store.json"
        unfinished = " (extraction unfinished: rerun `vidpipe extract`, or `--finalize` it)"
        if remote:
            try:
                index = remote.read_json("store.json", f"re-extract {shown(root)}")
            except ObjectMissing:
                hint = unfinished if remote.size("_extract/plan.json") is not None else ""
                raise VidpipeError(f"{path} not found: {shown(root)} is not a finished vidpipe store{hint}") from None
        else:
            if not path.is_file():
                hint = unfinished if (root / "_extract").is_dir() else ""
                raise VidpipeError(f"{path} not found: {root} is not a finished vidpipe store{hint}")
            index = read_json(path, f"re-extract {root}")
        if not isinstance(index, dict) or "vidpipe_store" not in index:
            if isinstance(index, dict) and index.get("format") == "vidpipe-features":
                raise VidpipeError(f"{root} is a feature store (from `vidpipe cache-features`), not a clip store; "
                                   f"its clip store is {index.get('source_store', {}).get('path')}")
            raise VidpipeError(f"{path} is not a vidpipe store index")
        check_index(path, index)
        return cls(root, index, remote)

    @property
    def name(self) -> str:
        """The store as it is printed: its folder, or its URL without credentials."""
        return shown(self.root) if self.remote else str(self.root)

    @property
    def index_path(self) -> str | Path:
        return f"{self.name}/store.json" if self.remote else self.root / "store.json"

    @property
    def location(self) -> str:
        """Where the store is, as a record names it: the absolute folder, or the URL."""
        return self.name if self.remote else str(Path(self.root).resolve())

    def read_bytes(self, rel: str) -> bytes:
        """One of the store's own files (store.json, manifest.jsonl) by its relative path."""
        return self.remote.read_bytes(rel) if self.remote else inside(self.root, rel, f"a file of {self.root}").read_bytes()

    @property
    def format(self) -> str:
        return self.index["format"]

    @property
    def classes(self) -> list[str]:
        return self.index["classes"]

    @property
    def splits(self) -> list[str]:
        return list(self.index["splits"])

    @property
    def mode(self) -> str:
        """uniform: T frames spread over each whole video; fps: every video at the store's fps (T varies)."""
        return self.index["clip"].get("mode", "uniform")

    @property
    def codec(self) -> str:
        """How frames are stored: raw uint8, or one JPEG per frame."""
        return self.index["clip"].get("codec", "raw")

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        c = self.index["clip"]
        return (c["frames"], c["height"], c["width"], c["channels"])

    def shard_paths(self, split: str) -> list[str]:
        """The split's shard files, each checked to lie inside the store and to have the size store.json
        records (a shard cut at a member boundary still parses as a tar: its size gives it away)."""
        self._check_split(split)
        if self.remote:  # sizes from one listing (a HEAD each from an HTTP server)
            sizes = self.remote.sizes_of([f["path"] for f in self.index["splits"][split]["files"]])
            for f in self.index["splits"][split]["files"]:
                url = self.remote.url_of(f["path"])
                if sizes.get(f["path"]) is None:
                    raise VidpipeError(f"shard {shown(url)} is missing; run `vidpipe verify {self.name}`, then re-extract")
                if sizes[f["path"]] != f["bytes"]:
                    raise damaged_shard(shown(url), ValueError(f"{sizes[f['path']]} bytes, store.json says {f['bytes']}"))
            return [self.remote.url_of(f["path"]) for f in self.index["splits"][split]["files"]]
        paths = []
        for f in self.index["splits"][split]["files"]:
            path = inside(self.root, f["path"], f"store.json of {self.root}")
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise VidpipeError(f"shard {path} is missing; run `vidpipe verify {self.root}`, then re-extract") from None
            if size != f["bytes"]:
                raise damaged_shard(path, ValueError(f"{size} bytes, store.json says {f['bytes']}"))
            paths.append(str(path))
        return paths

    def array_path(self, split: str) -> Path | str:
        self._check_split(split)
        if self.remote:
            return self.remote.url_of(self.index["splits"][split]["array"])
        return inside(self.root, self.index["splits"][split]["array"], f"store.json of {self.root}")

    def check_sample(self, split: str, vid: str, shape: tuple, label: int) -> None:
        """A sample agrees with store.json: its frames' shape and its label's range."""
        t, h, w, c = self.clip_shape
        ok_t = shape[0] == t if self.mode == "uniform" else 1 <= shape[0] <= t
        if len(shape) != 4 or not ok_t or tuple(shape[1:]) != (h, w, c) or not 0 <= label < len(self.classes):
            raise IndexMismatch(self.index_path, f"{split}/{vid}: frames {tuple(shape)} and label {label}, "
                                                          f"store.json says {self.clip_shape} and {len(self.classes)} classes")

    def records(self, split: str) -> list:
        """The manifest records of the videos stored in a split, in store order (failures left out)."""
        from vidpipe.datasets.manifest import Manifest

        self._check_split(split)
        failed = {f["id"] for f in self.index["failures"] if f.get("split") == split}
        if self.remote:
            text = self.read_bytes("manifest.jsonl").decode("utf-8", errors="replace")  # not a manifest: refused by loads, in one line
            manifest = Manifest.loads(text, f"{self.name}/manifest.jsonl", allow_outside_root=True)
        else:
            manifest = Manifest.read(self.root / "manifest.jsonl", allow_outside_root=True)
        return [r for r in manifest.split_records(split) if r.id not in failed]

    def ids(self, split: str) -> list[str]:
        """The ids of the videos stored in a split, in store order (the manifest's order, failures left out)."""
        return [r.id for r in self.records(split)]

    def _check_split(self, split: str) -> None:
        if split not in self.index["splits"]:
            raise VidpipeError(f"store {self.name} has no split '{split}'; it has {', '.join(self.splits)}")

    def samples(self, split: str) -> Iterator[tuple[str, np.ndarray, int, dict]]:
        """(id, frames uint8 (T, H, W, 3), label, metadata) for every stored video of a split, in store order.
        Each sample is checked against store.json (shape, label) and so is the split's count, at the end."""
        self._check_split(split)
        expected, n = self.index["splits"][split]["count"], 0
        if self.format == "webdataset":
            for shard, entry in zip(self.shard_paths(split), self.index["splits"][split]["files"]):  # one at a time, to name a damaged one
                in_shard = 0
                try:
                    for s in self._read_shard(shard, entry):
                        in_shard += 1
                        meta, frames = s["json"], s["frames"]
                        if isinstance(frames, list):
                            frames = jpeg.decode(frames)
                        self.check_sample(split, meta["id"], frames.shape, s["cls"])
                        if frames.dtype != np.uint8:
                            raise IndexMismatch(self.index_path, f"{split}/{meta['id']}: frames of {frames.dtype}")
                        n += 1
                        self._check_count(split, n)
                        yield meta["id"], frames, s["cls"], meta
                except (tarfile.TarError, OSError, ValueError) as e:
                    raise damaged_shard(shard, e) from None
                if entry.get("count", in_shard) != in_shard:  # stores made since per-shard counts were recorded
                    raise damaged_shard(shard, ValueError(f"{in_shard} samples, store.json says {entry['count']}"))
        else:
            import zarr

            group = self.zarr_group(split)
            labels, valid, metas = group["labels"][:], group["valid"][:], group["meta"][:]
            reader = None if self.remote else ChunkReader.open(self.array_path(split) / "frames")  # vidpipe's layout, read directly
            read = reader.frames if reader is not None else group["frames"].__getitem__
            lengths = zarr_lengths(group)
            for i in np.flatnonzero(valid):
                meta = json.loads(metas[i])
                try:
                    video = read(int(i))[: lengths[i]]  # fps stores: the video's own T frames of its row
                    video = jpeg.decode(video) if self.codec == "jpeg" else video
                except (RuntimeError, ValueError, OSError, zarr.errors.BaseZarrError) as e:  # a corrupted chunk: zstd or JPEG errors
                    raise damaged_chunk(self.name, split, int(i), e) from None
                self.check_sample(split, meta["id"], video.shape, int(labels[i]))
                n += 1
                self._check_count(split, n)
                yield meta["id"], video, int(labels[i]), meta
        if n != expected:
            raise IndexMismatch(self.index_path, f"read {n} samples, store.json says {expected}")

    def _read_shard(self, shard: str, entry: dict):
        """A shard's samples (`shards.read_samples`), a bucket's streamed in one pass."""
        if not self.remote:
            yield from read_samples(shard)
            return
        with self.remote.open(entry["path"]) as fh:
            yield from read_samples(shown(shard), fh)

    def _check_count(self, split: str, n: int) -> None:
        if n > self.index["splits"][split]["count"]:
            raise IndexMismatch(self.index_path, f"split {split} holds more samples than the {self.index['splits'][split]['count']} it lists")

    def zarr_group(self, split: str):
        """A split's zarr group, checked against store.json: rows, count of valid videos, frame shape."""
        import zarr

        path = self.array_path(split)
        try:
            group = open_zarr_group(path)
            rows, valid = group["frames"].shape, group["valid"][:]
            sizes = {len(valid), group["labels"].shape[0], group["meta"].shape[0], rows[0]}
        except (zarr.errors.BaseZarrError, KeyError, ValueError, RuntimeError, FileNotFoundError) as e:  # missing or unreadable arrays
            raise VidpipeError(f"{shown(path)} does not open as a vidpipe zarr split ({type(e).__name__}); "
                               f"run `vidpipe verify {self.name}`, then re-extract") from None
        t, h, w, c = self.clip_shape
        want = (t,) if self.codec == "jpeg" else (t, h, w, c)
        if len(sizes) != 1 or tuple(rows[1:]) != want or int(valid.sum()) != self.index["splits"][split]["count"]:
            raise IndexMismatch(self.index_path, f"{split}.zarr holds {rows} frames and {int(valid.sum())} valid videos, "
                                                          f"store.json says {self.index['splits'][split]['count']} of {want}")
        return group

    def verify(self, progress=None) -> list[str]:
        """Recompute every checksum and read every sample; returns the problems found (empty = intact)."""
        problems = []
        for split, entry in self.index["splits"].items():
            damaged = (verify_remote_files(self.remote, entry["files"], progress) if self.remote
                       else verify_files(self.root, entry["files"], progress))
            problems += damaged
            if damaged:  # this split's samples cannot be trusted; the next split's still get read
                continue
            try:
                for _ in self.samples(split):  # checks shapes, labels and the count against store.json
                    pass
            except VidpipeError as e:
                problems.append(f"{split}: {getattr(e, 'problem', e)}")
        return problems

    def contact_sheet(self, path: str | Path, split: str | None = None, per_class: int = 1, frames: int = 8) -> Path:
        """A PNG grid: one row per stored video (first `per_class` of each class), `frames` frames across."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if split is not None:
            self._check_split(split)
            if not self.index["splits"][split]["count"]:
                raise VidpipeError(f"split '{split}' of {self.name} holds no stored videos; pass --split with one of "
                                   f"{', '.join(s for s in self.splits if self.index['splits'][s]['count']) or '(none: every video failed)'}")
        else:
            stored = [s for s in self.splits if self.index["splits"][s]["count"]]
            if not stored:
                raise VidpipeError(f"{self.name} holds no stored videos (every video failed; see failures.jsonl)")
            split = stored[0]
        chosen: dict[int, list] = {}
        for vid, clip, label, _ in self.samples(split):
            if len(chosen.setdefault(label, [])) < per_class:
                chosen[label].append((vid, clip))
        rows = [(label, vid, clip) for label in sorted(chosen) for vid, clip in chosen[label]]
        columns = min(frames, self.clip_shape[0])
        fig, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns, 1.3 * len(rows)), squeeze=False)
        for r, (label, vid, clip) in enumerate(rows):
            take = np.linspace(0, len(clip) - 1, columns).round().astype(int)  # each video's own T (fps stores vary)
            for c, ti in enumerate(take):
                ax = axes[r][c]
                ax.imshow(clip[ti])
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(self.classes[label], fontsize=7, rotation=0, ha="right", va="center")
                if r == 0:
                    ax.set_title(f"t={ti}", fontsize=7)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path
