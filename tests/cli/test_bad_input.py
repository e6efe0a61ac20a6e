"""Bad input and faults, as a user meets them: every row runs the CLI and must end with exactly one
`Error:` line that names the fix, a non-zero exit, no traceback, and nothing already written changed."""

import errno
import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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
def world(synth_h264, tmp_path_factory):
    """A clip store, a feature store made from it, and a finished run on the features."""
    base = tmp_path_factory.mktemp("bad")
    extract(build_manifest("synthetic", synth_h264), base / "store", ExtractConfig(frames=4, size=32, shard_size="40KB"))
    extract(build_manifest("synthetic", synth_h264), base / "store-fps", ExtractConfig(fps=15, size=32, shard_size="40KB"))
    cache_features(base / "store", base / "features", FeatureConfig(backbone="resnet18", weights="random", batch_size=8))
    cfg = load_config(None, ["optim.epochs=1", "data.workers=0", "data.frames=4", "device=cpu"],
                      base={"model": "tsn_mean", "data": {"path": str(base / "features")}})
    train(cfg, base / "run", log=lambda m: None)
    return {"src": synth_h264, "store": base / "store", "store_fps": base / "store-fps", "features": base / "features", "run": base / "run"}


def snapshot(*roots: Path) -> dict:
    """Every file under the given paths -> its bytes (what must not change)."""
    return {str(p): p.read_bytes() for r in roots if r.exists() for p in sorted(r.rglob("*")) if p.is_file() and p.suffix != ".lock"}


@dataclass
class Row:
    args: Callable[[dict, Path], list[str]]  # (world, tmp) -> CLI arguments
    says: str  # a fragment the Error line must contain
    kept: Callable[[dict, Path], list[Path]] = lambda w, t: []  # what must stay byte-identical
    setup: Callable = None  # (world, tmp, monkeypatch) -> None
    marks: list = field(default_factory=list)


def _extract(w, t, *extra):
    return ["extract", "--dataset", "synthetic", "--root", str(w["src"]), "--out", str(t / "s"), "--frames", "4", "--size", "32", *extra]


def _extract_fps(w, t, *extra):  # fps mode: no --frames
    return ["extract", "--dataset", "synthetic", "--root", str(w["src"]), "--out", str(t / "s"), "--size", "32", *extra]


def _train(w, t, *overrides, model="tsn_mean", data="features", out=None):
    return ["train", "--model", model, "--data", str(w[data]), "--out", str(out or t / "r"), "data.frames=4", "device=cpu",
            "data.workers=0", *overrides]


def _train_on(data: Path, t, *overrides):
    return ["train", "--model", "tsn_mean", "--data", str(data), "--out", str(t / "r"), "data.frames=4", "device=cpu", "data.workers=0", *overrides]


_HELD = []  # lock file descriptors held for the rest of the session


def _hold_lock(w, t, mp):
    lock = t / "s" / "_extract" / "part-0-of-1.lock"  # as if another `vidpipe extract` were writing the store
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _HELD.append(fd)


def _full_disk_after_part_0(w, t, mp):
    m = build_manifest("synthetic", w["src"])
    extract(m, t / "s", ExtractConfig(frames=4, size=32, shard_size="40KB"), part=(0, 2))
    from vidpipe.stores import writers

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    mp.setattr(writers._HashingFile, "write", full)


def _full_disk_checkpoint(w, t, mp):
    from vidpipe.train import checkpoint

    class SafetensorError(Exception):  # what safetensors raises: not an OSError
        pass

    def full(*a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')

    mp.setattr(checkpoint, "save_file", full)


def _offline(w, t, mp):
    import torch

    def unreachable(*a, **k):
        raise OSError("network unreachable")

    mp.setattr(torch.hub, "load_state_dict_from_url", unreachable)


def _copy_run(w, t, mp, damage=None):
    shutil.copytree(w["run"], t / "run")
    ckpt = t / "run" / "checkpoints" / "last.safetensors"
    (t / "run" / "checkpoints" / "best.safetensors").unlink()
    data = bytearray(ckpt.read_bytes())
    if damage == "byte":
        data[-100] ^= 0xFF  # a flipped bit in the tensor data
    else:
        data[:8] = b"\xff" * 8  # the header length
    ckpt.write_bytes(bytes(data))


def _damaged_store(w, t, mp):
    shutil.copytree(w["store"], t / "store")
    shard = sorted((t / "store" / "train").glob("*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def _all_train_failed(w, t, mp):
    root = t / "data"
    shutil.copytree(w["src"] / "test", root / "test")
    (root / "train" / "size_grow").mkdir(parents=True)
    (root / "train" / "size_grow" / "empty.mp4").write_bytes(b"")
    extract(build_manifest("synthetic", root), t / "store", ExtractConfig(frames=4, size=32, max_failures=1.0))


def _manifest_line(w, t, mp, line):
    """A manifest of the synthetic set whose second record is replaced by `line`."""
    text = build_manifest("synthetic", w["src"]).dumps().splitlines()
    text[2] = line
    (t / "m.jsonl").write_text("\n".join(text) + "\n")


def _manifest(w, t, *extra):
    return ["extract", "--manifest", str(t / "m.jsonl"), "--out", str(t / "s"), "--frames", "4", "--size", "32", *extra]


def _config_file(name, text):
    return lambda w, t, mp: (t / name).write_text(text)


def _edit_index(key, what="store"):
    """A copy of the world's store (or feature store) whose store.json is changed by `edit(index)`."""
    def setup(w, t, mp):
        shutil.copytree(w[what], t / what)
        index = json.loads((t / what / "store.json").read_text())
        key(index)
        (t / what / "store.json").write_text(json.dumps(index))
    return setup


def _truncate(rel, what):
    def setup(w, t, mp):
        shutil.copytree(w[what], t / what)
        path = t / what / rel
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return setup


def _foreign_member(w, t, mp):
    shutil.copytree(w["store"], t / "store")
    add_shard_members(t / "store", {f"{first_sample_key(t / 'store')}.txt": b"hi"})  # a member of an existing sample


def _zarr_corrupt_chunk(w, t, mp):
    extract(build_manifest("synthetic", w["src"]), t / "z", ExtractConfig(frames=4, size=32, format="zarr"))
    shard = next(p for p in sorted((t / "z" / "train.zarr" / "frames" / "c").rglob("*")) if p.is_file())
    data = bytearray(shard.read_bytes())
    data[200:600] = bytes(b ^ 0x5A for b in data[200:600])
    shard.write_bytes(bytes(data))


def _nan_features(w, t, mp):
    import numpy as np
    import zarr

    shutil.copytree(w["features"], t / "features")
    arr = zarr.open_group(t / "features" / "train.zarr", mode="r+")["features"]
    arr[0] = np.full(arr.shape[1:], np.nan, arr.dtype)


def _flip_metadata(w, t, mp):
    shutil.copytree(w["run"], t / "run")
    (t / "run" / "checkpoints" / "last.safetensors").unlink()
    ckpt = t / "run" / "checkpoints" / "best.safetensors"
    data = ckpt.read_bytes()
    at = data.index(b"colour_blue_to_red")  # a class name in the metadata: still valid JSON after the flip
    ckpt.write_bytes(data[:at] + b"colour_blue_to_rEd" + data[at + 18 :])


def _hold_run_lock(w, t, mp):
    (t / "r").mkdir()
    fd = os.open(t / "r" / "run.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _HELD.append(fd)


def _full_disk_at(target: str):
    def setup(w, t, mp):
        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        mp.setattr(target, full)
    return setup


def _denied(path, *a, **k):
    raise PermissionError(errno.EACCES, "Permission denied", str(path))  # what a file of another user gives (root reads all)


def _not_ours(w, t, mp):
    (t / "s" / "src").mkdir(parents=True)
    (t / "s" / "src" / "main.py").write_text("print('mine')\n")
    (t / "s" / "store.json").write_text(json.dumps({"name": "my project", "version": 3}))


def _store_with_notes(w, t, mp):
    shutil.copytree(w["store"], t / "s")
    (t / "s" / "notes.txt").write_text("my notes on this store")


ROWS = {
    "extract --frames 0": Row(lambda w, t: _extract(w, t, "--frames", "0"), "--frames"),
    "extract --size 0": Row(lambda w, t: _extract(w, t, "--size", "0"), "--size"),
    "extract --max-failures -1": Row(lambda w, t: _extract(w, t, "--max-failures", "-1"), "--max-failures"),
    "extract --shard-size 0": Row(lambda w, t: _extract(w, t, "--shard-size", "0"), "--shard-size must be positive"),
    "extract --workers 0": Row(lambda w, t: _extract(w, t, "--workers", "0"), "--workers"),
    "extract --fps 0": Row(lambda w, t: _extract_fps(w, t, "--fps", "0"), "--fps"),
    "extract --max-seconds without --fps": Row(lambda w, t: _extract(w, t, "--max-seconds", "5"), "add --fps F"),
    "extract --fps with --backend dali": Row(lambda w, t: _extract_fps(w, t, "--fps", "15", "--backend", "dali"), "use --backend pyav, ffmpeg or auto"),
    "extract --jpeg-quality 101": Row(lambda w, t: _extract(w, t, "--frame-codec", "jpeg", "--jpeg-quality", "101"), "--jpeg-quality"),
    "extract --backend pyav without PyAV": Row(lambda w, t: _extract(w, t, "--backend", "pyav"), "pip install av",
                                               setup=lambda w, t, mp: mp.setattr("vidpipe.io.pyav.pyav_installed", lambda: False)),
    "extract --frame-codec jpeg over a raw store": Row(lambda w, t: ["extract", "--dataset", "synthetic", "--root", str(w["src"]), "--out",
                                                                     str(w["store"]), "--frames", "4", "--size", "32", "--shard-size", "40KB",
                                                                     "--frame-codec", "jpeg"], "--overwrite", kept=lambda w, t: [w["store"]]),
    "extract --fps 10 over a 15 fps store": Row(lambda w, t: ["extract", "--dataset", "synthetic", "--root", str(w["src"]), "--out",
                                                              str(w["store_fps"]), "--fps", "10", "--size", "32", "--shard-size", "40KB"],
                                                "fps 15.0 -> 10.0", kept=lambda w, t: [w["store_fps"]]),
    "extract while another extraction writes": Row(lambda w, t: _extract(w, t), "another extraction is writing", setup=_hold_lock),
    "extract onto a full disk": Row(lambda w, t: _extract(w, t, "--shard-size", "40KB", "--num-shards", "2", "--shard-id", "1"),
                                    "no space left on the device", kept=lambda w, t: [t / "s" / "train", t / "s" / "test"],
                                    setup=_full_disk_after_part_0),
    "manifest --val-fraction 1.5": Row(lambda w, t: ["manifest", "--dataset", "folder", "--root", str(w["src"]), "-o", str(t / "m.jsonl"),
                                                     "--val-fraction", "1.5"], "--val-fraction"),
    "synth --frames 2": Row(lambda w, t: ["synth", str(t / "x"), "--frames", "2"], "--frames"),
    "train model_options.depth=two": Row(lambda w, t: _train(w, t, "model_options.depth=two", model="resnet_temporal_vit"),
                                         "model_options.depth: expected int, got 'two'"),
    "train model_options.heads=3 (dim 256)": Row(lambda w, t: _train(w, t, "model_options.heads=3", model="resnet_temporal_vit"),
                                                 "heads=3 must divide model_options.dim=256"),
    "train data.batch_size=0": Row(lambda w, t: _train(w, t, "data.batch_size=0"), "data.batch_size must be at least 1"),
    "train optim.accum_steps=0": Row(lambda w, t: _train(w, t, "optim.accum_steps=0"), "optim.accum_steps must be at least 1"),
    "train data.workers=-1": Row(lambda w, t: _train(w, t, "data.workers=-1"), "data.workers must be 0"),
    "train optim.lr=-1": Row(lambda w, t: _train(w, t, "optim.lr=-1"), "optim.lr must be > 0"),
    "train optim.epochs=0": Row(lambda w, t: _train(w, t, "optim.epochs=0"), "optim.epochs must be at least 1"),
    "train data.val_fraction=1": Row(lambda w, t: _train(w, t, "data.val_fraction=1"), "data.val_fraction must be in [0, 1)"),
    "train --out under a file": Row(lambda w, t: _train(w, t, out=Path(t / "afile" / "run")), "cannot write the run directory",
                                    setup=lambda w, t, mp: (t / "afile").write_text("a file, not a folder")),
    "train over a finished run": Row(lambda w, t: _train(w, t, out=w["run"]), "already holds a run; pass --resume",
                                     kept=lambda w, t: [w["run"]]),
    "train r2plus1d KINETICS400_V1 offline": Row(lambda w, t: _train(w, t, "init=KINETICS400_V1", model="r2plus1d_18",
                                                                     data="store_fps"), "init=KINETICS400_V1=PATH (train)", setup=_offline),
    "train r2plus1d KINETICS400_V1 on a uniform store": Row(lambda w, t: _train(w, t, "init=KINETICS400_V1", model="r2plus1d_18",
                                                                                data="store"), "--fps 15", kept=lambda w, t: [w["store"]]),
    "train onto a full disk": Row(lambda w, t: _train(w, t, "optim.epochs=1"), "no space left on the device", setup=_full_disk_checkpoint),
    "train on a store with a damaged shard": Row(lambda w, t: ["train", "--model", "r2plus1d_18", "--data", str(t / "store"), "--out",
                                                               str(t / "r"), "data.frames=4", "data.crop_size=32", "device=cpu", "data.workers=1",
                                                               "data.val_fraction=0"],
                                                 "is damaged", kept=lambda w, t: [t / "store"], setup=_damaged_store),
    "eval --test-clips on a feature model": Row(lambda w, t: ["eval", str(w["run"]), "--test-clips", "3"], "apply to models that read clips",
                                                kept=lambda w, t: [w["run"]]),
    "eval a checkpoint with a flipped byte": Row(lambda w, t: ["eval", str(t / "run")], "is damaged",
                                                 kept=lambda w, t: [t / "run" / "checkpoints"], setup=lambda w, t, mp: _copy_run(w, t, mp, "byte")),
    "eval a checkpoint with a damaged header": Row(lambda w, t: ["eval", str(t / "run")], "not a vidpipe checkpoint or is damaged",
                                                   kept=lambda w, t: [t / "run" / "checkpoints"], setup=lambda w, t, mp: _copy_run(w, t, mp, "header")),
    "train --resume from a damaged checkpoint": Row(lambda w, t: _train(w, t, "optim.epochs=1", out=t / "run") + ["--resume"], "is damaged",
                                                    kept=lambda w, t: [t / "run" / "checkpoints"], setup=lambda w, t, mp: _copy_run(w, t, mp, "byte")),
    "inspect --grid of a damaged shard": Row(lambda w, t: ["inspect", str(t / "store"), "--grid", str(t / "g.png")], "vidpipe verify",
                                             kept=lambda w, t: [t / "store"], setup=_damaged_store),
    "cache-features from a damaged shard": Row(lambda w, t: ["cache-features", "--store", str(t / "store"), "--backbone", "resnet18",
                                                             "--weights", "random", "--out", str(t / "f")], "is damaged",
                                               kept=lambda w, t: [t / "store"], setup=_damaged_store),
    "inspect --grid --split of a split with no stored video": Row(lambda w, t: ["inspect", str(t / "store"), "--grid", str(t / "g.png"),
                                                                                "--split", "train"], "holds no stored videos",
                                                                  kept=lambda w, t: [t / "store"], setup=_all_train_failed),
    "inspect --grid of a feature store": Row(lambda w, t: ["inspect", str(w["features"]), "--grid", str(t / "g.png")], "holds no frames",
                                             kept=lambda w, t: [w["features"]]),
    "bench extract without --json": Row(lambda w, t: ["bench", "extract", "--videos-per-class", "2"], "--json"),
    # issue 28: each was a traceback, a silent wrong result or lost data
    "extract --manifest with a line that is not JSON": Row(lambda w, t: _manifest(w, t), "m.jsonl:3: not valid JSON",
                                                           setup=lambda w, t, mp: _manifest_line(w, t, mp, "{'id': 1,")),
    "extract --manifest with an unknown key": Row(lambda w, t: _manifest(w, t), "unknown key(s) ['colour']", setup=lambda w, t, mp: _manifest_line(
        w, t, mp, json.dumps({"id": "x", "path": "train/a.mp4", "label": 0, "label_name": "colour_blue_to_red", "split": "train", "colour": 1}))),
    "extract --manifest with a record without a label": Row(lambda w, t: _manifest(w, t), "missing ['label']", setup=lambda w, t, mp: _manifest_line(
        w, t, mp, json.dumps({"id": "x", "path": "train/a.mp4", "label_name": "colour_blue_to_red", "split": "train"}))),
    "extract --overwrite into a folder that is not a store": Row(lambda w, t: _extract(w, t, "--overwrite"), "not a vidpipe store",
                                                                 kept=lambda w, t: [t / "s"], setup=_not_ours),
    "extract --overwrite of a store holding other files": Row(lambda w, t: _extract(w, t, "--overwrite", "--frame-codec", "jpeg"), "did not write (notes.txt)",
                                                              kept=lambda w, t: [t / "s"], setup=_store_with_notes),
    "cache-features --overwrite into a folder that is not a feature store": Row(
        lambda w, t: ["cache-features", "--store", str(w["store"]), "--backbone", "resnet18", "--weights", "random", "--out", str(t / "s"),
                      "--overwrite"], "not a vidpipe feature store", kept=lambda w, t: [t / "s"], setup=_not_ours),
    "cache-features onto a full disk": Row(lambda w, t: ["cache-features", "--store", str(w["store"]), "--backbone", "resnet18", "--weights",
                                                         "random", "--out", str(t / "f")], "no space left on the device",
                                           setup=_full_disk_at("vidpipe.stores.features.write_text_atomic")),
    "train --config that is not TOML": Row(lambda w, t: _train(w, t) + ["--config", str(t / "c.toml")], "is not valid TOML",
                                           setup=_config_file("c.toml", "[optim\nlr = ")),
    "train --config that is not YAML": Row(lambda w, t: _train(w, t) + ["--config", str(t / "c.yaml")], "is not valid YAML at line",
                                           setup=_config_file("c.yaml", "optim: {lr: [1, 2\n")),
    "train optim.lr=inf": Row(lambda w, t: _train(w, t, "optim.lr=inf"), "optim.lr: expected a finite number"),
    "train optim.lr=1e999": Row(lambda w, t: _train(w, t, "optim.lr=1e999"), "optim.lr: expected a finite number"),
    "train optim.weight_decay=1e308": Row(lambda w, t: _train(w, t, "optim.weight_decay=1e308"), "optim.weight_decay must be at most 10"),
    "train optim.warmup_epochs=inf": Row(lambda w, t: _train(w, t, "optim.warmup_epochs=inf"), "expected a finite number"),
    "train seed=-1": Row(lambda w, t: _train(w, t, "seed=-1"), "seed must be in 0..4294967295"),
    "train seed=2**32": Row(lambda w, t: _train(w, t, "seed=4294967296"), "seed must be in 0..4294967295"),
    "train data.frames=65 on resnet_temporal_vit": Row(lambda w, t: _train(w, t, "data.frames=65", model="resnet_temporal_vit"),
                                                       "exceeds model_options.max_frames=64"),
    "train into a run another train is writing": Row(lambda w, t: _train(w, t, out=t / "r"), "another `vidpipe train` is writing",
                                                     setup=_hold_run_lock),
    "train on features whose labels leave the class list": Row(lambda w, t: _train_on(t / "features", t), "labels outside the 2 classes",
                                                              setup=_edit_index(lambda i: i.update(classes=i["classes"][:2]), "features")),
    "train on a feature row that is NaN": Row(lambda w, t: _train_on(t / "features", t), "the training loss became nan at epoch 1, step 1",
                                              setup=_nan_features),
    "train onto a full disk at the confusion plot": Row(lambda w, t: _train(w, t), "no space left on the device writing",
                                                        setup=_full_disk_at("vidpipe.train.loop.plot_confusion")),
    "train on a zarr store with a corrupted chunk": Row(lambda w, t: ["train", "--model", "r2plus1d_18", "--data", str(t / "z"), "--out",
                                                                      str(t / "r"), "data.frames=4", "data.crop_size=32", "device=cpu",
                                                                      "data.workers=0", "data.val_fraction=0"],
                                                        "does not read", kept=lambda w, t: [t / "z"], setup=_zarr_corrupt_chunk),
    "train --resume with a truncated run.json": Row(lambda w, t: _train(w, t, out=t / "run") + ["--resume"], "run.json is damaged (not JSON",
                                                    kept=lambda w, t: [t / "run"], setup=_truncate("run.json", "run")),
    "compare a run with a truncated run.json": Row(lambda w, t: ["compare", str(t / "run")], "run.json is damaged (not JSON",
                                                   setup=_truncate("run.json", "run")),
    "compare --markdown into a missing folder": Row(lambda w, t: ["compare", str(w["run"]), "--markdown", str(t / "no" / "t.md")],
                                                    "does not exist", kept=lambda w, t: [w["run"]]),
    "eval --out under a file": Row(lambda w, t: ["eval", str(w["run"]), "--out", str(t / "afile" / "e")], "cannot write the report folder",
                                   setup=lambda w, t, mp: (t / "afile").write_text("a file")),
    "eval a checkpoint with a flipped byte in its metadata": Row(lambda w, t: ["eval", str(t / "run")], "its metadata does not match",
                                                                 kept=lambda w, t: [t / "run" / "checkpoints"], setup=_flip_metadata),
    "inspect a store.json with a negative size": Row(lambda w, t: ["inspect", str(t / "store")], "clip.height = -32",
                                                     setup=_edit_index(lambda i: i["clip"].update(height=-32))),
    "inspect a truncated store.json": Row(lambda w, t: ["inspect", str(t / "store")], "store.json is damaged (not JSON",
                                          setup=_truncate("store.json", "store")),
    "inspect --grid into a missing folder": Row(lambda w, t: ["inspect", str(w["store"]), "--grid", str(t / "no" / "g.png")], "does not exist"),
    "cache-features from a shard with a foreign member": Row(lambda w, t: ["cache-features", "--store", str(t / "store"), "--backbone", "resnet18",
                                                                           "--weights", "random", "--out", str(t / "f")], "that vidpipe does not write",
                                                             kept=lambda w, t: [t / "store"], setup=_foreign_member),
    "eval a checkpoint it may not read": Row(lambda w, t: ["eval", str(w["run"])], "permission denied", kept=lambda w, t: [w["run"]],
                                             setup=lambda w, t, mp: mp.setattr("vidpipe.train.checkpoint.safe_open", _denied)),
    "verify a store whose count is wrong": Row(lambda w, t: ["verify", str(t / "store")], "1 problem in",
                                               setup=_edit_index(lambda i: i["splits"]["train"].update(count=i["splits"]["train"]["count"] + 1))),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_is_one_error_line(name, world, tmp_path, monkeypatch):
    row = ROWS[name]
    if row.setup:
        row.setup(world, tmp_path, monkeypatch)
    kept = row.kept(world, tmp_path)
    before = snapshot(*kept)
    res = CliRunner().invoke(cli, row.args(world, tmp_path))
    output = res.output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert res.exit_code != 0, output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)  # no traceback
    assert "Traceback" not in output and len(errors) == 1, output
    assert row.says in errors[0], errors[0]
    assert snapshot(*kept) == before, "something already written was changed"


def test_the_suite_covers_every_finding():
    assert len(ROWS) >= 60


def test_what_was_a_traceback_now_works(world, tmp_path):
    """inspect/verify of a feature store, inspect --grid with an empty first split, datasets -v,
    and a run that died before its first checkpoint started again by the same command."""
    runner = CliRunner()
    res = runner.invoke(cli, ["inspect", str(world["features"])])
    assert res.exit_code == 0 and "feature store of synthetic, resnet18 random (RANDOM)" in res.output, res.output
    res = runner.invoke(cli, ["verify", str(world["features"])])
    assert res.exit_code == 0 and "checksums and rows OK" in res.output
    _all_train_failed(world, tmp_path, None)
    res = runner.invoke(cli, ["inspect", str(tmp_path / "store"), "--grid", str(tmp_path / "g.png")])
    assert res.exit_code == 0 and (tmp_path / "g.png").is_file(), res.output
    res = runner.invoke(cli, ["datasets", "-v"])
    assert res.exit_code == 0 and "\nhmdb51\n  <root>/" in res.output, res.output
    # a run that failed before its first checkpoint: the same command starts it again
    args = _train(world, tmp_path, "optim.epochs=1", out=tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"left": "by a run killed before its first epoch ended"}))
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").is_file()
