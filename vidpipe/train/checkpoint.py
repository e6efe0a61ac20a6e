"""Checkpoints without pickle: safetensors tensors + JSON metadata.

RUN/checkpoints/{best,last}.safetensors  model weights; metadata: model name, resolved config,
                                         classes, data provenance, epoch and metrics.
RUN/checkpoints/trainer.safetensors      everything `--resume` needs: optimizer tensors, RNG states
                                         (torch, numpy, python), scheduler/scaler state, epoch, best.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from vidpipe.errors import VidpipeError


def _plain(state: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_model(path: Path, model: torch.nn.Module, meta: dict) -> None:
    tmp = path.with_suffix(".tmp")
    save_file(_plain(model.state_dict()), str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
    tmp.replace(path)


def read_meta(path: Path) -> dict:
    if not Path(path).is_file():
        raise VidpipeError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception:
        raise VidpipeError(f"{path} is not a vidpipe checkpoint (.safetensors written by `vidpipe train`)") from None
    if "model" not in raw:
        raise VidpipeError(f"{path} has no vidpipe metadata; it was not written by `vidpipe train`")
    return {k: json.loads(v) for k, v in raw.items()}


def load_model_weights(path: Path, model: torch.nn.Module) -> None:
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise VidpipeError(f"{path} does not fit the model ({len(missing)} missing, {len(unexpected)} unexpected keys)")


def save_trainer(path: Path, optimizer, scheduler, scaler, epoch: int, best: dict) -> None:
    tensors, opt_meta = {}, {"param_groups": optimizer.state_dict()["param_groups"], "state_keys": {}}
    for idx, st in optimizer.state_dict()["state"].items():
        opt_meta["state_keys"][str(idx)] = {}
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
                opt_meta["state_keys"][str(idx)][key] = "tensor"
            else:
                opt_meta["state_keys"][str(idx)][key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    py_state = random.getstate()
    meta = {
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "epoch": epoch,
        "best": best,
        "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"trainer": json.dumps(meta)})
    tmp.replace(path)


def load_trainer(path: Path, optimizer, scheduler, scaler) -> tuple[int, dict]:
    """Restores optimizer, scheduler, scaler and RNG states; returns (epochs done, best)."""
    if not path.is_file():
        raise VidpipeError(f"no trainer state at {path}; --resume needs a run that finished at least one epoch")
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["trainer"])
    opt = meta["optimizer"]
    state = {}
    for idx, keys in opt["state_keys"].items():
        state[int(idx)] = {k: (tensors[f"optim.{idx}.{k}"] if v == "tensor" else v) for k, v in keys.items()}
    optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    if scaler is not None and meta["scaler"] is not None:
        scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    kind, pos, has_gauss, gauss = meta["rng_numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["rng_python"]
    random.setstate((version, tuple(internal), gauss_next))
    return meta["epoch"], meta["best"]
