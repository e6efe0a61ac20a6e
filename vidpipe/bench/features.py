"""`vidpipe bench features`: backbone features/s and bytes per video over a clip store.

Throughput does not depend on the weights' values, so the benchmark runs `random` weights (offline).
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import torch

from vidpipe.models.backbones import BACKBONES
from vidpipe.stores.features import FeatureConfig, cache_features


def bench_features(store: str | Path, backbones=("resnet18", "resnet50", "r2plus1d_18"), batch_size: int = 4,
                   device: str = "auto", tokens: bool = False, work: str | Path | None = None) -> dict:
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="vidpipe-bench-features-"))
    results = {"store": str(store), "device": device, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "machine": platform.platform(), "rows": []}
    for arch in backbones:
        cfg = FeatureConfig(backbone=arch, weights="random", tokens=tokens or BACKBONES[arch][0] == "clip", batch_size=batch_size, device=device)
        report = cache_features(store, work / arch, cfg, overwrite=True)
        s = report.summary
        nbytes = sum(f["bytes"] for e in s["splits"].values() for f in e["files"])
        videos = sum(e["count"] for e in s["splits"].values())
        results["rows"].append({
            "backbone": arch, "device": str(cfg.torch_device()), "videos": report.videos, "seconds": report.seconds,
            "videos_per_s": report.videos / report.seconds, "frames_per_s": report.frames / report.seconds,
            "features": s["features"]["shape"], "tokens": s["tokens"]["shape"] if s["tokens"] else None,
            "bytes_per_video": nbytes / videos,
        })
    return results


def table_rows(results: dict) -> list[list]:
    return [[r["backbone"], r["device"], r["videos"], f"{r['videos_per_s']:.2f}", f"{r['frames_per_s']:.1f}",
             "x".join(map(str, r["features"])) + (" + tokens " + "x".join(map(str, r["tokens"])) if r["tokens"] else ""),
             f"{r['bytes_per_video'] / 1024:.1f} KB"] for r in results["rows"]]
