"""Typed, nested run configuration: defaults < config file (TOML/YAML) < dotted overrides.

Unknown keys and wrong types are errors that name the valid keys; the resolved config is saved in
the run (RUN/config.json) and in every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidpipe.devices import AMP, DEVICES
from vidpipe.errors import VidpipeError
from vidpipe.typed import check, from_dict

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
    # None below: what the model's weights record (or the model itself) expects; see `vidpipe models NAME`
    frames: int | None = None  # frames per sample: TSN segments over stored frames/features, or the clip length
    frame_interval: int | None = None  # clip stores, dense sampling: frames between clip frames
    test_clips: int = 1  # clip stores: clips averaged at test (multi-view)
    test_crops: int = 1  # clip stores: 1 (centre) or 3 spatial crops at test
    crop_size: int | None = None  # clip stores: network input side
    batch_size: int = 32
    workers: int = 2
    flip_map: dict = field(default_factory=dict)  # {"class index": "class index"} after a horizontal flip
    cache_dir: str = ""  # a bucket's WebDataset store: keep its shards in this folder after their first read (several epochs, slow links)

    def __post_init__(self):
        for name in ("frames", "frame_interval", "test_clips", "batch_size"):
            check(getattr(self, name) is None or getattr(self, name) >= 1, f"data.{name} must be at least 1; got {getattr(self, name)}")
        check(self.workers >= 0, f"data.workers must be 0 (load in the main process) or more; got {self.workers}")
        check(self.test_crops in (1, 3), f"data.test_crops must be 1 or 3; got {self.test_crops}")
        check(self.crop_size is None or self.crop_size >= 16, f"data.crop_size must be at least 16; got {self.crop_size}")
        check(0 <= self.val_fraction < 1, f"data.val_fraction must be in [0, 1) (0 = no validation); got {self.val_fraction}")


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

    def __post_init__(self):
        check(self.epochs >= 1, f"optim.epochs must be at least 1; got {self.epochs}")
        check(self.lr > 0, f"optim.lr must be > 0; got {self.lr}")
        # beyond these, AdamW's step (lr x update, lr x weight_decay x weight) diverges on its first step
        check(self.lr <= 10, f"optim.lr must be at most 10; got {self.lr} (typical: 1e-4 to 1e-2)")
        check(self.weight_decay <= 10, f"optim.weight_decay must be at most 10; got {self.weight_decay} (typical: 0 to 0.1)")
        check(self.warmup_epochs <= self.epochs, f"optim.warmup_epochs must be at most optim.epochs={self.epochs}; got {self.warmup_epochs}")
        check(self.accum_steps >= 1, f"optim.accum_steps must be at least 1; got {self.accum_steps}")
        for name in ("weight_decay", "warmup_epochs", "grad_clip"):
            check(getattr(self, name) >= 0, f"optim.{name} must be >= 0; got {getattr(self, name)}")
        check(0 <= self.label_smoothing < 1, f"optim.label_smoothing must be in [0, 1); got {self.label_smoothing}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"optim.betas must be two numbers in [0, 1); got {self.betas}")


@dataclass
class TrainConfig:
    model: str = "resnet_temporal_vit"
    model_options: Any = field(default_factory=dict)  # the model's *Config, typed when the config is made
    # the run's pretrained initialisation, applied once when it starts (the builder never reads a file):
    # none | TAG | TAG=PATH (a tag's file kept locally) | PATH; `vidpipe models NAME` lists the tags
    init: str = "none"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 where supported, else fp16 with a scaler, on GPU; off on CPU) | off | bf16 | fp16
    deterministic: bool = False
    threads: int = 0  # torch's CPU threads in the training process; 0 = the cores data.workers leave (at least 1)
    # the recipe the settings come from (name, source, published figure), from a recipe file's [recipe] table
    recipe: dict = field(default_factory=dict)

    def __post_init__(self):
        from vidpipe.models import make_config

        if isinstance(self.model_options, dict) and "weights" in self.model_options:
            raise VidpipeError(f"model_options.weights is now the run's init (the model reads no file): pass init={self.model_options['weights']}")
        self.model_options = make_config(self.model, self.model_options)  # unknown keys and wrong types fail here
        most = getattr(self.model_options, "max_frames", None)
        check(most is None or self.data.frames is None or self.data.frames <= most,
              f"data.frames={self.data.frames} exceeds model_options.max_frames={most} of {self.model}; lower data.frames "
              "or raise model_options.max_frames")
        if self.device not in DEVICES:
            raise VidpipeError(f"device must be auto, cpu or cuda; got {self.device}")
        if self.amp not in AMP:
            raise VidpipeError(f"amp must be auto, off, bf16 or fp16; got {self.amp}")
        check(0 <= self.seed < 2**32, f"seed must be in 0..{2**32 - 1} (numpy's range); got {self.seed}")
        check(self.threads >= 0, f"threads must be 0 (automatic) or more; got {self.threads}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def upgrade(raw: dict) -> dict:
    """A run config as recorded by an older vidpipe, as today's reads it: `model_options.weights` was the
    initialisation before `init` was the run's (run cards up to version 2)."""
    raw = json.loads(json.dumps(raw))
    options = raw.get("model_options") or {}
    if "weights" in options:
        raw.setdefault("init", options.pop("weights"))
    return raw


def as_today(recorded: dict) -> dict:
    """A recorded run config as today's vidpipe resolves it: fields added since (e.g. `recipe`, a model option
    such as `recompute_time`) at their defaults, so only a real difference refuses a resume."""
    try:
        return from_dict(TrainConfig, upgrade(recorded)).to_dict()
    except VidpipeError:
        return upgrade(recorded)  # not a config today's vidpipe reads: compared as recorded, and so refused


RESUME_MAY_CHANGE = ("optim.epochs", "data.workers", "data.path", "data.cache_dir", "threads", "device")  # what a resume may set anew (data: provenance is checked)


def resume_differences(saved: dict, new: dict) -> list[str]:
    """'key old -> new' for each setting a resume would change and may not (RESUME_MAY_CHANGE may change):
    `saved` is the run's recorded config, `new` the resumed run's."""
    def without(d: dict) -> dict:
        d = json.loads(json.dumps(d))
        for key in RESUME_MAY_CHANGE:
            *parents, last = key.split(".")
            node = d
            for part in parents:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node.pop(last, None)
        return d

    from vidpipe.typed import differences

    return differences(without(as_today(saved)), without(new))


def resolved_settings(cfg: TrainConfig) -> str:
    """'model=tsn_mean data.path=F optim.lr=0.01 ...': every setting that differs from its default, for
    the run to print what it will really do (file, flags and overrides resolved)."""
    def flat(d, prefix=""):
        for k, v in d.items():
            if k == "recipe":
                continue  # said on its own line
            if isinstance(v, dict) and v and k != "flip_map":
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    defaults = dict(flat(TrainConfig(model=cfg.model).to_dict()))
    return " ".join(f"{k}={v}" for k, v in flat(cfg.to_dict()) if k == "model" or defaults.get(k) != v)


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


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None,
                flags: dict | None = None, log=None) -> TrainConfig:
    """defaults < `base` < the config file < `flags` < dotted `overrides`. `flags` are the command line's
    named options, {dotted key: (flag, value)} such as {"data.path": ("--data", "F")}; one that overrules
    a different value in the file is said through `log`."""
    tree: dict = json.loads(json.dumps(base or {}))
    if path:
        from vidpipe.train.recipes import recipe_from, split_recipe

        path = Path(path)
        header, loaded = split_recipe(read_config_file(path), path)
        if header is not None:  # a recipe: its run config, and the run records which recipe it is
            loaded["recipe"] = recipe_from(header, dict(loaded), path).record()
        for key, (flag, value) in (flags or {}).items():
            node = loaded
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None and node != value and log:
                log(f"{flag} {value} (command line) overrules {key} = {node!r} in {path}")
        _merge(tree, loaded)
    for key, (_, value) in (flags or {}).items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    for assignment in overrides:
        apply_override(tree, assignment)
    return from_dict(TrainConfig, tree)


def read_config_file(path: Path) -> dict:
    """A TOML or YAML run config as a table of settings; a file that does not parse is one line naming it."""
    if not path.is_file():
        raise VidpipeError(f"config file {path} not found")
    try:
        if path.suffix == ".toml":
            with open(path, "rb") as fh:
                loaded = tomllib.load(fh)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark else ""
                raise VidpipeError(f"config file {path} is not valid YAML{where} ({getattr(e, 'problem', None) or e}); fix it") from None
        else:
            raise VidpipeError(f"config file {path} must be .toml or .yaml")
    except tomllib.TOMLDecodeError as e:
        raise VidpipeError(f"config file {path} is not valid TOML ({e}); fix it") from None
    except UnicodeDecodeError:
        raise VidpipeError(f"config file {path} is not UTF-8 text") from None
    if not isinstance(loaded, dict):
        raise VidpipeError(f"config file {path} must hold a table of settings (key = value), not a {type(loaded).__name__}")
    return loaded


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v
