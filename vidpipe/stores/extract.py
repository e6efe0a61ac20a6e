"""`vidpipe extract`: decode every video of a manifest once into a self-describing store.

Resumable by construction. The records of each split are cut into fixed *units* (one shard file
each) by the plan (`stores.plan`) before anything is decoded; a unit is published by rename and then
recorded in STORE/_extract/parts/<unit>.json. A rerun skips recorded units and redoes the rest, so an
interrupted run (Ctrl-C, kill -9) ends with the same bytes as an uninterrupted one. Units are dealt
round-robin to `--num-shards` parts, so several machines can fill one store; the last part to finish
(or `--finalize`, `stores.finalize`) writes STORE/store.json.

Parts never touch each other's files: each unit has its own temporary names and a part clears only
the leftovers of the units it is about to write. Preparing the store (plan, manifest, zarr arrays)
and finalizing it happen under an exclusive lock on STORE/_extract/store.lock, and finalizing is
idempotent, so parts that start or finish at the same moment give the same bytes as one run.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vidpipe.datasets.manifest import Manifest
from vidpipe.errors import VidpipeError, no_space
from vidpipe.files import COMPONENT, exclusive_lock, is_no_space, read_json
from vidpipe.io import dali, frames as frame_folders, jpeg, pyav
from vidpipe.io.decode import ClipSpec, check_usable, decode_clip
from vidpipe.io.ffmpeg import DecodeError, probe_many
from vidpipe.stores import bucket
from vidpipe.stores.finalize import finalize as finalize_folder
from vidpipe.stores.plan import (BACKENDS, FORMATS, FRAME_CODECS, ExtractConfig, ExtractPlan, control, extract_identity, plan_file,
                                 read_plan, resolve_backend, settle_plan, store_lock, unit_done, write_part, write_plan)
from vidpipe.stores.remote import Remote, is_url, shown
from vidpipe.stores.writers import EncodedFrames, Unit, WebDatasetShard, ZarrShard, frame_chunked, zarr_frames_array

__all__ = ["BACKENDS", "FORMATS", "FRAME_CODECS", "ExtractConfig", "ExtractReport", "extract", "finalize", "remove_store",
           "resolve_backend"]
CHUNK = 4  # videos a worker takes at once: probed together (PyAV, or one ffmpeg process for the files it declines), then decoded one by one


@contextlib.contextmanager
def _part_lock(store: Path, part: tuple[int, int]):
    """Held for a whole run of one part: a second run of the same part (or a second whole-store run)
    into the same store is refused instead of racing it. Other parts of the same job run alongside."""
    shard_id, num_shards = part
    path = control(store) / f"part-{shard_id}-of-{num_shards}.lock"
    what = "another extraction" if num_shards == 1 else f"another run of part {shard_id + 1}/{num_shards}"
    with exclusive_lock(path, f"{what} is writing {store} (it holds {path.name}); wait for it to finish, "
                              "or give each concurrent part its own --shard-id"):
        yield


def _resume_settings(store: Path, cfg: ExtractConfig) -> ExtractConfig:
    """Defaults that carry on as a store was begun, so every video of a store is made alike:
    --backend auto on a store begun with another decoder that auto may pick (a store made before PyAV was the
    default, say) keeps that decoder; --jpeg-subsampling auto on a JPEG store made before the choice existed
    keeps its 4:4:4."""
    if not plan_file(store).is_file() or (cfg.backend != "auto" and cfg.jpeg_subsampling != "auto"):
        return cfg
    began = read_json(plan_file(store), f"pass --overwrite to extract {store} again").get("settings") or {}
    backend = began.get("backend")
    if cfg.backend == "auto" and (backend == "ffmpeg" or (backend == "pyav" and pyav.pyav_installed())
                                  or (backend == "dali" and cfg.fps is None and dali.dali_installed())):
        cfg = dataclasses.replace(cfg, backend=backend)
    if cfg.jpeg_subsampling == "auto" and began.get("frame_codec") == "jpeg" and "jpeg_subsampling" not in began:
        cfg = dataclasses.replace(cfg, jpeg_subsampling="444")
    return cfg


def _prepare_store(store: Path, manifest: Manifest, cfg: ExtractConfig, overwrite: bool) -> ExtractPlan:
    """The store's plan: the one it holds when it is the wanted one (a resume keeps the constants it was cut
    with), else a new one, with the store folder (manifest, zarr arrays, records) prepared for it."""
    manifest_text = manifest.dumps()
    wanted = ExtractPlan.make(manifest, cfg, manifest_text)
    state = settle_plan(plan_file(store), wanted.identity(), store, "a store", overwrite, extract_identity)
    if state == "same":
        return read_plan(store, manifest)
    if state == "replace":
        remove_store(store)
    elif (store / "store.json").is_file():
        if not overwrite:
            raise VidpipeError(f"{store} holds a store without its _extract/ records; pass --overwrite to rebuild it")
        remove_store(store)
    else:  # no plan and no store.json: a preparation killed before its plan was written; start it again
        _clear_unfinished(store)
    (control(store) / "parts").mkdir(parents=True, exist_ok=True)
    (store / "manifest.jsonl").write_text(manifest_text)
    if cfg.format == "zarr":  # created once here, never by parts racing each other
        for split, count in wanted.splits.items():
            zarr_frames_array(store, split, count, cfg.spec, wanted.per_shard, create=True, codec=cfg.frame_codec)
    write_plan(store, wanted)  # last: its presence means the store is prepared
    return wanted


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
            return plan_file(store).is_file()
        return isinstance(data, dict) and "vidpipe_store" in data
    return control(store).is_dir()


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


def _clean_partials(store: Path, units: list[Unit], cfg: ExtractConfig) -> None:
    """Remove what an interrupted run left of these units' files (and of no other unit's)."""
    for unit in units:
        if cfg.format == "webdataset":
            (store / unit.split / f"{unit.name}.tar.tmp").unlink(missing_ok=True)
        else:  # zarr writes a shard file through "<name>.<uuid>.partial"
            for p in ZarrShard.shard_path(store, unit, cfg.frame_codec).parent.glob("*.partial"):
                p.unlink(missing_ok=True)


# ------------------------------------------------------------------ the run
class Stages:
    """Seconds spent in each stage of an extraction, summed over the threads that did it: `with
    stages("decode"): ...`. Where the time goes, for `vidpipe bench extract`."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] += time.perf_counter() - t0


@dataclass
class ExtractReport:
    store: Path | str  # a folder, or a bucket's URL
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
    stages: Stages = dataclasses.field(default_factory=Stages)  # thread-seconds per stage: probe, decode, encode, write


_thread_state = threading.local()


def _dali_decoder(spec: ClipSpec) -> dali.DaliDecoder:
    # DALI pipelines are not shared between threads: one per decode worker.
    if getattr(_thread_state, "dali", None) is None:
        _thread_state.dali = dali.DaliDecoder(spec, batch_size=CHUNK, gpu=dali.gpu_present())
    return _thread_state.dali


def _encode_jpeg(clip, meta: dict, info, cfg: ExtractConfig) -> tuple:
    """(JPEG frames, meta) of a decoded clip, chroma as --jpeg-subsampling says (auto: the source's). A store
    other than 4:4:4 records each video's choice in its meta."""
    if clip is None:
        return None, meta
    subsampling = jpeg.subsampling_of(info.pix_fmt) if cfg.jpeg_subsampling == "auto" else cfg.jpeg_subsampling
    meta = meta if cfg.jpeg_subsampling == "444" else {**meta, "jpeg_subsampling": subsampling}
    return jpeg.encode(clip, cfg.jpeg_quality, subsampling), meta


def _decode_chunk(manifest: Manifest, jobs: list, spec: ClipSpec, threads: int, backend: str, allow_stills: bool = False,
                  stages: Stages | None = None) -> list:
    """[(job, clip or None, meta or failure, probe)] for consecutive jobs, probed in-process (PyAV) or by
    one ffmpeg process for them all.

    With the DALI backend, the files DALI can decode here go to it as one batch; the others, and any
    it rejects, are decoded by ffmpeg with the reason recorded in meta["rerouted"].
    """
    stages = stages or Stages()
    paths = [manifest.abspath(record) for _, _, record in jobs]
    with stages("probe"):  # one failure policy, whichever decoder runs
        infos = [_usable(info, allow_stills) for info in _probe(paths, manifest.frame_fps, in_process=backend != "ffmpeg")]
    done, reroute = {}, {}
    if backend == "dali":
        gpu = dali.gpu_present()
        for k, info in enumerate(infos):
            if not isinstance(info, DecodeError) and frame_folders.is_frame_folder(paths[k]):
                reroute[k] = "a frame folder: its images are decoded by FFmpeg"
            elif not isinstance(info, DecodeError):
                reason = dali.route(info, gpu)
                if reason:
                    reroute[k] = reason
        to_dali = [k for k, info in enumerate(infos) if not isinstance(info, DecodeError) and k not in reroute]
        if to_dali:
            with stages("decode"):
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
            if k in done:
                clip, meta = done[k]
            else:
                with stages("decode"):
                    clip, meta = decode_clip(paths[k], spec, threads, info, "pyav" if backend == "pyav" else "ffmpeg", allow_stills)
        except DecodeError as e:
            out.append((job, None, {"id": record.id, "path": record.path, "split": record.split, "reason": str(e)}, info))
            continue
        if k in reroute:  # DALI could not take it: decoded by ffmpeg
            meta = {**meta, "rerouted": reroute[k]}
        out.append((job, clip, {"id": record.id, "label": record.label, "label_name": record.label_name, "path": record.path,
                                "source_bytes": _source_bytes(paths[k]), **meta}, info))
    return out


def _probe(paths: list[Path], frame_fps: float | None, in_process: bool = True) -> list:
    """VideoInfo or DecodeError per path: video files in-process by PyAV where it is installed and can
    answer (`pyav.probe`), the others with one ffmpeg process (`probe_many`); frame folders by io.frames.probe."""
    folders = {k for k, p in enumerate(paths) if frame_folders.is_frame_folder(p)}
    known = {k: pyav.probe(p) for k, p in enumerate(paths) if k not in folders} if in_process and pyav.pyav_installed() else {}
    asked = [k for k in range(len(paths)) if k not in folders and known.get(k) is None]
    known.update(zip(asked, probe_many([paths[k] for k in asked])))
    out = []
    for k, p in enumerate(paths):
        if k not in folders:
            out.append(known[k])
        elif frame_fps is None:
            out.append(DecodeError("a folder, not a video file (a manifest of frame folders states their frame_fps)"))
        else:
            try:
                out.append(frame_folders.probe(p, frame_fps))
            except DecodeError as e:
                out.append(e)
    return out


def _source_bytes(path: Path) -> int:
    """A video file's size, or the sum of a frame folder's images."""
    return sum(f.stat().st_size for f in frame_folders.frame_files(path)) if path.is_dir() else os.path.getsize(path)


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
    cache_dir: str | Path | None = None,
) -> ExtractReport:
    """Extract the units of part `part = (shard_id, num_shards)` that are not done yet; finalize if all are.
    `out` is a folder or a bucket URL (s3://, gs://, az://); a bucket's store is staged in `cache_dir`
    (default: a temporary folder), a few shards at a time."""
    cfg = cfg or ExtractConfig()
    shard_id, num_shards = part
    if not 0 <= shard_id < num_shards:
        raise VidpipeError(f"--shard-id must be in [0, {num_shards}); got {shard_id}")
    if not manifest.records:
        raise VidpipeError("the manifest lists no videos; check the dataset root and split")
    if is_url(out):
        return _extract_to_bucket(manifest, str(out), cfg, overwrite, part, progress, cache_dir)
    store = Path(out)
    if store.is_dir() and any(store.iterdir()) and not is_vidpipe_store(store):
        raise VidpipeError(f"{store} exists and is not a vidpipe store; choose an empty or new --out")  # before the lock adds a file
    with store_lock(store):
        if not overwrite:
            cfg = _resume_settings(store, cfg)
        plan = _prepare_store(store, manifest, cfg, overwrite)
    with _part_lock(store, part):
        return _extract_part(manifest, store, plan, cfg, part, progress, LocalTarget(store))


def _extract_to_bucket(manifest: Manifest, url: str, cfg: ExtractConfig, overwrite: bool, part: tuple[int, int], progress,
                       cache_dir) -> ExtractReport:
    """A part of an extraction into a bucket: the store prepared (or found prepared) there, its units staged
    locally and published one by one (`stores.bucket`). No lock: parts share nothing but the bucket."""
    remote = Remote(url, write=True)
    with bucket.staging(cache_dir) as stage:
        target = bucket.RemoteTarget(remote, stage)
        if target.sizes and not (target.has(bucket.PLAN) or target.has("store.json")):
            raise VidpipeError(f"{shown(url)} holds objects that are not a vidpipe store; choose an empty prefix for --out")
        if target.has(bucket.PLAN):
            bucket.mirror_control(remote, target.sizes, stage)
        elif target.has("store.json") and not overwrite:
            raise VidpipeError(f"{shown(url)} holds a store without its _extract/ records; pass --overwrite to rebuild it")
        if not overwrite:
            cfg = _resume_settings(stage, cfg)
        wanted = ExtractPlan.make(manifest, cfg)
        state = settle_plan(plan_file(stage), wanted.identity(), shown(url), "a store", overwrite, extract_identity)
        if state == "same":
            plan = read_plan(stage, manifest)
        else:
            if target.sizes and (state == "replace" or overwrite):
                _refuse_foreign_objects(remote, target.sizes)
                remote.remove(sorted(target.sizes))
            for p in stage.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            plan = _prepare_store(stage, manifest, cfg, overwrite=False)
            bucket.publish_preparation(remote, stage)
            target.refresh()
        report = _extract_part(manifest, stage, plan, cfg, part, progress, target)
    report.store = url
    return report


def _refuse_foreign_objects(remote: Remote, sizes: dict) -> None:
    """`_refuse_foreign` for a store in a bucket: --overwrite deletes a prefix only when it holds nothing but
    what extraction writes there (per split of its manifest, a folder of shards or a <split>.zarr array)."""
    splits = set()
    if "manifest.jsonl" in sizes:
        with contextlib.suppress(VidpipeError):
            splits = set(Manifest.loads(remote.read_bytes("manifest.jsonl").decode("utf-8", "replace"), allow_outside_root=True).splits)
    tops = {rel.split("/")[0] for rel in sizes}
    foreign = sorted(t for t in tops if t not in _OURS and t not in splits and not (t.endswith(".zarr") and t[:-5] in splits))
    if foreign:
        raise VidpipeError(f"refusing to delete {shown(remote.url)}: it holds objects vidpipe did not write ({', '.join(foreign[:3])}); "
                           "choose another --out or move them away")


class LocalTarget:
    """Where `extract` publishes the units of a store in a folder: they are written in place, so a unit
    is done once its record is (`stores.bucket.RemoteTarget` is the same for a bucket)."""

    def __init__(self, store: Path):
        self.store, self.name = store, str(store)

    def refresh(self) -> None:
        pass

    def has(self, rel: str) -> bool:
        return (self.store / rel).is_file()

    def done(self, unit: Unit) -> bool:
        return unit_done(self.store, unit)

    def publish(self, unit: Unit, files: list[dict], metas: list[dict], failures: list[dict]) -> None:
        write_part(self.store, unit, files, metas, failures)

    def finalize(self) -> dict:
        return finalize_folder(self.store)

    def summary(self) -> dict:
        return read_json(self.store / "store.json", f"rerun with `vidpipe extract --finalize {self.store}`")


def finalize(store: str | Path, cache_dir: str | Path | None = None) -> dict:
    """`vidpipe extract --finalize STORE`: merge the parts' records into store.json, in a folder or a bucket."""
    return bucket.finalize_url(str(store), cache_dir) if is_url(store) else finalize_folder(store)


def _extract_part(manifest: Manifest, store: Path, plan: ExtractPlan, cfg: ExtractConfig, part: tuple[int, int],
                  progress, target) -> "ExtractReport":
    """`cfg` is the plan's settings with this run's own (workers, max_failures); `store` is where units are
    written, `target` where they are published (`LocalTarget`, or a bucket's `RemoteTarget`)."""
    shard_id, num_shards = part
    spec = cfg.spec
    units = plan.units(manifest)
    mine = [u for k, u in enumerate(units) if k % num_shards == shard_id]
    todo = [u for u in mine if not target.done(u)]
    report = ExtractReport(store, finalized=False, nothing_to_do=not todo, units_total=len(units))
    if todo:
        _clean_partials(store, todo, cfg)
        threads = max(1, (os.cpu_count() or 1) // cfg.workers)
        t0 = time.perf_counter()
        jobs = [(u, pos, r) for u in todo for pos, r in enumerate(u.records)]
        backend = plan.settings["backend"]
        raw_zarr = cfg.format == "zarr" and cfg.frame_codec == "raw"
        compress = {split for split in {u.split for u in todo} if raw_zarr and frame_chunked(store, split)}  # splits of per-frame chunks

        def decode(chunk):  # in the decode threads: JPEG encoding and zstd compression run in parallel too
            done = _decode_chunk(manifest, chunk, spec, threads, backend, cfg.allow_stills, report.stages)
            with report.stages("encode"):
                if cfg.frame_codec == "jpeg":
                    done = [(job, *_encode_jpeg(clip, meta, info, cfg), info) for job, clip, meta, info in done]
                elif compress:
                    done = [(job, EncodedFrames.of(clip) if clip is not None and job[0].split in compress else clip, meta, info)
                            for job, clip, meta, info in done]
            return done
        pool = ThreadPoolExecutor(cfg.workers)
        writer, failures, metas = None, [], []
        try:
            for (unit, pos, record), clip, meta, _ in _ordered_chunks(pool, decode, jobs, CHUNK, ahead=2 * cfg.workers):
                if writer is None:
                    writer = WebDatasetShard(store, unit) if cfg.format == "webdataset" else ZarrShard(store, unit, spec, cfg.frame_codec)
                if clip is None:
                    failures.append(meta)
                else:
                    with report.stages("write"):
                        writer.add(pos, record, clip, meta)
                    metas.append(meta)
                    report.source_frames += meta["num_frames"]
                    report.rerouted += "rerouted" in meta
                report.videos += 1
                if progress:
                    progress()
                if pos == len(unit.records) - 1:  # the unit is complete: publish it, then record it
                    with report.stages("write"):
                        files = writer.commit()
                        target.publish(unit, files, metas, failures)
                    report.bytes_written += sum(f["bytes"] for f in files)
                    report.failures += len(failures)
                    writer, failures, metas = None, [], []
        except BaseException as e:  # Ctrl-C included: drop the unfinished unit, keep the published ones
            if writer is not None:
                writer.abort()
            pool.shutdown(wait=False, cancel_futures=True)
            if is_no_space(e):
                raise no_space(writer.final if writer is not None else store, plan.per_shard * (spec.nbytes + plan.sample_overhead)) from None
            raise
        pool.shutdown()
        report.seconds = time.perf_counter() - t0
    target.refresh()  # other parts may have published theirs meanwhile
    report.units_done = sum(target.done(u) for u in units)
    if report.units_done == len(units) and (todo or not target.has("store.json")):
        report.summary = target.finalize()
        report.finalized = True
    elif report.units_done == len(units):
        report.summary = target.summary()
        report.finalized = True
    if report.summary:
        total = sum(s["listed"] for s in report.summary["splits"].values())
        failed = len(report.summary["failures"])
        if total and failed / total > cfg.max_failures:
            raise VidpipeError(
                f"{failed} of {total} videos failed ({failed / total:.1%} > --max-failures {cfg.max_failures:.0%}); "
                f"reasons in {target.name}/failures.jsonl"
            )
    return report
