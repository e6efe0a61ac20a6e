"""Manifests: the single input of extraction.

A manifest is JSON Lines. The first line is a header (dataset, root, classes, what was missing);
every following line is one video record. Paths are relative to the root so a dataset can move.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidpipe.files import write_text_atomic
from vidpipe.errors import VidpipeError

MANIFEST_VERSION = 1


def hash_fraction(key: str) -> float:
    """A stable number in [0, 1) from a string, the same on every machine and Python run: it picks the
    videos of a split carved by hash (the folder adapter's val, training's held-out val)."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class Record:
    id: str  # stable, unique within the dataset; becomes the sample's __key__
    path: str  # relative to the manifest root
    label: int  # index into Manifest.classes
    label_name: str
    split: str  # "train", "val" or "test"


@dataclass
class Manifest:
    dataset: str
    root: str  # absolute path of the dataset root
    classes: list[str]
    records: list[Record]
    split_id: int | None = None  # official split number where a dataset has several (HMDB51, UCF101)
    missing: list[dict] = field(default_factory=list)  # listed by the annotations but not on disk

    def __post_init__(self):
        ids = Counter(r.id for r in self.records)
        dupes = [i for i, n in ids.items() if n > 1]
        if dupes:
            raise VidpipeError(f"manifest has duplicate video ids, e.g. {dupes[:3]}; ids must be unique")

    @property
    def splits(self) -> list[str]:
        order = {"train": 0, "val": 1, "test": 2}
        return sorted({r.split for r in self.records}, key=lambda s: (order.get(s, 9), s))

    def split_records(self, split: str) -> list[Record]:
        return [r for r in self.records if r.split == split]

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class_name: count}} including classes with zero videos in a split."""
        out = {}
        for split in self.splits:
            c = Counter(r.label_name for r in self.split_records(split))
            out[split] = {name: c.get(name, 0) for name in self.classes}
        return out

    def header(self) -> dict:
        return {
            "vidpipe_manifest": MANIFEST_VERSION,
            "dataset": self.dataset,
            "root": self.root,
            "split_id": self.split_id,
            "classes": self.classes,
            "num_videos": len(self.records),
            "missing": self.missing,
        }

    def dumps(self) -> str:
        lines = [json.dumps(self.header())]
        lines += [json.dumps(asdict(r)) for r in self.records]
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, self.dumps())

    @classmethod
    def loads(cls, text: str, source: str = "<string>") -> "Manifest":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if "vidpipe_manifest" not in header:
            raise VidpipeError(f"{source} is not a vidpipe manifest; write one with `vidpipe manifest --dataset X --root R -o {source}`")
        records = [Record(**json.loads(ln)) for ln in lines[1:]]
        return cls(
            dataset=header["dataset"],
            root=header["root"],
            classes=list(header["classes"]),
            records=records,
            split_id=header.get("split_id"),
            missing=header.get("missing", []),
        )

    @classmethod
    def read(cls, path: str | Path) -> "Manifest":
        path = Path(path)
        if not path.is_file():
            raise VidpipeError(f"manifest {path} not found; write one with `vidpipe manifest --dataset X --root R -o {path}`")
        return cls.loads(path.read_text(), source=str(path))

    def abspath(self, record: Record) -> Path:
        return Path(self.root) / record.path
