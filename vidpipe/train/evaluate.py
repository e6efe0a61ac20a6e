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
from vidpipe.models import create_model
from vidpipe.train.checkpoint import load_model_weights, read_meta
from vidpipe.train.config import from_dict, TrainConfig
from vidpipe.data.build import build_data
from vidpipe.devices import amp_dtype
from vidpipe.train.loop import setup
from vidpipe.train.scoring import evaluate
from vidpipe.train.metrics import plot_confusion, write_per_class_csv


def resolve_checkpoint(run_or_ckpt: str | Path) -> Path:
    """A run's `best` checkpoint (chosen on val), else its `last`; or the checkpoint file given."""
    p = Path(run_or_ckpt)
    if p.is_dir():
        best = p / "checkpoints" / "best.safetensors"
        p = best if best.is_file() else p / "checkpoints" / "last.safetensors"
    if not p.is_file():
        raise VidpipeError(f"no checkpoint at {p}; pass a run directory from `vidpipe train` or a .safetensors checkpoint")
    return p


def evaluate_checkpoint(run_or_ckpt: str | Path, data_path: str | Path | None = None, split: str | None = None,
                        out: str | Path | None = None, test_clips: int | None = None, test_crops: int | None = None,
                        batch_size: int | None = None, workers: int | None = None, fusion: str = "mean") -> dict:
    """Metrics of a run's checkpoint on `split`; `fusion` joins a video's views: "mean" softmax scores, or
    "vote" (majority of the views' argmaxes, the R(2+1)D study's video accuracy)."""
    ckpt = resolve_checkpoint(run_or_ckpt)
    meta = read_meta(ckpt)
    raw = meta["config"]
    raw["data"]["path"] = str(data_path or raw["data"]["path"])
    if meta["input"] != "clips" and (test_clips is not None or test_crops is not None):
        raise VidpipeError(f"--test-clips and --test-crops apply to models that read clips; {meta['model']} reads "
                           f"{meta['input'].replace('_', ' ')}, sampled as it was trained")
    for key, value in (("test_clips", test_clips), ("test_crops", test_crops), ("batch_size", batch_size), ("workers", workers)):
        if value is not None:
            raw["data"][key] = value
    cfg = from_dict(TrainConfig, raw)
    _, _, device = setup(cfg)
    data = build_data(cfg, train=False, split=split, feature_norm=meta.get("feature_norm"))
    if data.classes != meta["classes"]:
        raise VidpipeError(f"{raw['data']['path']} has other classes than the checkpoint ({len(data.classes)} vs {len(meta['classes'])}, "
                           f"first difference at {next((i for i, (a, b) in enumerate(zip(data.classes, meta['classes'])) if a != b), '-')}); "
                           "evaluate on data of the same dataset")
    if data.provenance != meta["provenance"]:
        diffs = [k for k in meta["provenance"] if data.provenance.get(k) != meta["provenance"][k]]
        raise VidpipeError(f"{raw['data']['path']} was made differently from the training data ({', '.join(diffs)} differ); "
                           "evaluate on a store made with the same settings, backbone and weights")
    model = create_model(meta["model"], num_classes=len(meta["classes"]), in_dim=meta["in_dim"], options=cfg.model_options)
    load_model_weights(ckpt, model)  # the run's own weights: a pretrained init file is never read here
    model.to(device)
    metrics, cm, preds = evaluate(model, data, device, amp_dtype(cfg.amp, device), fusion)
    out = Path(out) if out else ckpt.parent.parent / f"eval-{data.val_name}{'-vote' if fusion == 'vote' else ''}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VidpipeError(f"cannot write the report folder {out}: {e.strerror or e}; choose another --out") from None
    result = {"checkpoint": str(ckpt), "epoch": meta.get("epoch"), "chosen_by": chosen_by(ckpt, meta),
              "model": meta["model"], "data": raw["data"]["path"],
              "split": data.val_split, "views": {"clips": cfg.data.test_clips, "crops": cfg.data.test_crops, "fusion": fusion},
              "random_weights_features": bool(meta["provenance"].get("random_weights")), "metrics": metrics}
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


def chosen_by(ckpt: Path, meta: dict) -> str:
    """How this checkpoint was chosen, in words, for every report that quotes a figure from it."""
    selection = meta.get("selection") or {}
    if ckpt.name == "best.safetensors":
        return f"best val top-1 (epoch {meta.get('epoch')}; val = {selection.get('split')})"
    if ckpt.name == "last.safetensors":
        why = "" if selection.get("split") is None else f", validated on {selection['split']}"
        return f"last epoch ({meta.get('epoch')}){why}; nothing was selected on test"
    return f"checkpoint file {ckpt.name} (epoch {meta.get('epoch')})"
