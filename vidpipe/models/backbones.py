"""Frozen torchvision backbones for the feature cache: weights, their preprocessing, forward_features.

Weights come from (a) a torchvision weights name (`IMAGENET1K_V2`, `KINETICS400_V1`, `DEFAULT`),
fetched through torchvision's own cache/download mechanism; (b) `NAME=PATH`, a local copy of that file
(checked against the sha256 prefix torchvision publishes in its file name); (c) a local `.pth` /
`.safetensors` state dict of the same architecture; or (d) `random` (seeded init, for offline demos and
tests, and marked as such). Preprocessing (resize, crop, mean/std) always comes from a torchvision
weights record: the named one for (a) and (b), the architecture's DEFAULT for (c) and (d).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from vidpipe.errors import VidpipeError
from vidpipe.files import sha256_file
from vidpipe.models.weights import fit, published_prefix, read_state

BACKBONES = {
    # name -> (kind, pooled feature width, frames per clip the weights expect (clip backbones))
    "resnet18": ("frame", 512, None),
    "resnet50": ("frame", 2048, None),
    "r2plus1d_18": ("clip", 512, 16),
}
RANDOM_SEED = 0


@dataclass(frozen=True)
class Preprocess:
    """What the weights were trained on: resize, centre crop, mean/std (from the torchvision record)."""

    resize_size: tuple[int, ...]  # (short side,) for images; (h, w) for torchvision's video transforms
    crop_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # which weights record they come from

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WeightsInfo:
    id: str  # "torchvision:ResNet50_Weights.IMAGENET1K_V2", "file:<name>", "random"
    source: str  # torchvision | file | random
    sha256: str | None
    random: bool
    path: str | None = None  # where a local file was read from (find it again by this path and its sha256)
    tag: str | None = None  # TAG=PATH: the torchvision weights the local file is (its preprocessing is theirs)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["tag"] is None:  # stores made before tags kept their weights' identity
            d.pop("tag")
        return d


def _weights_enum(arch: str):
    return torchvision.models.get_model_weights(arch)


def preprocess_of(record) -> Preprocess:
    t = record.transforms()
    resize = t.resize_size if isinstance(t.resize_size, (list, tuple)) else [t.resize_size]
    crop = t.crop_size if isinstance(t.crop_size, (list, tuple)) else [t.crop_size]
    crop = (crop[0], crop[-1])
    return Preprocess(tuple(int(v) for v in resize), tuple(int(v) for v in crop), tuple(t.mean), tuple(t.std), f"{type(record).__name__}.{record.name}")


def published_sha256(record) -> str | None:
    """The sha256 prefix torchvision publishes in a weights file's name (`resnet50-0676ba61.pth`)."""
    return published_prefix(record.url)


def _record(arch: str, enum, name: str, given: str):
    try:
        return enum[name] if name != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise VidpipeError(f"{arch} has no torchvision weights '{name}' (--weights {given}); choose one of {names}, TAG=PATH (a local copy "
                           "of that file), a .pth/.safetensors PATH, or random") from None


def resolve_weights(arch: str, weights: str) -> tuple[dict | None, WeightsInfo, Preprocess]:
    """(state dict or None for random, provenance, preprocessing) of `cache-features --weights`."""
    if arch not in BACKBONES:
        raise VidpipeError(f"unknown backbone '{arch}'; choose one of {', '.join(BACKBONES)}")
    enum = _weights_enum(arch)
    if weights == "random":
        return None, WeightsInfo("random", "random", None, True), preprocess_of(enum.DEFAULT)
    tag, sep, local = weights.partition("=")
    record = _record(arch, enum, tag, weights) if sep else None
    path = Path(local if sep else weights)
    if sep or path.suffix in (".pth", ".pt", ".safetensors") or path.exists():
        if not path.is_file():
            raise VidpipeError(f"weights file {path} not found")
        digest = sha256_file(path)
        published = published_sha256(record) if record is not None else None
        if published and not digest.startswith(published):  # torchvision names its files by their sha256
            raise VidpipeError(f"{path} is not {type(record).__name__}.{record.name}: its sha256 starts {digest[:len(published)]}, the "
                               f"published file's {published}; pass that file, or the path alone")
        info = WeightsInfo(f"file:{path.name}", "file", digest, False, str(path.resolve()), tag if sep else None)
        return read_state(path)[0], info, preprocess_of(record if record is not None else enum.DEFAULT)
    record = _record(arch, enum, weights, weights)
    try:
        state = record.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # offline: URLError / OSError / RuntimeError from the download
        raise VidpipeError(
            f"could not fetch {type(record).__name__}.{record.name} ({type(e).__name__}); this machine may be offline: "
            f"pass --weights PATH to a local .pth/.safetensors state dict (or --weights random for a demo)"
        ) from None
    return state, WeightsInfo(f"torchvision:{type(record).__name__}.{record.name}", "torchvision", None, False), preprocess_of(record)


class Backbone(nn.Module):
    """A frozen torchvision network cut before its classifier.

    forward_features(x) -> (pooled, tokens):
      frame backbones (resnet): x (N, 3, H, W) -> pooled (N, D), tokens (N, D, h, w)
      clip backbones (r2plus1d_18): x (N, 3, T, H, W) -> pooled (N, D), tokens (N, D, T/8, h, w)
    """

    def __init__(self, arch: str, state_dict: dict | None):
        super().__init__()
        self.arch = arch
        self.kind, self.dim, self.clip_len = BACKBONES[arch]
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream is left as it was
            if state_dict is None:
                torch.manual_seed(RANDOM_SEED)  # `random` weights are the same on every run
            net = torchvision.models.get_model(arch, weights=None)
        if state_dict is not None:
            fit(net, state_dict, f"that state dict for torchvision {arch}", fix=f"pass one saved from torchvision.models.{arch}")
        net.fc = nn.Identity()
        self.net = net.eval().requires_grad_(False)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        if self.kind == "frame":
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        else:
            x = n.stem(x)
        tokens = n.layer4(n.layer3(n.layer2(n.layer1(x))))  # (N, D, h, w) or (N, D, t, h, w)
        pooled = tokens.flatten(2).mean(-1)  # == avgpool + flatten
        return pooled, tokens


def build_backbone(arch: str, weights: str) -> tuple[Backbone, WeightsInfo, Preprocess]:
    state, info, pre = resolve_weights(arch, weights)
    return Backbone(arch, state), info, pre
