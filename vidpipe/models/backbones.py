"""Frozen torchvision backbones for the feature cache: weights, their preprocessing, forward_features.

A backbone's weights are `Weights` records like every model's (`backbone_weights(arch)`, one per
torchvision weights enum member, tag = its name), so they are fetched, checked and described the same
way. `cache-features --weights` takes (a) a tag (`IMAGENET1K_V2`, `KINETICS400_V1`, `DEFAULT`),
fetched through torchvision's cache; (b) `TAG=PATH`, a local copy of that file (checked against the
sha256 prefix torchvision publishes in its file name); (c) a local `.pth` / `.safetensors` state dict
of the same architecture; or (d) `random` (seeded init, for offline demos and tests, and marked as such).
Preprocessing (resize, crop, mean/std) always comes from a record's transforms: the tag's for (a) and
(b), the architecture's DEFAULT for (c) and (d).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from vidpipe.errors import VidpipeError
from vidpipe.files import sha256_file
from vidpipe.models.weights import Layout, Transforms, Weights, fit, read_state

BACKBONES = {
    # name -> (kind, pooled feature width, frames per clip the weights expect (clip backbones))
    "resnet18": ("frame", 512, None),
    "resnet50": ("frame", 2048, None),
    "r2plus1d_18": ("clip", 512, 16),
}
RANDOM_SEED = 0
TORCHVISION_LAYOUT = Layout("torchvision", lambda state: dict(state), "torchvision's own keys")


@dataclass(frozen=True)
class Preprocess:
    """What the weights were trained on, as a feature store records it: resize, centre crop, mean/std."""

    resize_size: tuple[int, ...]  # (short side,) for images; (h, w) for torchvision's video transforms
    crop_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # which weights record they come from

    @classmethod
    def of(cls, weights: Weights) -> "Preprocess":
        t = weights.transforms
        return cls(t.resize or (t.short_side,), (t.crop, t.crop), tuple(t.mean), tuple(t.std), weights.source.partition(":")[2])

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def backbone_weights(arch: str) -> tuple[Weights, ...]:
    """torchvision's weights for `arch` as vidpipe `Weights` records, the enum's DEFAULT first."""
    enum = torchvision.models.get_model_weights(arch)
    kind, _, clip_len = BACKBONES[arch]
    records = []
    for w in sorted(enum, key=lambda w: w is not enum.DEFAULT):
        t = w.transforms()
        resize = [int(v) for v in (t.resize_size if isinstance(t.resize_size, (list, tuple)) else [t.resize_size])]
        crop = t.crop_size if isinstance(t.crop_size, (list, tuple)) else [t.crop_size]
        transforms = Transforms("tsn" if kind == "frame" else "dense", frames=clip_len or 1, short_side=resize[0], crop=int(crop[-1]),
                                mean=tuple(t.mean), std=tuple(t.std), resize=tuple(resize) if len(resize) == 2 else None)
        records.append(Weights(w.name, f"torchvision:{type(w).__name__}.{w.name}", TORCHVISION_LAYOUT, transforms,
                               len(w.meta["categories"]), ("fc.weight", "fc.bias"), {"url": w.url}))
    return tuple(records)


def _weights_record(arch: str, tag: str, given: str) -> Weights:
    records = backbone_weights(arch)
    record = records[0] if tag == "DEFAULT" else next((w for w in records if w.tag == tag), None)
    if record is None:
        names = ", ".join(["DEFAULT", *(w.tag for w in records)])
        raise VidpipeError(f"{arch} has no torchvision weights '{tag}' (--weights {given}); choose one of {names}, TAG=PATH (a local copy "
                           "of that file), a .pth/.safetensors PATH, or random")
    return record


def provenance(record: Weights | None, path: Path | None = None, tagged: bool = False) -> dict:
    """The `weights` entry of a feature store: what identifies the weights (and where a file was read)."""
    if path is not None:
        entry = {"id": f"file:{path.name}", "source": "file", "sha256": sha256_file(path), "random": False, "path": str(path.resolve())}
        return {**entry, "tag": record.tag} if tagged else entry
    if record is None:
        return {"id": "random", "source": "random", "sha256": None, "random": True, "path": None}
    return {"id": record.source, "source": "torchvision", "sha256": None, "random": False, "path": None}


def resolve_weights(arch: str, weights: str) -> tuple[dict | None, dict, Preprocess]:
    """(state dict or None for random, provenance, preprocessing) of `cache-features --weights`."""
    if arch not in BACKBONES:
        raise VidpipeError(f"unknown backbone '{arch}'; choose one of {', '.join(BACKBONES)}")
    if weights == "random":
        return None, provenance(None), Preprocess.of(backbone_weights(arch)[0])
    tag, sep, local = weights.partition("=")
    record = _weights_record(arch, tag, weights) if sep else None
    path = Path(local if sep else weights)
    if sep or path.suffix in (".pth", ".pt", ".safetensors") or path.exists():
        if not path.is_file():
            raise VidpipeError(f"weights file {path} not found")
        info = provenance(record, path, tagged=bool(sep))
        published = record.published_sha256() if record is not None else None
        if published and not info["sha256"].startswith(published):  # torchvision names its files by their sha256
            raise VidpipeError(f"{path} is not {record.source.partition(':')[2]}: its sha256 starts {info['sha256'][:len(published)]}, the "
                               f"published file's {published}; pass that file, or the path alone")
        return read_state(path)[0], info, Preprocess.of(record if record is not None else backbone_weights(arch)[0])
    record = _weights_record(arch, weights, weights)
    return record.fetch(), provenance(record), Preprocess.of(record)


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


def build_backbone(arch: str, weights: str) -> tuple[Backbone, dict, Preprocess]:
    state, info, pre = resolve_weights(arch, weights)
    return Backbone(arch, state), info, pre
