"""A training run that is never silently wrong: flags over a config file, one run per folder, Ctrl-C said
in one line with where to resume, checkpoint metadata under the checksum, rates that never print as 0,
and streams that refuse a wrong-shaped frame."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

from vidpipe.cli.main import cli
from vidpipe.datasets.adapters import build_manifest
from vidpipe.errors import VidpipeError
from vidpipe.models import create_model
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.stores.features import FeatureConfig, cache_features
from vidpipe.train.checkpoint import load_checked, read_meta, save_checkpoint
from vidpipe.train.metrics import two_figures


@pytest.fixture(scope="module")
def features(synth_h264, tmp_path_factory):
    base = tmp_path_factory.mktemp("reliability")
    extract(build_manifest("synthetic", synth_h264), base / "store", ExtractConfig(frames=4, size=32))
    cache_features(base / "store", base / "features", FeatureConfig(backbone="resnet18", weights="random", batch_size=8))
    return base / "features"


def test_flags_win_over_the_config_file_and_the_run_says_what_it_resolved(features, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'model = "temporal_retnet"\n[data]\npath = "{tmp_path / "elsewhere"}"\nframes = 4\nworkers = 0\n'
                   '[optim]\nepochs = 1\nlr = 0.002\n')
    res = CliRunner().invoke(cli, ["train", "--model", "tsn_mean", "--data", str(features), "--out", str(tmp_path / "run"),
                                   "--config", str(cfg), "device=cpu"])
    assert res.exit_code == 0, res.output
    assert "--model tsn_mean (command line) overrules model = 'temporal_retnet'" in res.output
    assert f"--data {features} (command line) overrules data.path" in res.output
    resolved = next(line for line in res.output.splitlines() if line.startswith("resolved config:"))
    assert "model=tsn_mean" in resolved and f"data.path={features}" in resolved and "optim.lr=0.002" in resolved  # the file still counts
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["model"] == "tsn_mean" and saved["config"]["data"]["path"] == str(features)


@pytest.mark.parametrize("data", ["features", "clips"])
def test_ctrl_c_is_one_line_that_says_where_to_resume(features, tmp_path, data):
    """SIGINT to the whole process group, as a terminal sends it, with two loader workers running (clips:
    through the batch slots)."""
    run = tmp_path / "run"
    model, path = ("tsn_mean", features) if data == "features" else ("r2plus1d_18", features.parent / "store")
    cmd = [sys.executable, "-m", "vidpipe", "train", "--model", model, "--data", str(path), "--out", str(run),
           "data.frames=4", "data.workers=2", "data.batch_size=2", "optim.epochs=500", "device=cpu",
           *(["data.crop_size=32"] if data == "clips" else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "last.safetensors").is_file():  # at least one epoch is kept
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "no epoch in 120 s"
            time.sleep(0.2)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert len(errors) == 1 and "interrupted" in errors[0] and "--resume" in errors[0], err
    assert proc.returncode != 0
    epoch = read_meta(run / "checkpoints" / "last.safetensors")["epoch"]
    assert f"keeps epoch {epoch}" in errors[0]


def test_checkpoint_metadata_is_under_the_checksum_and_old_checkpoints_still_load(tmp_path):
    model = create_model("tsn_mean", num_classes=3, in_dim=8)
    meta = {"model": "tsn_mean", "config": {}, "classes": ["a", "b", "c"], "provenance": {}, "input": "frame_features", "epoch": 2}
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, model, meta)
    assert read_meta(path)["classes"] == ["a", "b", "c"]
    with safe_open(str(path), "pt") as fh:
        raw, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    changed = dict(raw, classes=json.dumps(["a", "b", "z"]))  # valid JSON, another meaning
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=changed)
    with pytest.raises(VidpipeError, match="its metadata does not match the checksum"):
        read_meta(tmp_path / "edited.safetensors")
    with pytest.raises(VidpipeError, match="its metadata does not match the checksum"):
        load_checked(tmp_path / "edited.safetensors")
    old = dict(raw, tensors_sha256=raw["tensors_sha256"].split(":")[0])  # what vidpipe wrote before metadata was covered
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=old)
    assert read_meta(tmp_path / "old.safetensors")["epoch"] == 2 and set(load_checked(tmp_path / "old.safetensors")) == set(tensors)


def test_rates_print_two_significant_figures():
    assert [two_figures(x) for x in (0.0123, 0.35, 3.456, 45.6, 456.7)] == ["0.012", "0.35", "3.5", "46", "457"]


def test_a_stream_refuses_a_frame_of_the_wrong_shape():
    retnet = create_model("temporal_retnet", num_classes=4, in_dim=16).eval()
    session = retnet.stream()
    session.step(torch.zeros(1, 16))
    with pytest.raises(VidpipeError, match=r"one frame's features \(B, 16\); got \(1, 3, 16\)"):
        session.step(torch.zeros(1, 3, 16))
    hybrid = create_model("timesformer_retnet", num_classes=4, options={"preset": "tiny", "depth": 1, "image_size": 32, "patch_size": 8,
                                                                          "cls_mode": "causal"}).eval()
    session = hybrid.stream()
    session.step(torch.zeros(1, 3, 32, 32))
    for frame in (torch.zeros(1, 32, 32), torch.zeros(1, 3, 48, 48), torch.zeros(1, 1, 32, 32)):
        with pytest.raises(VidpipeError, match="Stream.step takes one normalised frame"):
            session.step(frame)
