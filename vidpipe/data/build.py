"""Training inputs for each kind of model, read from stores (never from videos).

What a model eats, and how it is sampled by default, comes from its registry entry and its weights
record (`vidpipe models NAME`), never from its name; `data.*` settings override the defaults.

- frame_features: (B, F, D) float, F frames TSN-sampled from a feature store's T per-frame features
  (random segment offsets in training, segment centres at test), seeded by (seed, epoch, video id).
- clip_tokens: (B, C, D, t, h, w) float, the token maps of a clip-backbone feature store.
- clips: (B*V, 3, F, S, S) float from a clip store: uint8 batches, augmented and normalised on the device.
Batches are dicts with `inputs`, `labels`, `ids` and `views` (views per video, averaged at test).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from vidpipe.errors import VidpipeError
from vidpipe.datasets.manifest import stratified_holdout
from vidpipe.data.augment import AugmentConfig, DeviceTransform
from vidpipe.data.loaders import ClipConfig, EpochLoader, Holdout, SharedEpoch, clip_loader, id_seed
from vidpipe.data.inputs import InputSpec
from vidpipe.data.sampling import Sampling, frame_indices
from vidpipe.models import model_entry
from vidpipe.models.weights import Transforms
from vidpipe.files import read_json
from vidpipe.stores.clips import Store
from vidpipe.stores.features import FeatureStore, weights_identity
from vidpipe.stores.remote import is_url, location


def open_data_index(path: str | Path) -> dict:
    """The store.json of a feature or clip store, checked by the store's own reader before anything trusts it.
    A clip store may be in a bucket (a URL); feature stores are folders."""
    if is_url(path):
        return Store.open(path).index
    index_path = Path(path) / "store.json"
    if not index_path.is_file():
        raise VidpipeError(f"{index_path} not found: --data must be a feature store (cache-features) or a clip store (extract)")
    index = read_json(index_path, "re-extract the store, or cache its features again")
    if isinstance(index, dict) and index.get("format") == "vidpipe-features":
        return FeatureStore.open(path).index
    return Store.open(path).index


def provenance(index: dict) -> dict:
    """What the model's inputs are made of; eval and resume refuse data with a different provenance."""
    if index.get("format") == "vidpipe-features":
        return {"kind": "features", "backbone": index["backbone"], "weights": weights_identity(index["weights"]), "preprocess": index["preprocess"],
                "dtype": index["dtype"], "clip": index["source_store"]["clip"], "random_weights": index["random_weights"]}
    return {"kind": "clips", "clip": index["clip"], "settings": {k: v for k, v in index["settings"].items() if k != "backend"}}


@dataclass(frozen=True)
class SplitChoice:
    """Which videos a loader reads: a split of the store, optionally carved by a hash of the video id."""

    split: str
    holdout: Holdout | None = None

    @property
    def description(self) -> str:
        if self.holdout is None:
            return self.split
        part = f"{self.holdout.fraction:.0%}" if self.holdout.held else f"the other {1 - self.holdout.fraction:.0%}"
        each = " of each class" if self.holdout.ids is not None else ""
        return f"{part}{each} of {self.split}, chosen by a hash of the video id"

    def keeps(self, video_id: str) -> bool:
        return self.holdout is None or self.holdout(video_id)


def split_videos(root: Path, index: dict, split: str) -> list[tuple[str, int]]:
    """(id, label) of every video a store holds in `split`."""
    if index.get("format") == "vidpipe-features":
        group = FeatureStore(root, index).group(split)  # checked against store.json
        return [(str(i), int(y)) for i, y in zip(group["ids"][:], group["labels"][:])]
    return [(r.id, r.label) for r in Store.open(root).records(split)]


def choose_splits(cfg, splits: list[str], root, videos=None) -> tuple[SplitChoice, SplitChoice | None]:
    """(train, val). Val is `data.val_split` if given, else the store's "val", else `data.val_fraction` of
    train: of each class where `videos(split)` gives the split's (id, label) pairs (stratified_holdout),
    else by id hash alone; with val_fraction 0, or no class of two training videos, there is no val and
    nothing is ever selected on test."""
    d = cfg.data
    for s in [d.train_split] + ([d.val_split] if d.val_split else []):
        if s not in splits:
            raise VidpipeError(f"{root} has no split '{s}'; it has {', '.join(splits)}")
    if d.val_split:
        if d.val_split == d.train_split:
            raise VidpipeError(f"data.val_split is the training split '{d.train_split}'; leave it empty to carve val from train")
        return SplitChoice(d.train_split), SplitChoice(d.val_split)
    if "val" in splits and d.train_split != "val":
        return SplitChoice(d.train_split), SplitChoice("val")
    if d.val_fraction > 0:
        ids = frozenset(stratified_holdout(videos(d.train_split), d.val_fraction)) if videos else None
        if ids is not None and not ids:  # no class has two training videos: none is given up for validation
            return SplitChoice(d.train_split), None
        return (SplitChoice(d.train_split, Holdout(d.val_fraction, held=False, ids=ids)),
                SplitChoice(d.train_split, Holdout(d.val_fraction, held=True, ids=ids)))
    return SplitChoice(d.train_split), None


def _zarr_rows(group, choice: SplitChoice) -> np.ndarray:
    ids = group["ids"][:]
    return np.array([i for i, v in enumerate(ids) if choice.keeps(str(v))], np.int64)


class FeatureFrames(Dataset):
    """Per-frame features (N, T, D) held in memory (float16), F frames sampled per item."""

    def __init__(self, root: Path, index: dict, choice: SplitChoice, frames: int, train: bool, seed: int):
        import zarr

        group = FeatureStore(root, index).group(choice.split)  # checked against store.json
        rows = _zarr_rows(group, choice)
        try:
            self.features = group["features"][:][rows]  # (N, T, D) float16
        except (RuntimeError, ValueError, zarr.errors.BaseZarrError) as e:  # a damaged chunk
            raise VidpipeError(f"{root}: the {choice.split} features do not read ({str(e)[:120]}); run `vidpipe verify {root}`") from None
        self.labels = group["labels"][:][rows].astype(np.int64)
        self.ids = list(group["ids"][:][rows])
        self.sampling, self.train, self.seed, self.epoch = Sampling.tsn(frames), train, seed, SharedEpoch()

    def __len__(self):
        return len(self.labels)

    def set_epoch(self, epoch):
        self.epoch.set(epoch)

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch.get(), id_seed(self.ids[i])])
        idx = frame_indices(self.features.shape[1], self.sampling, self.train, rng).ravel()
        return {"inputs": torch.from_numpy(self.features[i, idx].astype(np.float32)), "labels": int(self.labels[i]), "ids": self.ids[i]}


class FeatureTokens(Dataset):
    """Clip-backbone token maps (N, C, D, t, h, w), read per item (zarr opened per process)."""

    def __init__(self, root: Path, index: dict, choice: SplitChoice):
        features = FeatureStore(root, index)
        group = features.group(choice.split)  # checked against store.json
        self.path = features.array_path(choice.split)
        if "tokens" not in group:
            raise VidpipeError(f"{root} has no token maps; re-run cache-features with --tokens (r2plus1d_18 stores them)")
        self.rows = _zarr_rows(group, choice)
        self.labels = group["labels"][:][self.rows].astype(np.int64)
        self.ids = list(group["ids"][:][self.rows])
        self._tokens, self._pid, self.epoch = None, None, SharedEpoch()

    def __len__(self):
        return len(self.labels)

    def set_epoch(self, epoch):
        self.epoch.set(epoch)

    def __getitem__(self, i):
        if self._pid != os.getpid():
            import zarr

            self._tokens, self._pid = zarr.open_group(self.path, mode="r")["tokens"], os.getpid()
        return {"inputs": torch.from_numpy(self._tokens[int(self.rows[i])].astype(np.float32)), "labels": int(self.labels[i]), "ids": self.ids[i]}


@dataclass
class TrainData:
    """Loaders plus what the model needs to know: classes, input width, provenance, device transform."""

    train: object
    val: object | None  # None: no validation split (nothing is selected, the last epoch is kept)
    classes: list[str]
    in_dim: int | None
    input_kind: str
    provenance: dict
    inputs: InputSpec  # what the model is given and how it is cut from the store (recorded in the run card)
    transform: DeviceTransform | None = None
    val_split: str = ""  # what `val` reads, in words
    val_name: str = ""  # its short name: "val" (the store's or carved from train), "test", ...
    feature_norm: dict | None = None  # per-channel mean/std of the training split's features

    def __post_init__(self):
        self._norm = None if self.feature_norm is None else \
            (torch.tensor(self.feature_norm["mean"]), torch.tensor(self.feature_norm["std"]))  # built once, not per batch

    def to_device(self, batch: dict, device: torch.device, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["labels"].to(device, non_blocking=True)
        if self.transform is None:
            return normalise_features(batch["inputs"].to(device, non_blocking=True), self._norm), labels
        clips = batch["clips"].to(device, non_blocking=True)  # uint8 over the bus
        if train:
            return self.transform.train(clips, batch["boxes"], batch["flips"]), labels
        return self.transform.test(clips), labels


def normalise_features(x: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Features (B, T, D) or token maps (B, C, D, t, h, w) standardised per channel D with the training
    split's (mean, std); unchanged when `norm` is None."""
    if norm is None:
        return x
    shape = (1, 1, -1) if x.ndim == 3 else (1, 1, -1, 1, 1, 1)
    mean, std = (t.to(x.device).view(shape) for t in norm)
    return (x - mean) / std


class _Views:
    """Adds to every batch how many views each video has (averaged at test)."""

    def __init__(self, loader, views: int):
        self.loader, self.views = loader, views

    def set_epoch(self, epoch):
        self.loader.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield {**batch, "views": self.views}


def feature_statistics(dataset, seed: int = 0, token_videos: int = 1024) -> dict:
    """Per-channel mean/std of a training split's features: frozen features share a large common
    component, and standardising them is what lets a small head see the changes over time.

    Frame features: every training video (accumulated in float64 chunks). Token maps are large, so a
    seeded random sample of `token_videos` videos, drawn from the whole split (store order is class-major).
    """
    total, total_sq, n = 0.0, 0.0, 0
    if isinstance(dataset, FeatureFrames):
        d = dataset.features.shape[-1]
        chunks = (dataset.features[i : i + 256].astype(np.float64).reshape(-1, d) for i in range(0, len(dataset.features), 256))
    else:
        pick = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:token_videos])
        tokens = (dataset[int(i)]["inputs"].numpy().astype(np.float64) for i in pick)  # (C, D, t, h, w)
        chunks = (np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]) for x in tokens)
    for x in chunks:  # (rows, channels)
        total, total_sq, n = total + x.sum(0), total_sq + (x * x).sum(0), n + len(x)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
    return {"mean": mean.tolist(), "std": (std + 1e-6).tolist()}


def model_transforms(cfg) -> Transforms | None:
    """The input the run's model expects: its weights record's transforms when initialised from a tag,
    else the model's own defaults (None: feature models that read the store's token maps whole)."""
    return model_entry(cfg.model).transforms_for(None if cfg.init == "none" else cfg.init)


def input_warnings(spec: InputSpec) -> list[str]:
    """Settings that are allowed but likely wrong: clips that take more frames than the store keeps per video
    (uniform stores), which then repeat stored frames."""
    clip = spec.clip
    if spec.kind != "clips" or clip.get("mode", "uniform") != "uniform":
        return []
    s, stored = spec.sampling(train=True), clip["frames"]
    span = s.num_clips if s.is_tsn else (s.clip_len - 1) * s.frame_interval + 1
    if span <= stored:
        return []
    what = f"{s.num_clips} TSN segments" if s.is_tsn else f"clips spanning {span} frames ({s.name})"
    return [f"data.frames asks for {what} of a store that keeps {stored} frames per video: frames repeat; extract more "
            f"frames (--frames), or lower data.frames / data.frame_interval"]


def input_spec(cfg, index: dict, root) -> InputSpec:
    """A run's inputs, made once: what its model reads (the registry), sampled and transformed as its weights
    record (or the model) expects, `data.*` settings over those, cut from the store's frames."""
    d, input_kind, t = cfg.data, model_entry(cfg.model).input, model_transforms(cfg)
    if input_kind in ("frame_features", "clip_tokens"):
        source = index["source_store"]
        sampling = Sampling.tsn(d.frames or (t.frames if t else None)).name if input_kind == "frame_features" else None
        return InputSpec(input_kind, source["clip"], source.get("decoder"), sampling, sampling)
    if t.fps is not None:  # the protocol counts frames in real time: only a store at that rate keeps it
        clip = index["clip"]
        if clip.get("mode", "uniform") != "fps" or abs(clip["fps"] - t.fps) > 1e-6:
            have = f"a {clip['fps']:g} fps store" if clip.get("mode") == "fps" else "a uniform store (T frames spread over each video)"
            raise VidpipeError(f"{cfg.model} with these weights expects {t.describe()}; {root} is {have}: "
                               f"extract one with `vidpipe extract ... --fps {t.fps:g}`")
    frames, crop = d.frames or t.frames, d.crop_size or t.crop
    if t.sampling == "tsn":
        for name in ("frame_interval", "test_clips"):
            if getattr(d, name) not in (None, 1):
                raise VidpipeError(f"data.{name} applies to dense clips; {cfg.model} samples {frames} TSN segments (set data.frames instead)")
        train_sampling = test_sampling = Sampling.tsn(frames)
    else:
        interval = d.frame_interval or (stored_interval(t, index, d.train_split) if t.interval_unit == "source" else t.interval)
        train_sampling, test_sampling = Sampling(frames, interval, 1), Sampling(frames, interval, d.test_clips)
    aug = AugmentConfig(size=crop, test_short_side=round(crop * t.short_side / t.crop),
                        test_crop="three" if d.test_crops == 3 else "center", mean=t.mean, std=t.std)
    return InputSpec("clips", index["clip"], index["settings"].get("backend"), train_sampling.name, test_sampling.name,
                     dataclasses.asdict(aug))


def build_data(cfg, rank: int = 0, world_size: int = 1, train: bool = True, split: str | None = None,
               feature_norm: dict | None = None, spec: InputSpec | None = None) -> TrainData:
    """Loaders for training (train + val) or, with train=False, for evaluating `split` (default: test
    when the store has it, else val; "val" on a store without one is the carve the run trained with).
    `cfg` is a TrainConfig; the model it names says which input to produce. `spec`: the inputs a run
    recorded (eval), instead of making them from `cfg` (training); every loader is derived from it."""
    root = location(cfg.data.path)
    index = open_data_index(root)
    is_features = index.get("format") == "vidpipe-features"
    splits = list(index["splits"])
    train_choice, val_choice = choose_splits(cfg, splits, root, videos=lambda split: split_videos(root, index, split))
    if not train:
        split = split or ("test" if "test" in splits else "val")
        if split == "val" and "val" not in splits:
            if val_choice is None:
                raise VidpipeError(f"{root} has no val split and the run carved none (data.val_fraction=0); evaluate on {', '.join(splits)}")
        elif split not in splits:
            raise VidpipeError(f"{root} has no split '{split}'; it has {', '.join(splits)}")
        else:
            val_choice = SplitChoice(split)
    d, input_kind = cfg.data, model_entry(cfg.model).input
    if input_kind in ("frame_features", "clip_tokens"):
        if not is_features:
            raise VidpipeError(f"model {cfg.model} reads features; run `vidpipe cache-features --store {root}` and pass --data FEATURES")
        if input_kind == "frame_features" and index["kind"] != "frame":
            raise VidpipeError(f"model {cfg.model} needs per-frame features (resnet18/resnet50); {root} holds {index['backbone']} clip features")
        if input_kind == "clip_tokens" and index["kind"] != "clip":
            raise VidpipeError(f"model {cfg.model} needs clip token maps (r2plus1d_18); {root} holds {index['backbone']} frame features")
    elif is_features:
        raise VidpipeError(f"model {cfg.model} trains on clips; pass --data a clip store from `vidpipe extract`, not features")
    spec = spec or input_spec(cfg, index, root)
    if spec.kind in ("frame_features", "clip_tokens"):
        frames = spec.sampling(train=True).num_clips if spec.kind == "frame_features" else None

        def make(choice, is_train):
            ds = (FeatureFrames(root, index, choice, frames, is_train, cfg.seed) if spec.kind == "frame_features"
                  else FeatureTokens(root, index, choice))
            _require_videos(ds, choice, root)
            sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=is_train, seed=cfg.seed)
            kwargs = dict(batch_size=d.batch_size, num_workers=d.workers, pin_memory=False, drop_last=False)
            return _Views(EpochLoader(ds, kwargs, sampler=sampler), 1)

        in_dim = index["features"]["shape"][-1] if spec.kind == "frame_features" else index["tokens"]["shape"][1]
        train_loader = make(train_choice, True) if train else None
        if feature_norm is None:
            if not train:
                raise VidpipeError("evaluating features needs the training split's feature statistics (from the checkpoint)")
            feature_norm = feature_statistics(train_loader.loader.dataset, cfg.seed)
        val_loader = make(val_choice, False) if val_choice else None
        return TrainData(train_loader, val_loader, index["classes"], in_dim, spec.kind, provenance(index), spec,
                         val_split=val_choice.description if val_choice else "", val_name=split or "val", feature_norm=feature_norm)
    aug, train_sampling, test_sampling = spec.augment_config(), spec.sampling(train=True), spec.sampling(train=False)
    flip_map = {int(k): int(v) for k, v in d.flip_map.items()}
    train_loader = val_loader = None
    store = Store.open(root)
    if train:
        clips = ClipConfig(train_sampling, True, aug, cfg.seed, flip_map or None, train_choice.holdout)
        train_loader = _Views(clip_loader(store, train_choice.split, clips, d.batch_size, d.workers, rank, world_size,
                                               cache_dir=d.cache_dir or None), 1)
        _require_videos(train_loader.loader.dataset, train_choice, root)
    if val_choice:
        test_clips = ClipConfig(test_sampling, False, aug, cfg.seed, holdout=val_choice.holdout)
        val_loader = _Views(clip_loader(store, val_choice.split, test_clips, d.batch_size, d.workers, rank, world_size,
                                             cache_dir=d.cache_dir or None),
                            test_sampling.views(test=True) * aug.test_crops)
        _require_videos(val_loader.loader.dataset, val_choice, root)
    return TrainData(train_loader, val_loader, index["classes"], None, spec.kind, provenance(index), spec, DeviceTransform(aug),
                     val_choice.description if val_choice else "", split or "val")


def stored_interval(t: Transforms, index: dict, split: str) -> int:
    """A dense interval counted in the videos' native frames, in the store's frames: `t.interval` times the
    store's frames per source frame over the training split (the same split at train and at eval).

    An fps store at F holds F / r frames per source frame of a video at r fps (r = source frames over source
    seconds); a uniform store holds T of a video's n frames. A 16x4 clip at 30 fps spans 2.1 s: interval 2 on
    a 15 fps store, 1 on a 16-frame uniform store of 10-second videos.
    """
    entry, clip = index["splits"][split], index["clip"]
    if not entry.get("source_frames"):
        raise VidpipeError(f"{t.describe()} counts its interval in source frames and this store does not record its videos' frame counts "
                           f"(made before vidpipe recorded them): re-extract it, or set data.frame_interval (in stored frames)")
    stored = clip["fps"] * entry["source_seconds"] if clip.get("mode") == "fps" else clip["frames"] * entry["count"]
    return max(1, round(t.interval * stored / entry["source_frames"]))


def video_count(loader) -> int:
    """Videos one epoch of a loader (a TrainData's train or val) reads."""
    return _videos_in(loader.loader.dataset)


def _videos_in(dataset) -> int:
    return dataset.count if hasattr(dataset, "count") else len(dataset)


def _require_videos(dataset, choice: SplitChoice, root) -> None:
    if _videos_in(dataset) == 0:
        fix = "; raise data.val_fraction or set it to 0 (no validation)" if choice.holdout is not None else ""
        raise VidpipeError(f"{root}: {choice.description} holds no videos{fix}")
