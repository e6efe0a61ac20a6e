"""The run card: what a checkpoint says about the run that made it, typed and versioned, and the one
place that reads it back (`load_run`, used by eval, predict, export and compare).

A card holds the model and its resolved config, the classes, the `InputSpec` (how inputs are cut from a
store), the data's provenance, the training split's feature statistics, the initialisation and how the
checkpoint was chosen. It is written into every checkpoint's metadata and into RUN/run.json. Older cards
are read too: version 1 (checkpoints written before the card, vidpipe at ea7e36e) has its `inputs` record
made an InputSpec (`InputSpec.from_v1`); versions 1 and 2 have `model_options.weights` moved to `init`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidpipe.data.inputs import InputSpec
from vidpipe.errors import VidpipeError
from vidpipe.models import create_model
from vidpipe.train.checkpoint import load_model_weights, read_meta
from vidpipe.train.config import TrainConfig, upgrade
from vidpipe.train.rundir import RunDir
from vidpipe.typed import from_dict

CARD_VERSION = 3  # 3: the initialisation is the config's `init`, not `model_options.weights`


@dataclass(frozen=True)
class RunCard:
    model: str
    config: dict  # the resolved TrainConfig, as recorded (`TrainConfig.to_dict()`)
    classes: list[str]
    input: InputSpec
    provenance: dict  # what the data is made of: eval and resume refuse data made otherwise
    in_dim: int | None  # feature width the model was built for (None: clip models)
    params: int
    world_size: int = 1
    selection: dict = field(default_factory=dict)  # how the checkpoint eval uses was chosen
    feature_norm: dict | None = None  # the training split's per-channel feature mean/std (feature models)
    init: dict | None = None  # the pretrained initialisation: source, layout, sha256
    epoch: int | None = None  # a checkpoint's own epoch and validation metrics
    metrics: dict | None = None
    version: int = CARD_VERSION

    @property
    def train_config(self) -> TrainConfig:
        return from_dict(TrainConfig, self.config)

    def at_epoch(self, epoch: int, metrics: dict | None) -> "RunCard":
        return dataclasses.replace(self, epoch=epoch, metrics=metrics)

    def to_record(self) -> dict:
        """JSON values by name: a checkpoint's metadata entries, and run.json. `input` keeps the kind (as
        version 1 did) and `inputs` the whole InputSpec."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("input", "version")}
        record.update(input=self.input.kind, inputs=self.input.to_dict(), card_version=self.version)
        return {k: v for k, v in record.items() if v is not None or k in ("in_dim", "feature_norm")}

    @classmethod
    def from_record(cls, record: dict, where: str | Path = "the run") -> "RunCard":
        version = record.get("card_version", 1)
        if not isinstance(version, int) or version > CARD_VERSION:
            raise VidpipeError(f"{where} has a run card of version {version}; this vidpipe reads up to {CARD_VERSION}: upgrade vidpipe")
        missing = [k for k in ("model", "config", "classes", "provenance", "input", "inputs") if k not in record]
        if missing:
            raise VidpipeError(f"{where} does not record {', '.join(missing)} (made by an older vidpipe); retrain it")
        if version == 1:
            spec = InputSpec.from_v1(record["inputs"], record["provenance"], record["config"].get("data", {}).get("test_crops", 1))
        else:
            spec = InputSpec.from_dict(record["inputs"])
        fields = {f.name for f in dataclasses.fields(cls)} - {"input", "version"}
        values = {k: v for k, v in record.items() if k in fields}
        return cls(input=spec, version=CARD_VERSION, **{**values, "config": upgrade(record["config"])})


@dataclass
class LoadedRun:
    card: RunCard
    model: torch.nn.Module
    checkpoint: Path


def resolve_checkpoint(run_or_ckpt: str | Path) -> Path:
    """A run's `best` checkpoint (chosen on val), else its `last`; or the checkpoint file given."""
    p = Path(run_or_ckpt)
    if p.is_dir():
        p = RunDir(p).chosen_checkpoint()
    if not p.is_file():
        raise VidpipeError(f"no checkpoint at {p}; pass a run directory from `vidpipe train` or a .safetensors checkpoint")
    return p


def load_run(run_or_ckpt: str | Path, device: str | torch.device = "cpu", weights: bool = True) -> LoadedRun:
    """The card of a run's chosen checkpoint (or of the checkpoint given) and its model, built from the card,
    its weights loaded (checked against their sha256) unless `weights=False` (e.g. on the meta device,
    for shapes and parameter counts), in eval mode on `device`."""
    ckpt = resolve_checkpoint(run_or_ckpt)
    card = RunCard.from_record(read_meta(ckpt), ckpt)
    device = torch.device(device)
    with device if device.type == "meta" else torch.device("cpu"):
        model = create_model(card.model, num_classes=len(card.classes), in_dim=card.in_dim, options=card.train_config.model_options)
    if weights:
        load_model_weights(ckpt, model)  # the run's own weights: a pretrained init file is never read again
    return LoadedRun(card, model.to(device).eval() if device.type != "meta" else model.eval(), ckpt)


def chosen_by(ckpt: Path, card: RunCard) -> str:
    """How this checkpoint was chosen, in words, for every report that quotes a figure from it."""
    selection = card.selection or {}
    if ckpt.name == RunDir.BEST:
        return f"best val top-1 (epoch {card.epoch}; val = {selection.get('split')})"
    if ckpt.name == RunDir.LAST:
        why = "" if selection.get("split") is None else f", validated on {selection['split']}"
        return f"last epoch ({card.epoch}){why}; nothing was selected on test"
    return f"checkpoint file {ckpt.name} (epoch {card.epoch})"
