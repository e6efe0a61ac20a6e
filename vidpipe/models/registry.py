"""The one registry in vidpipe: model names -> builders (timm-style, flat, refuses duplicates).

Models are built with random initialisation and no I/O (`create_model`); weights are loaded afterwards
(`load_pretrained`, or a run checkpoint). Every model follows one contract:
    forward_features(x) -> features (tokens or pooled)     forward_head(features, pre_logits=False) -> logits
and declares what it eats (`ModelEntry.input`) and how its input is sampled by default (`transforms`):
    "frame_features"  (B, T, D) per-frame backbone features from a feature store
    "clip_tokens"     (B, C, D, t, h, w) clip-backbone token maps from a feature store
    "clips"           (B, 3, T, H, W) normalised video from a clip store, whatever the model does inside
                      (segment models fold T into the batch, others fold it into channels)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vidpipe.errors import VidpipeError
from vidpipe.files import sha256_file
from vidpipe.models.weights import (VIDPIPE_LAYOUT, Layout, Transforms, Weights, fit, mismatch, published_prefix, read_state,
                                    replace_classifier, weights_file)
from vidpipe.typed import from_dict

INPUTS = {"frame_features": "frame features (B,T,D)", "clip_tokens": "clip tokens (B,C,D,t,h,w)", "clips": "clips (B,3,T,H,W)"}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]  # builder(cfg, *, num_classes, in_dim) -> nn.Module, random init, no I/O
    config: type  # the model's *Config dataclass
    input: str  # a key of INPUTS
    transforms: Transforms | None  # default sampling (and, for clips, crop and mean/std) unless weights say otherwise;
    # None: the model reads its input whole, as the feature store holds it
    description: str
    weights: tuple[Weights, ...] = ()  # the pretrained tags
    layouts: tuple[Layout, ...] = (VIDPIPE_LAYOUT,)  # checkpoint layouts a local file may be in
    classifier: tuple[str, ...] = ("head.weight", "head.bias")

    def weights_record(self, tag: str) -> Weights | None:
        return next((w for w in self.weights if w.tag == tag), None)

    def transforms_for(self, weights: str | None) -> Transforms | None:
        """The input the model expects when initialised from `weights` (a tag, TAG=PATH, a path, none)."""
        record = self.parse_weights(weights)[0] if weights else None
        return record.transforms if record else self.transforms

    def parse_weights(self, source: str) -> tuple[Weights | None, str | None]:
        """(record, local file) of a weights source: TAG (fetched), TAG=PATH (that tag's file, kept locally: the
        tag's layout and transforms, the file's bytes) or a bare PATH (any layout, the model's own transforms)."""
        tag, sep, path = source.partition("=")
        if sep:
            record = self.weights_record(tag)
            if record is None:
                raise VidpipeError(f"{tag} is not a weights tag of {self.name} (its tags: {', '.join(w.tag for w in self.weights) or 'none'}); "
                                   "TAG=PATH names a tag's file")
            return record, path
        record = self.weights_record(source)
        return (record, None) if record else (None, source)


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, config: type, input: str, description: str, transforms: Transforms | None = Transforms("tsn", frames=8),
                   weights: tuple[Weights, ...] = (), layouts: tuple[Layout, ...] = (), classifier: tuple[str, ...] = ("head.weight", "head.bias")):
    if input not in INPUTS:
        raise ValueError(f"input must be one of {list(INPUTS)}")

    def wrap(builder):
        if name in _MODELS:
            raise ValueError(f"model '{name}' is already registered")
        _MODELS[name] = ModelEntry(name, builder, config, input, transforms, description, tuple(weights), (VIDPIPE_LAYOUT, *layouts), classifier)
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise VidpipeError(f"unknown model '{name}'; registered models: {', '.join(list_models())} (see `vidpipe models`)")
    return _MODELS[name]


def make_config(name: str, options=None):
    """The model's config dataclass with `options` (a dict of raw values, or the config itself) applied:
    unknown keys, wrong types and out-of-range values are one-line errors that name the option."""
    entry = model_entry(name)
    if isinstance(options, entry.config):
        return options
    if dataclasses.is_dataclass(options):
        raise VidpipeError(f"model {name} takes a {entry.config.__name__}, not a {type(options).__name__}")
    fields = {f.name for f in dataclasses.fields(entry.config)}
    unknown = sorted(set(options or {}) - fields)
    if unknown:
        raise VidpipeError(f"model {name} has no option(s) {unknown}; it has {sorted(fields)} (see `vidpipe models {name}`)")
    return from_dict(entry.config, dict(options or {}), "model_options.")


def create_model(name: str, *, num_classes: int, in_dim: int | None = None, options=None) -> nn.Module:
    """Model `name` with random initialisation and no I/O. Feature heads need `in_dim` (the feature
    width); clip models take none."""
    entry = model_entry(name)
    if entry.input == "clips" and in_dim is not None:
        raise VidpipeError(f"model {name} reads clips (B, 3, T, H, W); in_dim={in_dim} applies only to models that read features")
    if entry.input != "clips" and in_dim is None:
        raise VidpipeError(f"model {name} reads {INPUTS[entry.input]}: pass in_dim, the feature width")
    if num_classes < 1:
        raise VidpipeError(f"num_classes must be at least 1; got {num_classes}")
    return entry.builder(make_config(name, options), num_classes=num_classes, in_dim=in_dim)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Loaded:
    """What a pretrained load used: recorded in runs and feature stores so the file can be found again."""

    source: str  # the tag or the path as given
    layout: str
    sha256: str | None
    path: str | None = None  # absolute path of a local file
    classifier: str = "kept"  # kept | replaced
    transforms: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_state(entry: ModelEntry, source: str, probe: Callable[[dict, dict, Layout], nn.Module]) -> tuple[dict, Layout, Loaded, dict]:
    """(state dict in vidpipe's keys, its layout, provenance, file metadata) of a weights tag, or of a
    local file or folder in whichever of the model's layouts fits `probe(state, file metadata, layout)`,
    the model it is for. A model with `adapt_state(state)` resizes what its own options decide (e.g.
    TimeSformer's time embeddings to its frame count) before the shapes are compared."""
    record, local = entry.parse_weights(source)
    if record is not None and local is None:
        state = record.layout.convert(record.fetch())
        state = _adapt(probe(state, {}, record.layout), state)
        return state, record.layout, Loaded(source, record.layout.name, None, transforms=record.transforms.to_dict()), {}
    if record is not None:
        return _tag_file(entry, record, Path(local), source, probe)
    path = Path(source)
    if not path.exists():
        tags = ", ".join(w.tag for w in entry.weights) or "none"
        raise VidpipeError(f"{source} is neither a weights tag of {entry.name} (its tags: {tags}) nor a file or folder")
    raw, meta = read_state(path)
    problems = []
    for layout in entry.layouts:
        try:
            state = layout.convert(raw)
        except (KeyError, ValueError) as e:  # keys this layout cannot map: not this layout
            problems.append(f"not {layout.name} ({e})")
            continue
        try:
            model = probe(state, meta, layout)
            state = _adapt(model, state)
            problem = mismatch(model, state, skip=entry.classifier)
        except (VidpipeError, KeyError, ValueError) as e:  # e.g. no classifier under vidpipe's name: not this layout
            problem = str(e)
        if not problem:
            loaded = Loaded(source, layout.name, sha256_file(weights_file(path)), str(path.resolve()), transforms=entry.transforms.to_dict() if entry.transforms else {})
            return state, layout, loaded, meta
        problems.append(f"as {layout.name}: {problem}")
    # the real cause first: keys that do not fit say more than a classifier the file lacks (another family's file lacks both)
    problems.sort(key=lambda p: "pass num_classes" in p)
    raise VidpipeError(f"{path} does not fit {entry.name} in any layout it knows: {'; '.join(problems)}")


def _tag_file(entry: ModelEntry, record: Weights, path: Path, source: str, probe) -> tuple[dict, Layout, Loaded, dict]:
    """TAG=PATH: the tag's published file, kept locally. Its bytes must be that file's where the publisher
    says (a sha256 prefix in the record, or in the file's own name, as torchvision and mmaction2 name
    theirs), and it is read in the tag's layout; the run keeps the tag's transforms."""
    if not path.exists():  # a file, or a Hugging Face checkpoint folder
        raise VidpipeError(f"{path} not found (init={source}: TAG=PATH names a local copy of the tag's file or folder)")
    digest = sha256_file(weights_file(path))
    published = record.published_sha256() or published_prefix(path.name)
    if published and not digest.startswith(published):
        raise VidpipeError(f"{path} is not {entry.name}'s {record.tag} file: its sha256 starts {digest[:len(published)]}, the published one "
                           f"{published}; pass the file the tag names, or the path alone (the model's own transforms)")
    raw, meta = read_state(path)
    try:
        state = record.layout.convert(raw)
        model = probe(state, meta, record.layout)
        state = _adapt(model, state)
        problem = mismatch(model, state, skip=entry.classifier)
    except (VidpipeError, KeyError, ValueError) as e:
        problem = str(e)
    if problem:
        raise VidpipeError(f"{path} is not in the {record.layout.name} layout of {entry.name}'s {record.tag} ({problem})")
    transforms = record.transforms.to_dict()
    return state, record.layout, Loaded(source, record.layout.name, digest, str(path.resolve()), transforms=transforms), meta


def _adapt(model: nn.Module, state: dict) -> dict:
    """`state` resized or completed by the model's `adapt_state`, where it has one."""
    return model.adapt_state(state) if hasattr(model, "adapt_state") else state


def _checkpoint_spec(entry: ModelEntry, state: dict, meta: dict, options: dict, layout: Layout, num_classes: int | None) -> dict:
    """create_model's arguments for a checkpoint: its classifier size (or `num_classes` where it has no
    classifier, e.g. an image backbone), and its architecture: a vidpipe checkpoint's own model options and
    feature width, or what the layout reads from a foreign checkpoint (given `options` override either)."""
    in_dim = None
    if layout.options is not None:
        options = {**layout.options(state, meta), **options}
    if "model" in meta:  # a vidpipe checkpoint knows its model, options and input width
        if meta["model"] != entry.name:
            raise VidpipeError(f"that checkpoint is a {meta['model']} checkpoint, not {entry.name}; load it with that name")
        recorded = {k: v for k, v in meta["config"].get("model_options", {}).items() if k != "weights"}  # older runs kept their init there
        options = {**recorded, **options}
        in_dim = meta.get("in_dim")
    if entry.input != "clips" and in_dim is None:
        raise VidpipeError(f"{entry.name} reads {INPUTS[entry.input]}: load a vidpipe checkpoint of it (it records the feature width)")
    head = entry.classifier[0]
    if head in state:
        num_classes = state[head].shape[0]
    elif num_classes is None:
        raise VidpipeError(f"the checkpoint has no classifier ({head}); pass num_classes for a fresh one, or a checkpoint of the whole model")
    return dict(num_classes=num_classes, in_dim=in_dim, options=options)


def load_pretrained(name: str, source: str, num_classes: int | None = None, **options) -> nn.Module:
    """Build model `name` and load `source` into it: a weights tag (`vidpipe models NAME` lists them), or a
    local file or folder in any layout the model knows (a vidpipe checkpoint, torchvision, Hugging Face,
    mmaction2, official). Returns the model in eval mode; `model.pretrained` records what was loaded.

    num_classes None keeps the checkpoint's classifier; another number replaces it with a freshly
    initialised one (for fine-tuning). `options` are the model's config fields (a vidpipe checkpoint
    brings its own; given ones override them).
    """
    entry = model_entry(name)

    def probe(state: dict, meta: dict, layout: Layout) -> nn.Module:  # shapes only: built on the meta device, no memory
        with torch.device("meta"):
            return create_model(name, **_checkpoint_spec(entry, state, meta, options, layout, num_classes))

    state, layout, loaded, meta = resolve_state(entry, source, probe)
    spec = _checkpoint_spec(entry, state, meta, options, layout, num_classes)
    model = create_model(name, **spec)
    state = _adapt(model, state)  # again on the real model: what it fills in is no longer the probe's meta tensors
    own = model.state_dict()  # a classifier adapt_state filled in from the model itself (an image model's was dropped) is not the file's
    own_head = all(k in state and state[k].data_ptr() == own[k].data_ptr() for k in entry.classifier if k in own)
    if own_head and num_classes is None:
        raise VidpipeError(f"{source} holds no classifier for {name} (its own is an image model's, not kept); pass num_classes for a fresh one")
    headless = entry.classifier[0] not in state  # a backbone checkpoint: the classifier num_classes asked for starts fresh
    fit(model, state, f"{source} ({layout.name} layout) for {name}", skip=entry.classifier if headless else ())
    if headless or own_head:
        if own_head and num_classes != spec["num_classes"]:
            replace_classifier(model, entry.classifier, num_classes)
        loaded.classifier = f"none in the checkpoint: a fresh {num_classes}-class classifier"
    elif num_classes is not None and num_classes != spec["num_classes"]:
        replace_classifier(model, entry.classifier, num_classes)
        loaded.classifier = f"replaced ({spec['num_classes']} -> {num_classes} classes, freshly initialised)"
    model.pretrained = loaded.to_dict()
    return model.eval()


def assumed_transforms(name: str, source: str) -> str | None:
    """For a bare weights PATH of a model that has tags: the one line that says which transforms the run
    assumes (the model's own) and how to keep a tag's instead; None for a tag or TAG=PATH."""
    entry = model_entry(name)
    if not entry.weights or entry.parse_weights(source)[0] is not None:
        return None
    tags = ", ".join(f"{w.tag} ({w.transforms.describe()})" for w in entry.weights)
    return (f"init={source} names no tag: the run uses {name}'s own transforms ({entry.transforms.describe()}); "
            f"if the file is a tag's, pass init=TAG={source} to keep that tag's: {tags}")


def init_from_pretrained(model: nn.Module, name: str, source: str) -> Loaded:
    """Training's initialisation: every weight of `source` except its classifier (the run's classes are
    its own), strictly, into a freshly built `model`. Applied once, when a run starts; resume, eval and
    predict load the run's own checkpoint and never read `source` again."""
    entry = model_entry(name)
    state, layout, loaded, _ = resolve_state(entry, source, lambda state, meta, layout: model)
    fit(model, state, f"{source} ({layout.name} layout) for {name}", skip=entry.classifier)
    loaded.classifier = "not used (the run's classifier starts fresh)"
    return loaded
