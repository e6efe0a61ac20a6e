"""Train-time loaders from stores: no video is decoded here.

`clip_loader(store, split, ...)` returns a DataLoader whose batches are dicts:
  clips  uint8 (B, V, F, H, W, 3)   V views (test-time clips), F frames per view, the store's H x W
  labels int64 (B,)                 after the flip-label map, where a flip was drawn
  ids    list[str]
  boxes  int64 (B, 4), flips bool (B,)   the random crop/flip drawn for each sample (train only)
`DeviceTransform` (augment.py) then crops, resizes, flips and normalises on the model's device.

Determinism. Every random choice for a sample (temporal offsets, crop box, flip) comes from a
generator seeded by (seed, epoch, video id), so a sample is processed identically whatever the worker
count, format or rank. zarr: the order of samples is also identical for any worker count (a seeded
sampler; DistributedSampler under DDP). WebDataset: the set of samples in an epoch is the same, but
the order depends on how shards are dealt to workers and on the seeded shuffle buffer, so it is
reproducible only for the same worker count and ranks.

Completeness. Outside DDP training every stored clip is yielded exactly once per epoch: WebDataset
workers each end on a partial batch, and the loader re-cuts those tails into full batches in the main
process instead of dropping them, so `len(loader)` is the number of batches actually produced. Under
DDP, evaluation splits WebDataset samples (not shards) between ranks, so every rank gets work whatever
the shard count; training draws shards with replacement and gives every rank the same batch count.
"""

from __future__ import annotations

import gc
import hashlib
import io
import itertools
import math
import os
import signal
import tarfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, default_collate, get_worker_info

from vidpipe.errors import VidpipeError
from vidpipe.io import jpeg
from vidpipe.data.augment import AugmentConfig, train_params
from vidpipe.datasets.manifest import hash_fraction
from vidpipe.data.sampling import Sampling, view_indices
from vidpipe.data.slots import BatchSlots, SlotCollate, Taken, as_tensors, numpy_fields
from vidpipe.stores.chunks import ChunkReader
from vidpipe.files import sha256_file
from vidpipe.stores.clips import IndexMismatch, Store, damaged_chunk, open_zarr_group, zarr_lengths
from vidpipe.stores.remote import Remote, is_url, shown
from vidpipe.stores.shards import damaged_shard, index_shard, npy_frames_shape, sample_meta


class SharedEpoch:
    """An epoch number that persistent DataLoader workers see change (a shared-memory tensor)."""

    def __init__(self):
        self._value = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set(self, epoch: int) -> None:
        self._value[0] = epoch

    def get(self) -> int:
        return self._value.item()  # read once a sample: item() is 10x cheaper than int(t[0])


def id_seed(video_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(video_id.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class Holdout:
    """A stable carve of one split: `held=True` keeps the carved `fraction` (e.g. a validation set taken
    from train), `held=False` keeps the rest. The carve is `ids` where given (manifest.stratified_holdout:
    the fraction of each class), else the ids whose hash falls below `fraction`."""

    fraction: float
    held: bool
    ids: frozenset | None = None

    def __call__(self, video_id: str) -> bool:
        carved = video_id in self.ids if self.ids is not None else hash_fraction(video_id) < self.fraction
        return carved == self.held


@dataclass
class ClipConfig:
    """How clips are cut from stored videos; shared by both formats so they yield identical samples."""

    sampling: Sampling = field(default_factory=lambda: Sampling.tsn(8))
    train: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    flip_map: dict[int, int] | None = None  # label -> label after a horizontal flip (Something-Something)
    holdout: Holdout | None = None  # only the videos of the split this keeps

    def keeps(self, video_id: str) -> bool:
        return self.holdout is None or self.holdout(video_id)

    def plan(self, shape: tuple[int, ...], label: int, video_id: str, epoch: int) -> tuple[np.ndarray, np.ndarray, bool, int]:
        """Every random choice for one sample: (indices (V, F), crop box, flip, label after the flip map)."""
        rng = np.random.default_rng([self.seed, epoch, id_seed(video_id)])
        inds = view_indices(shape[0], self.sampling, self.train, rng)
        box, flip = train_params(rng, shape[1], shape[2], self.augment) if self.train else (np.zeros(4, np.int64), False)
        if flip and self.flip_map:
            label = self.flip_map.get(label, label)
        return inds, box, flip, label

    def make_item(self, frames: np.ndarray, label: int, video_id: str, epoch: int) -> dict:
        """From all T stored frames (T, H, W, 3)."""
        return self.read_item(frames.shape, lambda wanted: frames[wanted], label, video_id, epoch)

    def read_item(self, shape: tuple[int, ...], read, label: int, video_id: str, epoch: int) -> dict:
        """From a video of `shape` (T, H, W, 3) whose frames `read(sorted unique indices)` returns: only
        the frames the sampling picks are read (and, for compressed stores, decompressed)."""
        inds, box, flip, label = self.plan(shape, label, video_id, epoch)
        unique = np.unique(inds)
        frames = read(unique)
        if unique.size == inds.size and (unique == inds.ravel()).all():  # frames in order, none repeated (TSN): no second copy
            clip = frames.reshape(*inds.shape, *frames.shape[1:])
        else:
            clip = frames[np.searchsorted(unique, inds)]  # (V, F, H, W, 3)
        return {"clips": clip, "labels": label, "ids": video_id, "boxes": box, "flips": flip}


class ZarrClips(Dataset):
    """Random access into STORE/<split>.zarr. The zarr handle is opened per process (fork-safe)."""

    def __init__(self, store: Store, split: str, spec: ClipConfig):
        if store.format != "zarr":
            raise VidpipeError(f"{store.root} is a {store.format} store; use WebDatasetClips (or clip_loader) for it")
        self.path, self.split, self.root = store.array_path(split), split, store.name
        group = store.zarr_group(split)  # checked against store.json
        ids = group["ids"][:]
        # failed videos leave holes; skip them (and the videos a holdout leaves out)
        self.rows = np.array([i for i in np.flatnonzero(group["valid"][:]) if spec.keeps(str(ids[i]))], np.int64)
        self.lengths = zarr_lengths(group)
        self.labels = group["labels"][:][self.rows]
        self.ids = list(ids[self.rows])
        self.spec, self.epoch = spec, SharedEpoch()
        self.jpeg, self.frame_shape = store.codec == "jpeg", store.clip_shape[1:]
        self._read, self._pid = None, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch.set(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def _reader(self):
        """This process's reader of video rows, `read(row, wanted)`: vidpipe's own layout straight from its
        shard files (ChunkReader, only the wanted frames' chunks), anything else through zarr-python,
        reopened in each worker (its event-loop thread does not survive fork)."""
        if self._pid != os.getpid():
            reader = None if is_url(self.path) else ChunkReader.open(self.path / "frames")
            if reader is not None:
                self._read = reader.frames
            else:  # a bucket's store through zarr's fsspec store
                array = open_zarr_group(self.path)["frames"]
                self._read = lambda row, wanted: array[row][wanted]
            self._pid = os.getpid()
        return self._read

    def __getitem__(self, i: int) -> dict:
        import zarr

        row = int(self.rows[i])
        shape = (int(self.lengths[row]), *self.frame_shape)  # fps stores: the video's own T
        read_frames = self._reader()
        if self.jpeg:  # only the sampled frames are decoded
            def read(wanted):
                return jpeg.decode(read_frames(row, wanted))
        else:
            def read(wanted):
                return read_frames(row, wanted)
        try:
            return self.spec.read_item(shape, read, int(self.labels[i]), self.ids[i], self.epoch.get())
        except (RuntimeError, ValueError, OSError, zarr.errors.BaseZarrError) as e:  # a corrupted chunk: zstd or JPEG errors
            raise damaged_chunk(self.root, self.split, row, e) from None


def skip_bad_sample(exn: Exception) -> bool:
    """webdataset's error policy for one sample that cannot be read: log it and go on with the epoch
    (`vidpipe verify STORE` finds the damage). Pass `handler=webdataset.reraise_exception` to stop instead.
    A store.json that contradicts its data is not one bad sample: that stops the run."""
    if isinstance(exn, IndexMismatch):
        raise exn
    warnings.warn(f"skipped a sample that cannot be read ({exn}); run `vidpipe verify` on the store", stacklevel=2)
    return True


class WebDatasetClips(IterableDataset):
    """Streams STORE/<split>/*.tar through webdataset stages: shards -> worker -> samples -> rank.

    Shards are dealt to workers; under DDP evaluation every rank reads every shard's headers and keeps
    every world_size-th sample, so no rank is left without work when there are fewer shards than ranks.
    resampled=True (training under DDP) draws shards with replacement, seeded per rank and worker, so
    every rank sees the same number of batches; the epoch length is then set by the loader
    (`batches_per_epoch`).
    """

    def __init__(self, store: Store, split: str, spec: ClipConfig, shuffle_buffer: int = 256,
                 rank: int = 0, world_size: int = 1, resampled: bool = False, handler=None, cache_dir: str | Path | None = None):
        if store.format != "webdataset":
            raise VidpipeError(f"{store.name} is a {store.format} store; use ZarrClips (or clip_loader) for it")
        self.urls = store.shard_paths(split)
        # a bucket's shards: fetched whole as they are read (`_fetched`), or kept in cache_dir after their first read
        self.remote = store.remote
        self.cache = ShardCache(cache_dir, store.remote) if store.remote and cache_dir else None
        self.files = dict(zip(self.urls, store.index["splits"][split]["files"]))
        # samples per shard, where store.json records it: a shard that lost whole samples is refused
        self.shard_counts = {u: f.get("count") for u, f in zip(self.urls, store.index["splits"][split]["files"])}
        listed = store.index["splits"][split]["count"]
        if None not in self.shard_counts.values() and sum(self.shard_counts.values()) != listed:
            raise IndexMismatch(store.index_path, f"split {split}: its shards hold {sum(self.shard_counts.values())} samples, "
                                                           f"its count says {listed}")
        ids = store.ids(split) if spec.holdout is not None else None
        self.count = store.index["splits"][split]["count"] if ids is None else sum(map(spec.keeps, ids))
        self.spec, self.shuffle_buffer, self.epoch = spec, shuffle_buffer, SharedEpoch()
        self.rank, self.world_size, self.resampled = rank, world_size, resampled
        self.frame_shape = store.clip_shape[1:]  # (H, W, 3): JPEG members do not carry it
        self.store, self.split = store, split  # every sample is checked against store.json by the store's own rule
        self.handler = handler or skip_bad_sample

    def set_epoch(self, epoch: int) -> None:
        self.epoch.set(epoch)

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info else (0, 1)

    def _shards(self):
        """webdataset's shard stages: resampled with replacement (seeded per rank, worker and epoch), or
        every shard once, shuffled alike on every rank in training, then dealt to DataLoader workers."""
        import webdataset as wds

        worker, _ = self._worker()
        epoch_seed = wds.utils.make_seed(self.spec.seed, self.epoch.get())
        if self.resampled:
            return wds.ResampledShards(self.urls, seed=epoch_seed, worker_seed=lambda: self.rank * 1000 + worker, deterministic=True)
        return wds.DataPipeline(wds.SimpleShardList(self.urls, seed=epoch_seed if self.spec.train else None), wds.split_by_worker)

    def _select(self, samples):
        """The samples this rank keeps: those the holdout keeps, then (split by sample, not by shard,
        outside resampled training) every world_size-th of this worker's stream, identical on every rank."""
        split_by_rank = self.world_size > 1 and not self.resampled
        kept = 0
        for sample in samples:
            if not self.spec.keeps(sample["meta"]["id"]):
                continue
            if not split_by_rank or kept % self.world_size == self.rank:
                yield sample
            kept += 1

    def __iter__(self):
        import webdataset as wds

        worker, _ = self._worker()
        stages = [self._shards(), self._members, self._select]
        if self.spec.train:  # the buffer holds small handles (offsets), not frames
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 64),
                                      seed=hash((self.spec.seed, self.epoch.get(), self.rank, worker)) & 0xFFFFFFFF))
        stages += [wds.map(self._item, handler=self.handler), _drop_keys]
        return iter(wds.DataPipeline(*stages))

    def index_shards(self) -> None:
        """Parse every shard's handles now, in this process, up to SHARD_INDEX_BUDGET: DataLoader workers
        forked afterwards inherit them instead of each parsing the shards it meets (shards move between
        workers from epoch to epoch, so every worker would otherwise parse most of them)."""
        if self.remote is None:  # a bucket's shards are fetched by the workers that read them
            for url in self.urls:
                self._entries(url)

    def _entries(self, url: str, data: bytes | None = None) -> list[dict]:
        """A shard's sample handles, parsed once per process and kept while the budget allows. `data`: the
        bytes of a bucket's shard, fetched whole (its handles are kept by its sha256 in store.json)."""
        global _shard_index_bytes
        try:
            if data is None:
                stat = os.stat(url)
                key, size = (url, stat.st_size, stat.st_mtime_ns), stat.st_size
            else:
                key, size = (url, len(data), self.files[url]["sha256"]), len(data)
            entries = _SHARD_INDEX.get(key)
            if entries is None:
                entries = index_shard(url, size, data)
                for entry in entries:  # parsed once here, not once a sample and epoch
                    entry["meta"] = sample_meta(entry["json"])
                cost = sum(256 + len(e.get("json", b"")) + 16 * len(e.get("jpegs", ())) for e in entries)
                if _shard_index_bytes + cost <= SHARD_INDEX_BUDGET:
                    _SHARD_INDEX[key], _shard_index_bytes = entries, _shard_index_bytes + cost
        except (tarfile.TarError, OSError, VidpipeError, ValueError) as e:  # ValueError: a json member without an id
            raise damaged_shard(shown(url), e) from None
        expected = self.shard_counts.get(url)
        if expected is not None and len(entries) != expected:
            raise damaged_shard(shown(url), ValueError(f"{len(entries)} samples, store.json says {expected}"))
        return entries

    def _members(self, shards):
        """Shards opened for random access, local files (a bucket's: in memory, or in the cache): one handle
        per sample (frames' byte offsets, cls, json).

        Raw frames are an uncompressed C-order .npy and JPEG frames one member each, so the item stage
        reads (and decodes) only the frames the temporal sampling picks (8 of 32 for TSN) instead of
        streaming every byte of the tar. Handles come from `_entries` (Python's tarfile costs ~50 us a
        member, ~2 ms a sample of 32 JPEG frames, so they are parsed once per process and kept).
        """
        if self.remote is not None and self.cache is None:
            yield from self._fetched(shards)
            return
        for shard in shards:
            local = self.cache.local(self.files[shard["url"]]) if self.cache else shard["url"]
            for entry in self._entries(local):
                yield dict(entry)  # later stages add keys to their copy

    def _fetched(self, shards):
        """A bucket's shards, each fetched whole into memory with one GET while the one before it is read
        (a thread fetches one ahead), then read as a local shard is: only the sampled frames are decoded,
        and handles are parsed once per process. Memory: the shards whose samples the shuffle buffer holds."""
        pool = ThreadPoolExecutor(1)
        try:
            ahead = None
            for shard in itertools.chain(shards, [None]):
                following = (shard["url"], pool.submit(self._fetch, shard["url"])) if shard is not None else None
                if ahead is not None:
                    url, data = ahead[0], ahead[1].result()
                    for entry in self._entries(url, data):
                        yield {**entry, "data": data}
                ahead = following
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, url: str) -> bytes:
        entry = self.files[url]
        data = self.remote.read_bytes(entry["path"])
        if len(data) != entry["bytes"]:
            raise damaged_shard(shown(url), ValueError(f"{len(data)} bytes, store.json says {entry['bytes']}"))
        return data

    def _check(self, sample: dict, shape: tuple) -> int:
        """The label, once the sample's shape and label agree with store.json."""
        try:
            label = int(sample["cls"].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            label = -1
        self.store.check_sample(self.split, sample["meta"]["id"], shape, label)
        return label

    def _item(self, sample: dict) -> dict:
        meta = sample["meta"]
        if "data" in sample:  # a bucket's shard, in memory
            data = memoryview(sample["data"])
            if "jpegs" in sample:
                spans = sample["jpegs"].tolist()
                shape = (len(spans), *self.frame_shape)
                read = lambda wanted: jpeg.decode([data[spans[t][0]:spans[t][0] + spans[t][1]] for t in wanted])  # noqa: E731
            else:
                fh = io.BytesIO(data)
                fh.seek(sample["offset"])
                shape = npy_frames_shape(fh, f"{shown(sample['__url__'])}: sample {sample['__key__']!r}")
                frames = np.frombuffer(data, np.uint8, count=int(np.prod(shape)), offset=fh.tell()).reshape(shape)
                read = lambda wanted: frames[wanted]  # noqa: E731
            return self.spec.read_item(shape, read, self._check(sample, shape), meta["id"], self.epoch.get())
        if "jpegs" in sample:
            spans = sample["jpegs"].tolist()
            shape = (len(spans), *self.frame_shape)
            label = self._check(sample, shape)
            with open(sample["__url__"], "rb", buffering=0) as fh:
                return self.spec.read_item(shape, lambda wanted: jpeg.decode([_read_span(fh, *spans[t]) for t in wanted]),
                                           label, meta["id"], self.epoch.get())
        with open(sample["__url__"], "rb", buffering=0) as fh:
            fh.seek(sample["offset"])
            shape = npy_frames_shape(fh, f"{sample['__url__']}: sample {sample['__key__']!r}")
            label = self._check(sample, shape)
            start = fh.tell()
            return self.spec.read_item(shape, lambda wanted: _read_frames(fh, start, shape, wanted), label, meta["id"], self.epoch.get())


class ShardCache:
    """A bucket's shards kept in a local folder (`--cache-dir`) for runs of several epochs on a slow link:
    each downloaded once, checked against its sha256 in store.json, and named by it, so a shard that
    changed is fetched again and one cache serves any number of stores."""

    def __init__(self, root: str | Path, remote: Remote):
        self.root, self.remote = Path(root) / "shards", remote

    def local(self, entry: dict) -> str:
        path = self.root / f"{entry['sha256']}.tar"
        if path.is_file() and path.stat().st_size == entry["bytes"]:
            return str(path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
        try:
            self.remote.download(entry["path"], tmp)
            if sha256_file(tmp) != entry["sha256"]:
                raise VidpipeError(f"shard {shown(self.remote.url_of(entry['path']))} does not match its sha256 in store.json; "
                                   f"run `vidpipe verify {shown(self.remote.url)}`, then re-extract")
            tmp.replace(path)  # other workers see the whole shard or none
        finally:
            tmp.unlink(missing_ok=True)
        return str(path)


SHARD_INDEX_BUDGET = 256 << 20  # bytes of kept shard handles per process (~1 KB a sample, ~3 KB in fps stores)
_SHARD_INDEX: dict[tuple, list[dict]] = {}  # (path, size, mtime) -> sample handles, per process
_shard_index_bytes = 0


def _read_span(fh, offset: int, size: int) -> bytes:
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise VidpipeError(f"{fh.name}: a frame ends early; run `vidpipe verify` on the store")
    return data


def _drop_keys(samples):
    """Items as ZarrClips yields them: without the `__key__` webdataset's map stage adds."""
    for sample in samples:
        sample.pop("__key__", None)
        yield sample


def _read_frames(fh, data_start: int, shape: tuple[int, ...], wanted: np.ndarray) -> np.ndarray:
    """Frames `wanted` (sorted, unique) of a C-order (T, H, W, C) uint8 array stored at data_start;
    runs of consecutive frames are read with one call."""
    frame_bytes = math.prod(shape[1:])
    out = np.empty((len(wanted), *shape[1:]), np.uint8)
    view = memoryview(out).cast("B")
    k = 0
    while k < len(wanted):
        run = 1
        while k + run < len(wanted) and wanted[k + run] == wanted[k] + run:
            run += 1
        fh.seek(data_start + int(wanted[k]) * frame_bytes)
        got = fh.readinto(view[k * frame_bytes : (k + run) * frame_bytes])
        if got != run * frame_bytes:
            raise VidpipeError(f"{fh.name}: frames.npy ends early; run `vidpipe verify` on the store")
        k += run
    return out


def collect_before_fork() -> None:
    """Free this process's unreachable objects before it forks workers. A PyAV filter graph held in a
    reference cycle (a traceback of a failed decode keeps one) that a forked child's garbage collector
    frees waits forever for libswscale's slice threads, which a fork does not copy: the DataLoader hangs."""
    gc.collect()


def dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def rebatch(batches, batch_size: int):
    """Re-cut a stream of batches (each worker's last one partial) into full batches of `batch_size`;
    only the very last batch may be smaller. Full batches pass through without a copy."""
    pending, held = [], 0
    for batch in batches:
        if not pending and len(batch["ids"]) == batch_size:
            yield batch
            continue
        pending.append(batch)
        held += len(batch["ids"])
        while held >= batch_size:
            whole = _concat(pending)
            yield _slice(whole, 0, batch_size)
            held -= batch_size
            pending = [_slice(whole, batch_size, batch_size + held)] if held else []
    if pending:
        yield _concat(pending)


def _concat(batches: list[dict]) -> dict:
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    return {k: torch.cat([b[k] for b in batches]) if isinstance(v, torch.Tensor) else
            [x for b in batches for x in b[k]] if isinstance(v, list) else v for k, v in first.items()}


def _slice(batch: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop] if isinstance(v, (torch.Tensor, list)) else v for k, v in batch.items()}


class EpochLoader:
    """A DataLoader that knows its epoch: `set_epoch(e)` reseeds sampling, shuffling and augmentation.

    Workers are persistent (started once, not every epoch); they read the epoch from shared memory.
    The DataLoader draws its worker seeds from a generator of its own, never from torch's global RNG, so
    creating or recreating the iterator (as a resumed run does) leaves the training RNG stream untouched.
    `len()` is the number of batches one epoch yields.
    """

    def __init__(self, dataset, loader_kwargs: dict, sampler=None, batches_per_epoch: int | None = None, collate_fn=None,
                 item_shape: tuple[int, ...] | None = None):
        # collate_fn None: in workers, clips go into reusable shared-memory slots (slots.py) where `item_shape`
        # (one sample's clips) is known, and the rest through torch's default_collate; in the main process
        # (num_workers=0), numpy_collate, the same batch without torch's intra-op threads
        workers = loader_kwargs["num_workers"]
        if collate_fn is None and workers == 0:
            collate_fn = numpy_collate
        elif collate_fn is None and item_shape is not None and not loader_kwargs.get("pin_memory"):
            slots = _batch_slots(workers, (loader_kwargs["batch_size"], *item_shape))
            collate_fn = SlotCollate(slots, default_collate) if slots is not None else None
        self.dataset, self.sampler, self.kwargs, self.batches_per_epoch = dataset, sampler, loader_kwargs, batches_per_epoch
        self.loader = DataLoader(dataset, sampler=sampler, collate_fn=collate_fn, worker_init_fn=_ignore_interrupts,
                                 persistent_workers=loader_kwargs["num_workers"] > 0,
                                 generator=torch.Generator().manual_seed(0), **loader_kwargs)
        self._forked = False
        # several workers streaming one iterable each end on a partial batch: re-cut those tails
        self._rebatch = isinstance(dataset, IterableDataset) and batches_per_epoch is None and loader_kwargs["num_workers"] > 1

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        n = len(self.sampler) if self.sampler is not None else self.dataset.count
        return math.ceil(n / self.kwargs["batch_size"])

    def __iter__(self):
        if self.kwargs["num_workers"] > 0 and not self._forked:  # persistent workers fork on the first epoch only
            collect_before_fork()
            self._forked = True
        batches = Taken(self.loader)
        if self.batches_per_epoch is not None:
            return itertools.islice(batches, self.batches_per_epoch)
        return rebatch(batches, self.kwargs["batch_size"]) if self._rebatch else batches


SLOT_BUDGET = 512 << 20  # bytes of batch slots per loader; past it, workers allocate per batch as torch does
SLOTS_PER_WORKER = 3  # the DataLoader's prefetch (2 per worker) and the batch being filled


def _batch_slots(workers: int, batch_shape: tuple[int, ...]) -> BatchSlots | None:
    """Slots for `workers`, or None where they would exceed SLOT_BUDGET or shared memory is short."""
    if workers * SLOTS_PER_WORKER * math.prod(batch_shape) > SLOT_BUDGET:
        return None
    try:
        return BatchSlots(workers, SLOTS_PER_WORKER, batch_shape)
    except (RuntimeError, OSError):  # a small /dev/shm (containers): per-batch segments, as before
        return None


def numpy_collate(items: list[dict]):
    """default_collate's batch (the same tensors, dtypes and lists) stacked by numpy: in the main process,
    torch.stack of uint8 clips runs on torch's intra-op threads, which a busy training step (or another
    process) holds, and was measured at most of a workers=0 epoch; a numpy copy needs no thread pool."""
    fields = numpy_fields(items) if items and isinstance(items[0], dict) else None
    return as_tensors(fields) if fields is not None else default_collate(items)


def _ignore_interrupts(worker_id: int) -> None:
    """Ctrl-C reaches every process of the terminal's group: workers leave it to the main process, which
    stops them and says once where the run can be resumed (instead of a KeyboardInterrupt traceback each)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def clip_loader(store: str | Store, split: str, spec: ClipConfig, batch_size: int = 8, workers: int = 2,
                rank: int | None = None, world_size: int | None = None, shuffle_buffer: int = 256,
                pin_memory: bool = False, cache_dir: str | Path | None = None) -> EpochLoader:
    """A loader over either store format, in a folder or a bucket. Under DDP (or given rank/world_size),
    training uses DistributedSampler (zarr) or resampled shards with an equal batch count per rank
    (WebDataset). `cache_dir`: keep a bucket's WebDataset shards there after their first read."""
    store = store if isinstance(store, Store) else Store.open(store)
    if rank is None or world_size is None:
        rank, world_size = dist_info()
    kwargs = dict(batch_size=batch_size, num_workers=workers, pin_memory=pin_memory, drop_last=False)
    views, frames = spec.plan(store.clip_shape, 0, "", 0)[0].shape  # every sample's clips: (V, F, H, W, 3)
    item_shape = (views, frames, *store.clip_shape[1:])
    if store.format == "zarr":
        dataset = ZarrClips(store, split, spec)
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=spec.train, seed=spec.seed)
        return EpochLoader(dataset, kwargs, sampler=sampler, item_shape=item_shape)
    resampled = spec.train and world_size > 1
    dataset = WebDatasetClips(store, split, spec, shuffle_buffer, rank, world_size, resampled, cache_dir=cache_dir)
    if workers > 0:  # parsed once here, inherited by the forked workers
        dataset.index_shards()
    batches = math.ceil(dataset.count / (world_size * batch_size)) if resampled else None
    return EpochLoader(dataset, kwargs, batches_per_epoch=batches, item_shape=item_shape)
