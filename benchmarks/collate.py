"""Main-process collate (a loader with workers=0): torch's default_collate against vidpipe's numpy_collate on
batches of 8 TSN clips (8 x 128 x 170 x 3 uint8), with torch at 2 intra-op threads (this machine's cores) while
another process keeps both cores busy, as a training step does. Interleaved rounds, medians.
Writes benchmarks/results/collate.json.

Usage: .venv/bin/python benchmarks/collate.py
"""

import json
import multiprocessing
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from vidpipe.data.loaders import numpy_collate


def busy(stop):
    x = np.random.default_rng(0).random((512, 512))
    while not stop.is_set():
        x @ x


def main(rounds: int = 7, batches: int = 40) -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    items = [{"clips": rng.integers(0, 255, (1, 8, 128, 170, 3), dtype=np.uint8), "labels": i, "ids": f"v{i}",
              "boxes": rng.integers(0, 9, 4), "flips": bool(i % 2)} for i in range(8)]
    stop = multiprocessing.Event()
    loaders = [multiprocessing.Process(target=busy, args=(stop,)) for _ in range(2)]
    for p in loaders:
        p.start()
    times = {"default_collate": [], "numpy_collate": []}
    try:
        for _ in range(rounds):
            for name, fn in (("default_collate", default_collate), ("numpy_collate", numpy_collate)):
                t0 = time.perf_counter()
                for _ in range(batches):
                    fn(items)
                times[name].append((time.perf_counter() - t0) / batches * 1e3)
    finally:
        stop.set()
        for p in loaders:
            p.join()
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"machine": platform.platform(), "torch_threads": 2, "busy_processes": 2, "batch": "8 clips of 8 x 128 x 170 x 3 uint8",
              "ms_per_batch_median": med, "rounds_ms": times, "speedup": med["default_collate"] / med["numpy_collate"]}
    out = Path(__file__).parent / "results" / "collate.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'collate':16} {'ms/batch (median of ' + str(rounds) + ')':>26}")
    for k, v in med.items():
        print(f"{k:16} {v:26.2f}")
    print(f"numpy_collate is {result['speedup']:.1f}x faster; wrote {out}")


if __name__ == "__main__":
    main()
