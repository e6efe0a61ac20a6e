"""Typed dataclass configs from raw values (TOML, YAML, dotted overrides): coercion with errors that
name the key, used for the run config and for every model's `*Config`."""

from __future__ import annotations

import dataclasses
import json
import math
import types
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
    """`value` (from TOML, YAML, JSON or a command-line string) as type `tp`: bool, int, float, str,
    Optional[X], Literal[...], list[X], tuple[X, ...] / tuple[X, Y], dict, Any."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except VidpipeError:
                pass
        raise VidpipeError(f"{where}: expected {_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        for option in args:
            try:
                if coerce(value, type(option), where) == option:
                    return option
            except VidpipeError:
                pass
        raise VidpipeError(f"{where}: expected one of {', '.join(map(str, args))}; got {value!r}")
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
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # inf, nan, 1e999: nothing trains on them
                raise VidpipeError(f"{where}: expected a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list) or tp in (tuple, list, dict) or origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise VidpipeError(f"{where}: expected JSON for {_name(tp)}, got '{value}'") from None
        if (origin is dict or tp is dict) and isinstance(value, dict):
            return dict(value)
        if (origin in (tuple, list) or tp in (tuple, list)) and isinstance(value, (list, tuple)):
            if origin is tuple and args and args[-1] is not Ellipsis:
                if len(value) != len(args):
                    raise VidpipeError(f"{where}: expected {len(args)} values, got {len(value)}")
                return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
            items = [coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
            return tuple(items) if (origin or tp) is tuple else items
    raise VidpipeError(f"{where}: expected {_name(tp)}, got {value!r}")


def _name(tp) -> str:
    return getattr(tp, "__name__", None) if typing.get_origin(tp) is None else str(tp).replace("typing.", "")


def from_dict(cls, data: dict, where: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise VidpipeError(f"unknown config key(s) {[f'{where}{k}' for k in unknown]}; valid: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, tp):
            kwargs[key] = value
        elif dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise VidpipeError(f"{where}{key} must be a table of settings")
            kwargs[key] = from_dict(tp, value, f"{where}{key}.")
        else:
            kwargs[key] = coerce(value, tp, f"{where}{key}")
    return cls(**kwargs)




def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Each key whose value differs between two records, as 'key old -> new' (nested dicts by dotted keys,
    long values cut short): what a refusal to resume or to mix names."""
    def short(v) -> str:
        text = json.dumps(v) if not isinstance(v, str) else v
        return text if len(text) <= 24 else text[:16] + "..."

    out = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {short(a)} -> {short(b)}")
    return out
