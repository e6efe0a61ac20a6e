"""`vidpipe cache-features`: run a frozen backbone once over every stored clip; store its features.

A feature store mirrors a clip store: FEATURES/<split>.zarr arrays plus FEATURES/store.json saying
backbone, weights (id, file sha256, random or not), preprocessing, shapes and the source clip store.
- frame backbones (resnet18/50): `features` (N, T, D) for all T stored frames, so temporal heads can
  still sample frames at train time; with --tokens also `tokens` (N, T, D, h, w).
- clip backbones (r2plus1d_18): the T stored frames are cut into T // 16 consecutive 16-frame clips
  (what its Kinetics weights expect; a shorter store loops to 16): `features` (N, C, D) pooled and
  `tokens` (N, C, D, t, h, w) last-stage maps (512 x 2 x 7 x 7 for a 16 x 112 x 112 clip).
Stored as float16 by default. Resumable: units of UNIT videos are written (whole zarr chunks) and then
recorded; a rerun skips recorded units. Other settings against an existing store are refused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from vidpipe import __version__
from vidpipe.files import COMPONENT, inside, is_no_space, read_json, write_text_atomic
from vidpipe.devices import amp_dtype, resolve_device
from vidpipe.errors import VidpipeError, no_space
from vidpipe.models.backbones import Backbone, Preprocess, build_backbone
from vidpipe.stores.clips import IndexMismatch, Store, verify_files
from vidpipe.stores.plan import settle_plan
from vidpipe.stores.writers import file_entry

FEATURE_FORMAT = "vidpipe-features"
UNIT = 32  # videos per resumable unit (and per zarr chunk)


@dataclass
class FeatureConfig:
    backbone: str = "resnet18"
    weights: str = "DEFAULT"
    tokens: bool = False
    batch_size: int = 4  # videos per forward pass
    device: str = "auto"
    dtype: str = "float16"

    def __post_init__(self):
        if self.dtype not in ("float16", "float32"):
            raise VidpipeError(f"--dtype must be float16 or float32; got {self.dtype}")
        resolve_device(self.device)  # refuses a bad --device now, not after the backbone is built

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)


def preprocess(frames: torch.Tensor, pre: Preprocess, video: bool) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float normalised (N, 3, crop, crop), as torchvision's presets do:
    images: antialiased resize of the short side, centre crop; video: resize to exactly (h, w) without
    antialias (torchvision's VideoClassification), centre crop."""
    if video:
        frames = TF.resize(frames, list(pre.resize_size), antialias=False)
    else:
        frames = TF.resize(frames, [pre.resize_size[0]], antialias=True)
    frames = TF.center_crop(frames, list(pre.crop_size))
    frames = frames.float().div_(255.0)
    return TF.normalize(frames, list(pre.mean), list(pre.std))


def clip_starts(t: int, clip_len: int) -> list[int]:
    return [i * clip_len for i in range(max(1, t // clip_len))]


def backbone_features(model: Backbone, pre: Preprocess, clips: np.ndarray, device: torch.device, tokens: bool):
    """clips uint8 (B, T, H, W, 3) as stored -> pooled (B, T|C, D), tokens or None, float32 numpy (what
    cache-features stores, before its dtype; `vidpipe predict` runs the same function on new videos)."""
    b, t, h, w, _ = clips.shape
    x = torch.from_numpy(clips).to(device)
    dtype = amp_dtype("auto", device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        if model.kind == "frame":
            x = preprocess(x.reshape(b * t, h, w, 3).permute(0, 3, 1, 2), pre, video=False)
            pooled, maps = model.forward_features(x)
            pooled = pooled.reshape(b, t, -1)
            maps = maps.reshape(b, t, *maps.shape[1:]) if tokens else None
        else:
            idx = [(s + k) % t for s in clip_starts(t, model.clip_len) for k in range(model.clip_len)]
            c = len(idx) // model.clip_len
            x = preprocess(x[:, idx].reshape(b * c * model.clip_len, h, w, 3).permute(0, 3, 1, 2), pre, video=True)
            x = x.reshape(b * c, model.clip_len, 3, *pre.crop_size).permute(0, 2, 1, 3, 4)  # (B*C, 3, 16, 112, 112)
            pooled, maps = model.forward_features(x)
            pooled = pooled.reshape(b, c, -1)
            maps = maps.reshape(b, c, *maps.shape[1:]) if tokens else None
    return pooled.float().cpu().numpy(), (maps.float().cpu().numpy() if maps is not None else None)


@dataclass
class FeaturesReport:
    out: Path
    nothing_to_do: bool
    videos: int = 0
    frames: int = 0  # backbone inputs (frames, or clip frames) processed in this run
    seconds: float = 0.0
    summary: dict | None = None


def weights_identity(weights: dict) -> dict:
    """What identifies the weights (id, sha256), not where the file happened to be read from."""
    return {k: v for k, v in weights.items() if k != "path"}


def _plan(store: Store, cfg: FeatureConfig, info, pre) -> dict:
    plan = {"backbone": cfg.backbone, "weights": info, "preprocess": pre.to_dict(), "tokens": cfg.tokens,
            "dtype": cfg.dtype, "source_store_sha256": hashlib.sha256(store.read_bytes("store.json")).hexdigest()}
    return json.loads(json.dumps(plan))  # the form it has once written: tuples become lists


def cache_features(store_path: str | Path, out: str | Path, cfg: FeatureConfig | None = None, overwrite: bool = False,
                   progress=None) -> FeaturesReport:
    cfg = cfg or FeatureConfig()
    store = Store.open(store_path)
    if store.mode != "uniform":
        raise VidpipeError(f"{store.name} is an fps store (T varies per video); cache features from a uniform store "
                           "(`vidpipe extract` without --fps)")
    out = Path(out)
    model, info, pre = build_backbone(cfg.backbone, cfg.weights)
    plan = _plan(store, cfg, info, pre)
    control = out / "_cache"
    state = settle_plan(control / "plan.json", plan, out, "features", overwrite)
    if state == "replace":
        remove_feature_store(out)
    elif state == "none" and out.exists() and any(out.iterdir()):
        raise VidpipeError(f"{out} exists and is not a vidpipe feature store; choose an empty or new --out")
    try:
        (control / "parts").mkdir(parents=True, exist_ok=True)
        write_text_atomic(control / "plan.json", json.dumps(plan, indent=2, sort_keys=True))
        return _cache(store, out, cfg, plan, model, info, pre, progress)
    except OSError as e:
        if is_no_space(e):
            raise no_space(out) from None  # finished units are recorded: a rerun carries on from them
        raise


def remove_feature_store(out: Path) -> None:
    """Delete a feature store vidpipe made, and only that: its _cache/ records, its store.json (a feature
    store's) and its <split>.zarr arrays. Anything else in the folder is refused in one line, not deleted."""
    if (out / "store.json").is_file():
        index = read_json(out / "store.json", f"remove {out} yourself if it is yours to delete")
        if not isinstance(index, dict) or index.get("format") != FEATURE_FORMAT:
            raise VidpipeError(f"refusing to delete {out}: its store.json is not a vidpipe feature store's; choose another --out")
    foreign = [p.name for p in out.iterdir() if not (p.name in ("_cache", "store.json", "store.json.tmp") or (p.is_dir() and p.suffix == ".zarr"))]
    if foreign:
        raise VidpipeError(f"refusing to delete {out}: it holds files vidpipe did not write ({', '.join(sorted(foreign)[:3])}); "
                           "choose another --out or move them away")
    shutil.rmtree(out)


def _cache(store: Store, out: Path, cfg: FeatureConfig, plan: dict, model, info, pre, progress) -> FeaturesReport:
    import zarr

    control = out / "_cache"
    device = cfg.torch_device()
    model = model.to(device)
    t, h, w, _ = store.clip_shape
    probe_out, probe_tokens = backbone_features(model, pre, np.zeros((1, t, h, w, 3), np.uint8), device, cfg.tokens)
    feat_shape, token_shape = probe_out.shape[1:], (probe_tokens.shape[1:] if probe_tokens is not None else None)
    dtype = np.dtype(cfg.dtype)
    report = FeaturesReport(out, nothing_to_do=True)
    t0 = time.perf_counter()
    for split in store.splits:
        n = store.index["splits"][split]["count"]
        group = zarr.open_group(out / f"{split}.zarr", mode="a")
        arrays = {}
        for name, shape, dt in (("features", feat_shape, dtype), ("tokens", token_shape, dtype), ("labels", (), np.int64)):
            if shape is None:
                continue
            if name not in group:
                group.create_array(name, shape=(n, *shape), chunks=(UNIT, *shape), dtype=dt, fill_value=0)
            arrays[name] = group[name]
        if "ids" not in group:
            group.create_array("ids", shape=(n,), chunks=(UNIT,), dtype=str)
        arrays["ids"] = group["ids"]
        done = {int(p.stem.rsplit("-", 1)[1]) for p in (control / "parts").glob(f"{split}-*.json")}
        batch, buffer = [], {"features": [], "tokens": [], "labels": [], "ids": []}
        for i, (vid, clip, label, _) in enumerate(store.samples(split)):
            unit = i // UNIT
            if unit in done:
                continue
            batch.append((vid, clip, label))
            last_of_unit = (i + 1) % UNIT == 0 or i + 1 == n
            if len(batch) == cfg.batch_size or last_of_unit:
                pooled, maps = backbone_features(model, pre, np.stack([c for _, c, _ in batch]), device, cfg.tokens)
                buffer["features"].append(pooled.astype(dtype))
                if maps is not None:
                    buffer["tokens"].append(maps.astype(dtype))
                buffer["labels"] += [lab for _, _, lab in batch]
                buffer["ids"] += [v for v, _, _ in batch]
                report.videos += len(batch)
                report.frames += len(batch) * (t if model.kind == "frame" else pooled.shape[1] * model.clip_len)
                if progress:
                    progress(len(batch))
                batch = []
            if last_of_unit:
                start = unit * UNIT
                stop = start + len(buffer["ids"])
                arrays["features"][start:stop] = np.concatenate(buffer["features"])
                if cfg.tokens:
                    arrays["tokens"][start:stop] = np.concatenate(buffer["tokens"])
                arrays["labels"][start:stop] = np.array(buffer["labels"], np.int64)
                arrays["ids"][start:stop] = np.array(buffer["ids"], dtype=object)
                write_text_atomic(control / "parts" / f"{split}-{unit:06d}.json", json.dumps({"start": start, "stop": stop}))
                buffer = {"features": [], "tokens": [], "labels": [], "ids": []}
                report.nothing_to_do = False
    report.seconds = time.perf_counter() - t0
    report.summary = _finalize(out, store, cfg, plan, model, feat_shape, token_shape)
    return report


def _finalize(out: Path, store: Store, cfg: FeatureConfig, plan: dict, model: Backbone, feat_shape, token_shape) -> dict:
    splits = {}
    for split in store.splits:
        files = sorted(p for p in (out / f"{split}.zarr").rglob("*") if p.is_file())
        splits[split] = {"count": store.index["splits"][split]["count"], "array": f"{split}.zarr",
                         "files": [file_entry(out, p) for p in files]}
    summary = {
        "format": FEATURE_FORMAT,
        "vidpipe_features": 1,
        "vidpipe_version": __version__,
        "backbone": cfg.backbone,
        "kind": model.kind,
        "weights": plan["weights"],
        "random_weights": plan["weights"]["random"],
        "preprocess": plan["preprocess"],
        "dtype": cfg.dtype,
        "features": {"shape": list(feat_shape), "layout": "T,D" if model.kind == "frame" else "clips,D"},
        "tokens": {"shape": list(token_shape), "layout": "T,D,h,w" if model.kind == "frame" else "clips,D,t,h,w"} if token_shape else None,
        "clip_len": model.clip_len,
        "source_store": {"path": store.location, "store_json_sha256": plan["source_store_sha256"],
                         "clip": store.index["clip"], "dataset": store.index["dataset"], "decoder": store.index["settings"].get("backend")},
        "classes": store.classes,
        "num_classes": len(store.classes),
        "splits": splits,
    }
    write_text_atomic(out / "store.json", json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class FeatureStore:
    root: Path
    index: dict

    @classmethod
    def open(cls, root: str | Path) -> "FeatureStore":
        root = Path(root)
        path = root / "store.json"
        if not path.is_file():
            raise VidpipeError(f"{path} not found: {root} is not a finished feature store (run `vidpipe cache-features`)")
        index = read_json(path, f"run `vidpipe cache-features` into {root} again with --overwrite")
        if not isinstance(index, dict) or index.get("format") != FEATURE_FORMAT:
            what = index.get("format") if isinstance(index, dict) else None
            raise VidpipeError(f"{root} is a {what} store, not a feature store; run `vidpipe cache-features --store {root}` first")
        _check_index(path, index)
        return cls(root, index)

    def verify(self, progress=None) -> list[str]:
        """Recompute every file's checksum, then check every split's rows against store.json (each row
        made by a sample, each label a class); returns the problems found (empty = intact)."""
        problems = []
        for split, entry in self.index["splits"].items():
            damaged = verify_files(self.root, entry["files"], progress)
            problems += damaged
            if not damaged:
                try:
                    self.group(split)
                except VidpipeError as e:
                    problems.append(f"{split}: {getattr(e, 'problem', e)}")
        return problems

    def array_path(self, split: str) -> Path:
        if split not in self.index["splits"]:
            raise VidpipeError(f"feature store {self.root} has no split '{split}'; it has {', '.join(self.index['splits'])}")
        return inside(self.root, self.index["splits"][split]["array"], f"store.json of {self.root}")

    def group(self, split: str):
        """A split's zarr group, checked against store.json: every array has `count` rows, each row an id
        (a row that no sample produced has none) and a label among the classes, features of the recorded shape."""
        import zarr

        path, n = self.array_path(split), self.index["splits"][split]["count"]
        try:
            group = zarr.open_group(path, mode="r")
            ids, labels, shape = group["ids"][:], group["labels"][:], group["features"].shape
        except (zarr.errors.BaseZarrError, KeyError, ValueError, RuntimeError, FileNotFoundError) as e:
            raise VidpipeError(f"{path} does not read as a feature split ({type(e).__name__}); run `vidpipe verify {self.root}`, "
                               "then cache the features again") from None
        empty = int(sum(1 for i in ids if not i))
        bad_labels = int(((labels < 0) | (labels >= len(self.index["classes"]))).sum())
        if len(ids) != n or len(labels) != n or tuple(shape) != (n, *self.index["features"]["shape"]) or empty or bad_labels:
            raise IndexMismatch(self.root / "store.json", f"{split}: {len(ids)} rows of features {tuple(shape)}, {empty} rows no sample "
                                                          f"produced, {bad_labels} labels outside the {len(self.index['classes'])} classes; "
                                                          f"store.json says {n} rows of {tuple(self.index['features']['shape'])}")
        return group

    def arrays(self, split: str) -> dict:
        return dict(self.group(split).arrays())

    def provenance(self) -> dict:
        """What made these features; two stores mix only when this is equal."""
        i = self.index
        return {"backbone": i["backbone"], "weights": weights_identity(i["weights"]), "preprocess": i["preprocess"], "dtype": i["dtype"],
                "clip": i["source_store"]["clip"], "classes": i["classes"]}

    def require_same(self, other: "FeatureStore") -> None:
        a, b = self.provenance(), other.provenance()
        diffs = [k for k in a if a[k] != b[k]]
        if diffs:
            raise VidpipeError(f"feature stores {self.root} and {other.root} were made differently ({', '.join(diffs)}); re-cache one of them")



def _check_index(path: Path, index: dict) -> None:
    def need(ok, problem):
        if not ok:
            raise IndexMismatch(path, problem)

    need(isinstance(index.get("classes"), list) and all(isinstance(c, str) for c in index["classes"]), "no class list")
    shape = (index.get("features") or {}).get("shape")
    need(isinstance(shape, list) and all(isinstance(v, int) and v >= 1 for v in shape), f"features.shape {shape!r}")
    need(isinstance(index.get("splits"), dict), "no splits")
    for name, e in index["splits"].items():
        need(isinstance(e, dict) and COMPONENT.match(name) is not None and isinstance(e.get("count"), int) and e["count"] >= 0 and isinstance(e.get("array"), str)
             and isinstance(e.get("files"), list) and all(isinstance(f, dict) and isinstance(f.get("path"), str) for f in e["files"]),
             f"split {name!r}")
