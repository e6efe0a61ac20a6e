"""A damaged store, met by every stage that reads one: refused in one `Error:` line, or (where a loader's
failure policy allows) the sample skipped and said so; never a silent zero row or a traceback.

Damage kinds: a shard cut at a member boundary (the tar still parses) and mid-member, a member vidpipe
does not write, a store.json whose count or frame count disagrees with the data, and a corrupted zarr
chunk. Stages: verify, inspect --grid, cache-features, train, eval.
"""

import json
import shutil
import tarfile

import pytest
from click.testing import CliRunner

from tests.conftest import add_shard_members
from vidpipe.cli.main import cli
from vidpipe.datasets.adapters import build_manifest
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.stores.features import FeatureStore
from vidpipe.train.config import load_config
from vidpipe.train.loop import train

CLIP_RUN = ["data.frames=4", "data.crop_size=32", "device=cpu", "data.workers=0", "data.val_fraction=0", "optim.epochs=1"]


@pytest.fixture(scope="module")
def clean(synth_h264, tmp_path_factory):
    base = tmp_path_factory.mktemp("undamaged")
    m = build_manifest("synthetic", synth_h264)
    extract(m, base / "wds", ExtractConfig(frames=4, size=32, shard_size="40KB"))
    extract(m, base / "zarr", ExtractConfig(frames=4, size=32, format="zarr"))
    for fmt in ("wds", "zarr"):
        cfg = load_config(None, CLIP_RUN, base={"model": "r2plus1d_18", "data": {"path": str(base / fmt)}})
        train(cfg, base / f"run-{fmt}", log=lambda m: None)
    return base


def _index(store):
    return json.loads((store / "store.json").read_text())


def _shard(store):
    return store / _index(store)["splits"]["train"]["files"][0]["path"]


def cut_at_member_boundary(store):
    shard = _shard(store)
    with tarfile.open(shard) as tar:
        members = list(tar)
    keep = members[len(members) // 2].offset  # where a member's header starts: what is left is a valid, shorter tar
    shard.write_bytes(shard.read_bytes()[:keep])
    with tarfile.open(shard) as tar:
        assert 0 < len(list(tar)) < len(members)


def cut_mid_member(store):
    shard = _shard(store)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2 + 100])


def foreign_member(store):
    add_shard_members(store, {"notes.txt": b"hello"})


def wrong_count(store):
    index = _index(store)
    index["splits"]["train"]["count"] += 2
    (store / "store.json").write_text(json.dumps(index))


def wrong_frames(store):
    index = _index(store)
    index["clip"]["frames"] = 8
    (store / "store.json").write_text(json.dumps(index))


def corrupt_zarr_chunk(store):
    shard = next(p for p in sorted((store / "train.zarr" / "frames" / "c").rglob("*")) if p.is_file())
    data = bytearray(shard.read_bytes())
    for i in range(100, min(len(data) - 100, 2000)):  # the middle of the first video's compressed frames
        data[i] ^= 0x5A
    shard.write_bytes(bytes(data))


DAMAGE = {
    "shard cut at a member boundary": ("wds", cut_at_member_boundary),
    "shard cut mid-member": ("wds", cut_mid_member),
    "a foreign member": ("wds", foreign_member),
    "store.json count": ("wds", wrong_count),
    "store.json frame count": ("wds", wrong_frames),
    "zarr store.json count": ("zarr", wrong_count),
    "corrupted zarr chunk": ("zarr", corrupt_zarr_chunk),
}


def stages(store, fmt, clean, tmp):
    return {
        "verify": ["verify", str(store)],
        "inspect --grid": ["inspect", str(store), "--grid", str(tmp / "g.png")],
        "cache-features": ["cache-features", "--store", str(store), "--backbone", "resnet18", "--weights", "random", "--out", str(tmp / "f")],
        "train": ["train", "--model", "r2plus1d_18", "--data", str(store), "--out", str(tmp / "r"), *CLIP_RUN],
        "eval": ["eval", str(clean / f"run-{fmt}"), "--data", str(store), "--split", "train", "--out", str(tmp / "e")],
    }


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_stage_refuses_a_damaged_store_in_one_line(damage, clean, tmp_path):
    fmt, hurt = DAMAGE[damage]
    store = tmp_path / "store"
    shutil.copytree(clean / fmt, store)
    hurt(store)
    for stage, args in stages(store, fmt, clean, tmp_path).items():
        res = CliRunner().invoke(cli, args)
        errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
        assert res.exception is None or isinstance(res.exception, SystemExit), f"{stage}: {res.exception!r}\n{res.output}"
        assert "Traceback" not in res.output, f"{stage}: {res.output}"
        if res.exit_code == 0:  # only a loader's skip policy may go on, and it must say so
            assert "skipped" in res.output, f"{stage} went on silently: {res.output}"
            continue
        assert len(errors) == 1, f"{stage}: {res.output}"
        assert any(w in errors[0] for w in ("verify", "damaged", "problem in", "problems in", "made differently", "does not write")), f"{stage}: {errors[0]}"
    if (tmp_path / "f" / "store.json").is_file():  # a feature store that was finished has a row per sample
        assert FeatureStore.open(tmp_path / "f").verify() == []
