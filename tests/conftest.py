from pathlib import Path

import numpy as np
import pytest


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio of two uint8 images or clips, in dB (99 for identical inputs)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def synth_h264(tmp_path_factory):
    """A small real synthetic dataset (H.264 mp4), shared by the tests that only read it."""
    from vidpipe.datasets.synth import SynthConfig, synth

    root = tmp_path_factory.mktemp("synth_h264")
    synth(root, SynthConfig(videos_per_class=3, frames=24, seed=1))
    return root


def add_shard_members(store: Path, extra: dict[str, bytes]) -> None:
    """Add members to a WebDataset store's first train shard, and make store.json's bytes and sha256 of it
    match (as a careful attacker, or a tool that rewrote the shard, would); its sample count is dropped."""
    import hashlib
    import io
    import json
    import tarfile

    index = json.loads((store / "store.json").read_text())
    entry = index["splits"]["train"]["files"][0]
    path = store / entry["path"]
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as out:
        for m, data in members:
            out.addfile(m, io.BytesIO(data))
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    entry["bytes"], entry["sha256"] = len(buf.getvalue()), hashlib.sha256(buf.getvalue()).hexdigest()
    entry.pop("count", None)
    (store / "store.json").write_text(json.dumps(index))


def first_sample_key(store: Path) -> str:
    import json
    import tarfile

    index = json.loads((store / "store.json").read_text())
    with tarfile.open(store / index["splits"]["train"]["files"][0]["path"]) as tar:
        return next(iter(tar)).name.split(".")[0]


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible server (moto's standalone server, what s3fs itself tests against) on 127.0.0.1,
    started for the session and stopped after it; skipped where moto is not installed."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the test extra)")
    pytest.importorskip("s3fs", reason="s3:// stores need s3fs (the remote extra)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("moto's S3 server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch, request):
    """A fresh bucket on the local S3 server, its name; credentials and endpoint in the environment, as a
    user sets them (AWS_ENDPOINT_URL: an S3-compatible server)."""
    import hashlib

    import s3fs

    for key, value in {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret-do-not-print",
                       "AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    name = "t-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(name)
    yield name
    fs.rm(name, recursive=True)
    s3fs.S3FileSystem.clear_instance_cache()
