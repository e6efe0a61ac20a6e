"""What an extraction will write, decided once: its settings (`ExtractConfig`) and its plan (`ExtractPlan`).

The plan is built from (manifest, settings) before anything is decoded and kept in
STORE/_extract/plan.json with every constant that shaped it (the per-sample overhead and the JPEG size
estimate behind the videos per shard), so a later vidpipe resumes a half-finished store exactly as it
was cut, and finalize reads the units back instead of working them out again. Progress is one record
per finished unit in STORE/_extract/parts/. `settle_plan` is the plan-or-refuse step every resumable
stage shares (extraction here, the feature cache in `stores.features`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidpipe.datasets.manifest import Manifest
from vidpipe.errors import VidpipeError
from vidpipe.files import inside, read_json, write_text_atomic
from vidpipe.io import dali, pyav
from vidpipe.io.decode import ClipSpec
from vidpipe.io.jpeg import SUBSAMPLINGS
from vidpipe.stores.writers import Unit
from vidpipe.typed import differences

STORE_FORMAT_VERSION = 1
FORMATS = ("webdataset", "zarr")
FRAME_CODECS = ("raw", "jpeg")
BACKENDS = ("auto", "pyav", "ffmpeg", "dali")
SAMPLE_OVERHEAD = 2048  # tar headers, npy header and json per sample, for shard sizing
JPEG_SIZE_ESTIMATE = 0.1  # JPEG q90 frames are about a tenth of raw: shards of JPEG stores are sized with it
DEFAULT_MAX_SECONDS = 10.0  # fps stores: the longest window kept of a video
# plans written before they recorded their constants were cut with these (vidpipe <= 0.9)
LEGACY_CONSTANTS = {"sample_overhead": 2048, "jpeg_size_estimate": 0.1}


def parse_size(text: str | int) -> int:
    """'256MB' -> bytes (powers of 1024: KB, MB, GB)."""
    if isinstance(text, int):
        return text
    units = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    t = text.strip().upper()
    number = t.rstrip("KMGB")
    try:
        value = int(float(number) * units[t[len(number):]])
    except (ValueError, KeyError):
        raise VidpipeError(f"cannot read size '{text}'; write it like 256MB or 1GB") from None
    if value <= 0:
        raise VidpipeError(f"--shard-size must be positive; got '{text}'")
    return value


@dataclass
class ExtractConfig:
    frames: int = 32  # T frames per video, spread uniformly over the whole video
    size: int = 128  # output height; the frame covers size x floor(size * aspect) and is centre-cropped
    aspect: float = 4 / 3
    format: str = "webdataset"
    backend: str = "auto"
    shard_size: int = 256 << 20  # bytes of frames per shard file
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_failures: float = 0.05  # fraction of videos that may fail before the exit status says so
    frame_codec: str = "raw"  # raw: uncompressed uint8 frames (zstd in zarr); jpeg: one JPEG per frame
    jpeg_quality: int = 90
    jpeg_subsampling: str = "auto"  # JPEG chroma: auto (the source's: 420 for 4:2:0 videos), 444, 422 or 420
    fps: float | None = None  # fps mode: every video resampled to this constant rate (T varies per video)
    max_seconds: float | None = None  # fps mode: longer videos keep a centred window this long (default 10)
    allow_stills: bool = False  # store a still picture (an image file, cover art) as one repeated frame

    def __post_init__(self):
        self.shard_size = parse_size(self.shard_size)
        if self.format not in FORMATS:
            raise VidpipeError(f"--format must be one of {', '.join(FORMATS)}; got '{self.format}'")
        if self.backend not in BACKENDS:
            raise VidpipeError(f"--backend must be one of {', '.join(BACKENDS)}; got '{self.backend}'")
        if self.frames < 1 or self.size < 16:
            raise VidpipeError(f"--frames must be >= 1 and --size >= 16; got {self.frames} and {self.size}")
        if self.workers < 1:
            raise VidpipeError(f"--workers must be >= 1; got {self.workers}")
        if not 0 <= self.max_failures <= 1:
            raise VidpipeError(f"--max-failures is a fraction in [0, 1]; got {self.max_failures}")
        if self.frame_codec not in FRAME_CODECS:
            raise VidpipeError(f"--frame-codec must be one of {', '.join(FRAME_CODECS)}; got '{self.frame_codec}'")
        if not 1 <= self.jpeg_quality <= 100:
            raise VidpipeError(f"--jpeg-quality must be in [1, 100]; got {self.jpeg_quality}")
        if self.jpeg_subsampling not in SUBSAMPLINGS:
            raise VidpipeError(f"--jpeg-subsampling must be one of {', '.join(SUBSAMPLINGS)}; got '{self.jpeg_subsampling}'")
        if self.fps is not None:
            self.fps = float(self.fps)
            if not 0 < self.fps <= 120:
                raise VidpipeError(f"--fps must be in (0, 120]; got {self.fps}")
            self.max_seconds = DEFAULT_MAX_SECONDS if self.max_seconds is None else self.max_seconds
            if self.max_seconds <= 0:
                raise VidpipeError(f"--max-seconds must be positive; got {self.max_seconds}")
            if self.backend == "dali":
                raise VidpipeError("--fps stores are decoded by FFmpeg; use --backend pyav, ffmpeg or auto")
        elif self.max_seconds is not None:
            raise VidpipeError("--max-seconds applies to --fps stores; add --fps F")

    @property
    def spec(self) -> ClipSpec:
        if self.fps is not None:  # frames: the most a video can have, max_seconds x fps
            return ClipSpec(math.ceil(self.max_seconds * self.fps - 1e-6), self.size, int(self.size * self.aspect), self.fps, self.max_seconds)
        return ClipSpec(self.frames, self.size, int(self.size * self.aspect))

    def identity(self) -> dict:
        """The settings that determine a store's bytes; a rerun must match them."""
        d = asdict(self)
        d.pop("workers")
        d.pop("max_failures")
        d["backend"] = resolve_backend(self.backend, self.fps)
        if self.frame_codec == "raw" or self.jpeg_subsampling == "444":  # stores made before the choice were 444
            d.pop("jpeg_subsampling")
        if self.frame_codec == "raw":  # stores made before JPEG frames keep their identity
            d.pop("frame_codec")
            d.pop("jpeg_quality")
        if self.fps is None:  # likewise stores made before fps mode
            d.pop("fps")
            d.pop("max_seconds")
        else:
            d.pop("frames")  # set by fps and max_seconds
        if not self.allow_stills:  # likewise stores made before stills were refused
            d.pop("allow_stills")
        return d


def resolve_backend(backend: str, fps: float | None = None) -> str:
    """auto = DALI where it is installed and useful (a GPU to decode on; uniform stores only), else FFmpeg
    in-process through PyAV (no process start per video), else an ffmpeg process per video."""
    if backend == "dali":
        dali.require_dali()
        return "dali"
    if backend == "pyav" and not pyav.pyav_installed():
        raise VidpipeError("--backend pyav needs PyAV: pip install av (or use --backend ffmpeg)")
    if backend == "auto":
        if fps is None and dali.gpu_present() and dali.dali_installed():  # no GPU: DALI is not even imported
            return "dali"
        return "pyav" if pyav.pyav_installed() else "ffmpeg"
    return backend


@dataclass(frozen=True)
class ExtractPlan:
    """A store's shape, decided once: the settings, the manifest (by its sha256), the videos per shard and
    the constants they came from, and each split's videos. Its identity (what a rerun must match) is the
    settings, the manifest and the store format; the constants only say how the plan was cut."""

    settings: dict  # ExtractConfig.identity(), the backend resolved
    manifest_sha256: str
    per_shard: int  # videos per unit (one shard file, or one zarr shard)
    splits: dict  # split -> videos listed, in manifest order
    sample_overhead: int
    jpeg_size_estimate: float
    store_format: int = STORE_FORMAT_VERSION

    @classmethod
    def make(cls, manifest: Manifest, cfg: ExtractConfig, manifest_text: str | None = None) -> "ExtractPlan":
        text = manifest.dumps() if manifest_text is None else manifest_text
        splits = {s: len(manifest.split_records(s)) for s in manifest.splits}
        constants = {"sample_overhead": SAMPLE_OVERHEAD, "jpeg_size_estimate": JPEG_SIZE_ESTIMATE}  # this release's
        return cls(cfg.identity(), hashlib.sha256(text.encode()).hexdigest(), per_shard_count(cfg, splits, **constants), splits, **constants)

    @property
    def config(self) -> ExtractConfig:
        """The settings as a config; a JPEG store whose settings name no subsampling is 4:4:4 (identity leaves it out)."""
        return _recorded_config({"jpeg_subsampling": "444", **self.settings})

    def identity(self) -> dict:
        """What a rerun must match (the whole plan.json of stores made before plans kept their constants)."""
        return {"settings": self.settings, "manifest_sha256": self.manifest_sha256, "vidpipe_store": self.store_format}

    def units(self, manifest: Manifest) -> list[Unit]:
        """The plan's units with their records, from the manifest the plan was made for."""
        units = []
        for split in manifest.splits:
            records = manifest.split_records(split)
            if len(records) != self.splits.get(split):
                raise VidpipeError(f"the store's manifest lists {len(records)} {split} videos, its plan {self.splits.get(split)}; "
                                   "extract it again with --overwrite")
            for i, start in enumerate(range(0, len(records), self.per_shard)):
                units.append(Unit(split, i, start, tuple(records[start : start + self.per_shard])))
        return units

    def to_json(self) -> str:
        constants = {"sample_overhead": self.sample_overhead, "jpeg_size_estimate": self.jpeg_size_estimate}
        return json.dumps({**self.identity(), "per_shard": self.per_shard, "splits": self.splits, "constants": constants},
                          indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, data: dict, manifest: Manifest | None = None) -> "ExtractPlan":
        """A plan.json read back. One from before plans kept their constants is cut again with the constants
        of its time (`LEGACY_CONSTANTS`), from the manifest it was made for."""
        if not isinstance(data, dict) or not isinstance(data.get("settings"), dict) or not isinstance(data.get("manifest_sha256"), str):
            raise VidpipeError(f"_extract/plan.json is not an extraction plan; {_REDO}")
        common = dict(settings=data["settings"], manifest_sha256=data["manifest_sha256"], store_format=data.get("vidpipe_store", 1))
        if "per_shard" in data:
            per_shard, splits, constants = data["per_shard"], data.get("splits"), data.get("constants")
            count = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
            if not (count(per_shard) and per_shard >= 1 and isinstance(splits, dict) and all(count(n) and n >= 0 for n in splits.values())
                    and isinstance(constants, dict) and set(constants) == set(LEGACY_CONSTANTS)
                    and all(isinstance(v, (int, float)) and v >= 0 for v in constants.values())):
                raise VidpipeError(f"_extract/plan.json holds no usable per_shard, splits and constants; {_REDO}")
            return cls(per_shard=per_shard, splits=splits, **constants, **common)
        if manifest is None:
            raise ValueError("a plan without its constants is cut from its manifest")
        cfg = _recorded_config(data["settings"])
        splits = {s: len(manifest.split_records(s)) for s in manifest.splits}
        return cls(per_shard=per_shard_count(cfg, splits, **LEGACY_CONSTANTS), splits=splits, **LEGACY_CONSTANTS, **common)


_REDO = "extract the store again with --overwrite"


def _recorded_config(settings: dict) -> ExtractConfig:
    """The ExtractConfig of settings a plan recorded (untrusted: a store's own file); settings this vidpipe
    does not know, or values it refuses, are one line."""
    try:
        return ExtractConfig(**settings)
    except TypeError as e:
        raise VidpipeError(f"_extract/plan.json records settings this vidpipe does not know ({e}); {_REDO}") from None


def per_shard_count(cfg: ExtractConfig, splits: dict, sample_overhead: int, jpeg_size_estimate: float) -> int:
    """Videos per shard: as many as fit in --shard-size, but no more than the largest split holds (a
    zarr shard's chunk index is sized for a full shard, 16 bytes per frame)."""
    per_video = cfg.spec.nbytes * (jpeg_size_estimate if cfg.frame_codec == "jpeg" else 1)
    largest = max(splits.values(), default=1)
    return max(1, min(largest, int(cfg.shard_size // (per_video + sample_overhead))))


def settle_plan(plan_file: Path, wanted: dict, out: Path, what: str, overwrite: bool, identity=lambda plan: plan) -> str:
    """The plan-or-refuse step of a resumable stage. 'none': no plan yet; 'same': `plan_file` holds the
    wanted plan (carry on); 'replace': it holds another (or a damaged one) and `overwrite` says start
    again. Without `overwrite`, another plan is refused in one line naming each difference, old -> new."""
    if not plan_file.is_file():
        return "none"
    fix = f"pass --overwrite to start {out} again or choose another --out"
    try:
        existing = read_json(plan_file, fix)
        old = identity(existing)
    except (VidpipeError, TypeError, KeyError, AttributeError):
        if overwrite:
            return "replace"
        raise VidpipeError(f"{plan_file} is damaged; {fix}") from None
    new = identity(wanted)
    if old == new:
        return "same"
    if overwrite:
        return "replace"
    raise VidpipeError(f"{out} holds {what} made differently ({'; '.join(differences(old, new))}); "
                       "pass --overwrite to replace it or choose another --out")


def extract_identity(plan: dict) -> dict:
    """An extraction plan's identity as settle_plan compares it: the settings by name, then the manifest."""
    return {**plan["settings"], "manifest": plan["manifest_sha256"], "store format": plan.get("vidpipe_store", 1)}


# ------------------------------------------------------------------ the plan's records in STORE/_extract/
def control(store: Path) -> Path:
    return store / "_extract"


def plan_file(store: Path) -> Path:
    return control(store) / "plan.json"


def read_plan(store: Path, manifest: Manifest | None = None) -> ExtractPlan:
    return ExtractPlan.from_json(read_json(plan_file(store), f"extract {store} again with --overwrite"), manifest)


def write_plan(store: Path, plan: ExtractPlan) -> None:
    write_text_atomic(plan_file(store), plan.to_json())


@contextlib.contextmanager
def store_lock(store: Path):
    """Exclusive, blocking lock on STORE/_extract/store.lock for the steps parts must not run together.
    flock is released by the kernel when the holder dies, so a killed part never leaves it held."""
    control(store).mkdir(parents=True, exist_ok=True)
    fd = os.open(control(store) / "store.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def part_file(store: Path, unit: Unit) -> Path:
    return control(store) / "parts" / f"{unit.name}.json"


def unit_done(store: Path, unit: Unit) -> bool:
    """A unit is done when its record is written and every file it names is there at its size."""
    part = part_file(store, unit)
    if not part.is_file():
        return False
    record = read_json(part, "delete it to extract that shard again, or rerun with --overwrite")
    paths = [inside(store, f["path"], f"part record {part}") for f in record["files"]]
    return all(p.is_file() and p.stat().st_size == f["bytes"] for p, f in zip(paths, record["files"]))


def write_part(store: Path, unit: Unit, files: list[dict], metas: list[dict], failures: list[dict]) -> None:
    record = {"unit": unit.name, "split": unit.split, "index": unit.index, "start": unit.start,
              "count": len(metas), "files": files, "videos": metas, "failures": failures}
    write_text_atomic(part_file(store, unit), json.dumps(record, sort_keys=True))
