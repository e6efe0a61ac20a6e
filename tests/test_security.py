"""Stores and manifests from someone else: nothing in them runs, and nothing escapes their folder.

Every hostile input here was a working exploit against an earlier vidpipe: a pickle member in a shard
(webdataset's default decoders unpickle `.pyd`), a `pipe:` shard path (webdataset runs it as a shell
command), `..`, absolute and symlinked paths in store.json, and traversal in a manifest's split, id and
path fields. Each command that reads them must refuse in one `Error:` line; the test fails if any
command runs (a canary file appears) or any file appears outside the test's own folder.
"""

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import add_shard_members, first_sample_key
from vidpipe.cli.main import cli
from vidpipe.datasets.adapters import build_manifest
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.stores.features import FeatureConfig, cache_features
from vidpipe.train.config import load_config
from vidpipe.train.loop import train


@pytest.fixture(scope="module")
def clean(synth_h264, tmp_path_factory):
    base = tmp_path_factory.mktemp("clean")
    m = build_manifest("synthetic", synth_h264)
    extract(m, base / "wds", ExtractConfig(frames=4, size=32, shard_size="40KB"))
    extract(m, base / "zarr", ExtractConfig(frames=4, size=32, format="zarr"))
    cache_features(base / "wds", base / "features", FeatureConfig(backbone="resnet18", weights="random", batch_size=8))
    cfg = load_config(None, ["optim.epochs=1", "data.workers=0", "data.frames=4", "device=cpu"],
                      base={"model": "tsn_mean", "data": {"path": str(base / "features")}})
    train(cfg, base / "run", log=lambda m: None)
    return base


class Canary:
    """What a successful exploit would leave: a file written by a command it ran."""

    def __init__(self, tmp_path: Path):
        self.path = tmp_path / "canary" / "RAN"
        self.path.parent.mkdir()

    @property
    def shell(self) -> str:
        return f"touch {self.path}"


class Boom:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _index(store: Path) -> dict:
    return json.loads((store / "store.json").read_text())


def _write_index(store: Path, index: dict) -> None:
    (store / "store.json").write_text(json.dumps(index))


def pickle_member(store, tmp, canary):
    add_shard_members(store, {f"{first_sample_key(store)}.pyd": pickle.dumps(Boom(canary.shell))})


def pipe_path(store, tmp, canary):
    index = _index(store)
    index["splits"]["train"]["files"][0]["path"] = f"pipe:{canary.shell}; cat train/train-000000.tar"
    _write_index(store, index)


def dotdot_path(store, tmp, canary):
    index = _index(store)
    entry = index["splits"]["train"]["files"][0]
    shutil.copy(store / entry["path"], tmp / "elsewhere.tar")
    entry["path"] = "../elsewhere.tar"
    _write_index(store, index)


def absolute_path(store, tmp, canary):
    index = _index(store)
    entry = index["splits"]["train"]["files"][0]
    shutil.copy(store / entry["path"], tmp / "elsewhere.tar")
    entry["path"] = str(tmp / "elsewhere.tar")
    _write_index(store, index)


def symlink_out(store, tmp, canary):
    entry = _index(store)["splits"]["train"]["files"][0]
    shutil.move(store / entry["path"], tmp / "elsewhere.tar")  # same bytes, same checksum: only where it lies is wrong
    (store / entry["path"]).symlink_to(tmp / "elsewhere.tar")


def zarr_array_out(store, tmp, canary):
    index = _index(store)
    shutil.copytree(store / "train.zarr", tmp / "train.zarr")
    index["splits"]["train"]["array"] = "../train.zarr"
    _write_index(store, index)


HOSTILE_STORES = {"pickle member": ("wds", pickle_member), "pipe: path": ("wds", pipe_path), ".. path": ("wds", dotdot_path),
                  "absolute path": ("wds", absolute_path), "symlink out of the store": ("wds", symlink_out),
                  "zarr array outside the store": ("zarr", zarr_array_out)}


def commands(store: str, tmp: Path) -> dict[str, list[str]]:
    return {
        "verify": ["verify", store],
        "inspect --grid": ["inspect", store, "--grid", str(tmp / "grid.png")],
        "cache-features": ["cache-features", "--store", store, "--backbone", "resnet18", "--weights", "random", "--out", str(tmp / "f")],
        "train": ["train", "--model", "r2plus1d_18", "--data", store, "--out", str(tmp / "run"), "data.frames=4", "data.crop_size=32",
                  "device=cpu", "data.workers=0", "data.val_fraction=0", "optim.epochs=1"],
    }


def everything_outside(tmp: Path) -> set[str]:
    """Every path in the folder that holds the test's folder, but inside the test's folder: new files there
    mean something escaped."""
    return {str(p) for p in tmp.parent.iterdir() if p != tmp}


def run_refused(args: list[str], tmp: Path, canary: Canary, cwd: Path | None = None) -> str:
    before = everything_outside(tmp)
    old = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        res = CliRunner().invoke(cli, args)
    finally:
        os.chdir(old)
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert not canary.path.exists(), f"{args[0]} ran a command from the store"
    assert everything_outside(tmp) == before, f"{args[0]} wrote outside its folder"
    assert res.exit_code != 0 and len(errors) == 1 and "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res.output


@pytest.mark.parametrize("hostile", list(HOSTILE_STORES))
def test_a_hostile_store_runs_nothing_and_reads_nothing_outside(hostile, clean, tmp_path):
    kind, damage = HOSTILE_STORES[hostile]
    store = tmp_path / "store"
    shutil.copytree(clean / kind, store, symlinks=True)
    canary = Canary(tmp_path)
    damage(store, tmp_path, canary)
    for name, args in commands(str(store), tmp_path).items():
        said = run_refused(args, tmp_path, canary)
        assert any(w in said for w in ("vidpipe does not write", "outside", "verify")), f"{name}: {said}"
    if hostile == "pipe: path":  # webdataset ran it when the store was named relative to the working directory
        for name, args in commands(".", tmp_path).items():
            run_refused(args, tmp_path, canary, cwd=store)


def test_a_feature_store_pointing_outside_is_refused(clean, tmp_path):
    features = tmp_path / "features"
    shutil.copytree(clean / "features", features)
    shutil.copytree(features / "test.zarr", tmp_path / "test.zarr")
    index = _index(features)
    index["splits"]["test"]["array"] = "../test.zarr"
    _write_index(features, index)
    canary = Canary(tmp_path)
    for args in (["verify", str(features)], ["eval", str(clean / "run"), "--data", str(features), "--out", str(tmp_path / "e")],
                 ["train", "--model", "tsn_mean", "--data", str(features), "--out", str(tmp_path / "r"), "data.frames=4",
                  "device=cpu", "data.workers=0", "data.val_split=test"]):
        assert "outside" in run_refused(args, tmp_path, canary)


def _manifest_with(synth: Path, tmp: Path, change) -> Path:
    m = build_manifest("synthetic", synth)
    lines = m.dumps().splitlines()
    header, records = json.loads(lines[0]), [json.loads(ln) for ln in lines[1:]]
    change(header, records)
    path = tmp / "m.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in [header, *records]) + "\n")
    return path


def _outside_video(synth: Path, tmp: Path) -> str:
    first = next(p for p in sorted(synth.rglob("*.mp4")))
    shutil.copy(first, tmp / "outside.mp4")
    return os.path.relpath(tmp / "outside.mp4", synth)


HOSTILE_MANIFESTS = {
    "split ../escaped": (lambda h, r, s, t: r[0].update(split="../escaped"), "split"),
    "absolute split": (lambda h, r, s, t: r[0].update(split=str(t / "abs")), "split"),
    "id ../../evil": (lambda h, r, s, t: r[0].update(id="../../evil"), "id"),
    "absolute id": (lambda h, r, s, t: r[0].update(id=str(t / "evil")), "id"),
    "path with ..": (lambda h, r, s, t: r[0].update(path=_outside_video(s, t)), "--allow-outside-root"),
    "absolute path": (lambda h, r, s, t: r[0].update(path=str(t / "outside.mp4")), "--allow-outside-root"),
    "label outside the classes": (lambda h, r, s, t: r[0].update(label=99), "classes"),
}


@pytest.mark.parametrize("hostile", list(HOSTILE_MANIFESTS))
def test_a_hostile_manifest_is_refused(hostile, synth_h264, tmp_path):
    change, says = HOSTILE_MANIFESTS[hostile]
    shutil.copy(next(p for p in sorted(synth_h264.rglob("*.mp4"))), tmp_path / "outside.mp4")
    manifest = _manifest_with(synth_h264, tmp_path, lambda h, r: change(h, r, synth_h264, tmp_path))
    out = tmp_path / "store"
    said = run_refused(["extract", "--manifest", str(manifest), "--out", str(out), "--frames", "4", "--size", "32"], tmp_path,
                       Canary(tmp_path))
    assert says in said and f"{manifest}:2" in said, said  # names the file and the line
    assert not out.exists() or not any(p.suffix == ".tar" for p in out.rglob("*"))


def test_class_names_never_become_paths_and_outside_paths_need_the_flag(synth_h264, tmp_path):
    def change(h, r):
        h["classes"][0] = "../../evil"
        for rec in r:
            if rec["label"] == 0:
                rec["label_name"] = "../../evil"
        r[0]["path"] = _outside_video(synth_h264, tmp_path)

    manifest = _manifest_with(synth_h264, tmp_path, change)
    before = everything_outside(tmp_path)
    res = CliRunner().invoke(cli, ["extract", "--manifest", str(manifest), "--out", str(tmp_path / "store"), "--frames", "4",
                                   "--size", "32", "--allow-outside-root"])
    assert res.exit_code == 0, res.output
    assert everything_outside(tmp_path) == before
    index = _index(tmp_path / "store")
    assert index["classes"][0] == "../../evil" and not index["failures"]
    assert {p.name for p in (tmp_path / "store").iterdir()} <= {"_extract", "store.json", "manifest.jsonl", "failures.jsonl", "train", "test"}
