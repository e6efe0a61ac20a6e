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
