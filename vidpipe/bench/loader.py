"""`vidpipe bench loader`: clips/s from stores against decoding every epoch, and against the disk.

All rows serve the same videos with the same temporal sampling and the same drawn augmentation
(uint8 batches, as they leave for the device):
1. decode-per-epoch: what typical training scripts do, decoding the video, sampling and resizing every
   time a clip is used, with FFmpeg in-process (PyAV) and as a process per video; vidpipe's own
   decode paths, which decode only up to the last frame needed and convert only the frames kept, so
   these rows are generous. Every `x decode` figure is against the faster of the two;
2. each store given (WebDataset or zarr, raw or JPEG frames) through `clip_loader`;
3. the ceiling: a raw sequential read of each store's files, in clips/s at that store's bytes per clip.

With `train_model`, each loader (the faster decode path and every store) also feeds that model's
training steps (device transform, forward, backward, SGD) and the data-wait fraction is measured: the
share of wall time the step loop spends blocked on the next batch.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from vidpipe.io.decode import ClipSpec, decode_clip
from vidpipe.io.pyav import pyav_installed
from vidpipe.data.loaders import ClipConfig, clip_loader
from vidpipe.datasets.manifest import Manifest
from vidpipe.stores.clips import Store

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
    return itertools.chain.from_iterable(itertools.repeat(loader))


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
                 train_steps: int = 8, device: str = "cpu") -> dict:
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

    for store in stores:
        loader = clip_loader(store, split, cfg, batch_size=batch_size, workers=workers)
        next(iter(loader))  # open files and start workers outside the timed part
        seconds, n, nbytes = _time_batches(_endless(loader), clips)
        stored = sum(f["bytes"] for f in store.index["splits"][split]["files"]) / store.index["splits"][split]["count"]
        results["rows"].append({"path": f"{_name(store)} store", "store": str(store.root), "clips": n, "seconds": seconds,
                                "clips_per_s": n / seconds, "mb_per_s": nbytes / seconds / 2**20, "stored_bytes_per_video": stored})
    for store in stores:
        raw_read(store, split)  # warm: every row reads from the same (cached) state
        seconds, nbytes = raw_read(store, split)
        per_clip = nbytes / store.index["splits"][split]["count"]
        results["rows"].append({"path": f"raw read of the {_name(store)} files (ceiling)", "clips": store.index["splits"][split]["count"],
                                "seconds": seconds, "clips_per_s": nbytes / per_clip / seconds, "mb_per_s": nbytes / seconds / 2**20})

    base = max(r["clips_per_s"] for r in results["rows"] if "decoder" in r)
    if train_model:
        _add_data_wait(results, manifest, stores, cfg, split, workers, batch_size, train_model, train_steps, device)
    for row in results["rows"]:
        row["x_decode"] = row["clips_per_s"] / base
    for store in stores:
        loader_row = next(r for r in results["rows"] if r["path"] == f"{_name(store)} store")
        ceiling = next(r for r in results["rows"] if r["path"].startswith(f"raw read of the {_name(store)} "))
        loader_row["of_ceiling"] = loader_row["clips_per_s"] / ceiling["clips_per_s"]
    return results


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


def table_rows(results: dict) -> list[list]:
    rows = []
    for r in results["rows"]:
        row = [r["path"], f"{r['clips_per_s']:.1f}", f"{r['mb_per_s']:.0f}", f"{r['x_decode']:.1f}x",
               f"{100 * r['of_ceiling']:.0f}%" if "of_ceiling" in r else "-", results["workers"]]
        if "train_step" in results:
            row.append(f"{r['data_wait']['wait_fraction']:.0%} of {r['data_wait']['step_s']:.2f} s" if "data_wait" in r else "-")
        rows.append(row)
    return rows


def table_columns(results: dict) -> list[str]:
    columns = ["path", "clips/s", "MB/s", "vs decode", "of raw read", "workers"]
    if "train_step" in results:
        columns.append(f"data wait ({results['train_step']['model']} step)")
    return columns


def default_json_path() -> Path:
    return Path("benchmarks/results/loader.json")
