"""Where work runs: the one `--device` resolver and the one mixed-precision policy of every command
(cache-features, train, eval, predict, the benchmarks)."""

from __future__ import annotations

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
