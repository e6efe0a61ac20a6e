"""Training and evaluation: metrics by hand, exact resume, DDP on CPU, the synthetic pair threshold."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vidpipe.cli.main import cli
from vidpipe.errors import VidpipeError
from vidpipe.pipeline.datasets import build_manifest
from vidpipe.pipeline.extract import ExtractConfig, extract
from vidpipe.pipeline.features import FeatureConfig, cache_features
from vidpipe.pipeline.synth import SynthConfig, synth, within_pair_accuracy
from vidpipe.train.checkpoint import read_meta
from vidpipe.train.config import load_config
from vidpipe.train.evaluate import evaluate_checkpoint
from vidpipe.train.loop import train
from vidpipe.train.metrics import compute_metrics, metrics_from_confusion


def test_metrics_match_hand_computation():
    # rows = true class, columns = predicted; class 3 never occurs and is never predicted
    cm = np.array([[5, 1, 0, 0], [2, 2, 1, 0], [0, 0, 4, 0], [0, 0, 0, 0]])
    m = metrics_from_confusion(cm)
    assert m["top1"] == pytest.approx(11 / 15)
    recall = [5 / 6, 2 / 5, 4 / 4]
    precision = [5 / 7, 2 / 3, 4 / 5]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    assert m["mean_class_acc"] == pytest.approx(np.mean(recall))
    assert m["macro_f1"] == pytest.approx(np.mean(f1))  # class 3: absent from labels and predictions
    scores = np.array([[0.1, 0.5, 0.3, 0.1], [0.6, 0.1, 0.2, 0.1], [0.2, 0.2, 0.2, 0.4]])
    labels = np.array([2, 0, 1])
    mm, cm2 = compute_metrics(scores, labels, 4)
    assert mm["top1"] == pytest.approx(1 / 3) and cm2[0, 0] == 1 and cm2[2, 1] == 1
    k5 = compute_metrics(scores, labels, 4)[0]["top5"]  # top-min(5, C) = all 4 classes
    assert k5 == 1.0


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """Synthetic pairs -> 8-frame store -> frozen random resnet18 features (the demo's chain, smaller)."""
    base = tmp_path_factory.mktemp("train")
    synth(base / "data", SynthConfig(videos_per_class=16, width=64, height=48, frames=16, seed=5))
    extract(build_manifest("synthetic", base / "data"), base / "store", ExtractConfig(format="zarr", frames=16, size=32))
    cache_features(base / "store", base / "features", FeatureConfig(backbone="resnet18", weights="random"))
    return base / "features"


def config(data, model="resnet_temporal_vit", epochs=2, **extra):
    overrides = [f"optim.epochs={epochs}", "data.workers=0", "data.batch_size=16", "data.frames=16", "device=cpu",
                 "deterministic=true", *(f"{k}={v}" for k, v in extra.items())]
    return load_config(None, overrides, base={"model": model, "data": {"path": str(data)}})


def test_resume_is_exact(features, tmp_path):
    cfg = config(features, epochs=4)
    train(cfg, tmp_path / "straight", log=lambda m: None)

    class Crash(Exception):
        pass

    def crash_after_epoch_2(message):
        if message.startswith("epoch 2/4"):
            raise Crash  # after epoch 2's checkpoint and trainer state were written

    with pytest.raises(Crash):
        train(cfg, tmp_path / "resumed", log=crash_after_epoch_2)
    train(cfg, tmp_path / "resumed", resume=True, log=lambda m: None)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "checkpoints" / "last.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
    with pytest.raises(VidpipeError, match="different config"):
        train(config(features, epochs=5), tmp_path / "resumed", resume=True, log=lambda m: None)
    with pytest.raises(VidpipeError, match="already holds a run"):
        train(cfg, tmp_path / "resumed", log=lambda m: None)


def test_run_outputs_and_eval_refusals(features, tmp_path):
    train(config(features, model="tsn_mean", epochs=2), tmp_path / "run", log=lambda m: None)
    for name in ("config.json", "metrics.jsonl", "per_class.csv", "confusion.png", "curves.png", "summary.json",
                 "checkpoints/best.safetensors", "checkpoints/last.safetensors", "checkpoints/trainer.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("clips_per_s", "data_wait_fraction", "peak_memory_mb", "train_loss"):
        assert record[key] >= 0
    assert set(record["val"]) >= {"top1", "top5", "mean_class_acc", "macro_f1", "loss"}
    meta = read_meta(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert meta["model"] == "tsn_mean" and len(meta["classes"]) == 10 and meta["provenance"]["random_weights"]
    result = evaluate_checkpoint(tmp_path / "run")
    assert result["metrics"]["videos"] == 50 and (tmp_path / "run" / "eval-test" / "per_class.csv").is_file()
    # a feature store made with other weights is refused
    other = tmp_path / "other-features"
    torch.manual_seed(1)
    import torchvision
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()}, str(tmp_path / "w.safetensors"))
    cache_features(json.loads((features / "store.json").read_text())["source_store"]["path"], other,
                   FeatureConfig(backbone="resnet18", weights=str(tmp_path / "w.safetensors")))
    with pytest.raises(VidpipeError, match="made differently .*weights"):
        evaluate_checkpoint(tmp_path / "run", data_path=other)
    res = CliRunner().invoke(cli, ["eval", str(tmp_path / "nothing-here")])
    assert res.exit_code == 1 and "no checkpoint" in res.output


@pytest.mark.slow
def test_ddp_two_processes_gloo(features, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vidpipe", "train",
           "--model", "tsn_mean", "--data", str(features), "--out", str(tmp_path / "ddp"), "optim.epochs=2", "data.workers=0",
           "data.batch_size=8", "device=cpu"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2 process(es)" in res.stderr + res.stdout
    records = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[-1]["val"]["videos"] == 50  # gathered from both ranks, padding removed


@pytest.mark.slow
def test_temporal_model_beats_order_blind_on_synthetic_pairs(features, tmp_path):
    results = {}
    for model in ("tsn_mean", "resnet_temporal_vit"):
        train(config(features, model=model, epochs=40, **{"optim.lr": 5e-4}), tmp_path / model, log=lambda m: None)
        r = evaluate_checkpoint(tmp_path / model)
        results[model] = (r["metrics"]["top1"], within_pair_accuracy(r["confusion"], r["classes"]))
    assert results["resnet_temporal_vit"][1] >= 0.9, results
    assert results["tsn_mean"][1] <= 0.7, results
