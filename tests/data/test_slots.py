"""Batch slots: workers' batches through reusable shared memory equal torch's default_collate of the same
items, survive being held, abandoned epochs free their slots, and a worker never waits forever."""

import gc
import time

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from vidpipe.data.augment import AugmentConfig
from vidpipe.data.loaders import ClipConfig, clip_loader
from vidpipe.data.sampling import Sampling
from vidpipe.data.slots import WAIT, BatchSlots, SlotCollate
from vidpipe.datasets.adapters import build_manifest
from vidpipe.stores.clips import Store
from vidpipe.stores.extract import ExtractConfig, extract


@pytest.fixture(scope="module")
def stores(synth_h264, tmp_path_factory):
    m = build_manifest("synthetic", synth_h264)
    base = tmp_path_factory.mktemp("slot_stores")
    for fmt in ("webdataset", "zarr"):
        extract(m, base / fmt, ExtractConfig(format=fmt, frames=12, size=32, shard_size="100KB"))
    return {fmt: Store.open(base / fmt) for fmt in ("webdataset", "zarr")}


CFG = ClipConfig(sampling=Sampling.tsn(4), train=True, augment=AugmentConfig(size=24), seed=3)


@pytest.mark.parametrize("fmt", ["webdataset", "zarr"])
def test_held_batches_equal_default_collate_of_their_items(stores, fmt):
    loader = clip_loader(stores[fmt], "train", CFG, batch_size=3, workers=2)
    assert isinstance(loader.loader.collate_fn, SlotCollate)
    loader.set_epoch(1)
    held = list(loader)  # every batch kept while later ones are made: none may share a slot's memory
    reference = clip_loader(stores[fmt], "train", CFG, batch_size=3, workers=0)  # no slots in the main process
    reference.set_epoch(1)
    items = {}
    for batch in reference:
        for k, vid in enumerate(batch["ids"]):
            items[vid] = {key: batch[key][k] if isinstance(batch[key], torch.Tensor) else vid for key in batch}
    assert sorted(v for b in held for v in b["ids"]) == sorted(items)
    for batch in held:
        expected = default_collate([{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in items[vid].items()}
                                    for vid in batch["ids"]])
        assert list(batch) == list(expected) and batch["ids"] == expected["ids"]
        for key in ("clips", "labels", "boxes", "flips"):
            assert batch[key].dtype == expected[key].dtype and torch.equal(batch[key], expected[key]), key


def test_abandoned_epochs_free_their_slots(stores):
    loader = clip_loader(stores["webdataset"], "train", CFG, batch_size=2, workers=2)
    slots = loader.loader.collate_fn.slots
    for epoch in range(6):  # one batch of each epoch, the prefetched rest discarded by the DataLoader
        loader.set_epoch(epoch)
        next(iter(loader))
    loader.set_epoch(6)
    ids = [v for b in loader for v in b["ids"]]
    assert sorted(ids) == sorted(stores["webdataset"].ids("train"))
    gc.collect()
    deadline = time.monotonic() + 5
    while slots.busy.sum() and time.monotonic() < deadline:  # workers stop prefetching once the epoch ends
        time.sleep(0.05)
    assert int(slots.busy.sum()) == 0


def test_a_worker_with_no_free_slot_falls_back_after_a_bounded_wait():
    slots = BatchSlots(workers=1, slots=2, batch_shape=(2, 1, 4, 8, 8, 3))
    assert slots.acquire(0) == 0 and slots.acquire(0) == 1
    t0 = time.monotonic()
    assert slots.acquire(0) is None
    assert WAIT <= time.monotonic() - t0 < WAIT + 1.0
    items = [{"clips": np.zeros((1, 4, 8, 8, 3), np.uint8), "labels": 1, "ids": "a"}]
    assert torch.is_tensor(SlotCollate(slots, default_collate)(items)["clips"])  # outside a worker: plain collate
