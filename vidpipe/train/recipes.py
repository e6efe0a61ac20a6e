"""Recipes: the seed systems' experiments as run configs a user reruns in one command.

A recipe is a run config (`vidpipe train --config` reads it as it is) shipped in vidpipe/recipes/<name>.toml,
with a `[recipe]` table saying where the experiment comes from, the store it needs (the exact
`vidpipe extract` command, and `vidpipe cache-features` for feature heads) and the published result with
its protocol. `vidpipe train --recipe NAME --data STORE --out RUN [key=value ...]` runs it; `check_run`
says, before anything trains, whether the store and the initialisation fit it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from vidpipe.data.build import input_spec, open_data_index
from vidpipe.errors import VidpipeError
from vidpipe.stores.remote import location
from vidpipe.models import model_entry
from vidpipe.typed import from_dict

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


@dataclass(frozen=True)
class StoreNeed:
    """The store a recipe's protocol needs."""

    dataset: str
    mode: str = "uniform"  # uniform (T frames spread over each video) | fps (resampled to `fps`)
    frames: int | None = None  # uniform stores: frames per video
    fps: float | None = None  # fps stores: the rate
    size: int = 128  # frame height
    frame_codec: str = "raw"
    split: int | None = None  # the dataset's official split, where it has several
    backbone: str | None = None  # feature heads: the frozen backbone of the feature store
    backbone_weights: str | None = None  # and its weights (cache-features --weights)

    def __post_init__(self):
        if self.mode not in ("uniform", "fps") or (self.mode == "fps") != (self.fps is not None):
            raise ValueError("mode is uniform (with frames) or fps (with fps)")

    def extract_command(self) -> str:
        mode = f"--fps {self.fps:g}" if self.mode == "fps" else f"--frames {self.frames}"
        split = f" --split {self.split}" if self.split else ""
        codec = f" --frame-codec {self.frame_codec}" if self.frame_codec != "raw" else ""
        return f"vidpipe extract --dataset {self.dataset} --root ROOT{split} {mode} --size {self.size}{codec} --out STORE"

    def cache_command(self) -> str | None:
        if self.backbone is None:
            return None
        weights = f" --weights {self.backbone_weights}" if self.backbone_weights else ""
        return f"vidpipe cache-features --store STORE --backbone {self.backbone}{weights} --out FEATURES"

    def describe(self) -> str:
        """'hmdb51 split 1: uniform 32 frames x 128 px' (+ codec, + features): the store in a few words."""
        mode = f"{self.fps:g} fps" if self.mode == "fps" else f"uniform {self.frames} frames"
        split = f" split {self.split}" if self.split else ""
        codec = f", {self.frame_codec}" if self.frame_codec != "raw" else ""
        features = f", then {self.backbone} features" if self.backbone else ""
        return f"{self.dataset}{split}: {mode} x {self.size} px{codec}{features}"

    def commands(self) -> str:
        return self.extract_command() + (f", then {self.cache_command()}" if self.backbone else "")


@dataclass(frozen=True)
class Published:
    """The figure the source reports, and how it was measured."""

    metric: str  # e.g. "top-1 (%) on val, video level"
    protocol: str  # sampling, views, checkpoint
    top1: float | None = None  # None: the source reports no figure for this configuration
    extra: dict = field(default_factory=dict)  # other figures it reports (top5, F1, parameters, a per-epoch table)

    def describe(self) -> str:
        return "none reported" if self.top1 is None else f"{self.top1:g} ({self.metric})"


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    source: str  # the seed system, paper or config it reproduces
    store: StoreNeed
    published: Published
    config: dict  # the run config as the file holds it, without [recipe]
    notes: str = ""
    init_required: str = ""  # a file the run must start from that no tag names (how to get it): the run needs init=PATH
    path: Path | None = None

    @property
    def model(self) -> str:
        return self.config["model"]

    @property
    def init(self) -> str:
        return self.config.get("init", "none")

    def weights_needed(self) -> str:
        """The weights the run starts from, in a few words."""
        if self.init_required:
            return "init=PATH: " + self.init_required.split(":")[0].split(" (")[0]
        return "none (from scratch)" if self.init == "none" else self.init

    def record(self) -> dict:
        """What a run made from this recipe keeps in its card: which recipe and its published figure."""
        p = self.published
        return {"name": self.name, "title": self.title, "source": self.source,
                "published": {"top1": p.top1, "metric": p.metric, "protocol": p.protocol, **p.extra}}


def recipe_path(name: str) -> Path:
    path = RECIPES_DIR / f"{name}.toml"
    if not path.is_file():
        raise VidpipeError(f"no recipe '{name}'; `vidpipe recipes` lists them ({', '.join(list_recipes()[:4])}, ...)")
    return path


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def split_recipe(raw: dict, where: str | Path) -> tuple[dict | None, dict]:
    """(the [recipe] table or None, the run config) of a config file's table."""
    raw = dict(raw)
    header = raw.pop("recipe", None)
    if header is not None and not isinstance(header, dict):
        raise VidpipeError(f"{where}: [recipe] must be a table")
    return header, raw


def load_recipe(name_or_path: str | Path) -> Recipe:
    from vidpipe.train.config import read_config_file

    path = Path(name_or_path) if str(name_or_path).endswith(".toml") else recipe_path(str(name_or_path))
    header, config = split_recipe(read_config_file(path), path)
    if header is None:
        raise VidpipeError(f"{path} is a run config without a [recipe] table; pass it with --config")
    return recipe_from(header, config, path)


def recipe_from(header: dict, config: dict, path: Path) -> Recipe:
    """The Recipe of a config file already read: its [recipe] table and its run config."""
    try:
        store = from_dict(StoreNeed, header["store"])
        published = from_dict(Published, header["published"])
        return Recipe(path.stem, header["title"], header["source"], store, published, config, header.get("notes", ""),
                      header.get("init_required", ""), path)
    except (KeyError, TypeError, ValueError) as e:
        raise VidpipeError(f"{path}: [recipe] is incomplete or malformed ({e}); it needs title, source, [recipe.store] and "
                           "[recipe.published]") from None


# ------------------------------------------------------------------ checks before a run
@dataclass
class Check:
    what: str  # store | features | init
    ok: bool
    detail: str


def check_run(recipe: Recipe, cfg) -> list[Check]:
    """Whether the store `cfg.data.path` and the initialisation `cfg.init` fit the recipe, as lines a person
    reads (`--dry-run`), each passing or saying what to run instead. Nothing is decoded or trained."""
    need, root = recipe.store, location(cfg.data.path)
    checks = []
    index = open_data_index(root)
    is_features = index.get("format") == "vidpipe-features"
    entry = model_entry(cfg.model)
    if (entry.input == "clips") == is_features:  # the wrong kind of store: nothing else about it matters
        what = (f"{root} holds features; this recipe trains on clips: {need.extract_command()}" if is_features else
                f"{root} is not a {need.backbone} feature store; {need.commands()}")
        return [Check("store", False, what), _check_init(cfg)]
    clip = index["source_store"]["clip"] if is_features else index["clip"]
    dataset = index["source_store"]["dataset"] if is_features else index["dataset"]
    if is_features:
        same = index["backbone"] == need.backbone
        checks.append(Check("features", same, f"{need.backbone} features" if same else
                            f"{root} holds {index['backbone']} features, not {need.backbone}; {need.commands()}"))
    else:
        checks.append(Check("store", True, "a clip store"))
    mode = clip.get("mode", "uniform")
    if mode != need.mode or (need.mode == "fps" and not math.isclose(clip["fps"], need.fps)):
        have = f"an fps store at {clip['fps']:g} fps" if mode == "fps" else f"a uniform store ({clip['frames']} frames a video)"
        want = f"an fps store at {need.fps:g} fps" if need.mode == "fps" else "a uniform store"
        checks.append(Check("store", False, f"{root} is {have}; the recipe needs {want}: {need.commands()}"))
    if is_features and entry.input == "frame_features":
        frames = cfg.data.frames or (entry.transforms.frames if entry.transforms else 1)
        ok = frames <= clip["frames"]
        checks.append(Check("features", ok, f"{clip['frames']} frames a video, the run samples {frames}" if ok else
                            f"{root} holds {clip['frames']} frames a video, the run samples {frames}; {need.commands()}"))
    if not is_features:
        try:
            spec = input_spec(cfg, index, root)
        except VidpipeError as e:
            checks.append(Check("store", False, f"{e}; the recipe's store: {need.extract_command()}"))
        else:
            crop, sampling = spec.augment_config().size, spec.sampling(train=True)
            if clip["height"] < crop:
                checks.append(Check("store", False, f"{root} holds frames {clip['height']} high, below the {crop}-pixel crop; "
                                                     f"{need.extract_command()} (or data.crop_size=N)"))
            if mode == "uniform" and sampling.is_tsn and sampling.num_clips > clip["frames"]:
                checks.append(Check("store", False, f"{root} stores {clip['frames']} frames a video, the run samples {sampling.num_clips}; "
                                                     f"{need.extract_command()}"))
            checks.append(Check("store", True, f"{clip['frames']} x {clip['height']} x {clip['width']} {mode}; the run takes "
                                               f"{sampling.name} at {crop}"))
    if dataset != need.dataset:
        checks.append(Check("store", True, f"note: the store is {dataset}, the recipe's {need.dataset}: the published figure does not compare"))
    if recipe.init_required and cfg.init == "none":
        checks.append(Check("init", False, f"this recipe starts from {recipe.init_required}"))
    else:
        checks.append(_check_init(cfg))
    return checks


def _check_init(cfg) -> Check:
    from vidpipe.models.registry import assumed_transforms

    if cfg.init == "none":
        return Check("init", True, "random initialisation")
    entry = model_entry(cfg.model)
    record, local = entry.parse_weights(cfg.init)
    if local is not None:
        ok = Path(local).exists()
        said = assumed_transforms(cfg.model, cfg.init) if record is None else f"{record.tag}'s file, checked when the run starts"
        return Check("init", ok, f"{local} ({said})" if ok else f"{local} not found; pass init=TAG=PATH to the file")
    kind, _, ref = record.source.partition(":")
    if kind == "torchvision":
        import torch.hub
        from urllib.parse import urlparse

        import torchvision

        url = torchvision.models.get_weight(ref).url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        return Check("init", True, f"{record.tag} from torchvision ({'in torch cache' if cached.is_file() else f'downloaded from {url} when the run starts'})")
    return Check("init", False, f"{record.tag} comes from {record.source}, which vidpipe does not download: fetch it and add "
                                f"init={record.tag}=PATH")
