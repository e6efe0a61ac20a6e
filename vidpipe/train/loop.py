"""`vidpipe train`: the training loop, one function to read top to bottom.

AdamW (no decay on biases, norms, and the tokens and embeddings a model names in `no_weight_decay()`),
linear warmup then cosine per optimizer step, label smoothing, gradient clipping and accumulation, AMP
on GPU (bf16 where supported, else fp16 with a grad scaler), seeding, DDP when launched by torchrun
(gloo on CPU, nccl on GPU). Every epoch: a full evaluation on the validation split (multi-view
averaged; never the test split), metrics.jsonl, reports, `best` (chosen by val top-1) and one atomic
`last` checkpoint that makes `--resume` exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import resource
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from vidpipe.devices import amp_dtype, resolve_device, set_cpu_threads
from vidpipe.files import disk_full_reported
from vidpipe.errors import VidpipeError
from vidpipe.models import count_params, create_model, init_from_pretrained
from vidpipe.models.registry import assumed_transforms
from vidpipe.train.card import RunCard
from vidpipe.train.checkpoint import load_model_weights, load_trainer, read_meta, rng_state, save_checkpoint, trainer_state
from vidpipe.datasets.manifest import small_val_note
from vidpipe.train.config import RESUME_MAY_CHANGE, TrainConfig, resolved_settings, resume_differences
from vidpipe.data.build import build_data, input_warnings, video_count
from vidpipe.train.metrics import plot_confusion, plot_curves, two_figures, write_per_class_csv
from vidpipe.train.rundir import RunDir
from vidpipe.train.scoring import evaluate


def setup(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", 1))
    device = resolve_device(cfg.device, flag="device", index=int(os.environ.get("LOCAL_RANK", 0)))
    cuda = device.type == "cuda"
    rank = 0
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if cuda:
        torch.cuda.set_device(device)
    seed_everything(cfg.seed)  # the same initial weights on every rank
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return rank, world, device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases, norms (1-D) and the tokens/embeddings the model lists in
    `no_weight_decay()` (CLS tokens, position embeddings, latents; timm's convention) are not decayed."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _gather(obj) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _fault_point(epoch: int, where: str) -> None:
    """Test hook: VIDPIPE_KILL_AT="EPOCH:WHERE" kills this process (SIGKILL) at that point of the epoch-end writes."""
    if os.environ.get("VIDPIPE_KILL_AT") == f"{epoch}:{where}":
        os.kill(os.getpid(), signal.SIGKILL)


class CtrlC:
    """Ctrl-C read as a flag at safe points (`check()`, after every training step and epoch). Python raises
    KeyboardInterrupt wherever the signal lands, and one that lands in a weakref callback or a __del__
    is printed and lost: the run trained on (3 of 8 Ctrl-Cs at random moments, before this). A second
    Ctrl-C before a check raises at once. Outside the main thread, signals stay as they are."""

    def __enter__(self):
        self.requested, self._previous = False, None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, log=print) -> dict:
    """Train `cfg` into the run folder `out`, which one run writes at a time (a second is refused). A
    Ctrl-C ends with one VidpipeError that says from which epoch `--resume` carries on."""
    out = Path(out)
    rank, world, device = setup(cfg)
    run = RunDir(out)
    with run.lock() if rank == 0 else contextlib.nullcontext():
        try:
            with CtrlC() as ctrl_c:
                return _train(cfg, run, resume, log, rank, world, device, ctrl_c)
        except KeyboardInterrupt:
            raise VidpipeError(f"interrupted: {_resume_point(run)}") from None


def _resume_point(run: RunDir) -> str:
    """Where an interrupted run can carry on, from its last complete checkpoint."""
    out, last = run.root, run.last
    try:
        epoch = read_meta(last)["epoch"] if last.is_file() else 0
    except VidpipeError:
        epoch = 0
    if not epoch:
        return f"no epoch of {out} finished; the same command starts it again"
    return f"{out} keeps epoch {epoch}; the same command with --resume carries on from there"


def _train(cfg: TrainConfig, run: RunDir, resume: bool, log, rank: int, world: int, device: torch.device, ctrl_c: CtrlC) -> dict:
    out = run.root
    threads = set_cpu_threads(cfg.threads, cfg.data.workers)
    data = build_data(cfg, rank, world)
    model = create_model(cfg.model, num_classes=len(data.classes), in_dim=data.in_dim, options=cfg.model_options)
    seed_everything(cfg.seed + rank)  # dropout differs between ranks; the weights do not (DDP broadcasts rank 0's)
    selection = ({"split": data.val_split, "metric": "top1", "rule": "best val top-1"} if data.val is not None
                 else {"split": None, "metric": None, "rule": "last epoch (no validation split: nothing is selected)"})
    card = RunCard(model=cfg.model, config=cfg.to_dict(), classes=data.classes, input=data.inputs, provenance=data.provenance,
                   in_dim=data.in_dim, params=count_params(model), world_size=world, selection=selection, feature_norm=data.feature_norm)
    last_path = run.last
    resume_from = resume and last_path.is_file()
    saved = run.check_new_or_resumable(resume)  # a run that stopped before its first checkpoint holds nothing to keep: it starts again
    if saved is not None:
        if saved.get("world_size", 1) != world:
            raise VidpipeError(f"{out} was trained with {saved.get('world_size', 1)} process(es), this run has {world}; "
                               f"resume it with the same count (torchrun --nproc_per_node {saved.get('world_size', 1)})")
        changed = resume_differences(saved.get("config") or {}, card.config)
        if changed:
            raise VidpipeError(f"--resume would change {'; '.join(changed)} of {run.card} (a resume may change only "
                               f"{', '.join(RESUME_MAY_CHANGE)}); drop those settings, or train into a new --out")
        if saved.get("classes") != card.classes or saved.get("provenance") != card.provenance:
            raise VidpipeError(f"--resume on other data than {run.card} was trained on (its classes or provenance differ); "
                               "resume on the same store, or train into a new --out")
    weights = cfg.init
    if resume_from:  # the run's checkpoint holds the weights: the init file is never read again
        card = dataclasses.replace(card, init=saved.get("init"))
    elif weights != "none":  # a pretrained initialisation, once, through the model's weights record
        card = dataclasses.replace(card, init=init_from_pretrained(model, cfg.model, weights).to_dict())
        if rank == 0 and (note := assumed_transforms(cfg.model, weights)):
            log(note)
    model.to(device)
    if dist.is_initialized():
        dist.barrier()  # every rank has checked the run directory before rank 0 writes into it
    if rank == 0:
        run.start(card.to_record())

    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas)
    n_batches = len(data.train)  # exact: every loader yields exactly this many batches per epoch
    steps_per_epoch = math.ceil(n_batches / o.accum_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(max(1, round(o.warmup_epochs * steps_per_epoch)), o.epochs * steps_per_epoch))
    dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    start_epoch, best, history = 0, {"top1": -1.0, "epoch": -1}, []
    if resume_from:
        load_model_weights(last_path, model)
        start_epoch, best, history = load_trainer(last_path, optimizer, scheduler, scaler, rank)
        if rank == 0:  # rows of epochs after the checkpoint (a kill between the two writes) are dropped
            run.rewrite_metrics(history)
        if start_epoch >= o.epochs:
            log(f"{out} is finished: it trained all {o.epochs} epochs; to train on, resume with optim.epochs=N (N > {o.epochs})")
            return run.read_summary() if run.summary.is_file() else {}
        log(f"resumed {out} after epoch {start_epoch}")
    elif resume:
        log(f"{out} has no checkpoint yet: starting it from the beginning")
    ddp = dist.is_initialized()
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if ddp else model
    if rank == 0:
        log(f"resolved config: {resolved_settings(cfg)}")
        if data.val is not None and (note := small_val_note(video_count(data.val))):
            log(f"warning: {note} (data.val_fraction, or a store with a val split)")
        for note in input_warnings(data.inputs):
            log(f"warning: {note}")
        log(f"{cfg.model}: {count_params(model):,} parameters, {len(data.classes)} classes, {world} process(es) on {device}, "
            f"amp {dtype or 'off'}, {n_batches} batches/epoch, validation: {data.val_split or 'none'}, "
            f"{threads} CPU thread{'s' if threads != 1 else ''} (threads=N to change)")

    def optimizer_step():
        scaler.unscale_(optimizer)
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    summary = {}
    for epoch in range(start_epoch, o.epochs):
        data.train.set_epoch(epoch)
        net.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        loss_sum, wait, steps, seen = 0.0, 0.0, 0, []
        t_epoch = time.perf_counter()
        batches = iter(data.train)
        pending = False  # gradients accumulated since the last optimizer step
        for step in range(n_batches):
            t_wait = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - t_wait
            if batch is None:  # the loader skipped unreadable samples (logged where they were met)
                log(f"epoch {epoch + 1}: the training loader ended after {step} of {n_batches} batches: unreadable samples were "
                    "skipped (run `vidpipe verify` on the store)")
                break
            if len(batch["ids"]) < getattr(model, "min_train_batch", 1):  # e.g. BatchNorm after global pooling: one sample has no statistics
                log(f"epoch {epoch + 1}: a last batch of {len(batch['ids'])} clip(s) skipped ({cfg.model} trains on at least {model.min_train_batch})")
                continue
            x, y = data.to_device(batch, device, train=True)
            boundary = (step + 1) % o.accum_steps == 0 or step + 1 == n_batches
            with net.no_sync() if ddp and not boundary else contextlib.nullcontext():  # all-reduce once per optimizer step
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=o.label_smoothing)
                scaler.scale(loss / o.accum_steps).backward()
            loss_value = loss.item()  # after backward is queued: the GPU is not held up waiting for it
            if not math.isfinite(loss_value):  # stop before a non-finite gradient reaches the weights
                raise VidpipeError(diverged(f"the training loss became {loss_value}", epoch, step, o, last_path))
            pending = not boundary
            if boundary:
                optimizer_step()
                steps += 1
            ctrl_c.check()
            loss_sum += loss_value * len(batch["ids"])
            seen += batch["ids"]
        if pending:  # an epoch cut short never carries gradients into the next one
            if ddp:  # micro-steps that were never all-reduced: dropped, not applied on one rank only
                optimizer.zero_grad(set_to_none=True)
            else:
                optimizer_step()
                steps += 1
        if next(batches, None) is not None:
            raise RuntimeError(f"the training loader yields more than the {n_batches} batches it announced")
        if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):  # never a NaN checkpoint (one sync)
            raise VidpipeError(diverged("the weights became non-finite", epoch, n_batches - 1, o, last_path))
        train_time = time.perf_counter() - t_epoch
        seen_all = [i for ids in _gather(seen) for i in ids]
        if not seen_all:  # every sample skipped: an epoch of nothing is not a result
            raise VidpipeError(f"epoch {epoch + 1} read no training clip (every sample was unreadable); run `vidpipe verify {cfg.data.path}`")
        val, cm = evaluate(model, data, device, dtype)[:2] if data.val is not None else (None, None)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, len(seen)), "lr": scheduler.get_last_lr()[0],
                  "optimizer_steps": steps, "train_clips": len(seen_all), "train_videos": len(set(seen_all)), "val": val,
                  "clips_per_s": len(seen_all) / train_time, "data_wait_fraction": wait / train_time,
                  "peak_memory_mb": peak_memory_mb(device), "epoch_seconds": time.perf_counter() - t_epoch, "cpu_threads": threads}
        history.append(record)
        rngs = _gather(rng_state())  # every rank's RNG, so a resume continues every rank's stream
        if rank == 0:
            improved = val is not None and val["top1"] > best["top1"]
            if improved:
                best = {"top1": val["top1"], "epoch": epoch + 1}
            _write_epoch(run, model, cfg, data, card.at_epoch(epoch + 1, val), record, cm, improved,
                         trainer_state(optimizer, scheduler, scaler, epoch + 1, best, history, rngs), log)
        summary = {"last": record, "best": best if data.val is not None else None, "selection": selection}
        ctrl_c.check()  # a Ctrl-C during validation or the epoch's writes stops here, the epoch kept
    if rank == 0 and summary:
        run.write_summary(summary)
    if dist.is_initialized():
        dist.barrier()
    return summary


def diverged(what: str, epoch: int, step: int, o, last_path: Path) -> str:
    kept = f"{last_path} keeps the last finished epoch" if last_path.is_file() else "no checkpoint was written"
    return (f"{what} at epoch {epoch + 1}, step {step + 1}: training stopped ({kept}); lower optim.lr (now {o.lr:g}), "
            f"or raise optim.warmup_epochs or optim.grad_clip")


def _write_epoch(run: RunDir, model, cfg, data, card: RunCard, record: dict, cm, improved: bool, trainer: tuple, log) -> None:
    """Rank 0's epoch-end files: best (when val improved) with its reports, then last, metrics.jsonl and the
    curves. Each is atomic or appended whole; a full disk anywhere is one line naming the file, and what
    was already published stays."""
    epoch, val = card.epoch, record["val"]
    _fault_point(epoch, "before-best")
    if improved:
        save_checkpoint(run.best, model, card.to_record())
        with disk_full_reported(run.per_class):
            write_per_class_csv(cm, data.classes, run.per_class)
        with disk_full_reported(run.confusion):
            plot_confusion(cm, data.classes, run.confusion, f"{cfg.model}, epoch {epoch}, val top-1 {val['top1']:.3f}")
    _fault_point(epoch, "before-last")
    save_checkpoint(run.last, model, card.to_record(), trainer)
    _fault_point(epoch, "after-last")
    run.append_metrics(record)  # the checkpoint of this epoch is already safe
    _fault_point(epoch, "after-metrics")
    with disk_full_reported(run.curves):
        plot_curves(run.metrics, run.curves)
    shown = f"val top-1 {val['top1']:.3f} top-5 {val['top5']:.3f}" if val else "no val"
    log(f"epoch {epoch}/{cfg.optim.epochs}: train loss {record['train_loss']:.3f}, {shown}, "
        f"{two_figures(record['clips_per_s'])} clips/s, data wait {100 * record['data_wait_fraction']:.0f}%")
