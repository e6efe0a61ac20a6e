"""Clip models trained on the synthetic pairs (a clip store) on CPU: one family per run, one schedule per family.

The synthetic set's classes come in pairs whose members show the same frames in opposite orders, so
within-pair accuracy (0.5 = chance) measures whether a model uses temporal order. Every run: 64 x 64
crops of 16-frame uniform clips, TSN 8 segments, batch 16, 30 epochs, AdamW lr 5e-4, unless its family
says otherwise. The checkpoint is the one val (10 % of train, by video-id hash) chose; its figures are
on the test split, which chooses nothing.

Families (--family), each written to benchmarks/results/<family>-synthetic.json:
- timesformer: TimeSformer and its RetNet hybrid, tiny preset (192 wide, 3 heads) cut to 4 blocks, from scratch; the hybrid
  twice, recomputing its temporal update in backward (the default) and keeping every activation.
- vivit: ViViT factorised encoder, the tiny preset (Mini-ViViT: 4 spatial + 4 temporal blocks), from scratch
  and from an image model (central-frame init). No pretrained image file can be downloaded here, so the
  image model is a random-weight timm deit_tiny_patch16_224 built locally (seed 0): that run exercises the
  init, not ImageNet's benefit. The base preset (115 M parameters) is too slow for 30 epochs on a 2-core
  CPU (its first epoch had not finished after 4 minutes); `tests/train` trains it end to end for one.
- tsm: ResNet-50 TSN (tsm_r50 with the shift off: order-blind), TSM and TIN (8 segments), from scratch (no
  ImageNet file offline), 15 epochs instead of 30 (about a minute an epoch each on a 2-core CPU).
- squeezetime: SqueezeTime from scratch with its own sampling (16 frames 4 source frames apart: 1 stored frame
  apart on this store of 48-frame videos), 15 epochs.

Usage: .venv/bin/python benchmarks/synthetic_pairs.py WORK --family timesformer|vivit|tsm|squeezetime [--runs NAME,...]
"""

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

from vidpipe.datasets.adapters import build_manifest
from vidpipe.datasets.synth import SynthConfig, synth, within_pair_accuracy
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.train.config import load_config
from vidpipe.train.evaluate import evaluate_checkpoint
from vidpipe.train.loop import train

COMMON = ["data.crop_size=64", "data.frames=8", "data.batch_size=16", "optim.epochs=30", "optim.lr=5e-4", "data.workers=2", "device=cpu"]
TIMESFORMER = ["model_options.preset=tiny", "model_options.depth=4", "model_options.image_size=64"]
# run name -> (model, options, timm image model to initialise from, or None)
FAMILIES = {
    "timesformer": {
        "timesformer": ("timesformer", TIMESFORMER, None),
        "timesformer_retnet": ("timesformer_retnet", TIMESFORMER + ["model_options.cls_mode=causal"], None),
        # the same model keeping every activation for backward (before recompute_time, the default): the same training
        "timesformer_retnet-kept": ("timesformer_retnet", TIMESFORMER + ["model_options.cls_mode=causal", "model_options.recompute_time=false"], None),
    },
    "vivit": {
        "vivit_fe-tiny": ("vivit_fe", ["model_options.preset=tiny", "model_options.image_size=64"], None),
        "vivit_fe-tiny-init": ("vivit_fe", ["model_options.preset=tiny", "model_options.image_size=64"], "deit_tiny"),
    },
    "tsm": {  # ResNet-50 on 8 x 64 x 64 runs ~1 min an epoch on 2 cores: 15 epochs, the same for the three
        "tsn_r50": ("tsm_r50", ["model_options.is_shift=false", "optim.epochs=15"], None),
        "tsm_r50": ("tsm_r50", ["optim.epochs=15"], None),
        "tin_r50": ("tin_r50", ["optim.epochs=15"], None),
    },
    "squeezetime": {  # its stem reads exactly `frames` frames: 16, the official clip length
        "squeezetime": ("squeezetime", ["data.frames=16", "optim.epochs=15"], None),
    },
}


def image_model(work: Path, name: str) -> Path:
    """A random-weight image model saved in its library's own layout (seed 0)."""
    import torch

    import timm

    path = work / f"{name}-random-seed0.pth"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(timm.create_model(f"{name}_patch16_224", pretrained=False).state_dict(), path)
    return path


def main(work: Path, family: str, runs: list[str] | None) -> None:
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "data").exists():
        synth(work / "data", SynthConfig(videos_per_class=20))
    store = work / "store"
    extract(build_manifest("synthetic", work / "data"), store, ExtractConfig(frames=16, size=64))
    out = Path(__file__).parent / "results" / f"{family}-synthetic.json"
    results = json.loads(out.read_text()) if runs and out.exists() else {}  # --runs updates those rows only
    results.update({"machine": platform.platform(), "options": COMMON, "store": "uniform, 16 frames, height 64"})
    results.setdefault("models", {})
    for name, (model, options, init) in FAMILIES[family].items():
        if runs and name not in runs:
            continue
        run = work / f"run-{name}"
        extra = options + ([f"init={image_model(work, init)}"] if init else [])
        t0 = time.perf_counter()
        cfg = load_config(None, COMMON + extra, base={"model": model, "data": {"path": str(store)}})
        if run.exists():
            shutil.rmtree(run)  # always a run made by this code
        train(cfg, run, log=print)
        seconds = time.perf_counter() - t0
        result = evaluate_checkpoint(run, split="test")
        m = result["metrics"]
        saved = json.loads((run / "run.json").read_text())
        results["models"][name] = {"model": model, "options": options, "init": f"{init} (random weights, seed 0)" if init else "none",
                                   "split": result["split"], "videos": m["videos"], "epoch": result["epoch"],
                                   "chosen_by": result["chosen_by"], "top1": m["top1"],
                                   "within_pair": within_pair_accuracy(result["confusion"], result["classes"]),
                                   "macro_f1": m["macro_f1"], "train_seconds": seconds, "params": saved.get("params")}
        print(name, results["models"][name])
        out.write_text(json.dumps(results, indent=2) + "\n")  # after every run: a long family survives an interruption
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True)
    parser.add_argument("--runs", type=lambda s: s.split(","), default=None, help="only these runs (the others' rows are kept)")
    args = parser.parse_args()
    main(args.work, args.family, args.runs)
