"""Evaluation metrics and reports: top-1/top-5, mean-class accuracy, macro-F1, per-class table,
confusion matrix and training curves.

Conventions (scikit-learn's): precision of a class never predicted is 0; macro-F1 averages F1 over
the classes that occur in the labels or the predictions; mean-class accuracy averages recall over
the classes that occur in the labels.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """cm[i, j] = videos of true class i predicted as j."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def per_class(cm: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted}


def metrics_from_confusion(cm: np.ndarray) -> dict[str, float]:
    pc = per_class(cm)
    present = (pc["support"] > 0) | (pc["predicted"] > 0)
    has_support = pc["support"] > 0
    total = cm.sum()
    return {
        "top1": float(np.trace(cm) / total) if total else 0.0,
        "mean_class_acc": float(pc["recall"][has_support].mean()) if has_support.any() else 0.0,
        "macro_f1": float(pc["f1"][present].mean()) if present.any() else 0.0,
    }


def compute_metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[dict, np.ndarray]:
    """scores (N, C) (any monotone score: logits or averaged probabilities) -> metrics, confusion."""
    preds = scores.argmax(1)
    k = min(5, num_classes)
    topk = np.argsort(-scores, axis=1)[:, :k]
    cm = confusion_matrix(labels, preds, num_classes)
    m = metrics_from_confusion(cm)
    m["top5"] = float((topk == labels[:, None]).any(1).mean()) if len(labels) else 0.0
    m["videos"] = int(len(labels))
    return m, cm


def write_per_class_csv(cm: np.ndarray, classes: list[str], path: Path) -> None:
    pc = per_class(cm)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "precision", "recall", "f1", "support"])
        for i, name in enumerate(classes):
            w.writerow([name, f"{pc['precision'][i]:.4f}", f"{pc['recall'][i]:.4f}", f"{pc['f1'][i]:.4f}", int(pc["support"][i])])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    plt = _plt()
    n = len(classes)
    size = max(4.0, 0.35 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 60:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion (rows normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_curves(metrics_jsonl: Path, path: Path) -> None:
    """Losses (left) and val metrics (right) per epoch. The two losses are different quantities: train is
    the label-smoothed cross-entropy of single clips; val is the NLL of view-averaged probabilities."""
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    if not rows:
        return
    plt = _plt()
    epochs = [r["epoch"] for r in rows]
    validated = [r for r in rows if r.get("val")]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [r["train_loss"] for r in rows], label="train: smoothed CE, one clip")
    if validated:
        a.plot([r["epoch"] for r in validated], [r["val"]["loss"] for r in validated], label="val: NLL, views averaged")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend(fontsize=8)
    for key in ("top1", "top5", "mean_class_acc", "macro_f1"):
        b.plot([r["epoch"] for r in validated], [r["val"][key] for r in validated], label=f"val {key}")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1.02)
    if validated:
        b.legend(fontsize=8)
    else:
        b.set_title("no validation split", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def two_figures(x: float) -> str:
    """A rate to two significant figures (0.35, 3.5, 46), whole numbers from 100 up (460): a slow run
    never prints as 0."""
    if x <= 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.0f}" if x >= 100 else f"{x:.{max(0, 1 - math.floor(math.log10(x)))}f}"
