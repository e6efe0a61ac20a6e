"""How a video's views become its prediction, and a model scored on a whole split: shared by the
training loop's validation, `vidpipe eval` and `vidpipe predict`."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from vidpipe.errors import VidpipeError
from vidpipe.data.build import TrainData
from vidpipe.train.metrics import compute_metrics


FUSIONS = ("mean", "vote")


@torch.no_grad()
def fuse_views(probs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(B, views, C) softmax scores -> (their mean (B, C), how many views chose each class (B, C))."""
    return probs.mean(1).cpu().numpy(), F.one_hot(probs.argmax(-1), probs.shape[-1]).sum(1).cpu().numpy()


def ranking(scores: np.ndarray, votes: np.ndarray, fusion: str) -> np.ndarray:
    """What orders the classes of a video: its mean scores, or its votes with the mean scores (< 1 each,
    summing to 1) breaking ties only."""
    return scores if fusion == "mean" else votes + 0.5 * scores


def evaluate(model, data: TrainData, device, dtype, fusion: str = "mean") -> tuple[dict, np.ndarray, dict]:
    """Video-level metrics on the whole split, gathered from every rank. A video's views (clips x crops)
    are fused by `fusion`: "mean" averages their softmax scores; "vote" takes the majority of their argmaxes
    (the R(2+1)D study's video accuracy), ties broken by the mean score. The loss is always the mean score's.

    `model` is the plain module, never the DDP wrapper: ranks may hold different numbers of val batches
    (a rank may hold none), and a DDP forward would wait for the others.
    """
    if fusion not in FUSIONS:
        raise VidpipeError(f"fusion must be one of {', '.join(FUSIONS)}; got {fusion!r}")
    model.eval()
    scores, votes, labels, ids = [], [], [], []
    for batch in data.val:
        x, y = data.to_device(batch, device, train=False)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x).float()  # (B * views, C)
        mean_scores, view_votes = fuse_views(logits.view(len(batch["ids"]), batch["views"], -1).softmax(-1))
        scores.append(mean_scores)
        votes.append(view_votes)
        labels.append(y.cpu().numpy())
        ids += batch["ids"]
    empty = np.zeros((0, len(data.classes)))
    scores, votes = (np.concatenate(a) if a else empty for a in (scores, votes))
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (scores, votes, labels, ids))
        scores, votes, labels = (np.concatenate([g[k] for g in gathered]) for k in range(3))
        ids = [i for g in gathered for i in g[3]]
    _, first = np.unique(np.array(ids, dtype=object).astype(str), return_index=True)  # DistributedSampler pads with repeats
    keep = np.sort(first)
    scores, votes, labels = scores[keep], votes[keep], labels[keep]
    ranked = ranking(scores, votes, fusion)
    metrics, cm = compute_metrics(ranked, labels, len(data.classes))
    metrics["loss"] = float(-np.log(np.clip(scores[np.arange(len(labels)), labels], 1e-12, None)).mean()) if len(labels) else 0.0
    return metrics, cm, {"ids": [ids[i] for i in keep], "scores": scores, "ranked": ranked, "labels": labels}
