"""Where work runs: the one `--device` resolver and the one mixed-precision policy of every command
(cache-features, train, eval, predict, the benchmarks)."""

from __future__ import annotations

import os

import torch

from vidpipe.errors import VidpipeError

DEVICES = ("auto", "cpu", "cuda")
AMP = ("auto", "off", "bf16", "fp16")


def resolve_device(device: str, flag: str = "--device", index: int | None = None) -> torch.device:
    """auto | cpu | cuda -> the torch device (auto: a GPU when torch sees one); `index` picks the GPU (a
    DDP rank's LOCAL_RANK). `flag` is how the user set it, for the error."""
    if device not in DEVICES:
        raise VidpipeError(f"{flag} must be auto, cpu or cuda; got {device}")
    if device == "cuda" and not torch.cuda.is_available():
        set_to = f"{flag} " if flag.startswith("--") else f"{flag}="  # an option (--device cpu) or an override (device=cpu)
        raise VidpipeError(f"{set_to}cuda, but torch sees no GPU; use {set_to}cpu")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda" if index is None else f"cuda:{index}")


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: none on CPU or with amp=off; bf16 when asked or (auto) where supported; else fp16
    (which trains with a grad scaler)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def cpu_threads(requested: int, workers: int = 0) -> int:
    """torch's intra-op threads for a process that also feeds `workers` loader processes: `requested`, or
    (0) the cores the workers leave, at least 1. On a busy machine more threads than free cores make every
    op wait for the others (issue 35 reports four identical training steps at 0.9-1.1 s with 1 thread and
    12.7-21.1 s with torch's default on a loaded 2-core machine)."""
    if requested < 0:
        raise VidpipeError(f"--threads must be 0 (automatic) or more; got {requested}")
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - workers)


def set_cpu_threads(requested: int, workers: int = 0) -> int:
    """Set torch's intra-op threads (`cpu_threads`); returns the count set."""
    n = cpu_threads(requested, workers)
    torch.set_num_threads(n)
    return n
