"""`vidpipe extract`: decode every video of a manifest once into a self-describing store.

Resumable by construction. The records of each split are cut into fixed *units* (one shard file
each) before anything is decoded; a unit is published by rename and then recorded in
STORE/_extract/parts/<unit>.json. A rerun skips recorded units and redoes the rest, so an interrupted
run (Ctrl-C, kill -9) ends with the same bytes as an uninterrupted one. Units are dealt round-robin
to `--num-shards` parts, so several machines can fill one store; the last part to finish (or
`--finalize`) writes STORE/store.json.

Parts never touch each other's files: each unit has its own temporary names and a part clears only
the leftovers of the units it is about to write. Preparing the store (plan, manifest, zarr arrays)
and finalizing it happen under an exclusive lock on STORE/_extract/store.lock, and finalizing is
idempotent, so parts that start or finish at the same moment give the same bytes as one run.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidpipe import __version__
from vidpipe.files import COMPONENT, exclusive_lock, inside, is_no_space, read_json, sha256_file, write_text_atomic
from vidpipe.errors import VidpipeError, no_space
from vidpipe.io import dali, jpeg, pyav
from vidpipe.io.decode import ClipSpec, check_usable, decode_clip
from vidpipe.io.ffmpeg import DecodeError, ffmpeg_version, probe_many
from vidpipe.datasets.manifest import Manifest
from vidpipe.stores.writers import Unit, WebDatasetShard, ZarrShard, file_entry, zarr_frames_array

STORE_FORMAT_VERSION = 1
FORMATS = ("webdataset", "zarr")
FRAME_CODECS = ("raw", "jpeg")
BACKENDS = ("auto", "pyav", "ffmpeg", "dali")
SAMPLE_OVERHEAD = 2048  # tar headers, npy header and json per sample, for shard sizing
CHUNK = 4  # videos a worker probes with one ffmpeg process, then decodes one by one
DEFAULT_MAX_SECONDS = 10.0  # fps stores: the longest window kept of a video
JPEG_SIZE_ESTIMATE = 0.1  # JPEG q90 frames are about a tenth of raw: shards of JPEG stores are sized with it


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
        if fps is None and dali.dali_installed() and dali.gpu_present():
            return "dali"
        return "pyav" if pyav.pyav_installed() else "ffmpeg"
    return backend


def _resume_decoder(store: Path, cfg: ExtractConfig) -> ExtractConfig:
    """--backend auto on a store begun with another decoder that auto may pick (a store made before PyAV
    was the default, say) carries on with that decoder, so every video of a store is decoded alike."""
    plan_file = _control(store) / "plan.json"
    if cfg.backend != "auto" or not plan_file.is_file():
        return cfg
    began = (read_json(plan_file, f"pass --overwrite to extract {store} again").get("settings") or {}).get("backend")
    usable = began == "ffmpeg" or (began == "pyav" and pyav.pyav_installed()) or (began == "dali" and cfg.fps is None and dali.dali_installed())
    return dataclasses.replace(cfg, backend=began) if usable else cfg


def plan_units(manifest: Manifest, cfg: ExtractConfig) -> list[Unit]:
    per_shard = per_shard_count(cfg, manifest)
    units = []
    for split in manifest.splits:
        records = manifest.split_records(split)
        for i, start in enumerate(range(0, len(records), per_shard)):
            units.append(Unit(split, i, start, tuple(records[start : start + per_shard])))
    return units


def per_shard_count(cfg: ExtractConfig, manifest: Manifest) -> int:
    """Videos per shard: as many as fit in --shard-size, but no more than the largest split holds (a
    zarr shard's chunk index is sized for a full shard, 16 bytes per frame)."""
    per_video = cfg.spec.nbytes * (JPEG_SIZE_ESTIMATE if cfg.frame_codec == "jpeg" else 1)
    largest = max((len(manifest.split_records(s)) for s in manifest.splits), default=1)
    return max(1, min(largest, int(cfg.shard_size // (per_video + SAMPLE_OVERHEAD))))


# ------------------------------------------------------------------ store directory state
def _control(store: Path) -> Path:
    return store / "_extract"


@contextlib.contextmanager
def _store_lock(store: Path):
    """Exclusive, blocking lock on STORE/_extract/store.lock for the steps parts must not run together.
    flock is released by the kernel when the holder dies, so a killed part never leaves it held."""
    _control(store).mkdir(parents=True, exist_ok=True)
    fd = os.open(_control(store) / "store.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _part_lock(store: Path, part: tuple[int, int]):
    """Held for a whole run of one part: a second run of the same part (or a second whole-store run)
    into the same store is refused instead of racing it. Other parts of the same job run alongside."""
    shard_id, num_shards = part
    path = _control(store) / f"part-{shard_id}-of-{num_shards}.lock"
    what = "another extraction" if num_shards == 1 else f"another run of part {shard_id + 1}/{num_shards}"
    with exclusive_lock(path, f"{what} is writing {store} (it holds {path.name}); wait for it to finish, "
                              "or give each concurrent part its own --shard-id"):
        yield


def _plan_document(cfg: ExtractConfig, manifest_sha: str) -> dict:
    return {"settings": cfg.identity(), "manifest_sha256": manifest_sha, "vidpipe_store": STORE_FORMAT_VERSION}


def _prepare_store(store: Path, manifest: Manifest, cfg: ExtractConfig, overwrite: bool) -> None:
    plan_file = _control(store) / "plan.json"
    manifest_text = manifest.dumps()
    manifest_sha = hashlib.sha256(manifest_text.encode()).hexdigest()
    wanted = _plan_document(cfg, manifest_sha)
    if plan_file.is_file():
        existing = read_json(plan_file, f"pass --overwrite to extract {store} again")
        if existing == wanted:
            return
        if not overwrite:
            diffs = [f"{k} {existing['settings'].get(k)} -> {v}" for k, v in wanted["settings"].items() if existing["settings"].get(k) != v]
            if existing.get("manifest_sha256") != manifest_sha:
                diffs.append("a different manifest")
            raise VidpipeError(f"{store} was extracted with other settings ({'; '.join(diffs)}); pass --overwrite to replace it or choose another --out")
        remove_store(store)
    elif (store / "store.json").is_file():
        if not overwrite:
            raise VidpipeError(f"{store} holds a store without its _extract/ records; pass --overwrite to rebuild it")
        remove_store(store)
    else:  # no plan and no store.json: a preparation killed before its plan was written; start it again
        _clear_unfinished(store)
    (_control(store) / "parts").mkdir(parents=True, exist_ok=True)
    (store / "manifest.jsonl").write_text(manifest_text)
    if cfg.format == "zarr":  # created once here, never by parts racing each other
        for split in manifest.splits:
            zarr_frames_array(store, split, len(manifest.split_records(split)), cfg.spec, per_shard_count(cfg, manifest), create=True,
                              codec=cfg.frame_codec)
    write_text_atomic(plan_file, json.dumps(wanted, indent=2, sort_keys=True))  # last: its presence means the store is prepared


def _clear_unfinished(store: Path) -> None:
    """Everything an unfinished preparation left (manifest, arrays, records), but the lock files, which
    other parts of the job may hold or wait on; a file extraction does not write is refused, not deleted.
    Preparing writes only manifest.jsonl, <split>.zarr arrays and _extract/, for whatever manifest it had."""
    _refuse_foreign(store, None)
    for p in store.iterdir():
        if p.name == "_extract":
            for q in p.iterdir():
                if q.suffix != ".lock":
                    shutil.rmtree(q) if q.is_dir() else q.unlink()
        else:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


_OURS = {"_extract", "store.json", "manifest.jsonl", "failures.jsonl", "store.json.tmp", "failures.jsonl.tmp", "manifest.jsonl.tmp"}


def _refuse_foreign(store: Path, splits: set[str] | None) -> None:
    """Refuse (one line) a store folder holding anything extraction does not write there: its index files,
    _extract/, and per split a folder of shards or a <split>.zarr array (splits None: any such array)."""
    def ours(p: Path) -> bool:
        if p.name in _OURS:
            return True
        if not p.is_dir():
            return False
        if splits is None:
            return p.suffix == ".zarr" and COMPONENT.match(p.stem) is not None
        return p.name in splits or (p.suffix == ".zarr" and p.stem in splits)

    foreign = [p.name for p in store.iterdir() if not ours(p)]
    if foreign:
        raise VidpipeError(f"refusing to delete {store}: it holds files vidpipe did not write ({', '.join(sorted(foreign)[:3])}); "
                           "choose another --out or move them away")


def is_vidpipe_store(store: Path) -> bool:
    """A folder extraction made or is making: a vidpipe store.json, or an extraction's _extract/ records."""
    if (store / "store.json").is_file():
        try:
            data = read_json(store / "store.json", "")
        except VidpipeError:
            return (_control(store) / "plan.json").is_file()
        return isinstance(data, dict) and "vidpipe_store" in data
    return _control(store).is_dir()


def remove_store(store: Path) -> None:
    """Delete a vidpipe store, and only that: a folder whose store.json is a vidpipe clip store's (or that
    holds an extraction's _extract/plan.json), holding nothing but what extraction writes there. Anything
    else is refused in one line and left as it is."""
    if not is_vidpipe_store(store):
        raise VidpipeError(f"refusing to delete {store}: it is not a vidpipe store; choose another --out")
    splits = set()
    if (store / "manifest.jsonl").is_file():
        with contextlib.suppress(VidpipeError):
            splits = set(Manifest.read(store / "manifest.jsonl", allow_outside_root=True).splits)
    _refuse_foreign(store, splits)
    shutil.rmtree(store)


def _part_file(store: Path, unit: Unit) -> Path:
    return _control(store) / "parts" / f"{unit.name}.json"


def _unit_done(store: Path, unit: Unit) -> bool:
    part = _part_file(store, unit)
    if not part.is_file():
        return False
    record = read_json(part, "delete it to extract that shard again, or rerun with --overwrite")
    paths = [inside(store, f["path"], f"part record {part}") for f in record["files"]]
    return all(p.is_file() and p.stat().st_size == f["bytes"] for p, f in zip(paths, record["files"]))


def _clean_partials(store: Path, units: list[Unit], cfg: ExtractConfig) -> None:
    """Remove what an interrupted run left of these units' files (and of no other unit's)."""
    for unit in units:
        if cfg.format == "webdataset":
            (store / unit.split / f"{unit.name}.tar.tmp").unlink(missing_ok=True)
        else:  # zarr writes a shard file through "<name>.<uuid>.partial"
            for p in ZarrShard.shard_path(store, unit, cfg.frame_codec).parent.glob("*.partial"):
                p.unlink(missing_ok=True)


# ------------------------------------------------------------------ the run
@dataclass
class ExtractReport:
    store: Path
    finalized: bool
    nothing_to_do: bool
    videos: int = 0  # decoded in this run
    failures: int = 0  # in this run
    source_frames: int = 0
    seconds: float = 0.0
    bytes_written: int = 0
    rerouted: int = 0  # asked for DALI or PyAV, decoded by an ffmpeg process (reasons in store.json)
    units_done: int = 0
    units_total: int = 0
    summary: dict | None = None  # store.json when finalized


_thread_state = threading.local()


def _dali_decoder(spec: ClipSpec) -> dali.DaliDecoder:
    # DALI pipelines are not shared between threads: one per decode worker.
    if getattr(_thread_state, "dali", None) is None:
        _thread_state.dali = dali.DaliDecoder(spec, batch_size=CHUNK, gpu=dali.gpu_present())
    return _thread_state.dali


def _decode_chunk(manifest: Manifest, jobs: list, spec: ClipSpec, threads: int, backend: str, allow_stills: bool = False) -> list:
    """[(job, clip or None, meta or failure)] for consecutive jobs; one ffmpeg process probes them all.

    With the DALI backend, the files DALI can decode here go to it as one batch; the others, and any
    it rejects, are decoded by ffmpeg with the reason recorded in meta["rerouted"].
    """
    paths = [manifest.abspath(record) for _, _, record in jobs]
    infos = [_usable(info, allow_stills) for info in probe_many(paths)]  # one failure policy, whichever decoder runs
    done, reroute = {}, {}
    if backend == "dali":
        gpu = dali.gpu_present()
        for k, info in enumerate(infos):
            if not isinstance(info, DecodeError):
                reason = dali.route(info, gpu)
                if reason:
                    reroute[k] = reason
        to_dali = [k for k, info in enumerate(infos) if not isinstance(info, DecodeError) and k not in reroute]
        if to_dali:
            results = _dali_decoder(spec).decode([(paths[k], infos[k]) for k in to_dali])
            for k, result in zip(to_dali, results):
                if isinstance(result, str):
                    reroute[k] = result
                else:
                    done[k] = result
    out = []
    for k, (job, info) in enumerate(zip(jobs, infos)):
        record = job[2]
        try:
            if isinstance(info, DecodeError):
                raise info
            clip, meta = done[k] if k in done else decode_clip(paths[k], spec, threads, info, "pyav" if backend == "pyav" else "ffmpeg",
                                                               allow_stills)
        except DecodeError as e:
            out.append((job, None, {"id": record.id, "path": record.path, "split": record.split, "reason": str(e)}))
            continue
        if k in reroute:  # DALI could not take it: decoded by ffmpeg
            meta = {**meta, "rerouted": reroute[k]}
        out.append((job, clip, {"id": record.id, "label": record.label, "label_name": record.label_name, "path": record.path,
                                "source_bytes": os.path.getsize(paths[k]), **meta}))
    return out


def _usable(info, allow_stills: bool = False):
    if isinstance(info, DecodeError):
        return info
    try:
        check_usable(info, allow_stills)
    except DecodeError as e:
        return e
    return info


def _ordered_chunks(pool: ThreadPoolExecutor, fn, items: list, chunk: int, ahead: int):
    """Yield fn(chunk) results item by item, in order, with at most `ahead` chunks in flight (bounded memory)."""
    pending = collections.deque()
    for start in range(0, len(items), chunk):
        pending.append(pool.submit(fn, items[start : start + chunk]))
        if len(pending) >= ahead:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()


def extract(
    manifest: Manifest,
    out: str | Path,
    cfg: ExtractConfig | None = None,
    overwrite: bool = False,
    part: tuple[int, int] = (0, 1),
    progress=None,
) -> ExtractReport:
    """Extract the units of part `part = (shard_id, num_shards)` that are not done yet; finalize if all are."""
    cfg = cfg or ExtractConfig()
    store = Path(out)
    shard_id, num_shards = part
    if not 0 <= shard_id < num_shards:
        raise VidpipeError(f"--shard-id must be in [0, {num_shards}); got {shard_id}")
    if not manifest.records:
        raise VidpipeError("the manifest lists no videos; check the dataset root and split")
    if store.is_dir() and any(store.iterdir()) and not is_vidpipe_store(store):
        raise VidpipeError(f"{store} exists and is not a vidpipe store; choose an empty or new --out")  # before the lock adds a file
    with _store_lock(store):
        if not overwrite:
            cfg = _resume_decoder(store, cfg)
        _prepare_store(store, manifest, cfg, overwrite)
    with _part_lock(store, part):
        return _extract_part(manifest, store, cfg, part, progress)


def _extract_part(manifest: Manifest, store: Path, cfg: ExtractConfig, part: tuple[int, int], progress) -> "ExtractReport":
    shard_id, num_shards = part
    spec, per_shard = cfg.spec, per_shard_count(cfg, manifest)
    units = plan_units(manifest, cfg)
    mine = [u for k, u in enumerate(units) if k % num_shards == shard_id]
    todo = [u for u in mine if not _unit_done(store, u)]
    report = ExtractReport(store, finalized=False, nothing_to_do=not todo, units_total=len(units))
    if todo:
        _clean_partials(store, todo, cfg)
        threads = max(1, (os.cpu_count() or 1) // cfg.workers)
        t0 = time.perf_counter()
        jobs = [(u, pos, r) for u in todo for pos, r in enumerate(u.records)]
        backend = cfg.identity()["backend"]
        def decode(chunk):  # in the decode threads: JPEG encoding runs in parallel too
            done = _decode_chunk(manifest, chunk, spec, threads, backend, cfg.allow_stills)
            if cfg.frame_codec == "jpeg":
                done = [(job, None if clip is None else jpeg.encode(clip, cfg.jpeg_quality), meta) for job, clip, meta in done]
            return done
        pool = ThreadPoolExecutor(cfg.workers)
        writer, failures, metas = None, [], []
        try:
            for (unit, pos, record), clip, meta in _ordered_chunks(pool, decode, jobs, CHUNK, ahead=2 * cfg.workers):
                if writer is None:
                    writer = WebDatasetShard(store, unit) if cfg.format == "webdataset" else ZarrShard(store, unit, spec, cfg.frame_codec)
                if clip is None:
                    failures.append(meta)
                else:
                    writer.add(pos, record, clip, meta)
                    metas.append(meta)
                    report.source_frames += meta["num_frames"]
                    report.rerouted += "rerouted" in meta
                report.videos += 1
                if progress:
                    progress()
                if pos == len(unit.records) - 1:  # the unit is complete: publish it, then record it
                    files = writer.commit()
                    _write_part(store, unit, files, metas, failures)
                    report.bytes_written += sum(f["bytes"] for f in files)
                    report.failures += len(failures)
                    writer, failures, metas = None, [], []
        except BaseException as e:  # Ctrl-C included: drop the unfinished unit, keep the published ones
            if writer is not None:
                writer.abort()
            pool.shutdown(wait=False, cancel_futures=True)
            if is_no_space(e):
                raise no_space(writer.final if writer is not None else store, per_shard * (spec.nbytes + SAMPLE_OVERHEAD)) from None
            raise
        pool.shutdown()
        report.seconds = time.perf_counter() - t0
    report.units_done = sum(_unit_done(store, u) for u in units)
    if report.units_done == len(units) and (todo or not (store / "store.json").is_file()):
        report.summary = finalize(store)
        report.finalized = True
    elif report.units_done == len(units):
        report.summary = read_json(store / "store.json", f"rerun with `vidpipe extract --finalize {store}`")
        report.finalized = True
    if report.summary:
        total = sum(s["listed"] for s in report.summary["splits"].values())
        failed = len(report.summary["failures"])
        if total and failed / total > cfg.max_failures:
            raise VidpipeError(
                f"{failed} of {total} videos failed ({failed / total:.1%} > --max-failures {cfg.max_failures:.0%}); "
                f"reasons in {store / 'failures.jsonl'}"
            )
    return report


def _write_part(store: Path, unit: Unit, files: list[dict], metas: list[dict], failures: list[dict]) -> None:
    record = {"unit": unit.name, "split": unit.split, "index": unit.index, "start": unit.start,
              "count": len(metas), "files": files, "videos": metas, "failures": failures}
    write_text_atomic(_part_file(store, unit), json.dumps(record, sort_keys=True))


# ------------------------------------------------------------------ finalize
def finalize(store: str | Path) -> dict:
    """Merge the part records into STORE/store.json (and STORE/failures.jsonl). Idempotent, and
    serialised by the store lock: parts finishing together each finalize in turn, to the same bytes."""
    store = Path(store)
    if not (_control(store) / "plan.json").is_file():
        raise VidpipeError(f"{store} has no _extract/plan.json: it is not an extraction in progress; run `vidpipe extract` first")
    with _store_lock(store):
        return _finalize(store)


def _finalize(store: Path) -> dict:
    plan_file = _control(store) / "plan.json"
    if not plan_file.is_file():
        raise VidpipeError(f"{store} has no _extract/plan.json: it is not an extraction in progress; run `vidpipe extract` first")
    plan = read_json(plan_file, f"extract {store} again with --overwrite")
    manifest = Manifest.read(store / "manifest.jsonl", allow_outside_root=True)  # checked when extraction began
    cfg = ExtractConfig(**{k: v for k, v in plan["settings"].items()})
    units = plan_units(manifest, cfg)
    missing = [u.name for u in units if not _unit_done(store, u)]
    if missing:
        raise VidpipeError(f"{len(missing)} shards are not extracted yet (e.g. {missing[0]}); run the remaining --shard-id parts, then --finalize")
    parts = {u.name: read_json(_part_file(store, u), "delete it and rerun `vidpipe extract` to redo that shard") for u in units}
    spec = cfg.spec
    splits, failures = {}, []
    for split in manifest.splits:
        split_parts = [parts[u.name] for u in units if u.split == split]
        videos = [v for p in split_parts for v in p["videos"]]
        failures += [f for p in split_parts for f in p["failures"]]
        entry = {"count": len(videos), "listed": len(manifest.split_records(split)),
                 "failed": sum(len(p["failures"]) for p in split_parts), "shards": len(split_parts),
                 # what the stored videos were: seconds of video (frames / fps) and bytes of source files
                 "source_seconds": round(sum(v["num_frames"] / v["fps"] for v in videos if v.get("fps")), 3),
                 "source_frames": sum(v["num_frames"] for v in videos if v.get("fps")),
                 "source_bytes": sum(v.get("source_bytes", 0) for v in videos)}
        if cfg.format == "webdataset":
            entry["files"] = [f for p in split_parts for f in p["files"]]
        else:
            entry["array"] = f"{split}.zarr"
            entry["files"] = _finalize_zarr(store, split, manifest, videos, spec)
        splits[split] = entry
    write_text_atomic(store / "failures.jsonl", "".join(json.dumps(f) + "\n" for f in failures))
    summary = {
        "format": cfg.format,
        "vidpipe_store": STORE_FORMAT_VERSION,
        "vidpipe_version": __version__,
        "dataset": manifest.dataset,
        "classes": manifest.classes,
        "num_classes": len(manifest.classes),
        "clip": {"frames": spec.frames, "height": spec.height, "width": spec.width, "channels": 3,
                 "layout": "THWC", "dtype": "uint8", "normalized": False, "codec": cfg.frame_codec,
                 **({"jpeg_quality": cfg.jpeg_quality} if cfg.frame_codec == "jpeg" else {}),
                 "mode": "fps" if cfg.fps else "uniform",
                 **({"fps": cfg.fps, "max_seconds": cfg.max_seconds} if cfg.fps else {})},
        "sampling": (f"every video resampled to {cfg.fps} fps (stored frame k: the source frame on screen at window start + k / fps), "
                     f"at most a centred window of {cfg.max_seconds} s; T varies per video (at most clip.frames)") if cfg.fps else
                    "T indices at the centres of T equal segments of the whole video; index mod n when n < T",
        "resize": "resize to cover height x width keeping display aspect (SAR, rotation), then centre-crop",
        "settings": plan["settings"],
        "ffmpeg": ffmpeg_version(),
        **({"pyav": pyav.pyav_version()} if plan["settings"]["backend"] == "pyav" else {}),
        "manifest": {"file": "manifest.jsonl", "sha256": sha256_file(store / "manifest.jsonl"), "root": manifest.root,
                     "split_id": manifest.split_id, "missing": len(manifest.missing)},
        "splits": splits,
        "backends": _count_backends(parts),
        "rerouted": [{"id": v["id"], "codec": v["codec"], "reason": v["rerouted"]}
                     for p in parts.values() for v in p["videos"] if "rerouted" in v],
        "failures": failures,
    }
    write_text_atomic(store / "store.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _count_backends(parts: dict) -> dict:
    counts = collections.Counter(v["backend"] for p in parts.values() for v in p["videos"])
    return dict(sorted(counts.items()))


def _finalize_zarr(store: Path, split: str, manifest: Manifest, videos: list[dict], spec: ClipSpec) -> list[dict]:
    """Write the per-video arrays next to frames and return every file of <split>.zarr with checksums."""
    import numpy as np
    import zarr

    records = manifest.split_records(split)
    by_id = {v["id"]: v for v in videos}
    n = len(records)
    group = zarr.open_group(store / f"{split}.zarr", mode="a")
    valid = np.array([r.id in by_id for r in records], bool)
    indices = np.full((n, spec.frames), -1, np.int32)
    metas = []
    for i, r in enumerate(records):
        v = by_id.get(r.id)
        if v is not None:
            indices[i, : len(v["indices"])] = v["indices"]  # fps stores: -1 after a video's own T
        metas.append(json.dumps(v, sort_keys=True) if v else "")

    def put(name, data, dtype=None):
        arr = group.create_array(name, shape=data.shape, dtype=dtype or data.dtype, chunks=data.shape, overwrite=True)
        arr[...] = data

    put("labels", np.array([r.label for r in records], np.int64))
    put("valid", valid)
    put("sample_indices", indices)
    put("lengths", np.array([len(by_id[r.id]["indices"]) if r.id in by_id else 0 for r in records], np.int32))  # T per video
    put("ids", np.array([r.id for r in records], dtype=object), dtype=str)
    put("meta", np.array(metas, dtype=object), dtype=str)
    group.attrs.update({"classes": manifest.classes, "split": split, "count": int(valid.sum())})
    files = sorted(p for p in (store / f"{split}.zarr").rglob("*") if p.is_file())
    return [file_entry(store, p) for p in files]
