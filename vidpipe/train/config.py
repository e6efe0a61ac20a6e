"""Typed, nested run configuration: defaults < config file (TOML/YAML) < dotted overrides.

Unknown keys and wrong types are errors that name the valid keys; the resolved config is saved in
the run (RUN/config.json) and in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

from vidpipe.errors import VidpipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class DataConfig:
    path: str = ""  # a feature store (cache-features) or a clip store (extract)
    train_split: str = "train"
    val_split: str = ""  # default: the store's val split, else `val_fraction` of train (never test)
    val_fraction: float = 0.1  # carved from train by a hash of the video id when the store has no val; 0 = no val
    frames: int = 8  # frames per sample: TSN segments over stored frames/features, or the clip length
    frame_interval: int = 1  # clip stores: frames between clip frames
    test_clips: int = 1  # clip stores: clips averaged at test (multi-view)
    test_crops: int = 1  # clip stores: 1 (centre) or 3 spatial crops at test
    crop_size: int = 112  # clip stores: network input side
    batch_size: int = 32
    workers: int = 2
    flip_map: dict = field(default_factory=dict)  # {"class index": "class index"} after a horizontal flip


@dataclass
class OptimConfig:
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    accum_steps: int = 1
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class TrainConfig:
    model: str = "resnet_temporal_vit"
    model_options: dict = field(default_factory=dict)  # the model's *Config fields
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 where supported, else fp16 with a scaler, on GPU; off on CPU) | off | bf16 | fp16
    deterministic: bool = False

    def __post_init__(self):
        if self.device not in ("auto", "cpu", "cuda"):
            raise VidpipeError(f"device must be auto, cpu or cuda; got {self.device}")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise VidpipeError(f"amp must be auto, off, bf16 or fp16; got {self.amp}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _coerce(value, tp, where: str):
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
            kwargs[key] = _coerce(value, tp, f"{where}{key}")
    return cls(**kwargs)


def apply_override(tree: dict, assignment: str) -> None:
    """'optim.lr=3e-4' or 'model_options.depth=4' into a nested dict of raw values."""
    if "=" not in assignment:
        raise VidpipeError(f"override '{assignment}' must look like key.sub=value")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise VidpipeError(f"override {key}: {p} is not a table")
    try:  # model options take JSON values (numbers, booleans, lists); typed fields are coerced later
        node[parts[-1]] = json.loads(value) if parts[0] == "model_options" else value
    except json.JSONDecodeError:
        node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    tree: dict = json.loads(json.dumps(base or {}))
    if path:
        path = Path(path)
        if not path.is_file():
            raise VidpipeError(f"config file {path} not found")
        if path.suffix == ".toml":
            with open(path, "rb") as fh:
                loaded = tomllib.load(fh)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            loaded = yaml.safe_load(path.read_text()) or {}
        else:
            raise VidpipeError(f"config file {path} must be .toml or .yaml")
        _merge(tree, loaded)
    for assignment in overrides:
        apply_override(tree, assignment)
    return from_dict(TrainConfig, tree)


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
