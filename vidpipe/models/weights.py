"""Weights records: where pretrained weights come from, the input they expect, how their keys map to vidpipe's.

A `Weights` record (in the spirit of torchvision's `Weights` enums and timm's `pretrained_cfg`) names a
source, carries the `Transforms` the weights were trained with (the data pipeline reads mean/std,
sampling and crop from it, never from the model's name), the classifier keys, and meta (dataset,
reported top-1 with its protocol, parameters). A `Layout` maps a foreign state dict (torchvision, a
Hugging Face folder, an mmaction2 `.pth`, an official repository) to vidpipe's keys; `fit` then refuses,
in one line naming the keys, anything that does not fit exactly. Nothing is ever loaded with a silent
`strict=False`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vidpipe.errors import VidpipeError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)  # torchvision's video models
SAMPLINGS = ("dense", "tsn")
TRAINER = "trainer/"  # key prefix of the trainer's tensors in a vidpipe run checkpoint; module names never contain "/"


@dataclass(frozen=True)
class Transforms:
    """The input a model (or a set of weights) expects. Whatever `layout` the original implementation
    used, every vidpipe clip model's forward takes normalised float (B, 3, T, H, W)."""

    sampling: str = "dense"  # dense: `frames` consecutive frames `interval` apart; tsn: one frame from each of `frames` segments
    frames: int = 16
    interval: int = 1
    short_side: int = 128  # test-time resize of the shorter side before the centre crop
    crop: int = 112
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: str = "(B, 3, T, H, W)"  # the original implementation's input layout, for the record
    fps: float | None = None  # dense clips counted at this frame rate: the store must be an fps store at this rate
    # dense: "stored" counts `interval` in the store's frames; "source" counts each video's native frames (mmaction2's
    # frame_interval on decoded videos), converted to the store's frames from its counts (data.build.stored_interval)
    interval_unit: str = "stored"
    # an exact (height, width) resize instead of the short side, as torchvision's video presets do (128 x 171)
    resize: tuple[int, int] | None = None

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}")
        if self.interval_unit not in ("stored", "source"):
            raise ValueError("interval_unit must be 'stored' or 'source'")

    def describe(self) -> str:
        when = f"{self.frames} segments" if self.sampling == "tsn" else f"{self.frames}x{self.interval}"
        when += f" at {self.fps:g} fps" if self.fps else ""
        when += " (interval in source frames)" if self.sampling == "dense" and self.interval_unit == "source" else ""
        norm = {IMAGENET_MEAN: "ImageNet", KINETICS_MEAN: "Kinetics"}.get(tuple(self.mean), f"mean {_short(self.mean)}")
        return f"{self.sampling} {when}, {self.short_side}->{self.crop}, {norm} mean/std"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["resize"] is None:  # records made before exact resizes keep their form
            d.pop("resize")
        return d


def _short(values) -> str:
    return "(" + ",".join(f"{v:.3f}" for v in values) + ")"


@dataclass(frozen=True)
class Layout:
    """How a foreign checkpoint's keys become vidpipe's: `convert(state) -> state`."""

    name: str  # "vidpipe", "torchvision", "hf", "mmaction2", "official"
    convert: Callable[[dict], dict]
    description: str = ""
    # the architecture a checkpoint of this layout is (model options), from its tensors and metadata (e.g. a
    # Hugging Face config.json): options(converted state, metadata) -> dict; None: the model's defaults
    options: Callable[[dict, dict], dict] | None = None


VIDPIPE_LAYOUT = Layout("vidpipe", lambda state: dict(state), "vidpipe's own keys (a run checkpoint or save_file(model.state_dict()))")


def published_prefix(name: str) -> str | None:
    """The sha256 prefix a publisher puts in a weights file's name or URL: torchvision's `resnet50-0676ba61.pth`,
    mmaction2's `..._20220831-64d69186.pth`."""
    m = re.search(r"-([0-9a-f]{8,64})\.(?:pth|pt|safetensors)$", name)
    return m.group(1) if m else None


@dataclass(frozen=True)
class Weights:
    tag: str  # what users type: init=KINETICS400_V1, load_pretrained(name, "KINETICS400_V1")
    source: str  # "torchvision:R2Plus1D_18_Weights.KINETICS400_V1", "hf:<repo id>", "mmaction2:<url>", "official:<url>"
    layout: Layout
    transforms: Transforms
    num_classes: int
    classifier: tuple[str, ...] = ("head.weight", "head.bias")  # in vidpipe's keys
    meta: dict = field(default_factory=dict)  # dataset, top1 (with "protocol"), params

    def published_sha256(self) -> str | None:
        """The sha256 prefix the publisher gives the file, where the record knows it (torchvision's URLs end
        in it); None where it does not."""
        kind, _, ref = self.source.partition(":")
        if kind != "torchvision":
            return None
        import torchvision

        enum_name, _, member = ref.partition(".")
        return published_prefix(torchvision.models.get_weight(f"{enum_name}.{member}").url)

    def fetch(self) -> dict:
        """The state dict in the source's own keys. Only torchvision sources download (through
        torchvision's cache); the others name what to download and how to pass it."""
        kind, _, ref = self.source.partition(":")
        if kind == "torchvision":
            import torchvision

            enum_name, _, member = ref.partition(".")
            record = torchvision.models.get_weight(f"{enum_name}.{member}")
            try:
                return record.get_state_dict(progress=False, check_hash=True)
            except Exception as e:  # offline: URLError / OSError / RuntimeError from the download
                raise VidpipeError(f"could not fetch {ref} ({type(e).__name__}); this machine may be offline: download {record.url}, "
                                   f"then pass --weights {self.tag}=PATH (cache-features), init={self.tag}=PATH (train) or "
                                   f"'{self.tag}=PATH' to load_pretrained") from None
        raise VidpipeError(f"weights {self.tag} come from {self.source}; download them and pass the local file or folder instead of the tag")


def tensors_sha256(tensors: dict) -> str:
    """A checksum of tensors' names, dtypes, shapes and bytes; vidpipe checkpoints carry it in their metadata."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def metadata_sha256(raw: dict) -> str:
    """A checksum of a checkpoint's metadata strings (all but the checksum entry itself)."""
    body = json.dumps({k: v for k, v in raw.items() if k != "tensors_sha256"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def checkpoint_checksum(tensors: dict, raw: dict) -> str:
    """What a vidpipe checkpoint records under "tensors_sha256": "<tensors' sha256>:<metadata's sha256>".
    Checkpoints from before the metadata was covered hold the tensors' part alone, and still load."""
    return f"{tensors_sha256(tensors)}:{metadata_sha256(raw)}"


def check_metadata(path, raw: dict) -> None:
    """Refuse a vidpipe checkpoint whose metadata does not match the checksum saved with it (a flipped byte
    in the classes, the config or the trainer state), before anything reads it. Cheap: no tensor is read."""
    recorded = raw.get("tensors_sha256") or ""
    if ":" in recorded and recorded.split(":", 1)[1] != metadata_sha256(raw):
        raise VidpipeError(f"{path} is damaged: its metadata does not match the checksum recorded when it was saved; "
                           "use another checkpoint (best/last) or retrain")


def check_tensors(path, tensors: dict, expected: str | None) -> None:
    """Refuse a vidpipe checkpoint whose tensors do not match the checksum saved with them."""
    if expected is None or tensors_sha256(tensors) != expected.split(":", 1)[0]:
        raise VidpipeError(f"{path} is damaged: its tensors do not match the checksum recorded when it was saved; "
                           "use another checkpoint (best/last) or retrain")


def parse_metadata(path, raw: dict) -> dict:
    """A vidpipe checkpoint's metadata: JSON values, without the trainer's state and the checksum."""
    try:
        return {k: json.loads(v) for k, v in raw.items() if k not in ("trainer", "tensors_sha256")}
    except json.JSONDecodeError:
        raise VidpipeError(f"{path} is not a vidpipe checkpoint or is damaged (its metadata is not JSON)") from None


HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # the weights file of a Hugging Face checkpoint folder


def weights_file(path: str | Path) -> Path:
    """The file that holds the weights: `path` itself, or the weights file of a Hugging Face folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = next((path / n for n in HF_WEIGHTS if (path / n).is_file()), None)
    if found is None:
        raise VidpipeError(f"{path} holds no {' or '.join(HF_WEIGHTS)}; pass a Hugging Face checkpoint folder or a weights file")
    return found


def read_state(path: str | Path) -> tuple[dict, dict]:
    """(state dict of tensors, metadata) from a `.safetensors` / `.pth` / `.pt` / `.bin` file, or a Hugging
    Face checkpoint folder (model.safetensors or pytorch_model.bin, plus config.json). Pickles are read
    weights-only: nothing arbitrary is unpickled."""
    path = Path(path)
    meta: dict = {}
    if path.is_dir():
        if (path / "config.json").is_file():
            try:
                meta["hf_config"] = json.loads((path / "config.json").read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise VidpipeError(f"{path / 'config.json'} is not JSON; it should be the Hugging Face checkpoint's config") from None
        state, inner = read_state(weights_file(path))
        return state, {**inner, **meta}
    if not path.is_file():
        raise VidpipeError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as fh:
                meta = dict(fh.metadata() or {})
                state = {k: fh.get_tensor(k) for k in fh.keys()}
        except OSError:  # permissions or I/O: not a damaged file
            raise
        except Exception as e:
            raise VidpipeError(f"cannot read {path} as safetensors ({type(e).__name__}); the file may be damaged") from None
        if "tensors_sha256" in meta:  # a vidpipe checkpoint: checked, its metadata parsed, the trainer's tensors left out
            check_metadata(path, meta)
            check_tensors(path, state, meta["tensors_sha256"])
            meta = parse_metadata(path, meta)
            state = {k: v for k, v in state.items() if not k.startswith(TRAINER)}
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except OSError:
            raise
        except Exception as e:
            raise VidpipeError(f"cannot read {path} as a weights-only state dict ({type(e).__name__}); save it with torch.save(model.state_dict(), path)") from None
        for wrapper in ("state_dict", "model", "module"):  # mmaction2 / official repos wrap the state dict
            if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VidpipeError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}, meta  # DDP-saved checkpoints


def mismatch(model: nn.Module, state: dict, skip: tuple[str, ...] = ()) -> str:
    """'' when `state` fits `model` exactly (ignoring the keys in `skip`), else what does not, in one line."""
    expected = {k: v for k, v in model.state_dict().items() if k not in skip}
    given = {k: v for k, v in state.items() if k not in skip}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}" for k in sorted(set(given) & set(expected))
              if given[k].shape != expected[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:2])})")
    return ", ".join(parts)


def fit(model: nn.Module, state: dict, where: str, skip: tuple[str, ...] = (), fix: str = "") -> None:
    """Load `state` into `model` strictly, except for the keys in `skip` (a classifier being replaced),
    which keep the model's own initialisation. Anything else that does not fit is a one-line error
    naming the keys (and `fix`, what to do instead)."""
    problem = mismatch(model, state, skip)
    if problem:
        raise VidpipeError(f"{where} does not fit: {problem}" + (f"; {fix}" if fix else ""))
    model.load_state_dict({k: v for k, v in state.items() if k not in skip}, strict=not skip)


def replace_classifier(model: nn.Module, keys: tuple[str, ...], num_classes: int) -> None:
    """Swap the Linear the classifier keys name (e.g. head.weight, head.bias) for a freshly initialised
    one with `num_classes` outputs (timm's reset_classifier)."""
    path = keys[0].rsplit(".", 1)[0]
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{path} is a {type(old).__name__}, not a Linear classifier")
    setattr(parent, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype))
