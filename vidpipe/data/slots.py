"""Reusable shared-memory slots for the clip batches DataLoader workers hand to the main process.

A worker's default_collate stacks every batch into a fresh shared-memory segment: for a TSN batch of
8 clips of 8 frames at 128x170 (4.2 MB) the allocation and first touch of its pages were measured at
~4.9 ms against ~0.9 ms for a private buffer and the copy, about a third of a WebDataset raw worker's
time per clip. `BatchSlots` allocates `slots` batch-sized buffers per worker once, before the workers
fork; a worker stacks its clips into a free slot of its own and sends only a `SlotRef`; the main
process copies the clips out (`take`) and frees the slot. A batch the DataLoader discards unseen (an
abandoned epoch) frees its slot when its SlotRef is collected. A worker that finds no free slot within
`WAIT` falls back to default_collate's fresh segment, so nothing can deadlock; only batches of the
expected shape use slots (a loader's last partial batch fits too, as a prefix of a slot).
"""

from __future__ import annotations

import time
import uuid
import weakref

import numpy as np
import torch
from torch.utils.data import get_worker_info

WAIT = 0.05  # seconds a worker waits for a free slot before allocating a segment as default_collate does


class SlotRef:
    """Names one slot's first `n` clips. Created in a worker; where it is unpickled (the main process) it
    finds its BatchSlots by key, and being collected frees the slot."""

    def __init__(self, slots: "BatchSlots", worker: int, slot: int, n: int):
        self.slots, self.worker, self.slot, self.n = slots, worker, slot, n
        self._armed = False

    def __getstate__(self):  # a few integers cross the pipe, never the buffers
        return {"key": self.slots.key, "worker": self.worker, "slot": self.slot, "n": self.n}

    def __setstate__(self, state):
        self.slots = _OPEN.get(state.pop("key"))
        self.__dict__.update(state)
        self._armed = self.slots is not None

    def take(self) -> torch.Tensor:
        """The clips, copied out of the slot, which is free again."""
        if self.slots is None:
            raise RuntimeError("a clip batch names slots this process does not hold")
        # a numpy copy: torch's clone would run on intra-op threads the workers (or a training step) hold
        clips = torch.from_numpy(self.slots.buffers[self.worker, self.slot, : self.n].numpy().copy())
        self.release()
        return clips

    def release(self) -> None:
        if self._armed:
            self.slots.busy[self.worker, self.slot] = 0
            self._armed = False

    def __del__(self):
        self.release()


class BatchSlots:
    """`slots` buffers of `batch_shape` (uint8) per worker, in shared memory, with a busy flag each.
    Made in the main process before its workers start (they inherit or unpickle the same memory)."""

    def __init__(self, workers: int, slots: int, batch_shape: tuple[int, ...]):
        self.batch_shape = tuple(batch_shape)
        self.buffers = torch.empty((workers, slots, *batch_shape), dtype=torch.uint8).share_memory_()
        self.busy = torch.zeros((workers, slots), dtype=torch.int32).share_memory_()
        self.key = uuid.uuid4().hex
        _OPEN[self.key] = self

    def acquire(self, worker: int) -> int | None:
        """A free slot of this worker, marked busy, or None after waiting WAIT seconds."""
        deadline = time.monotonic() + WAIT
        flags = self.busy[worker].numpy()
        while True:
            free = np.flatnonzero(flags == 0)
            if len(free):
                flags[free[0]] = 1
                return int(free[0])
            if time.monotonic() > deadline:
                return None
            time.sleep(0.0005)


_OPEN: "weakref.WeakValueDictionary[str, BatchSlots]" = weakref.WeakValueDictionary()  # this process's, by key


class SlotCollate:
    """A collate_fn for workers: clips go into a slot (a SlotRef in the batch), the rest through `collate`.
    In the main process, or for clips of another shape, it is `collate` itself."""

    def __init__(self, slots: BatchSlots, collate):
        self.slots, self.collate = slots, collate

    def __call__(self, items: list[dict]):
        info = get_worker_info()
        first = items[0]["clips"] if items and isinstance(items[0], dict) else None
        if info is None or not isinstance(first, np.ndarray) or len(items) > self.slots.batch_shape[0] \
                or first.shape != self.slots.batch_shape[1:] or first.dtype != np.uint8:
            return self.collate(items)
        slot = self.slots.acquire(info.id)
        if slot is None:
            return self.collate(items)
        np.stack([item["clips"] for item in items], out=self.slots.buffers[info.id, slot, : len(items)].numpy())
        others = [{k: v for k, v in item.items() if k != "clips"} for item in items]
        rest = numpy_fields(others) or self.collate(others)
        return {k: SlotRef(self.slots, info.id, slot, len(items)) if k == "clips" else rest[k] for k in items[0]}


def numpy_fields(items: list[dict]) -> dict | None:
    """A batch of dict items stacked by numpy (strings kept as lists), or None where a field is of another
    kind; `as_tensors` makes it default_collate's batch. In a worker, the small fields (labels, boxes,
    flips, ids) so travel inside its message, where each torch tensor would be shared through its own file
    descriptor (a socket connection and a segment per tensor: measured, the
    main process's CPU fell from 0.58 to 0.17 ms a clip, ~3 ms a batch of 8, several times the copy of the
    clips out of their slot)."""
    out = {}
    for key, first in items[0].items():
        values = [item[key] for item in items]
        if isinstance(first, str):
            out[key] = values
        elif isinstance(first, np.ndarray):
            out[key] = np.stack(values)
        elif isinstance(first, (bool, int, float, np.generic)):
            out[key] = np.asarray(values)  # default_collate's dtypes: int64, float64, bool, a numpy scalar's own
        else:
            return None
    return out


def as_tensors(fields: dict) -> dict:
    """numpy_fields' arrays as the tensors default_collate gives (no copy), the rest as it is."""
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()}


class Taken:
    """Batches with their clips copied out of their slots (the slots freed), as default_collate gives them.
    An iterator object, not a generator: a generator suspended around the DataLoader's iterator kept its
    workers alive past a Ctrl-C (the process hung on exit instead of saying where to resume)."""

    def __init__(self, batches):
        self._batches = iter(batches)

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._batches)
        if isinstance(batch, dict) and isinstance(batch.get("clips"), SlotRef):
            batch = as_tensors({**batch, "clips": batch["clips"].take()})
        return batch
