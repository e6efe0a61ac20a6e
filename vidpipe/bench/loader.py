"""`vidpipe bench loader`: clips/s from stores against decoding every epoch, and against the disk.

All rows serve the same videos with the same temporal sampling and the same drawn augmentation
(uint8 batches, as they leave for the device):
1. decode-per-epoch: what typical training scripts do, decoding the video, sampling and resizing every
   time a clip is used, with FFmpeg in-process (PyAV) and as a process per video; vidpipe's own
   decode paths, which decode only up to the last frame needed and convert only the frames kept, so
   these rows are generous. Every `x decode` figure is against the faster of the two;
2. each store given (WebDataset or zarr, raw or JPEG frames) through `clip_loader`, every loader started
   first and then timed in `rounds` interleaved rounds of `clips` clips (the median is reported);
3. the ceiling: a raw sequential read of each store's files, in clips/s at that store's bytes per clip;
4. the physical limits every loader row is given as a fraction of, measured in the same run on the same
   clips: a page-cache read (`pread`) of only the raw frames the clips need (from a WebDataset raw store),
   and a simplejpeg decode of only the JPEG frames they need (from a WebDataset JPEG store) in as many
   processes as the loaders have workers. Both read nothing but what the sampling picks.

With `train_model`, each loader (the faster decode path and every store) also feeds that model's
training steps (device transform, forward, backward, SGD) and the data-wait fraction is measured: the
share of wall time the step loop spends blocked on the next batch.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import numpy as np

from torch.utils.data import DataLoader, Dataset

from vidpipe.io.decode import ClipSpec, decode_clip
from vidpipe.io.pyav import pyav_installed
from vidpipe.data.loaders import ClipConfig, clip_loader, collect_before_fork
from vidpipe.datasets.manifest import Manifest
from vidpipe.stores.clips import Store
from vidpipe.stores.shards import index_shard, npy_frames_shape

READ_BLOCK = 8 << 20


class DecodeEveryEpoch(Dataset):
    """The baseline: decode the source video on every access, then the same sampling as the stores."""

    def __init__(self, manifest: Manifest, split: str, spec: ClipSpec, cfg: ClipConfig, decoder: str):
        self.manifest, self.records, self.spec, self.cfg = manifest, manifest.split_records(split), spec, cfg
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        r = self.records[i]
        frames, _ = decode_clip(self.manifest.abspath(r), self.spec, decoder=self.decoder)
        return self.cfg.make_item(frames, r.label, r.id, epoch=0)


def _decode_batches(manifest: Manifest, split: str, spec: ClipSpec, cfg: ClipConfig, decoder: str, batch_size: int, workers: int):
    """Endless shuffled batches decoded from the source videos on every access."""
    loader = DataLoader(DecodeEveryEpoch(manifest, split, spec, cfg, decoder), batch_size=batch_size, num_workers=workers, shuffle=True)
    while True:  # the workers fork again each pass
        collect_before_fork()
        yield from loader


def data_wait(batches, model, transform, steps: int, device: str = "cpu") -> dict:
    """Run `steps` training steps of `model` on `batches` (after one warm-up step); the seconds spent
    waiting for batches and computing steps, and the wait fraction."""
    import torch

    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    wait = compute = 0.0
    batches = iter(batches)
    for step in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        clips = batch["clips"].to(device, non_blocking=True)
        x = transform.train(clips, batch["boxes"], batch["flips"])
        loss = torch.nn.functional.cross_entropy(model(x), batch["labels"].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if step:  # the first step pays start-up: not counted
            wait, compute = wait + t1 - t0, compute + t2 - t1
    return {"steps": steps, "wait_s": wait, "compute_s": compute, "wait_fraction": wait / (wait + compute),
            "step_s": (wait + compute) / steps}


def _time_batches(batches, clips: int) -> tuple[float, int, int]:
    """Seconds to draw `clips` clips, clips drawn and their uint8 bytes."""
    n = nbytes = 0
    t0 = time.perf_counter()
    for batch in batches:
        n += len(batch["ids"])
        nbytes += batch["clips"].numel()
        if n >= clips:
            break
    return time.perf_counter() - t0, n, nbytes


def _endless(loader):
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def raw_read(store: Store, split: str) -> tuple[float, int]:
    """(seconds, bytes) to read every file of the split front to back."""
    total, buffer = 0, bytearray(READ_BLOCK)  # one buffer: the ceiling pays no allocation
    t0 = time.perf_counter()
    for f in store.index["splits"][split]["files"]:
        with open(store.root / f["path"], "rb", buffering=0) as fh:
            while got := fh.readinto(buffer):
                total += got
    return time.perf_counter() - t0, total


def bench_loader(manifest: Manifest, stores: list[Store], cfg: ClipConfig, split: str = "train", workers: int = 2,
                 batch_size: int = 8, clips: int = 400, decode_clips: int = 64, train_model: str | None = None,
                 train_steps: int = 8, device: str = "cpu", rounds: int = 3, cache_dir: str | Path | None = None) -> dict:
    """Stores at a URL (a bucket, an HTTP server) get loader rows of their own, streamed and, with `cache_dir`,
    read through the shard cache, each as a fraction of the same store's row from local disk (`of_local`,
    when a local store with the same store.json is among `stores`); ceilings and limits are local-disk rows."""
    local = [s for s in stores if s.remote is None]
    contenders = [(s, f"{_name(s)} store", None) for s in local]
    for s in stores:
        if s.remote is not None:
            scheme = s.root.split("://")[0]
            contenders.append((s, f"{_name(s)} store at {scheme}:// (streamed)", None))
            if cache_dir is not None and s.format == "webdataset":
                contenders.append((s, f"{_name(s)} store at {scheme}:// (--cache-dir)", cache_dir))
    first = stores[0]
    t, h, w, _ = first.clip_shape
    results = {"split": split, "workers": workers, "batch_size": batch_size, "sampling": cfg.sampling.name,
               "clip_shape": [t, h, w, 3], "cpus": os.cpu_count(), "rows": []}

    for decoder, label in [("pyav", "PyAV, in-process"), ("ffmpeg", "an ffmpeg process per video")]:
        if decoder == "pyav" and not pyav_installed():
            continue
        batches = _decode_batches(manifest, split, ClipSpec(t, h, w), cfg, decoder, batch_size, workers)
        seconds, n, nbytes = _time_batches(batches, decode_clips)
        results["rows"].append({"path": f"decode every epoch ({label})", "decoder": decoder, "clips": n, "seconds": seconds,
                                "clips_per_s": n / seconds, "mb_per_s": nbytes / seconds / 2**20})

    # every store's loader is started first, then timed in interleaved rounds (the machine's load drifts)
    streams = []
    for store, _, cache in contenders:
        loader = clip_loader(store, split, cfg, batch_size=batch_size, workers=workers, cache_dir=cache)
        batches = _endless(loader)
        next(batches)  # open files and start workers outside the timed part
        streams.append(batches)
    rates = [[] for _ in contenders]
    for _ in range(rounds):
        for k, batches in enumerate(streams):
            for _ in range(2 * workers):  # made by its workers (prefetch 2 each) while the other stores were timed
                next(batches)
            seconds, n, nbytes = _time_batches(batches, clips)
            rates[k].append((n / seconds, nbytes / seconds / 2**20))
    for (store, label, _), batches, store_rates in zip(contenders, streams, rates):
        batches.close()
        stored = sum(f["bytes"] for f in store.index["splits"][split]["files"]) / store.index["splits"][split]["count"]
        results["rows"].append({"path": label, "store": store.name, "clips": clips, "rounds": rounds,
                                "clips_per_s_rounds": [r for r, _ in store_rates],
                                "clips_per_s": statistics.median(r for r, _ in store_rates),
                                "mb_per_s": statistics.median(mb for _, mb in store_rates), "stored_bytes_per_video": stored})
    for (store, label, _) in contenders[len(local):]:  # a remote row against the same store's row from local disk
        twin = next((s for s in local if s.index == store.index), None)
        if twin is not None:
            row = next(r for r in results["rows"] if r["path"] == label)
            row["of_local"] = row["clips_per_s"] / next(r for r in results["rows"] if r["path"] == f"{_name(twin)} store")["clips_per_s"]
    stores = local
    for store in stores:
        raw_read(store, split)  # warm: every row reads from the same (cached) state
        seconds, nbytes = raw_read(store, split)
        per_clip = nbytes / store.index["splits"][split]["count"]
        results["rows"].append({"path": f"raw read of the {_name(store)} files (ceiling)", "clips": store.index["splits"][split]["count"],
                                "seconds": seconds, "clips_per_s": nbytes / per_clip / seconds, "mb_per_s": nbytes / seconds / 2**20})

    results["limits"] = physical_limits(stores, split, cfg, workers, clips) if stores else {}
    base = max(r["clips_per_s"] for r in results["rows"] if "decoder" in r)
    if train_model:
        _add_data_wait(results, manifest, stores, cfg, split, workers, batch_size, train_model, train_steps, device)
    results["decode_clips_per_s"] = base
    for row in results["rows"]:
        row["x_decode"] = row["clips_per_s"] / base
    for store in stores:
        loader_row = next(r for r in results["rows"] if r["path"] == f"{_name(store)} store")
        ceiling = next(r for r in results["rows"] if r["path"].startswith(f"raw read of the {_name(store)} "))
        loader_row["of_ceiling"] = loader_row["clips_per_s"] / ceiling["clips_per_s"]
        for name, limit in results["limits"].items():
            if "clips_per_s" in limit and (name == "read" or store.codec == "jpeg"):
                loader_row[f"of_{name}_limit"] = loader_row["clips_per_s"] / limit["clips_per_s"]
    return results


def _needed(store: Store, split: str, cfg: ClipConfig, clips: int) -> list[tuple[str, list[tuple[int, int]]]]:
    """What each of `clips` clips of a WebDataset store needs (its samples in order, epochs 0, 1, ...):
    (shard path, [(offset, nbytes) of each sampled raw frame or JPEG member])."""
    entries = [e for url in store.shard_paths(split) for e in index_shard(url, os.path.getsize(url))]
    frame_shape = store.clip_shape[1:]
    frame_bytes = int(np.prod(frame_shape))
    out = []
    for k in range(clips):
        epoch, e = divmod(k, len(entries))
        entry, meta = entries[e], json.loads(entries[e]["json"])
        if "jpegs" in entry:
            spans = entry["jpegs"]
            inds, *_ = cfg.plan((len(spans), *frame_shape), 0, meta["id"], epoch)
            out.append((entry["__url__"], [tuple(int(v) for v in spans[t]) for t in inds.ravel()]))
        else:
            with open(entry["__url__"], "rb") as fh:
                fh.seek(entry["offset"])
                length, start = npy_frames_shape(fh, entry["__url__"])[0], fh.tell()
            inds, *_ = cfg.plan((length, *frame_shape), 0, meta["id"], epoch)
            out.append((entry["__url__"], [(start + int(t) * frame_bytes, frame_bytes) for t in inds.ravel()]))
    return out


_JPEGS: list[list[bytes]] = []  # the decode limit's clips, set before its processes fork


def _decode_share(share: range) -> int:
    import simplejpeg

    for k in share:
        for blob in _JPEGS[k]:
            simplejpeg.decode_jpeg(blob, colorspace="RGB")
    return len(share)


def read_limit(store: Store, split: str, cfg: ClipConfig, clips: int) -> dict:
    """A page-cache pread of only the raw frames each clip needs, one thread, into one buffer."""
    needed = _needed(store, split, cfg, clips)
    fds = {url: os.open(url, os.O_RDONLY) for url, _ in needed}
    try:
        view = memoryview(bytearray(max(n for _, spans in needed for _, n in spans)))
        for url, spans in needed:  # warm: the same cached state as the loader rows
            for offset, n in spans:
                os.preadv(fds[url], [view[:n]], offset)
        nbytes, t0 = 0, time.perf_counter()
        for url, spans in needed:
            for offset, n in spans:
                nbytes += os.preadv(fds[url], [view[:n]], offset)
        seconds = time.perf_counter() - t0
    finally:
        for fd in fds.values():
            os.close(fd)
    return {"what": "pread of only the raw frames each clip needs, 1 thread, page cache", "store": str(store.root),
            "clips": clips, "seconds": seconds, "clips_per_s": clips / seconds, "mb_per_s": nbytes / seconds / 2**20}


def jpeg_decode_limit(store: Store, split: str, cfg: ClipConfig, clips: int, processes: int) -> dict:
    """simplejpeg decode of only the JPEG frames each clip needs, in `processes` forked processes that
    hold the bytes already (read before the clock)."""
    global _JPEGS
    needed = _needed(store, split, cfg, clips)
    handles = {url: open(url, "rb", buffering=0) for url, _ in needed}
    try:
        _JPEGS = [[os.pread(handles[url].fileno(), n, offset) for offset, n in spans] for url, spans in needed]
    finally:
        for fh in handles.values():
            fh.close()
    shares = [range(k, min(k + 16, clips)) for k in range(0, clips, 16)]
    collect_before_fork()
    try:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(_decode_share, shares[:processes], chunksize=1)  # started and warm before the clock
            t0 = time.perf_counter()
            done = sum(pool.map(_decode_share, shares, chunksize=1))
            seconds = time.perf_counter() - t0
    finally:
        _JPEGS = []
    return {"what": f"simplejpeg decode of only the JPEG frames each clip needs, {processes} processes", "store": str(store.root),
            "clips": done, "seconds": seconds, "clips_per_s": done / seconds, "processes": processes}


def physical_limits(stores: list[Store], split: str, cfg: ClipConfig, workers: int, clips: int) -> dict:
    """{"read": ..., "jpeg_decode": ...}: each limit's row, or why it was not measured."""
    raw = next((s for s in stores if s.format == "webdataset" and s.codec == "raw"), None)
    jpeg = next((s for s in stores if s.format == "webdataset" and s.codec == "jpeg"), None)
    limits = {"read": read_limit(raw, split, cfg, clips) if raw else {"skipped": "needs a WebDataset raw store among --store"}}
    if jpeg is None:
        limits["jpeg_decode"] = {"skipped": "needs a WebDataset JPEG store among --store"}
    elif importlib.util.find_spec("simplejpeg") is None:
        limits["jpeg_decode"] = {"skipped": "simplejpeg is not installed"}
    else:
        limits["jpeg_decode"] = jpeg_decode_limit(jpeg, split, cfg, clips, max(workers, 1))
    return limits


def _add_data_wait(results, manifest, stores, cfg, split, workers, batch_size, model_name, steps, device) -> None:
    import torch

    from vidpipe.data.augment import DeviceTransform
    from vidpipe.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(model_name, num_classes=len(manifest.classes))
    transform = DeviceTransform(cfg.augment)
    t, h, w, _ = stores[0].clip_shape
    fastest = max((r for r in results["rows"] if "decoder" in r), key=lambda r: r["clips_per_s"])
    batches = _decode_batches(manifest, split, ClipSpec(t, h, w), cfg, fastest["decoder"], batch_size, workers)
    fastest["data_wait"] = data_wait(batches, model, transform, steps, device)
    for store in stores:
        loader = clip_loader(store, split, cfg, batch_size=batch_size, workers=workers)
        row = next(r for r in results["rows"] if r["path"] == f"{_name(store)} store")
        row["data_wait"] = data_wait(_endless(loader), model, transform, steps, device)
    results["train_step"] = {"model": model_name, "device": device, "steps": steps, "torch_threads": torch.get_num_threads()}


def _name(store: Store) -> str:
    return f"{store.format} {store.codec}"  # e.g. "zarr jpeg"


def _percent(row: dict, key: str) -> str:
    return f"{100 * row[key]:.0f}%" if key in row else "-"


def table_rows(results: dict) -> list[list]:
    rows = []
    for r in results["rows"]:
        row = [r["path"], f"{r['clips_per_s']:.1f}", f"{r['mb_per_s']:.0f}", f"{r['x_decode']:.1f}x", _percent(r, "of_ceiling"),
               _percent(r, "of_read_limit"), _percent(r, "of_jpeg_decode_limit"), results["workers"]]
        if any("of_local" in x for x in results["rows"]):
            row.insert(5, _percent(r, "of_local"))
        if "train_step" in results:
            row.append(f"{r['data_wait']['wait_fraction']:.0%} of {r['data_wait']['step_s']:.2f} s" if "data_wait" in r else "-")
        rows.append(row)
    for name, limit in results.get("limits", {}).items():
        label = f"limit: {limit.get('what', name)}"
        if "skipped" in limit:
            rows.append([f"{label} (skipped: {limit['skipped']})"] + ["-"] * (len(rows[0]) - 1 if rows else 7))
            continue
        row = [label, f"{limit['clips_per_s']:.1f}", f"{limit.get('mb_per_s', 0):.0f}" if "mb_per_s" in limit else "-",
               f"{limit['clips_per_s'] / results['decode_clips_per_s']:.1f}x", "-", "-", "-", limit.get("processes", 1)]
        if any("of_local" in x for x in results["rows"]):
            row.insert(5, "-")
        if "train_step" in results:
            row.append("-")
        rows.append(row)
    return rows


def table_columns(results: dict) -> list[str]:
    columns = ["path", "clips/s", "MB/s", "vs decode", "of raw read", "of read limit", "of JPEG decode limit", "workers"]
    if any("of_local" in r for r in results["rows"]):
        columns.insert(5, "of local disk")
    if "train_step" in results:
        columns.append(f"data wait ({results['train_step']['model']} step)")
    return columns


def default_json_path() -> Path:
    return Path("benchmarks/results/loader.json")
