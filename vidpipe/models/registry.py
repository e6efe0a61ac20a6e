"""The one registry in vidpipe: model names -> builders (timm-style, flat, refuses duplicates).

Every model follows one contract:
    forward_features(x) -> features (tokens or pooled)     forward_head(features, pre_logits=False) -> logits
and declares what it eats (`ModelEntry.input`):
    "frame_features"  (B, T, D) per-frame backbone features from a feature store
    "clip_tokens"     (B, C, D, t, h, w) clip-backbone token maps from a feature store
    "clips"           (B, 3, T, H, W) normalised video from a clip store
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from torch import nn

from vidpipe.errors import VidpipeError
from vidpipe.typed import from_dict

INPUTS = ("frame_features", "clip_tokens", "clips")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]  # builder(cfg, num_classes, in_dim) -> nn.Module
    config: type  # the model's *Config dataclass
    input: str
    description: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, config: type, input: str, description: str):
    if input not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}")

    def wrap(builder):
        if name in _MODELS:
            raise ValueError(f"model '{name}' is already registered")
        _MODELS[name] = ModelEntry(name, builder, config, input, description)
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise VidpipeError(f"unknown model '{name}'; registered models: {', '.join(list_models())} (see `vidpipe models`)")
    return _MODELS[name]


def make_config(name: str, options: dict | None = None):
    """The model's config dataclass with `options` applied: unknown keys, wrong types and out-of-range
    values are one-line errors that name the option."""
    entry = model_entry(name)
    fields = {f.name for f in dataclasses.fields(entry.config)}
    unknown = sorted(set(options or {}) - fields)
    if unknown:
        raise VidpipeError(f"model {name} has no option(s) {unknown}; it has {sorted(fields)}")
    return from_dict(entry.config, options or {}, "model_options.")


def create_model(name: str, num_classes: int, in_dim: int | None = None, options: dict | None = None) -> nn.Module:
    entry = model_entry(name)
    return entry.builder(make_config(name, options), num_classes, in_dim)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
