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
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, get_worker_info

from vidpipe.errors import VidpipeError
from vidpipe.pipeline.augment import AugmentConfig, train_params
from vidpipe.pipeline.sampling import Sampling, view_indices
from vidpipe.pipeline.store import Store


def id_seed(video_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(video_id.encode(), digest_size=8).digest(), "big")


@dataclass
class ClipConfig:
    """How clips are cut from stored videos; shared by both formats so they yield identical samples."""

    sampling: Sampling = field(default_factory=lambda: Sampling.tsn(8))
    train: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    flip_map: dict[int, int] | None = None  # label -> label after a horizontal flip (Something-Something)

    def make_item(self, frames: np.ndarray, label: int, video_id: str, epoch: int) -> dict:
        rng = np.random.default_rng([self.seed, epoch, id_seed(video_id)])
        inds = view_indices(frames.shape[0], self.sampling, self.train, rng)  # (V, F)
        clip = frames[inds]  # (V, F, H, W, 3)
        box, flip = (train_params(rng, frames.shape[1], frames.shape[2], self.augment) if self.train
                     else (np.zeros(4, np.int64), False))
        if flip and self.flip_map:
            label = self.flip_map.get(label, label)
        return {"clips": clip, "labels": label, "ids": video_id, "boxes": box, "flips": flip}


class ZarrClips(Dataset):
    """Random access into STORE/<split>.zarr. The zarr handle is opened per process (fork-safe)."""

    def __init__(self, store: Store, split: str, spec: ClipConfig):
        import zarr

        if store.format != "zarr":
            raise VidpipeError(f"{store.root} is a {store.format} store; use WebDatasetClips (or clip_loader) for it")
        self.path = store.root / store.index["splits"][split]["array"]
        group = zarr.open_group(self.path, mode="r")
        self.rows = np.flatnonzero(group["valid"][:])  # failed videos leave holes; skip them
        self.labels = group["labels"][:][self.rows]
        self.ids = list(group["ids"][:][self.rows])
        self.spec, self.epoch = spec, 0
        self._frames, self._pid = None, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows)

    def _array(self):
        if self._pid != os.getpid():  # zarr's event loop thread does not survive fork: reopen in each worker
            import zarr

            self._frames, self._pid = zarr.open_group(self.path, mode="r")["frames"], os.getpid()
        return self._frames

    def __getitem__(self, i: int) -> dict:
        frames = self._array()[int(self.rows[i])]
        return self.spec.make_item(frames, int(self.labels[i]), self.ids[i], self.epoch)


class WebDatasetClips(IterableDataset):
    """Streams STORE/<split>/*.tar through webdataset stages: shards -> node -> worker -> samples.

    resampled=True (training under DDP) draws shards with replacement, seeded per rank and worker, so
    every rank sees the same number of batches and no worker is left without shards; the epoch length
    is then set by the loader (`batches_per_epoch`).
    """

    def __init__(self, store: Store, split: str, spec: ClipConfig, shuffle_buffer: int = 256,
                 rank: int = 0, world_size: int = 1, resampled: bool = False):
        if store.format != "webdataset":
            raise VidpipeError(f"{store.root} is a {store.format} store; use ZarrClips (or clip_loader) for it")
        self.urls = store.shard_paths(split)
        self.count = store.index["splits"][split]["count"]
        self.spec, self.shuffle_buffer, self.epoch = spec, shuffle_buffer, 0
        self.rank, self.world_size, self.resampled = rank, world_size, resampled

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info else (0, 1)

    def _shards(self):
        worker, num_workers = self._worker()
        if self.resampled:
            rng = np.random.default_rng([self.spec.seed, self.epoch, self.rank, worker])
            while True:
                yield {"url": self.urls[int(rng.integers(len(self.urls)))]}
        urls = list(self.urls)
        if self.spec.train:
            np.random.default_rng([self.spec.seed, self.epoch]).shuffle(urls)  # same order on every rank
        yield from ({"url": u} for u in itertools.islice(urls, self.rank * num_workers + worker, None, self.world_size * num_workers))

    def __iter__(self):
        import webdataset as wds

        worker, _ = self._worker()
        stages = [self._shards, wds.tarfile_to_samples()]
        if self.spec.train:
            stages.append(wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 64),
                                      seed=hash((self.spec.seed, self.epoch, self.rank, worker)) & 0xFFFFFFFF))
        stages += [wds.decode(), wds.map(self._item)]
        return iter(wds.DataPipeline(*stages))

    def _item(self, sample: dict) -> dict:
        return self.spec.make_item(sample["frames.npy"], int(sample["cls"]), sample["json"]["id"], self.epoch)


def _collate(items: list[dict]) -> dict:
    return {
        "clips": torch.from_numpy(np.stack([it["clips"] for it in items])),
        "labels": torch.tensor([it["labels"] for it in items], dtype=torch.int64),
        "ids": [it["ids"] for it in items],
        "boxes": torch.from_numpy(np.stack([it["boxes"] for it in items])),
        "flips": torch.tensor([it["flips"] for it in items], dtype=torch.bool),
    }


def dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochLoader:
    """A DataLoader that knows its epoch: `set_epoch(e)` reseeds sampling, shuffling and augmentation."""

    def __init__(self, dataset, loader_kwargs: dict, sampler=None, batches_per_epoch: int | None = None):
        self.dataset, self.sampler, self.kwargs, self.batches_per_epoch = dataset, sampler, loader_kwargs, batches_per_epoch

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
        loader = DataLoader(self.dataset, sampler=self.sampler, collate_fn=_collate, **self.kwargs)
        return iter(loader) if self.batches_per_epoch is None else itertools.islice(loader, self.batches_per_epoch)


def clip_loader(store: str | Store, split: str, spec: ClipConfig, batch_size: int = 8, workers: int = 2,
                rank: int | None = None, world_size: int | None = None, shuffle_buffer: int = 256,
                pin_memory: bool = False) -> EpochLoader:
    """A loader over either store format. Under DDP (or given rank/world_size), training uses
    DistributedSampler (zarr) or resampled shards with an equal batch count per rank (WebDataset)."""
    store = store if isinstance(store, Store) else Store.open(store)
    if rank is None or world_size is None:
        rank, world_size = dist_info()
    kwargs = dict(batch_size=batch_size, num_workers=workers, pin_memory=pin_memory,
                  persistent_workers=False, drop_last=False)
    if store.format == "zarr":
        dataset = ZarrClips(store, split, spec)
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=spec.train, seed=spec.seed)
        return EpochLoader(dataset, kwargs, sampler=sampler)
    resampled = spec.train and world_size > 1
    dataset = WebDatasetClips(store, split, spec, shuffle_buffer, rank, world_size, resampled)
    batches = math.ceil(dataset.count / (world_size * batch_size)) if resampled else None
    return EpochLoader(dataset, kwargs, batches_per_epoch=batches)
