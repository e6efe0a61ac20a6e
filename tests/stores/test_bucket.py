"""Stores in a bucket, against a real S3 API: moto's standalone server on 127.0.0.1 (the `s3_bucket`
fixture), read back with s3fs and compared with a local extraction of the same manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.stores.test_extract import _tree_bytes
from vidpipe.datasets.adapters import build_manifest
from vidpipe.errors import VidpipeError
from vidpipe.stores.clips import Store
from vidpipe.stores.extract import ExtractConfig, extract

ARGS = ["--dataset", "synthetic", "--frames", "4", "--size", "32", "--shard-size", "30KB", "--workers", "1"]
SECRET = "test-secret-do-not-print"


def _objects(bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under s3://bucket/prefix -> its bytes, read with s3fs (not vidpipe)."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    base = f"{bucket}/{prefix}"
    return {k[len(base) + 1:]: fs.cat_file(k) for k in fs.find(base)}


def _vidpipe(*args, env=None, check=True):
    res = subprocess.run([sys.executable, "-m", "vidpipe", *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def _one_line_error(res, *fragments):
    """The command failed with a single `Error:` line holding `fragments`, no traceback and no secret."""
    lines = res.stderr.strip().splitlines()
    err = lines[-1] if lines else ""
    assert res.returncode == 1 and err.startswith("Error:") and sum(ln.startswith("Error:") for ln in lines) == 1, res.stderr[-1500:]
    assert "Traceback" not in res.stdout + res.stderr and SECRET not in res.stdout + res.stderr
    for f in fragments:
        assert f in err, err


@pytest.fixture(scope="module")
def local_stores(synth_h264, tmp_path_factory):
    """The local extractions the bucket's objects must equal, one per format."""
    root = tmp_path_factory.mktemp("local-stores")
    for fmt in ("webdataset", "zarr"):
        _vidpipe("extract", *ARGS, "--root", str(synth_h264), "--format", fmt, "--out", str(root / fmt))
    return {fmt: _tree_bytes(root / fmt) for fmt in ("webdataset", "zarr")}


@pytest.mark.parametrize("fmt", ["webdataset", "zarr"])
def test_extract_to_s3_gives_the_objects_of_a_local_extraction_and_verify_reads_them(synth_h264, s3_bucket, local_stores, fmt):
    url = f"s3://{s3_bucket}/stores/synthetic"
    res = _vidpipe("extract", *ARGS, "--root", str(synth_h264), "--format", fmt, "--out", url)
    assert "store s3://" in res.stdout and SECRET not in res.stdout + res.stderr
    got, reference = _objects(s3_bucket, "stores/synthetic"), local_stores[fmt]
    assert set(got) == set(reference), set(got) ^ set(reference)
    assert [k for k in got if got[k] != reference[k]] == []
    assert len([k for k in got if k.endswith((".tar", "/0/0/0/0"))]) >= 6  # several shards, each its own object
    res = _vidpipe("verify", url)
    assert "checksums and samples OK" in res.stdout
    res = _vidpipe("inspect", url)
    assert f"{url}: {fmt} store of synthetic" in res.stdout
    store = Store.open(url)  # the library reads it as it reads a folder
    assert [vid for vid, *_ in store.samples("test")] == store.ids("test")
    # a damaged object is found by verify, named, in one line
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    shard = next(f["path"] for f in store.index["splits"]["train"]["files"])
    data = bytearray(fs.cat_file(f"{s3_bucket}/stores/synthetic/{shard}"))
    data[-5000] ^= 0xFF
    fs.pipe_file(f"{s3_bucket}/stores/synthetic/{shard}", bytes(data))
    res = _vidpipe("verify", url, check=False)
    assert res.returncode == 1 and f"checksum mismatch {shard}" in res.stdout + res.stderr
    # --overwrite deletes a bucket's store only when it holds nothing vidpipe did not write
    fs.pipe_file(f"{s3_bucket}/stores/synthetic/notes.txt", b"mine")
    before = _objects(s3_bucket, "stores/synthetic")
    _one_line_error(_vidpipe("extract", *ARGS, "--root", str(synth_h264), "--format", fmt, "--out", url, "--frames", "5", "--overwrite",
                             check=False), "refusing to delete", "notes.txt")
    assert _objects(s3_bucket, "stores/synthetic") == before


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["webdataset", "zarr"])
def test_two_machines_sharing_only_the_bucket_give_the_objects_of_one_run(synth_h264, s3_bucket, local_stores, tmp_path, fmt):
    """Two parts started together, each with its own temporary folder and staging dir (no shared path but
    the bucket, no lock), then --finalize from a third place: the objects of one local run."""
    url = f"s3://{s3_bucket}/parts"
    procs = []
    for i in range(2):
        machine = tmp_path / f"machine-{i}"
        machine.mkdir()
        env = {**os.environ, "TMPDIR": str(machine)}
        procs.append(subprocess.Popen([sys.executable, "-m", "vidpipe", "extract", *ARGS, "--root", str(synth_h264), "--format", fmt,
                                       "--out", url, "--num-shards", "2", "--shard-id", str(i), "--cache-dir", str(machine / "cache")],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    _vidpipe("extract", "--finalize", url)
    _vidpipe("extract", "--finalize", url)  # idempotent
    got, reference = _objects(s3_bucket, "parts"), local_stores[fmt]
    assert set(got) == set(reference), set(got) ^ set(reference)
    assert [k for k in got if got[k] != reference[k]] == []


@pytest.mark.slow
def test_kill_9_during_the_uploads_then_resume_gives_the_same_objects(synth_h264, s3_bucket, local_stores, tmp_path):
    import s3fs

    url = f"s3://{s3_bucket}/killed"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    # the killed part cannot remove its staging folder: it goes in this test's temporary folder
    proc = subprocess.Popen([sys.executable, "-m", "vidpipe", "extract", *ARGS, "--root", str(synth_h264), "--out", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    deadline = time.time() + 120
    while time.time() < deadline and len(fs.glob(f"{s3_bucket}/killed/_extract/parts/*.json", refresh=True)) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = _objects(s3_bucket, "killed")
    assert "store.json" not in at_kill and any(k.endswith(".tar") for k in at_kill)
    # every object a reader can see is whole: each published shard has the bytes of the local run's
    reference = local_stores["webdataset"]
    assert [k for k in at_kill if k.endswith(".tar") and at_kill[k] != reference[k]] == []
    _vidpipe("extract", *ARGS, "--root", str(synth_h264), "--out", url)
    got = _objects(s3_bucket, "killed")
    assert set(got) == set(reference) and [k for k in got if got[k] != reference[k]] == []


def test_a_network_error_mid_upload_is_retried_then_fails_its_part_in_one_line_and_the_rerun_finishes(
        synth_h264, s3_bucket, local_stores, monkeypatch):
    import botocore.exceptions
    import s3fs

    from vidpipe.stores import remote

    m = build_manifest("synthetic", synth_h264)
    cfg = ExtractConfig(frames=4, size=32, shard_size="30KB", workers=1)
    url = f"s3://{s3_bucket}/flaky"
    real_put, calls = s3fs.S3FileSystem.put_file, []
    monkeypatch.setattr(remote.time, "sleep", lambda s: None)

    def flaky(self, lpath, rpath, *a, **k):  # every other PUT of a shard fails once
        calls.append(rpath)
        if rpath.endswith(".tar") and calls.count(rpath) == 1 and len(calls) % 2:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1")
        return real_put(self, lpath, rpath, *a, **k)

    monkeypatch.setattr(s3fs.S3FileSystem, "put_file", flaky)
    extract(m, url, cfg)  # retried: nothing lost
    assert _objects(s3_bucket, "flaky") == local_stores["webdataset"]

    url = f"s3://{s3_bucket}/down"
    published = []

    def down_after_three(self, lpath, rpath, *a, **k):
        if rpath.endswith(".tar") and len(published) >= 3:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1")
        published.append(rpath) if rpath.endswith(".tar") else None
        return real_put(self, lpath, rpath, *a, **k)

    monkeypatch.setattr(s3fs.S3FileSystem, "put_file", down_after_three)
    with pytest.raises(VidpipeError, match=r"^network error while trying to write s3://.*after 3 tries.*rerun: finished shards are kept"):
        extract(m, url, cfg)
    at_failure = _objects(s3_bucket, "down")
    reference = local_stores["webdataset"]
    assert "store.json" not in at_failure and [k for k in at_failure if at_failure[k] != reference[k]] == []  # nothing half-written
    monkeypatch.setattr(s3fs.S3FileSystem, "put_file", real_put)
    extract(m, url, cfg)
    assert _objects(s3_bucket, "down") == reference


def test_bucket_errors_are_one_line_naming_the_url_and_the_fix(synth_h264, s3_bucket, tmp_path, monkeypatch):
    import boto3

    root = ["--root", str(synth_h264)]
    # a missing bucket
    _one_line_error(_vidpipe("extract", *ARGS, *root, "--out", "s3://no-such-bucket-here/x", check=False),
                    "s3://no-such-bucket-here", "does not exist", "create it")
    _one_line_error(_vidpipe("inspect", "s3://no-such-bucket-here/x", check=False), "s3://no-such-bucket-here", "does not exist")
    # a write the bucket's policy denies
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                                                      "Resource": f"arn:aws:s3:::{s3_bucket}/*"}]}
    boto3.client("s3").put_bucket_policy(Bucket=s3_bucket, Policy=json.dumps(policy))
    _one_line_error(_vidpipe("extract", *ARGS, *root, "--out", f"s3://{s3_bucket}/denied", check=False),
                    f"s3://{s3_bucket}/denied", "access denied", "bucket's policy")
    boto3.client("s3").delete_bucket_policy(Bucket=s3_bucket)
    # objects that are not a vidpipe store: refused as --out, and as a store to read
    import s3fs

    s3fs.S3FileSystem(skip_instance_cache=True).pipe_file(f"{s3_bucket}/photos/cat.jpg", b"not a store")
    _one_line_error(_vidpipe("extract", *ARGS, *root, "--out", f"s3://{s3_bucket}/photos", check=False), "not a vidpipe store")
    _one_line_error(_vidpipe("verify", f"s3://{s3_bucket}/photos", check=False), "store.json not found", "not a finished vidpipe store")
    # an https:// store is read-only
    _one_line_error(_vidpipe("extract", *ARGS, *root, "--out", "https://example.invalid/store", check=False), "read-only")
    # no credentials anywhere (environment, config files, instance metadata)
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    _one_line_error(_vidpipe("inspect", f"s3://{s3_bucket}/x", env=env, check=False), "no credentials", "AWS_ACCESS_KEY_ID")
    # an endpoint nobody answers: bounded retries, then one line
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "2"}
    t0 = time.perf_counter()
    _one_line_error(_vidpipe("inspect", f"s3://{s3_bucket}/x", env=env, check=False), "network error", "AWS_ENDPOINT_URL")
    assert time.perf_counter() - t0 < 120


def test_features_cached_from_a_bucket_equal_those_of_the_local_copy(synth_h264, s3_bucket, tmp_path):
    import numpy as np
    import zarr

    from vidpipe.stores.features import FeatureConfig, FeatureStore, cache_features

    m = build_manifest("synthetic", synth_h264)
    m.records = [r for split in m.splits for r in m.split_records(split)[:3]]
    cfg = ExtractConfig(format="zarr", frames=4, size=32, workers=1)
    url = f"s3://{s3_bucket}/clips"
    extract(m, tmp_path / "clips", cfg)
    extract(m, url, cfg)
    features = FeatureConfig(backbone="resnet18", weights="random", dtype="float32")
    cache_features(tmp_path / "clips", tmp_path / "from-local", features)
    index = cache_features(url, tmp_path / "from-s3", features).summary
    assert index["source_store"]["path"] == url and SECRET not in json.dumps(index)
    for split in ("train", "test"):
        a, b = (zarr.open_group(FeatureStore.open(tmp_path / name).array_path(split), mode="r") for name in ("from-local", "from-s3"))
        np.testing.assert_array_equal(a["features"][:], b["features"][:])
        assert list(a["ids"][:]) == list(b["ids"][:])
