"""Training from a store in a bucket (moto's S3 server on 127.0.0.1) or on an HTTP server (python -m
http.server on 127.0.0.1): the same batches, hence the same metrics, as from the local copy."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from vidpipe.data.augment import AugmentConfig
from vidpipe.data.loaders import ClipConfig, clip_loader
from vidpipe.data.sampling import Sampling
from vidpipe.datasets.adapters import build_manifest
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.train.config import load_config
from vidpipe.train.loop import train

TIMING = {"clips_per_s", "data_wait_fraction", "seconds", "epoch_seconds", "peak_memory_mb", "train_seconds", "val_seconds"}


@pytest.fixture(scope="module")
def wds_store(synth_h264, tmp_path_factory):
    """A JPEG WebDataset store of several shards, in a folder (the reference)."""
    root = tmp_path_factory.mktemp("remote-loaders") / "store"
    extract(build_manifest("synthetic", synth_h264), root, ExtractConfig(frames=8, size=32, shard_size="20KB", frame_codec="jpeg"))
    assert len(list((root / "train").glob("*.tar"))) >= 3
    return root


@pytest.fixture(scope="module")
def local_run(wds_store, tmp_path_factory):
    """The reference: two epochs from the folder, (metrics, run folder)."""
    out = tmp_path_factory.mktemp("local-run") / "run"
    return _metrics(str(wds_store), out), out


def _upload(local: Path, bucket: str, prefix: str) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for p in sorted(local.rglob("*")):
        if p.is_file() and p.suffix != ".lock":
            fs.put_file(str(p), f"{bucket}/{prefix}/{p.relative_to(local)}")
    return f"s3://{bucket}/{prefix}"


def _metrics(data: str, out: Path, **extra) -> list[dict]:
    """Two epochs of R(2+1)D-18 from `data`, two loader workers, the same seed: each epoch's figures but timings."""
    overrides = ["optim.epochs=2", "data.workers=2", "data.batch_size=4", "data.frames=4", "data.crop_size=32", "device=cpu",
                 "optim.warmup_epochs=0", *[f"{k}={v}" for k, v in extra.items()]]
    cfg = load_config(None, overrides, base={"model": "r2plus1d_18", "data": {"path": data}})
    train(cfg, out, log=lambda m: None)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.slow
def test_training_from_s3_and_from_its_local_copy_gives_the_same_metrics(wds_store, local_run, s3_bucket, tmp_path):
    url = _upload(wds_store, s3_bucket, "store")
    local, local_dir = local_run
    assert local[0]["val"] and local[0]["train_clips"] > 0
    assert _metrics(url, tmp_path / "s3") == local  # shards streamed from the bucket
    cache = tmp_path / "cache"
    assert _metrics(url, tmp_path / "s3-cached", **{"data.cache_dir": str(cache)}) == local  # shards downloaded once, then read locally
    index = json.loads((wds_store / "store.json").read_text())
    # the shards read (train, and val carved from it), each kept once, named by its sha256
    assert sorted(p.name for p in (cache / "shards").iterdir()) == sorted(f"{f['sha256']}.tar" for f in index["splits"]["train"]["files"])
    run = json.loads((tmp_path / "s3" / "run.json").read_text())
    assert run["config"]["data"]["path"] == url
    # eval reads the bucket's test split as it reads the folder's
    from vidpipe.train.evaluate import evaluate_checkpoint

    on_disk = evaluate_checkpoint(local_dir, split="test", out=tmp_path / "eval-local")
    in_bucket = evaluate_checkpoint(local_dir, data_path=url, split="test", out=tmp_path / "eval-s3")
    assert in_bucket["metrics"] == on_disk["metrics"] and on_disk["metrics"]["videos"] == 10


def test_a_zarr_store_in_a_bucket_yields_the_batches_of_its_local_copy(synth_h264, s3_bucket, tmp_path):
    local = tmp_path / "zarr"
    m = build_manifest("synthetic", synth_h264)
    m.records = [r for split in m.splits for r in m.split_records(split)[:4]]
    extract(m, local, ExtractConfig(format="zarr", frames=8, size=32))
    url = _upload(local, s3_bucket, "zarr")
    spec = ClipConfig(Sampling(4, 2, 1), train=True, augment=AugmentConfig(size=32), seed=3)
    batches = [list(clip_loader(store, "train", spec, batch_size=3, workers=0)) for store in (str(local), url)]
    assert [b["ids"] for b in batches[0]] == [b["ids"] for b in batches[1]]
    for a, b in zip(*batches):
        np.testing.assert_array_equal(np.asarray(a["clips"]), np.asarray(b["clips"]))


@pytest.fixture
def http_server(wds_store):
    """`python -m http.server` serving the store's parent folder on 127.0.0.1, stopped after the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(wds_store.parent)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
def test_a_store_on_an_http_server_trains_like_the_local_store(wds_store, local_run, http_server, tmp_path):
    from vidpipe.stores.clips import Store

    url = f"{http_server}/{wds_store.name}"
    assert Store.open(url).verify() == []
    assert _metrics(url, tmp_path / "http") == local_run[0]
