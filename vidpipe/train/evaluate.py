"""`vidpipe eval`: a checkpoint on a split, multi-view averaged, with the full report.

Given a run, it evaluates the checkpoint validation chose (`best`), or `last` when the run had no
validation split; the test split only ever measures, it never chooses. Every report says which
checkpoint it used and which split chose it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vidpipe.errors import VidpipeError
from vidpipe.files import disk_full_reported
from vidpipe.train.card import chosen_by, load_run
from vidpipe.train.config import from_dict, TrainConfig
from vidpipe.train.rundir import RunDir
from vidpipe.data.build import build_data
from vidpipe.devices import amp_dtype, set_cpu_threads
from vidpipe.train.loop import setup
from vidpipe.train.scoring import evaluate
from vidpipe.train.metrics import plot_confusion, write_per_class_csv


def evaluate_checkpoint(run_or_ckpt: str | Path, data_path: str | Path | None = None, split: str | None = None,
                        out: str | Path | None = None, test_clips: int | None = None, test_crops: int | None = None,
                        batch_size: int | None = None, workers: int | None = None, fusion: str = "mean", threads: int = 0,
                        cache_dir: str | Path | None = None) -> dict:
    """Metrics of a run's checkpoint on `split`; `fusion` joins a video's views: "mean" softmax scores, or
    "vote" (majority of the views' argmaxes, the R(2+1)D study's video accuracy). `threads`: torch's CPU
    threads (0: the cores the loader workers leave)."""
    run = load_run(run_or_ckpt)
    card, ckpt = run.card, run.checkpoint
    raw = json.loads(json.dumps(card.config))
    raw["data"]["path"] = str(data_path or raw["data"]["path"])
    if card.input.kind != "clips" and (test_clips is not None or test_crops is not None):
        raise VidpipeError(f"--test-clips and --test-crops apply to models that read clips; {card.model} reads "
                           f"{card.input.kind.replace('_', ' ')}, sampled as it was trained")
    for key, value in (("test_clips", test_clips), ("test_crops", test_crops), ("batch_size", batch_size), ("workers", workers),
                       ("cache_dir", str(cache_dir) if cache_dir else None)):
        if value is not None:
            raw["data"][key] = value
    cfg = from_dict(TrainConfig, raw)
    threads = set_cpu_threads(threads, cfg.data.workers)
    _, _, device = setup(cfg)
    spec = card.input.with_views(test_clips, test_crops, "--test-clips") if card.input.kind == "clips" else card.input  # the run's, other views
    data = build_data(cfg, train=False, split=split, feature_norm=card.feature_norm, spec=spec)
    meta = {"model": card.model, "classes": card.classes, "provenance": card.provenance}
    if data.classes != meta["classes"]:
        raise VidpipeError(f"{raw['data']['path']} has other classes than the checkpoint ({len(data.classes)} vs {len(meta['classes'])}, "
                           f"first difference at {next((i for i, (a, b) in enumerate(zip(data.classes, meta['classes'])) if a != b), '-')}); "
                           "evaluate on data of the same dataset")
    if data.provenance != meta["provenance"]:
        diffs = [k for k in meta["provenance"] if data.provenance.get(k) != meta["provenance"][k]]
        raise VidpipeError(f"{raw['data']['path']} was made differently from the training data ({', '.join(diffs)} differ); "
                           "evaluate on a store made with the same settings, backbone and weights")
    model = run.model.to(device)
    metrics, cm, preds = evaluate(model, data, device, amp_dtype(cfg.amp, device), fusion)
    out = Path(out) if out else RunDir(ckpt.parent.parent).eval_dir(data.val_name, fusion)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VidpipeError(f"cannot write the report folder {out}: {e.strerror or e}; choose another --out") from None
    result = {"checkpoint": str(ckpt), "epoch": card.epoch, "chosen_by": chosen_by(ckpt, card),
              "model": meta["model"], "data": raw["data"]["path"],
              "split": data.val_split, "views": {"clips": cfg.data.test_clips, "crops": cfg.data.test_crops, "fusion": fusion},
              "random_weights_features": bool(card.provenance.get("random_weights")), "cpu_threads": threads, "metrics": metrics}
    with disk_full_reported(out):  # a full disk is one line; the run itself is untouched
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        write_per_class_csv(cm, data.classes, out / "per_class.csv")
        plot_confusion(cm, data.classes, out / "confusion.png", f"{meta['model']} on {data.val_name}: top-1 {metrics['top1']:.3f}")
        np.save(out / "confusion.npy", cm)
        with open(out / "predictions.jsonl", "w") as fh:
            for vid, s, r, y in zip(preds["ids"], preds["scores"], preds["ranked"], preds["labels"]):
                top = np.argsort(-r, kind="stable")[:5]
                fh.write(json.dumps({"id": vid, "label": int(y), "pred": int(top[0]), "score": float(s[top[0]]),
                                     "top5": [[int(c), float(s[c])] for c in top]}) + "\n")
    result["out"] = str(out)
    result["confusion"] = cm
    result["classes"] = meta["classes"]
    return result
