from pathlib import Path

import pytest


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def synth_h264(tmp_path_factory):
    """A small real synthetic dataset (H.264 mp4), shared by the tests that only read it."""
    from vidpipe.pipeline.synth import SynthConfig, synth

    root = tmp_path_factory.mktemp("synth_h264")
    synth(root, SynthConfig(videos_per_class=3, frames=24, seed=1))
    return root
