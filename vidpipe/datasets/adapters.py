"""Dataset adapters: a dataset root in its official layout -> a Manifest.

Each adapter is a plain function `adapter(root, split=None, **options) -> Manifest`. The layouts
they read are described in vidpipe/manifests/<name>.toml and in ../shared/reference-facts.md.
Videos listed by the annotations but absent on disk are reported in `Manifest.missing`, never fatal;
a missing root or annotation file is a VidpipeError that names what was expected where.
"""

from __future__ import annotations

import csv
import inspect
import re
from pathlib import Path

from vidpipe.errors import VidpipeError
from vidpipe.files import read_json
from vidpipe.datasets.manifest import Manifest, Record, stratified_holdout

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")
SPLIT_DIRS = ("train", "val", "test")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise VidpipeError(f"{what}: expected directory {path} does not exist")
    return path


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise VidpipeError(f"{what}: expected file {path} does not exist")
    return path


def _check_split(split: int | None, dataset: str, allowed=(1, 2, 3)) -> int:
    split = 1 if split is None else int(split)
    if split not in allowed:
        raise VidpipeError(f"{dataset} has official splits {list(allowed)}; got --split {split}")
    return split


def _index_videos(root: Path) -> dict[str, Path]:
    """Every video file below root by stem (Kinetics and Something-Something name files by id)."""
    return {p.stem: p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()}


def _finish(dataset, root, classes, rows, split_id=None, missing=(), frame_fps=None) -> Manifest:
    """rows: (id, path, label_name, split) with path absolute; drops files that do not exist (frame_fps:
    the paths are frame folders at that rate)."""
    index = {c: i for i, c in enumerate(classes)}
    records, missing = [], list(missing)
    for vid, path, label_name, split in rows:
        if not (Path(path).is_dir() if frame_fps else Path(path).is_file()):
            missing.append({"id": vid, "path": str(Path(path).relative_to(root)), "split": split})
            continue
        rel = str(Path(path).relative_to(root))
        records.append(Record(id=vid, path=rel, label=index[label_name], label_name=label_name, split=split))
    records.sort(key=lambda r: (r.split, r.id))
    return Manifest(dataset=dataset, root=str(root), classes=list(classes), records=records, split_id=split_id, missing=missing,
                    frame_fps=frame_fps)


def hmdb51(root, split=None) -> Manifest:
    """<root>/<class>/<name>.avi + <root>/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt."""
    root = _require_dir(Path(root).resolve(), "hmdb51 root")
    split = _check_split(split, "hmdb51")
    split_dir = _require_dir(root / "testTrainMulti_7030_splits", "hmdb51 split files")
    suffix = f"_test_split{split}.txt"
    split_files = sorted(split_dir.glob(f"*{suffix}"))
    if not split_files:
        raise VidpipeError(f"hmdb51: no files named <class>{suffix} in {split_dir}")
    classes = [f.name[: -len(suffix)] for f in split_files]
    class_dirs = {d.name for d in root.iterdir() if d.is_dir() and d.name != split_dir.name}
    without = sorted(class_dirs - set(classes))
    if without:
        raise VidpipeError(f"hmdb51: class folder(s) {without} have no {split_dir.name}/<class>{suffix}")
    rows = []
    for cls, f in zip(classes, split_files):
        for line in f.read_text().splitlines():
            parts = line.split()  # tolerates the official files' trailing spaces
            if not parts:
                continue
            name, tag = parts[0], parts[1]
            if tag == "0":  # unused in this split
                continue
            rows.append((Path(name).stem, root / cls / name, cls, "train" if tag == "1" else "test"))
    return _finish("hmdb51", root, classes, rows, split_id=split)


def ucf101(root, split=None) -> Manifest:
    """<root>/UCF-101/<Class>/v_*.avi + <root>/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt."""
    root = _require_dir(Path(root).resolve(), "ucf101 root")
    split = _check_split(split, "ucf101")
    videos = _require_dir(root / "UCF-101", "ucf101 videos")
    lists = _require_dir(root / "ucfTrainTestlist", "ucf101 split lists")
    class_ind = _require_file(lists / "classInd.txt", "ucf101 class index")
    numbered = [line.split() for line in class_ind.read_text().splitlines() if line.strip()]
    classes = [name for _, name in sorted(numbered, key=lambda p: int(p[0]))]  # classInd is 1-based
    by_lower = {c.lower(): c for c in classes}
    rows = []
    for split_name, list_name in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
        for line in _require_file(lists / list_name, f"ucf101 split {split}").read_text().splitlines():
            parts = line.split()
            if not parts:
                continue
            rel = parts[0]
            folder = rel.split("/")[0]
            if folder.lower() not in by_lower:
                raise VidpipeError(f"ucf101: {list_name} names class '{folder}' which is not in classInd.txt")
            rows.append((Path(rel).stem, videos / rel, by_lower[folder.lower()], split_name))
    return _finish("ucf101", root, classes, rows, split_id=split)


def _kinetics(dataset: str, root, split=None) -> Manifest:
    """CSV `label,youtube_id,time_start,time_end,split[,is_cc]` + videos named
    <youtube_id>_<start:06d>_<end:06d>.<ext>, flat or under <split>/<label>/ (anywhere below root)."""
    root = _require_dir(Path(root).resolve(), f"{dataset} root")
    csv_dir = root / "annotations" if (root / "annotations").is_dir() else root
    csvs = {}
    for split_name, names in (("train", ("train.csv",)), ("val", ("validate.csv", "val.csv")), ("test", ("test.csv",))):
        found = [csv_dir / n for n in names if (csv_dir / n).is_file()]
        if found:
            csvs[split_name] = found[0]
    if "train" not in csvs:
        raise VidpipeError(f"{dataset}: expected annotation file {csv_dir / 'train.csv'} (and validate.csv) does not exist")
    parsed = {}
    for split_name, path in csvs.items():
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh)]
        if rows and "label" in rows[0] and all(r.get("label") for r in rows):
            parsed[split_name] = rows  # an unlabelled test CSV cannot train or evaluate: skipped
    classes = sorted({r["label"] for r in parsed["train"]})
    index = _index_videos(root)
    out, missing = [], []
    for split_name, rows in parsed.items():
        for r in rows:
            vid = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
            if r["label"] not in classes:
                raise VidpipeError(f"{dataset}: {csvs[split_name].name} has label '{r['label']}' absent from train.csv")
            if vid in index:
                out.append((vid, index[vid], r["label"], split_name))
            else:
                missing.append({"id": vid, "path": None, "split": split_name})
    return _finish(dataset, root, classes, out, missing=missing)


def kinetics400(root, split=None) -> Manifest:
    return _kinetics("kinetics400", root, split)


def kinetics600(root, split=None) -> Manifest:
    return _kinetics("kinetics600", root, split)


def sthv2_class_name(template: str) -> str:
    """'Putting [something] on [something]' -> 'Putting something on something' (labels.json's keys)."""
    return template.replace("[", "").replace("]", "")


def sthv2(root, split=None) -> Manifest:
    """labels.json (class -> index) + train.json / validation.json + <id>.webm anywhere below root."""
    root = _require_dir(Path(root).resolve(), "sthv2 root")
    ann = root / "annotations" if (root / "annotations").is_dir() else root
    labels = read_json(_require_file(ann / "labels.json", "sthv2 labels"), "it is Something-Something v2's labels.json")
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    index = _index_videos(root)
    rows, missing = [], []
    for split_name, fname in (("train", "train.json"), ("val", "validation.json")):
        for item in read_json(_require_file(ann / fname, f"sthv2 {split_name} annotations"), "it is Something-Something v2's annotation"):
            name = sthv2_class_name(item["template"])
            if name not in labels:
                raise VidpipeError(f"sthv2: {fname} entry {item['id']} has template '{name}' absent from labels.json")
            vid = str(item["id"])
            if vid in index:
                rows.append((vid, index[vid], name, split_name))
            else:
                missing.append({"id": vid, "path": f"{vid}.webm", "split": split_name})
    return _finish("sthv2", root, classes, rows, missing=missing)


def _annotation_dir(root: Path) -> Path:
    return root / "annotations" if (root / "annotations").is_dir() else root


def _frames_dir(root: Path, names: tuple[str, ...]) -> Path:
    """Where a frame-folder dataset keeps its per-video folders: the first of `names` below root, else root."""
    return next((root / n for n in names if (root / n).is_dir()), root)


STHV1_FPS = 12.0  # Something-Something V1's frames were extracted at 12 fps


def sthv1(root, split=None, frame_fps: float = STHV1_FPS) -> Manifest:
    """something-something-v1-{labels,train,validation}.csv + one folder of 00001.jpg... per video id (12 fps).

    Classes are labels.csv's lines in file order (what mmaction2's parser and the TSM/TIN lists use); each
    split line is `id;label name`. Frame folders: <root>/20bn-something-something-v1/<id>/ (the official
    archive), <root>/rawframes/<id>/ (mmaction2's), or <root>/<id>/.
    """
    root = _require_dir(Path(root).resolve(), "sthv1 root")
    ann = _annotation_dir(root)
    labels = _require_file(ann / "something-something-v1-labels.csv", "sthv1 labels")
    classes = [line.strip() for line in labels.read_text().splitlines() if line.strip()]
    frames = _frames_dir(root, ("20bn-something-something-v1", "rawframes"))
    rows, missing = [], []
    for split_name, fname in (("train", "something-something-v1-train.csv"), ("val", "something-something-v1-validation.csv")):
        path = _require_file(ann / fname, f"sthv1 {split_name} list")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            vid, sep, name = line.strip().partition(";")
            if not sep or name not in classes:
                raise VidpipeError(f"sthv1: {fname}:{n} is {line.strip()!r}; expected 'id;label' with a label of {labels.name}")
            if (frames / vid).is_dir():
                rows.append((vid, frames / vid, name, split_name))
            else:
                missing.append({"id": vid, "path": str((frames / vid).relative_to(root)), "split": split_name})
    return _finish("sthv1", root, classes, rows, missing=missing, frame_fps=frame_fps)


def rawframes(root, split=None, frame_fps: float = 30.0) -> Manifest:
    """mmaction2 rawframes: list files `<frame_dir> <total_frames> <label>` (`*train_list_rawframes.txt`,
    `*val_list_rawframes.txt`, in root or root/annotations), frame folders relative to root (or
    root/rawframes); class names from classes.txt (one per line) if present, else class_<label>."""
    root = _require_dir(Path(root).resolve(), "rawframes root")
    ann = _annotation_dir(root)
    lists = {}
    for split_name, pattern in (("train", "*train_list_rawframes.txt"), ("val", "*val_list_rawframes.txt"), ("test", "*test_list_rawframes.txt")):
        found = sorted(ann.glob(pattern))
        if len(found) > 1:
            raise VidpipeError(f"rawframes: several {pattern} in {ann} ({', '.join(p.name for p in found)}); keep one per split")
        if found:
            lists[split_name] = found[0]
    if "train" not in lists:
        raise VidpipeError(f"rawframes: expected a list file named <dataset>_train_list_rawframes.txt in {ann} (mmaction2's format)")
    entries = []
    for split_name, path in lists.items():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
                raise VidpipeError(f"rawframes: {path.name}:{n} is {line.strip()!r}; expected '<frame_dir> <total_frames> <label>' (one label)")
            entries.append((parts[0], int(parts[2]), split_name))
    names_file = ann / "classes.txt"
    if names_file.is_file():
        classes = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    else:
        classes = [f"class_{i}" for i in range(max(label for _, label, _ in entries) + 1)]
    base = _frames_dir(root, ("rawframes",))
    rows, missing = [], []
    for frame_dir, label, split_name in entries:
        if label >= len(classes):
            raise VidpipeError(f"rawframes: label {label} of {frame_dir} is beyond the {len(classes)} classes of {names_file.name}")
        if (base / frame_dir).is_dir():
            rows.append((frame_dir, base / frame_dir, classes[label], split_name))
        else:
            missing.append({"id": frame_dir, "path": str((base / frame_dir).relative_to(root)), "split": split_name})
    return _finish("rawframes", root, classes, rows, missing=missing, frame_fps=frame_fps)


MSR_ACTIVITIES = [
    "drink", "eat", "read book", "call cellphone", "write on a paper", "use laptop", "use vacuum cleaner",
    "cheer up", "sit still", "toss paper", "play game", "lie down on sofa", "walk", "play guitar", "stand up", "sit down",
]
_MSR_NAME = re.compile(r"a(\d\d)_s(\d\d)_e(\d\d)_rgb\.avi$")


def msr_daily_activity3d(root, split=None) -> Manifest:
    """a<AA>_s<SS>_e<EE>_rgb.avi anywhere below root; cross-subject: odd subjects train, even test."""
    root = _require_dir(Path(root).resolve(), "msr_daily_activity3d root")
    rows = []
    for p in sorted(root.rglob("*_rgb.avi")):
        m = _MSR_NAME.match(p.name)
        if not m:
            continue
        activity, subject = int(m.group(1)), int(m.group(2))
        if not 1 <= activity <= len(MSR_ACTIVITIES):
            raise VidpipeError(f"msr_daily_activity3d: {p.name} has activity {activity}, expected 01..16")
        rows.append((p.stem, p, MSR_ACTIVITIES[activity - 1], "train" if subject % 2 else "test"))
    if not rows:
        raise VidpipeError(f"msr_daily_activity3d: no files named a<AA>_s<SS>_e<EE>_rgb.avi below {root}")
    return _finish("msr_daily_activity3d", root, MSR_ACTIVITIES, rows)


def folder(root, split=None, val_fraction: float = 0.2, dataset: str = "folder") -> Manifest:
    """<root>/<class>/<video> (validation carved per class: `val_fraction` of each class's videos, at
    least one where it has two, chosen by a hash of the id) or <root>/{train,val,test}/<class>/<video>
    (explicit splits)."""
    root = _require_dir(Path(root).resolve(), f"{dataset} root")
    if not 0.0 <= val_fraction < 1.0:
        raise VidpipeError(f"--val-fraction must be in [0, 1); got {val_fraction}")
    explicit = [s for s in SPLIT_DIRS if (root / s).is_dir()]
    tops = [(root / s, s) for s in explicit] if explicit else [(root, None)]
    rows, classes = [], set()
    for top, split_name in tops:
        for class_dir in sorted(d for d in top.iterdir() if d.is_dir()):
            for p in sorted(class_dir.iterdir()):
                if p.suffix.lower() not in VIDEO_EXTENSIONS:
                    continue
                vid = f"{class_dir.name}/{p.stem}"
                rows.append((vid, p, class_dir.name, split_name))
                classes.add(class_dir.name)
    if not rows:
        layout = "<root>/<class>/<video> or <root>/{train,val,test}/<class>/<video>"
        raise VidpipeError(f"{dataset}: no videos ({', '.join(VIDEO_EXTENSIONS)}) found in {root}; expected {layout}")
    if not explicit:
        val = stratified_holdout([(vid, name) for vid, _, name, _ in rows], val_fraction)
        rows = [(vid, p, name, "val" if vid in val else "train") for vid, p, name, _ in rows]
    return _finish(dataset, root, sorted(classes), rows)


def synthetic(root, split=None) -> Manifest:
    """What `vidpipe synth` writes: the folder layout with explicit train/ and test/ directories."""
    return folder(root, dataset="synthetic")


ADAPTERS = {
    "hmdb51": hmdb51,
    "ucf101": ucf101,
    "kinetics400": kinetics400,
    "kinetics600": kinetics600,
    "sthv2": sthv2,
    "sthv1": sthv1,
    "rawframes": rawframes,
    "msr_daily_activity3d": msr_daily_activity3d,
    "folder": folder,
    "synthetic": synthetic,
}


FLAGS = {"val_fraction": "--val-fraction", "frame_fps": "--frame-fps"}  # adapter options and the flags that set them


def build_manifest(dataset: str, root, split: int | None = None, **options) -> Manifest:
    """The manifest of `dataset` at `root`. `options` set to None are left at the adapter's default; one
    the adapter does not take (e.g. frame_fps for a dataset of video files) is refused in one line."""
    if dataset not in ADAPTERS:
        raise VidpipeError(f"unknown dataset '{dataset}'; choose one of: {', '.join(ADAPTERS)} (see `vidpipe datasets`)")
    if not Path(root).exists():
        raise VidpipeError(f"dataset root {root} does not exist; pass --root pointing at the {dataset} folder")
    options = {k: v for k, v in options.items() if v is not None}
    takes = inspect.signature(ADAPTERS[dataset]).parameters
    for key in options:
        if key not in takes:
            users = ", ".join(name for name, fn in ADAPTERS.items() if key in inspect.signature(fn).parameters)
            raise VidpipeError(f"{FLAGS.get(key, key)} applies to {users}, not {dataset}")
    return ADAPTERS[dataset](root, split, **options)
