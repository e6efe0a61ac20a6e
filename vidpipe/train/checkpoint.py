"""Checkpoints without pickle: safetensors tensors + JSON metadata, each written atomically.

RUN/checkpoints/last.safetensors   written once per epoch, in one piece: the model weights, and under
                                   `trainer/` everything `--resume` needs (optimizer tensors, every
                                   rank's RNG states); metadata: model, config, classes, provenance,
                                   epoch, metrics, and the trainer's scheduler/scaler state, best and
                                   the metrics history. A kill at any moment leaves either the previous
                                   epoch's file or this one, never a mix of two epochs.
RUN/checkpoints/best.safetensors   model weights only, at the epoch validation chose.

Each file is written under a temporary name, fsynced, then renamed over the old one. Its metadata hold
a sha256 of every tensor (names, dtypes, shapes, bytes), checked whenever it is loaded: a damaged
checkpoint is refused, never silently used.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from vidpipe.errors import VidpipeError
from vidpipe.files import disk_full_reported
from vidpipe.models.weights import TRAINER, check_metadata, check_tensors, checkpoint_checksum, fit, parse_metadata


def _plain(state: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _write_atomic(path: Path, tensors: dict, metadata: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    metadata = {**metadata, "tensors_sha256": checkpoint_checksum(tensors, metadata)}
    try:
        with disk_full_reported(path, sum(t.numel() * t.element_size() for t in tensors.values())):
            save_file(tensors, str(tmp), metadata=metadata)  # a full disk is safetensors' own error type, not OSError
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)  # the bytes are on disk before the rename publishes them
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # and so is the rename
    finally:
        os.close(dir_fd)


def save_checkpoint(path: Path, model: torch.nn.Module, meta: dict, trainer: tuple[dict, dict] | None = None) -> None:
    """Model weights + metadata; `trainer` = (tensors, metadata) from `trainer_state` goes in the same file."""
    tensors = _plain(model.state_dict())
    assert not any(k.startswith(TRAINER) for k in tensors), "a model key collides with the trainer prefix"
    metadata = {k: json.dumps(v) for k, v in meta.items()}
    if trainer is not None:
        tensors.update({TRAINER + k: v for k, v in trainer[0].items()})
        metadata["trainer"] = json.dumps(trainer[1])
    _write_atomic(Path(path), tensors, metadata)


def _raw_metadata(path: Path) -> dict:
    if not Path(path).is_file():
        raise VidpipeError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except OSError:  # a file that cannot be opened (permissions, I/O) is not a damaged one: said as what it is
        raise
    except Exception:  # safetensors raises its own error types for a header that does not parse
        raise VidpipeError(f"{path} is not a vidpipe checkpoint or is damaged (its safetensors header does not read)") from None
    check_metadata(path, raw)
    return raw


def read_meta(path: Path) -> dict:
    raw = _raw_metadata(path)
    missing = [k for k in ("model", "config", "classes", "provenance", "input") if k not in raw]
    if missing:
        raise VidpipeError(f"{path} is not a vidpipe checkpoint or is damaged (no {', '.join(missing)} in its metadata)")
    if "tensors_sha256" not in raw:
        raise VidpipeError(f"{path} was written by an older vidpipe, without the tensor checksum this one checks; retrain it")
    return parse_metadata(path, raw)


def load_checked(path: Path) -> dict:
    """Every tensor of a checkpoint, after checking them against the sha256 recorded when it was saved."""
    expected = _raw_metadata(path).get("tensors_sha256")
    try:
        tensors = load_file(str(path))
    except OSError:
        raise
    except Exception:
        raise VidpipeError(f"{path} is not a vidpipe checkpoint or is damaged (its tensors do not read)") from None
    check_tensors(path, tensors, expected)
    return tensors


def load_model_weights(path: Path, model: torch.nn.Module) -> None:
    fit(model, {k: v for k, v in load_checked(path).items() if not k.startswith(TRAINER)}, str(path))


def rng_state() -> dict:
    """This process's RNG states (torch CPU and CUDA, numpy, python)."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (np_state[1].astype(np.int64), [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])]),
            "python": random.getstate()}


def trainer_state(optimizer, scheduler, scaler, epoch: int, best: dict, history: list[dict], rng_by_rank: list[dict]) -> tuple[dict, dict]:
    """(tensors, metadata) of everything an exact resume needs; `rng_by_rank[r]` is rank r's `rng_state()`."""
    tensors, opt_meta = {}, {"param_groups": optimizer.state_dict()["param_groups"], "state_keys": {}}
    for idx, st in optimizer.state_dict()["state"].items():
        opt_meta["state_keys"][str(idx)] = {}
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
                opt_meta["state_keys"][str(idx)][key] = "tensor"
            else:
                opt_meta["state_keys"][str(idx)][key] = value
    rng_meta = []
    for rank, state in enumerate(rng_by_rank):
        tensors[f"rng.{rank}.torch"] = state["torch"]
        for i, s in enumerate(state["cuda"]):
            tensors[f"rng.{rank}.cuda.{i}"] = s
        tensors[f"rng.{rank}.numpy"] = torch.from_numpy(state["numpy"][0])
        version, internal, gauss_next = state["python"]
        rng_meta.append({"cuda_devices": len(state["cuda"]), "numpy": state["numpy"][1], "python": [version, list(internal), gauss_next]})
    meta = {
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": epoch,
        "best": best,
        "history": history,
        "rng": rng_meta,
    }
    return tensors, meta


def load_trainer(path: Path, optimizer, scheduler, scaler, rank: int = 0) -> tuple[int, dict, list[dict]]:
    """Restores optimizer, scheduler, scaler and this rank's RNG states; returns (epochs done, best, history)."""
    raw = _raw_metadata(path)
    if "trainer" not in raw:
        raise VidpipeError(f"{path} holds no trainer state; it cannot be resumed")
    meta = json.loads(raw["trainer"])
    tensors = {k[len(TRAINER):]: v for k, v in load_checked(path).items() if k.startswith(TRAINER)}
    opt = meta["optimizer"]
    state = {}
    for idx, keys in opt["state_keys"].items():
        state[int(idx)] = {k: (tensors[f"optim.{idx}.{k}"] if v == "tensor" else v) for k, v in keys.items()}
    optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta["scaler"] is not None:
        scaler.load_state_dict(meta["scaler"])
    rng = meta["rng"][rank]
    torch.set_rng_state(tensors[f"rng.{rank}.torch"])
    cuda_states = [tensors[f"rng.{rank}.cuda.{i}"] for i in range(rng["cuda_devices"])]  # in device order
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    kind, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, tensors[f"rng.{rank}.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))
    return meta["epoch"], meta["best"], meta["history"]
