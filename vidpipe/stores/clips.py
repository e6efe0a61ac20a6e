"""Reading a finished store: its index (store.json), its samples, verification and a contact sheet.

Both formats read through their stock libraries (webdataset, zarr); nothing here depends on how the
store was written beyond the contract in store.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from vidpipe.errors import VidpipeError
from vidpipe.files import sha256_file
from vidpipe.io import jpeg


def verify_files(root: Path, files: list[dict], progress=None) -> list[str]:
    """Each listed file (path, bytes, sha256 in an index) is present and has its checksum."""
    problems = []
    for f in files:
        path = root / f["path"]
        if not path.is_file():
            problems.append(f"missing file {f['path']}")
        elif sha256_file(path) != f["sha256"]:
            problems.append(f"checksum mismatch {f['path']}")
        if progress:
            progress()
    return problems


def damaged_shard(path, error: Exception) -> VidpipeError:
    path = Path(path)
    return VidpipeError(f"shard {path} is damaged ({str(error).strip() or type(error).__name__}); "
                        f"run `vidpipe verify {path.parent.parent}` to list every damaged file, then re-extract")


def zarr_lengths(group) -> np.ndarray:
    """Frames per video of a zarr split: its `lengths` array (fps stores), else every row's T."""
    return group["lengths"][:] if "lengths" in group else np.full(group["frames"].shape[0], group["frames"].shape[1])


def jpeg_members(sample: dict) -> list[bytes]:
    """A WebDataset sample's JPEG frames, in order (members <key>.0000.jpg, <key>.0001.jpg, ...)."""
    return [sample[k] for k in sorted(k for k in sample if k.endswith(".jpg"))]


@dataclass
class Store:
    root: Path
    index: dict  # store.json

    @classmethod
    def open(cls, root: str | Path) -> "Store":
        root = Path(root)
        path = root / "store.json"
        if not path.is_file():
            hint = " (extraction unfinished: rerun `vidpipe extract`, or `--finalize` it)" if (root / "_extract").is_dir() else ""
            raise VidpipeError(f"{path} not found: {root} is not a finished vidpipe store{hint}")
        index = json.loads(path.read_text())
        if index.get("format") == "vidpipe-features":
            raise VidpipeError(f"{root} is a feature store (from `vidpipe cache-features`), not a clip store; "
                               f"its clip store is {index['source_store']['path']}")
        if "vidpipe_store" not in index:
            raise VidpipeError(f"{path} is not a vidpipe store index")
        return cls(root, index)

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
        self._check_split(split)
        return [str(self.root / f["path"]) for f in self.index["splits"][split]["files"]]

    def ids(self, split: str) -> list[str]:
        """The ids of the videos stored in a split, in store order (the manifest's order, failures left out)."""
        from vidpipe.datasets.manifest import Manifest

        self._check_split(split)
        failed = {f["id"] for f in self.index["failures"] if f.get("split") == split}
        return [r.id for r in Manifest.read(self.root / "manifest.jsonl").split_records(split) if r.id not in failed]

    def _check_split(self, split: str) -> None:
        if split not in self.index["splits"]:
            raise VidpipeError(f"store {self.root} has no split '{split}'; it has {', '.join(self.splits)}")

    def samples(self, split: str) -> Iterator[tuple[str, np.ndarray, int, dict]]:
        """(id, frames uint8 (T, H, W, 3), label, metadata) for every stored video of a split, in store order."""
        self._check_split(split)
        if self.format == "webdataset":
            import tarfile

            import webdataset as wds

            for shard in self.shard_paths(split):  # one shard at a time, so a damaged one can be named
                try:
                    for s in wds.WebDataset(shard, shardshuffle=False, empty_check=False).decode():
                        meta = s["json"]
                        yield meta["id"], s["frames.npy"] if "frames.npy" in s else jpeg.decode(jpeg_members(s)), int(s["cls"]), meta
                except (tarfile.TarError, OSError, ValueError, KeyError) as e:
                    raise damaged_shard(shard, e) from None
        else:
            import zarr

            group = zarr.open_group(self.root / self.index["splits"][split]["array"], mode="r")
            frames, labels, valid, metas = group["frames"], group["labels"][:], group["valid"][:], group["meta"][:]
            lengths = zarr_lengths(group)
            for i in np.flatnonzero(valid):
                meta = json.loads(metas[i])
                video = frames[i][: lengths[i]]  # fps stores: the video's own T frames of its row
                yield meta["id"], jpeg.decode(video) if self.codec == "jpeg" else video, int(labels[i]), meta

    def verify(self, progress=None) -> list[str]:
        """Recompute every checksum and read every sample; returns the problems found (empty = intact)."""
        problems = []
        for split, entry in self.index["splits"].items():
            damaged = verify_files(self.root, entry["files"], progress)
            problems += damaged
            if damaged:  # this split's samples cannot be trusted; the next split's still get read
                continue
            n = 0
            try:
                for vid, frames, label, _ in self.samples(split):
                    t_ok = frames.shape[0] == self.clip_shape[0] if self.mode == "uniform" else 1 <= frames.shape[0] <= self.clip_shape[0]
                    if not t_ok or frames.shape[1:] != self.clip_shape[1:] or frames.dtype != np.uint8 or not 0 <= label < len(self.classes):
                        problems.append(f"{split}/{vid}: frames {frames.shape} {frames.dtype}, label {label}")
                    n += 1
            except Exception as e:  # a damaged shard surfaces here as a reader error
                problems.append(f"{split}: reading failed after {n} samples: {e}")
            if n != entry["count"]:
                problems.append(f"{split}: read {n} samples, store.json says {entry['count']}")
        return problems

    def contact_sheet(self, path: str | Path, split: str | None = None, per_class: int = 1, frames: int = 8) -> Path:
        """A PNG grid: one row per stored video (first `per_class` of each class), `frames` frames across."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if split is not None:
            self._check_split(split)
            if not self.index["splits"][split]["count"]:
                raise VidpipeError(f"split '{split}' of {self.root} holds no stored videos; pass --split with one of "
                                   f"{', '.join(s for s in self.splits if self.index['splits'][s]['count']) or '(none: every video failed)'}")
        else:
            stored = [s for s in self.splits if self.index["splits"][s]["count"]]
            if not stored:
                raise VidpipeError(f"{self.root} holds no stored videos (every video failed; see failures.jsonl)")
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
