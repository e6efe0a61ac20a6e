"""Manifests: the single input of extraction.

A manifest is JSON Lines. The first line is a header (dataset, root, classes, what was missing);
every following line is one video record. Paths are relative to the root so a dataset can move.

Manifests are passed around, so every line is checked when it is read, and a bad one is one error
that names its line:
- a record's `path` is relative to the root and stays inside it: no absolute path, no `..`. A
  manifest that really points elsewhere is read only with `allow_outside_root` (`--allow-outside-root`);
- `split` becomes a folder and file name in the store: letters, digits, `_ . + -`;
- `id` becomes a tar member name: `/`-separated names, none empty, `.` or `..`, no control characters;
- `label` indexes the class list and `label_name` is that class.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidpipe.files import relative_inside, safe_component, write_text_atomic
from vidpipe.errors import VidpipeError

MANIFEST_VERSION = 1


def hash_fraction(key: str) -> float:
    """A stable number in [0, 1) from a string, the same on every machine and Python run: it picks the
    videos of a split carved by hash (the folder adapter's val, training's held-out val)."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64


def stratified_holdout(videos: list[tuple[str, object]], fraction: float) -> set[str]:
    """The ids a holdout of `fraction` takes from (id, class) pairs: in each class, the round(fraction x n)
    ids of smallest `hash_fraction` (stable on every machine), at least one where the class has two or
    more videos and none where it has one. Every class is then validated, whatever the draw."""
    by_class: dict = {}
    for vid, label in videos:
        by_class.setdefault(label, []).append(vid)
    held = set()
    for ids in by_class.values():
        if len(ids) < 2 or fraction <= 0:
            continue
        k = min(len(ids) - 1, max(1, round(fraction * len(ids))))
        held.update(sorted(ids, key=hash_fraction)[:k])
    return held


SMALL_VAL = 30  # fewer validation videos than this: an accuracy step above 3 points


def small_val_note(videos: int, classes_without: int = 0) -> str | None:
    """A warning for a validation set too small to choose a checkpoint on, or None."""
    if videos == 0 or videos >= SMALL_VAL and not classes_without:
        return None
    lacking = f"; {classes_without} class{'es have' if classes_without != 1 else ' has'} none" if classes_without else ""
    return (f"val holds {videos} video{'s' if videos != 1 else ''} (accuracy moves in steps of {100 / videos:.1f} points){lacking}: "
            "too few to choose a checkpoint reliably; add videos or raise the validation fraction")


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
    # a record whose path is a folder of numbered images (Something-Something V1, mmaction2 rawframes) is a video
    # at this frame rate; None: every record is a video file
    frame_fps: float | None = None

    allow_outside_root: bool = field(default=False, repr=False, compare=False)  # not written: a reader's choice

    def __post_init__(self):
        check_classes(self.classes, "manifest")
        if self.frame_fps is not None and (isinstance(self.frame_fps, bool) or not isinstance(self.frame_fps, (int, float))
                                           or not 0 < self.frame_fps <= 1000):
            raise VidpipeError(f"manifest frame_fps must be a frame rate in (0, 1000]; got {self.frame_fps!r}")
        for r in self.records:
            check_record(r, self.classes, self.allow_outside_root, f"manifest record {r.id!r}")
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

    def small_val(self) -> str | None:
        """small_val_note for this manifest's val split (None without one)."""
        val = self.counts().get("val")
        return None if val is None else small_val_note(sum(val.values()), sum(1 for n in val.values() if n == 0))

    def header(self) -> dict:
        return {
            "vidpipe_manifest": MANIFEST_VERSION,
            "dataset": self.dataset,
            "root": self.root,
            "split_id": self.split_id,
            "classes": self.classes,
            "num_videos": len(self.records),
            "missing": self.missing,
            **({"frame_fps": self.frame_fps} if self.frame_fps is not None else {}),  # manifests of video files keep their form
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
    def loads(cls, text: str, source: str = "<string>", allow_outside_root: bool = False) -> "Manifest":
        lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        try:
            header = json.loads(lines[0][1]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if not isinstance(header, dict) or "vidpipe_manifest" not in header:
            raise VidpipeError(f"{source} is not a vidpipe manifest; write one with `vidpipe manifest --dataset X --root R -o {source}`")
        for key, tp in (("dataset", str), ("root", str), ("classes", list)):
            if not isinstance(header.get(key), tp):
                raise VidpipeError(f"{source}:{lines[0][0]}: the header's {key} is missing or not a {tp.__name__}; rewrite it with `vidpipe manifest`")
        classes = list(header["classes"])
        check_classes(classes, f"{source}:{lines[0][0]}")
        records = [_record(ln, f"{source}:{n}", classes, allow_outside_root) for n, ln in lines[1:]]
        return cls(
            dataset=header["dataset"],
            root=header["root"],
            classes=classes,
            records=records,
            split_id=header.get("split_id"),
            missing=header.get("missing", []),
            frame_fps=header.get("frame_fps"),
            allow_outside_root=allow_outside_root,
        )

    @classmethod
    def read(cls, path: str | Path, allow_outside_root: bool = False) -> "Manifest":
        path = Path(path)
        if not path.is_file():
            raise VidpipeError(f"manifest {path} not found; write one with `vidpipe manifest --dataset X --root R -o {path}`")
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise VidpipeError(f"{path} is not a vidpipe manifest (not UTF-8 text)") from None
        return cls.loads(text, source=str(path), allow_outside_root=allow_outside_root)

    def abspath(self, record: Record) -> Path:
        return Path(self.root) / record.path


_FIELDS = {"id": str, "path": str, "label": int, "label_name": str, "split": str}


def _record(line: str, where: str, classes: list[str], allow_outside_root: bool) -> Record:
    """One manifest line as a Record, checked; every fault is one error naming `where` (file:line)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise VidpipeError(f"{where}: not valid JSON ({e.msg}); each record is one JSON object per line") from None
    if not isinstance(data, dict):
        raise VidpipeError(f"{where}: a record must be a JSON object with {', '.join(_FIELDS)}")
    unknown, missing = sorted(set(data) - set(_FIELDS)), [k for k in _FIELDS if k not in data]
    if unknown or missing:
        said = "; ".join(x for x in (f"unknown key(s) {unknown}" if unknown else "", f"missing {missing}" if missing else "") if x)
        raise VidpipeError(f"{where}: {said}; a record has exactly {', '.join(_FIELDS)}")
    for key, tp in _FIELDS.items():
        if not isinstance(data[key], tp) or isinstance(data[key], bool):
            raise VidpipeError(f"{where}: {key} must be a {tp.__name__}; got {data[key]!r}")
    record = Record(**data)
    check_record(record, classes, allow_outside_root, where)
    return record


def check_classes(classes: list, where: str) -> None:
    bad = [c for c in classes if not isinstance(c, str) or not c.strip() or any(ord(ch) < 32 for ch in c)]
    if bad or not classes:
        raise VidpipeError(f"{where}: class names must be non-empty text without control characters; got {bad[:3] or 'no classes'}")
    dupes = [c for c, n in Counter(classes).items() if n > 1]
    if dupes:
        raise VidpipeError(f"{where}: duplicate class names {dupes[:3]}")


def check_id(video_id: str, where: str) -> None:
    """An id is a tar member name in a shard (and a key in every report): `/`-separated names, none
    empty, `.` or `..`, no control characters or backslashes."""
    parts = video_id.split("/") if isinstance(video_id, str) else [""]
    if any(p in ("", ".", "..") for p in parts) or any(ord(c) < 32 for c in video_id) or "\\" in video_id:
        raise VidpipeError(f"{where}: id {video_id!r} cannot name a sample (empty, '.', '..' or control characters); give it a plain id")


def check_record(r: Record, classes: list[str], allow_outside_root: bool, where: str) -> None:
    safe_component(r.split, f"{where}: split")
    check_id(r.id, where)
    if not 0 <= r.label < len(classes) or classes[r.label] != r.label_name:
        raise VidpipeError(f"{where}: label {r.label} ({r.label_name!r}) is not in the manifest's {len(classes)} classes")
    if not allow_outside_root:
        try:
            relative_inside(r.path, f"{where}: path")
        except VidpipeError as e:
            raise VidpipeError(f"{e}; a manifest path is relative to the root and stays inside it (pass --allow-outside-root "
                               "if the manifest is yours and means it)") from None
    elif not isinstance(r.path, str) or not r.path:
        raise VidpipeError(f"{where}: path must be a file path; got {r.path!r}")
