"""Typed dataclass configs from raw values (TOML, YAML, dotted overrides): coercion with errors that
name the key, used for the run config and for every model's `*Config`."""

from __future__ import annotations

import dataclasses
import json
import typing

from vidpipe.errors import VidpipeError


def check(ok: bool, message: str) -> None:
    """For __post_init__ range checks: a user's out-of-range value is a one-line VidpipeError."""
    if not ok:
        raise VidpipeError(message)


def check_layers(cfg, prefix: str = "model_options.") -> None:
    """Common checks of a model config: positive sizes, heads that divide the width, dropout in [0, 1)."""
    for name in ("dim", "depth", "heads", "num_latents", "max_frames", "max_time", "max_side", "cross_layers"):
        if hasattr(cfg, name):
            check(getattr(cfg, name) >= 1, f"{prefix}{name} must be at least 1; got {getattr(cfg, name)}")
    if hasattr(cfg, "dim") and hasattr(cfg, "heads"):
        check(cfg.dim % cfg.heads == 0, f"{prefix}heads={cfg.heads} must divide {prefix}dim={cfg.dim}")
    if hasattr(cfg, "dropout"):
        check(0 <= cfg.dropout < 1, f"{prefix}dropout must be in [0, 1); got {cfg.dropout}")


def coerce(value, tp, where: str):
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple or tp is dict or origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise VidpipeError(f"{where}: expected JSON for {tp}, got '{value}'") from None
        if (origin is tuple and isinstance(value, (list, tuple))) or (tp is dict or origin is dict) and isinstance(value, dict):
            return tuple(value) if origin is tuple else dict(value)
    raise VidpipeError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls, data: dict, where: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise VidpipeError(f"unknown config key(s) {[f'{where}{k}' for k in unknown]}; valid: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise VidpipeError(f"{where}{key} must be a table of settings")
            kwargs[key] = from_dict(tp, value, f"{where}{key}.")
        else:
            kwargs[key] = coerce(value, tp, f"{where}{key}")
    return cls(**kwargs)


