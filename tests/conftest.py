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
