"""`vidpipe train`: the training loop, one function to read top to bottom.

AdamW (no decay on biases/norms/embeddings), linear warmup then cosine per optimizer step, label
smoothing, gradient clipping and accumulation, AMP on GPU (bf16 where supported, else fp16 with a
grad scaler), seeding, DDP when launched by torchrun (gloo on CPU, nccl on GPU). Every epoch: a full
evaluation (multi-view averaged), metrics.jsonl, reports, `last` and `best` checkpoints and the
trainer state that makes `--resume` exact.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from vidpipe.errors import VidpipeError
from vidpipe.models import count_params, create_model, model_entry
from vidpipe.train.checkpoint import load_model_weights, load_trainer, save_model, save_trainer
from vidpipe.train.config import TrainConfig
from vidpipe.train.data import TrainData, build_data
from vidpipe.train.metrics import compute_metrics, plot_confusion, plot_curves, write_per_class_csv


def setup(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise VidpipeError("--device cuda but torch sees no GPU; use device=cpu")
    rank = 0
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return rank, world, device


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)  # biases, norms, 1-D embeddings: no decay
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


@torch.no_grad()
def evaluate(model, data: TrainData, device, dtype) -> tuple[dict, np.ndarray, dict]:
    """Scores averaged over each video's views; gathered from every rank; metrics on the whole split."""
    model.eval()
    scores, labels, ids = [], [], []
    for batch in data.val:
        x, y = data.to_device(batch, device, train=False)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x).float()  # (B * views, C)
        probs = logits.view(len(batch["ids"]), batch["views"], -1).softmax(-1).mean(1)  # (B, C)
        scores.append(probs.cpu().numpy())
        labels.append(y.cpu().numpy())
        ids += batch["ids"]
    scores = np.concatenate(scores) if scores else np.zeros((0, len(data.classes)))
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (scores, labels, ids))
        scores = np.concatenate([g[0] for g in gathered])
        labels = np.concatenate([g[1] for g in gathered])
        ids = [i for g in gathered for i in g[2]]
    _, first = np.unique(np.array(ids, dtype=object).astype(str), return_index=True)  # DistributedSampler pads
    scores, labels = scores[np.sort(first)], labels[np.sort(first)]
    metrics, cm = compute_metrics(scores, labels, len(data.classes))
    metrics["loss"] = float(-np.log(np.clip(scores[np.arange(len(labels)), labels], 1e-12, None)).mean()) if len(labels) else 0.0
    return metrics, cm, {"ids": [ids[i] for i in np.sort(first)], "scores": scores, "labels": labels}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, log=print) -> dict:
    out = Path(out)
    rank, world, device = setup(cfg)
    entry = model_entry(cfg.model)
    data = build_data(cfg, entry.input, rank, world)
    model = create_model(cfg.model, len(data.classes), data.in_dim, cfg.model_options).to(device)
    meta = {"model": cfg.model, "config": cfg.to_dict(), "classes": data.classes, "provenance": data.provenance,
            "input": entry.input, "in_dim": data.in_dim, "params": count_params(model), "feature_norm": data.feature_norm}
    ckpt_dir = out / "checkpoints"
    if resume:
        saved = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else None
        if saved is None:
            raise VidpipeError(f"{out} has no config.json to resume; start it without --resume")
        if saved["config"] != meta["config"] or saved["classes"] != meta["classes"] or saved["provenance"] != meta["provenance"]:
            raise VidpipeError(f"--resume with a different config, classes or data than {out}/config.json; use the same settings or a new --out")
    elif (out / "config.json").is_file():
        raise VidpipeError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
    if dist.is_initialized():
        dist.barrier()  # every rank has checked the run directory before rank 0 writes into it
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas)
    steps_per_epoch = math.ceil(len(data.train) / o.accum_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(max(1, round(o.warmup_epochs * steps_per_epoch)), o.epochs * steps_per_epoch))
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    start_epoch, best = 0, {"top1": -1.0, "epoch": -1}
    if resume:
        load_model_weights(ckpt_dir / "last.safetensors", model)
        start_epoch, best = load_trainer(ckpt_dir / "trainer.safetensors", optimizer, scheduler, scaler)
        log(f"resumed {out} after epoch {start_epoch}")
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if dist.is_initialized() else model
    if rank == 0:
        log(f"{cfg.model}: {count_params(model):,} parameters, {len(data.classes)} classes, {world} process(es) on {device}, "
            f"amp {dtype or 'off'}, {len(data.train)} batches/epoch")

    summary = {}
    for epoch in range(start_epoch, o.epochs):
        data.train.set_epoch(epoch)
        net.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        loss_sum, clips, wait, n_batches = 0.0, 0, 0.0, len(data.train)
        t_epoch = time.perf_counter()
        batches = iter(data.train)
        for step in range(n_batches):
            t_wait = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t_wait
            x, y = data.to_device(batch, device, train=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=o.label_smoothing)
            scaler.scale(loss / o.accum_steps).backward()
            if (step + 1) % o.accum_steps == 0 or step + 1 == n_batches:
                scaler.unscale_(optimizer)
                if o.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            loss_sum += loss.item() * len(batch["ids"])
            clips += len(batch["ids"])
        train_time = time.perf_counter() - t_epoch
        val, cm, _ = evaluate(net, data, device, dtype)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, clips), "lr": scheduler.get_last_lr()[0], "val": val,
                  "clips_per_s": clips * world / train_time, "data_wait_fraction": wait / train_time,
                  "peak_memory_mb": peak_memory_mb(device), "epoch_seconds": time.perf_counter() - t_epoch}
        if rank == 0:
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
            ckpt_meta = {**meta, "epoch": epoch + 1, "metrics": val}
            save_model(ckpt_dir / "last.safetensors", model, ckpt_meta)
            if val["top1"] > best["top1"]:
                best = {"top1": val["top1"], "epoch": epoch + 1}
                save_model(ckpt_dir / "best.safetensors", model, ckpt_meta)
                write_per_class_csv(cm, data.classes, out / "per_class.csv")
                plot_confusion(cm, data.classes, out / "confusion.png", f"{cfg.model}, epoch {epoch + 1}, top-1 {val['top1']:.3f}")
            save_trainer(ckpt_dir / "trainer.safetensors", optimizer, scheduler, scaler, epoch + 1, best)
            plot_curves(out / "metrics.jsonl", out / "curves.png")
            log(f"epoch {epoch + 1}/{o.epochs}: train loss {record['train_loss']:.3f}, val top-1 {val['top1']:.3f} "
                f"top-5 {val['top5']:.3f}, {record['clips_per_s']:.0f} clips/s, data wait {100 * record['data_wait_fraction']:.0f}%")
        summary = {"last": record, "best": best}
    if rank == 0 and summary:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if dist.is_initialized():
        dist.barrier()
    return summary
