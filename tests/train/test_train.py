"""Training and evaluation: metrics by hand, exact resume, DDP on CPU, the synthetic pair threshold."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vidpipe.cli.main import cli
from vidpipe.errors import VidpipeError
from vidpipe.datasets.adapters import build_manifest
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.stores.features import FeatureConfig, cache_features
from vidpipe.datasets.synth import SynthConfig, synth, within_pair_accuracy
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


def test_metrics_match_scikit_learn_on_random_predictions():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    classes = 12
    labels = rng.integers(0, classes - 1, size=400)  # the last class never occurs in the labels
    scores = rng.random((400, classes)) + 0.6 * np.eye(classes)[labels]  # better than chance, far from perfect
    m, cm = compute_metrics(scores, labels, classes)
    preds = scores.argmax(1)
    assert 0.2 < m["top1"] < 0.95 and m["top5"] < 1.0
    assert m["top1"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert m["top5"] == pytest.approx(skm.top_k_accuracy_score(labels, scores, k=5, labels=range(classes)))
    assert m["mean_class_acc"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro", zero_division=0))
    np.testing.assert_array_equal(cm, skm.confusion_matrix(labels, preds, labels=range(classes)))


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


def last_weights(run):
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(run / "checkpoints" / "last.safetensors")).items() if not k.startswith("trainer/")}


def assert_same_weights(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_is_exact_and_refuses_other_settings(features, tmp_path):
    cfg = config(features, epochs=4)
    train(cfg, tmp_path / "straight", log=lambda m: None)

    class Crash(Exception):
        pass

    def crash_after_epoch_2(message):
        if message.startswith("epoch 2/4"):
            raise Crash  # after epoch 2's checkpoint and metrics were written

    with pytest.raises(Crash):
        train(cfg, tmp_path / "resumed", log=crash_after_epoch_2)
    card = json.loads((tmp_path / "resumed" / "run.json").read_text())
    del card["config"]["recipe"]  # as a run began before the config had that field: its default is no difference
    (tmp_path / "resumed" / "run.json").write_text(json.dumps(card))
    train(cfg, tmp_path / "resumed", resume=True, log=lambda m: None)
    assert_same_weights(last_weights(tmp_path / "straight"), last_weights(tmp_path / "resumed"))
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
    with pytest.raises(VidpipeError, match=r"would change data\.batch_size 16 -> 8; optim\.lr 0\.001 -> 0\.002 of"):
        train(config(features, epochs=4, **{"optim.lr": 0.002, "data.batch_size": 8}), tmp_path / "resumed", resume=True, log=lambda m: None)
    said = []
    assert train(cfg, tmp_path / "resumed", resume=True, log=said.append)["last"]["epoch"] == 4  # finished: its summary
    assert any("is finished: it trained all 4 epochs" in m for m in said)
    with pytest.raises(VidpipeError, match="already holds a run"):
        train(cfg, tmp_path / "resumed", log=lambda m: None)
    saved = json.loads((tmp_path / "resumed" / "run.json").read_text())
    saved["world_size"] = 2
    (tmp_path / "resumed" / "run.json").write_text(json.dumps(saved))
    with pytest.raises(VidpipeError, match="trained with 2 process.*nproc_per_node 2"):
        train(cfg, tmp_path / "resumed", resume=True, log=lambda m: None)


def test_resume_takes_the_runs_saved_settings_and_may_add_epochs(features, tmp_path):
    """`--resume --out RUN` alone continues with the settings the run was started with; more epochs (and
    workers, threads, device) may be added on the command line; nothing else."""
    run = tmp_path / "run"
    args = ["train", "--model", "tsn_mean", "--data", str(features), "--out", str(run), "optim.epochs=1", "optim.lr=0.003",
            "data.workers=0", "data.batch_size=16", "data.frames=16", "device=cpu"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    res = CliRunner().invoke(cli, ["train", "--resume", "--out", str(run), "optim.epochs=2", "data.workers=1"])
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    config = json.loads((run / "run.json").read_text())["config"]
    assert config["optim"]["lr"] == 0.003 and config["optim"]["epochs"] == 2 and config["data"]["workers"] == 1
    res = CliRunner().invoke(cli, ["train", "--resume", "--out", str(run), "optim.epochs=3", "optim.lr=0.01", "data.frames=8"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "optim.lr 0.003 -> 0.01" in res.output and "data.frames 16 -> 8" in res.output
    res = CliRunner().invoke(cli, ["train", "--resume", "--out", str(tmp_path / "nothing")])
    assert res.exit_code != 0 and "--model" in res.output and "Traceback" not in res.output


def _train_cmd(features, out, workers=0, epochs=4):
    return [sys.executable, "-m", "vidpipe", "train", "--model", "resnet_temporal_vit", "--data", str(features), "--out", str(out),
            f"optim.epochs={epochs}", f"data.workers={workers}", "data.batch_size=16", "data.frames=16", "device=cpu", "deterministic=true",
            "model_options.dim=32", "model_options.depth=1"]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_inside_the_epoch_end_writes_then_resume_is_bit_exact(features, tmp_path, workers):
    """SIGKILL at each point of epoch 2's writes (before/after best, the checkpoint, the metrics), resume,
    and the final weights, best checkpoint and metrics equal an uninterrupted run's, bit for bit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(features, straight, workers), env=env, check=True, capture_output=True)
    points = ["before-best", "before-last", "after-last", "after-metrics"] if workers == 0 else ["after-last"]
    for point in points:
        run = tmp_path / point
        killed = subprocess.run(_train_cmd(features, run, workers), env={**env, "VIDPIPE_KILL_AT": f"2:{point}"}, capture_output=True)
        assert killed.returncode == -9, killed.stderr[-2000:]
        resumed = subprocess.run(_train_cmd(features, run, workers) + ["--resume"], env=env, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert_same_weights(last_weights(straight), last_weights(run))
        from safetensors.torch import load_file

        assert_same_weights(load_file(str(straight / "checkpoints" / "best.safetensors")), load_file(str(run / "checkpoints" / "best.safetensors")))
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        expected = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4], point
        assert [r["val"] for r in rows] == [r["val"] for r in expected] and [r["train_loss"] for r in rows] == [r["train_loss"] for r in expected]


def test_best_is_chosen_on_a_val_carved_from_train_never_on_test(features, tmp_path):
    train(config(features, model="tsn_mean", epochs=3), tmp_path / "run", log=lambda m: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    index = json.loads((features / "store.json").read_text())
    from vidpipe.datasets.manifest import hash_fraction

    import zarr

    group = zarr.open_group(features / "train.zarr", mode="r")
    train_ids, labels = list(group["ids"][:]), list(group["labels"][:])
    carved = []  # per class, round(10%) of its videos (at least one), those of smallest id hash
    for c in sorted(set(labels)):
        ids = sorted((i for i, y in zip(train_ids, labels) if y == c), key=hash_fraction)
        carved += ids[: max(1, round(0.1 * len(ids)))]
    assert 0 < len(carved) < index["splits"]["test"]["count"] and len(set(labels)) == len(carved)  # one per class here
    assert all(r["val"]["videos"] == len(carved) for r in rows)  # val is the carve, not the 50 test videos
    assert all(r["train_videos"] == len(train_ids) - len(carved) for r in rows)  # and it is not trained on
    meta = read_meta(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert "10% of each class of train" in meta["selection"]["split"]
    chosen = max(rows, key=lambda r: r["val"]["top1"])
    assert meta["epoch"] == chosen["epoch"]
    result = evaluate_checkpoint(tmp_path / "run")  # default: the test split, with the checkpoint val chose
    assert result["split"] == "test" and result["metrics"]["videos"] == 50 and result["epoch"] == chosen["epoch"]
    assert result["chosen_by"].startswith("best val top-1") and "10% of each class of train" in result["chosen_by"]
    on_val = evaluate_checkpoint(tmp_path / "run", split="val")  # the carve again, from the checkpoint's config
    assert on_val["metrics"]["videos"] == len(carved) and on_val["metrics"]["top1"] == pytest.approx(chosen["val"]["top1"])


def test_no_validation_keeps_the_last_epoch(features, tmp_path):
    summary = train(config(features, model="tsn_mean", epochs=2, **{"data.val_fraction": 0}), tmp_path / "run", log=lambda m: None)
    assert summary["best"] is None and summary["last"]["val"] is None
    assert not (tmp_path / "run" / "checkpoints" / "best.safetensors").exists()
    result = evaluate_checkpoint(tmp_path / "run", split="test")
    assert result["epoch"] == 2 and result["chosen_by"].startswith("last epoch") and "nothing was selected on test" in result["chosen_by"]
    with pytest.raises(VidpipeError, match="carved none"):
        evaluate_checkpoint(tmp_path / "run", split="val")


def test_every_clip_once_per_epoch_and_the_schedule_ends_where_training_does(synth_h264, tmp_path):
    """WebDataset with 2 workers ends each worker on a partial batch: no clip may be dropped, and the
    cosine schedule must be sized by the batches actually run (it reaches exactly 0 at the end)."""
    extract(build_manifest("synthetic", synth_h264), tmp_path / "store", ExtractConfig(frames=8, size=32, shard_size="60KB"))
    assert len(list((tmp_path / "store" / "train").glob("*.tar"))) >= 3
    overrides = ["optim.epochs=2", "data.workers=2", "data.batch_size=4", "data.frames=4", "data.crop_size=32", "device=cpu",
                 "data.val_fraction=0", "optim.warmup_epochs=0"]
    cfg = load_config(None, overrides, base={"model": "r2plus1d_18", "data": {"path": str(tmp_path / "store")}})
    summary = train(cfg, tmp_path / "run", log=lambda m: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_clips"] for r in rows] == [20, 20] and [r["train_videos"] for r in rows] == [20, 20]
    assert [r["optimizer_steps"] for r in rows] == [5, 5]
    assert summary["last"]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_run_outputs_and_eval_refusals(features, tmp_path):
    train(config(features, model="tsn_mean", epochs=2), tmp_path / "run", log=lambda m: None)
    for name in ("run.json", "metrics.jsonl", "per_class.csv", "confusion.png", "curves.png", "summary.json",
                 "checkpoints/best.safetensors", "checkpoints/last.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name
    assert not list((tmp_path / "run").rglob("*.tmp"))
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("clips_per_s", "data_wait_fraction", "peak_memory_mb", "train_loss"):
        assert record[key] >= 0
    assert set(record["val"]) >= {"top1", "top5", "mean_class_acc", "macro_f1", "loss"}
    meta = read_meta(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert meta["model"] == "tsn_mean" and len(meta["classes"]) == 10 and meta["provenance"]["random_weights"]
    result = evaluate_checkpoint(tmp_path / "run")
    assert result["metrics"]["videos"] == 50 and (tmp_path / "run" / "eval-test" / "per_class.csv").is_file()
    # a feature store made with other weights (from a store of the same videos' first two per split, same settings) is refused
    other = tmp_path / "other-features"
    torch.manual_seed(1)
    import torchvision
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in torchvision.models.resnet18().state_dict().items()}, str(tmp_path / "w.safetensors"))
    m = build_manifest("synthetic", features.parent / "data")
    m.records = [r for split in m.splits for r in m.split_records(split)[:2]]
    extract(m, tmp_path / "few", ExtractConfig(format="zarr", frames=16, size=32))
    cache_features(tmp_path / "few", other, FeatureConfig(backbone="resnet18", weights=str(tmp_path / "w.safetensors")))
    with pytest.raises(VidpipeError, match="made differently .*weights"):
        evaluate_checkpoint(tmp_path / "run", data_path=other)
    res = CliRunner().invoke(cli, ["eval", str(tmp_path / "nothing-here")])
    assert res.exit_code == 1 and "no checkpoint" in res.output


def test_no_weight_decay_on_tokens_and_embeddings():
    from vidpipe.models import create_model
    from vidpipe.train.loop import param_groups

    model = create_model("resnet_temporal_vit", num_classes=5, in_dim=16, options={"dim": 32, "depth": 1})
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "pos_embed", "proj.bias", "norm.weight"} <= skipped
    assert {names[id(p)] for p in decay["params"]} >= {"proj.weight", "head.weight"} and not skipped & {"proj.weight", "head.weight"}


def test_cuda_rng_states_restore_in_device_order(monkeypatch, tmp_path):
    from vidpipe.train import checkpoint as ck

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(12)]  # 12 devices: "10" sorts before "2" as text
    rng = {**ck.rng_state(), "cuda": states}
    ck.save_checkpoint(tmp_path / "c.safetensors", model, {"model": "x"}, ck.trainer_state(opt, sched, None, 1, {}, [], [rng]))
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: restored.extend(s))
    ck.load_trainer(tmp_path / "c.safetensors", opt, sched, None)
    assert [int(s[0]) for s in restored] == list(range(12))


@pytest.mark.slow
def test_ddp_two_processes_gloo(features, synth_h264, tmp_path):
    """2 gloo ranks: a WebDataset val split of one shard (one rank holds no val shard) must not hang and
    every val video is counted once; with frame features, every training video is seen each epoch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    store = tmp_path / "store"
    extract(build_manifest("synthetic", synth_h264), store, ExtractConfig(frames=8, size=32))
    assert len(list((store / "test").glob("*.tar"))) == 1
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vidpipe", "train"]
    runs = {
        "clips": ["--model", "r2plus1d_18", "--data", str(store), "data.val_split=test", "data.frames=4", "data.crop_size=32",
                  "data.batch_size=3"],
        "features": ["--model", "tsn_mean", "--data", str(features), "data.batch_size=8"],
    }
    for name, args in runs.items():
        res = subprocess.run(base + args + ["--out", str(tmp_path / name), "optim.epochs=2", "data.workers=0", "device=cpu"],
                             capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "2 process(es)" in res.stderr + res.stdout
    clips = [json.loads(x) for x in (tmp_path / "clips" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val"]["videos"] for r in clips] == [10, 10]  # gathered from both ranks, each video once
    feats = [json.loads(x) for x in (tmp_path / "features" / "metrics.jsonl").read_text().splitlines()]
    import zarr
    from vidpipe.datasets.manifest import hash_fraction

    group = zarr.open_group(features / "train.zarr", mode="r")
    train_ids, labels = list(group["ids"][:]), list(group["labels"][:])
    carved = {sorted((i for i, y in zip(train_ids, labels) if y == c), key=hash_fraction)[0] for c in set(labels)}  # 10% of 15: one a class
    assert [r["train_videos"] for r in feats] == [len(train_ids) - len(carved)] * 2
    assert json.loads((tmp_path / "features" / "run.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_temporal_model_beats_order_blind_on_synthetic_pairs(features, tmp_path):
    results = {}
    for model in ("tsn_mean", "resnet_temporal_vit"):
        train(config(features, model=model, epochs=40, **{"optim.lr": 5e-4}), tmp_path / model, log=lambda m: None)
        r = evaluate_checkpoint(tmp_path / model)  # test split, checkpoint chosen on the val carved from train
        results[model] = (r["metrics"]["top1"], within_pair_accuracy(r["confusion"], r["classes"]))
    assert results["resnet_temporal_vit"][1] >= 0.9, results
    assert results["tsn_mean"][1] <= 0.7, results


def test_a_run_initialised_from_a_weights_file_evaluates_after_the_file_is_deleted(features, tmp_path):
    """Build, then load: the init file is read once, when the run starts (provenance recorded: path,
    sha256, layout); eval builds the model and loads the run's own checkpoint, never the init file."""
    import torchvision

    from vidpipe.files import sha256_file

    store = features.parent / "store"
    init = tmp_path / "r2plus1d_18-init.pth"
    torch.manual_seed(1)
    reference = torchvision.models.video.r2plus1d_18()  # torchvision's layout: layer1-4, fc (400 classes)
    torch.save(reference.state_dict(), init)
    digest = sha256_file(init)
    cfg = load_config(None, ["optim.epochs=1", "optim.lr=1e-7", "optim.warmup_epochs=0", "data.workers=0", "data.batch_size=8", "data.frames=4",
                             "data.crop_size=32", "device=cpu", f"init={init}"],
                      base={"model": "r2plus1d_18", "data": {"path": str(store)}})
    train(cfg, tmp_path / "run", log=lambda m: None)
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["init"]["sha256"] == digest and saved["init"]["path"] == str(init.resolve()) and saved["init"]["layout"] == "torchvision"
    trained = last_weights(tmp_path / "run")
    torch.testing.assert_close(trained["stem.0.weight"], reference.state_dict()["stem.0.weight"], rtol=0, atol=1e-5)  # lr 1e-7: the init, barely moved
    assert trained["head.weight"].shape[0] != 400  # the run's own classifier
    init.unlink()
    result = evaluate_checkpoint(tmp_path / "run", split="test")
    assert result["metrics"]["videos"] > 0
    res = CliRunner().invoke(cli, ["eval", str(tmp_path / "run"), "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def clip_store(synth_h264, tmp_path_factory):
    """An 8-frame, 32 px clip store of the synthetic set, shared by the clip-model tests that only read it."""
    root = tmp_path_factory.mktemp("clips") / "store"
    extract(build_manifest("synthetic", synth_h264), root, ExtractConfig(frames=8, size=32))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("model", ["timesformer", "timesformer_retnet"])
def test_timesformer_family_trains_from_a_clip_store_and_its_run_loads_back(clip_store, tmp_path, model):
    from vidpipe.models import load_pretrained

    overrides = ["optim.epochs=2", "data.workers=0", "data.batch_size=4", "data.frames=4", "data.crop_size=32", "device=cpu",
                 "model_options.preset=tiny", "model_options.depth=2", "model_options.image_size=32", "model_options.patch_size=8"]
    cfg = load_config(None, overrides, base={"model": model, "data": {"path": str(clip_store)}})
    summary = train(cfg, tmp_path / "run", log=lambda m: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(r["train_loss"]) for r in rows)
    result = evaluate_checkpoint(tmp_path / "run", split="test")
    assert result["metrics"]["videos"] == 10 and 0 <= result["metrics"]["top1"] <= 1
    loaded = load_pretrained(model, str(tmp_path / "run" / "checkpoints" / "best.safetensors"))
    assert loaded.cfg.depth == 2 and loaded.head.out_features == 10
    if model == "timesformer_retnet":  # the trained run streams: logits after the last frame are the clip's
        x = torch.randn(1, 3, 4, 32, 32)
        session = loaded.stream()
        for t in range(4):
            logits = session.step(x[:, :, t])
        with torch.no_grad():
            torch.testing.assert_close(logits, loaded(x), rtol=0, atol=1e-5)
    assert summary["best"]["epoch"] in (1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_vivit_fe_presets_train_from_a_clip_store_and_load_back(clip_store, tmp_path, preset):
    """Both presets at their own widths and depths (base: 768 wide, 12 + 4 blocks), on 32 x 32 crops of 4 frames."""
    from vidpipe.models import load_pretrained

    overrides = ["optim.epochs=1", "data.workers=0", "data.batch_size=8", "data.frames=4", "data.crop_size=32", "device=cpu",
                 f"model_options.preset={preset}", "model_options.image_size=32"]
    cfg = load_config(None, overrides, base={"model": "vivit_fe", "data": {"path": str(clip_store)}})
    train(cfg, tmp_path / "run", log=lambda m: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and np.isfinite(rows[0]["train_loss"])
    result = evaluate_checkpoint(tmp_path / "run", split="test")
    assert result["metrics"]["videos"] == 10
    loaded = load_pretrained("vivit_fe", str(tmp_path / "run" / "checkpoints" / "best.safetensors"))
    assert loaded.cfg.preset == preset and loaded.head.out_features == 10 and loaded.cfg.spatial_depth == {"tiny": 4, "base": 12}[preset]


def test_msr_daily_activity3d_tree_to_vivit_fe_tiny(tmp_path):
    """The seed study's dataset path: an MSR DailyActivity3D tree (a<AA>_s<SS>_e<EE>_rgb.avi, Xvid AVI,
    cross-subject split: odd subjects train) -> a clip store -> vivit_fe tiny, one epoch -> eval on test."""
    from vidpipe.io.ffmpeg import encode_video

    rng = np.random.default_rng(0)
    (tmp_path / "msr").mkdir()
    for activity in (1, 2, 3):
        for subject in (1, 2, 3, 4):
            frames = rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8)
            encode_video(frames, tmp_path / "msr" / f"a{activity:02d}_s{subject:02d}_e01_rgb.avi", "mpeg4", fps=30)
    manifest = build_manifest("msr_daily_activity3d", tmp_path / "msr")
    extract(manifest, tmp_path / "store", ExtractConfig(frames=8, size=32))
    store = json.loads((tmp_path / "store" / "store.json").read_text())
    assert store["dataset"] == "msr_daily_activity3d" and len(store["classes"]) == 16
    overrides = ["optim.epochs=1", "data.workers=0", "data.batch_size=2", "data.frames=4", "data.crop_size=32", "device=cpu",
                 "model_options.preset=tiny", "model_options.image_size=32", "data.val_fraction=0"]
    cfg = load_config(None, overrides, base={"model": "vivit_fe", "data": {"path": str(tmp_path / "store")}})
    train(cfg, tmp_path / "run", log=lambda m: None)
    result = evaluate_checkpoint(tmp_path / "run", split="test")
    assert result["metrics"]["videos"] == 6 and len(result["classes"]) == 16  # subjects 2 and 4: the cross-subject test half


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tsm_r50", "tin_r50"])
def test_tsm_and_tin_train_through_the_segment_pipeline_and_load_back(clip_store, tmp_path, model):
    from vidpipe.models import load_pretrained

    overrides = ["optim.epochs=1", "data.workers=0", "data.batch_size=4", "data.frames=4", "data.crop_size=32", "device=cpu"]
    overrides += ["model_options.segments=4"] if model == "tin_r50" else []
    cfg = load_config(None, overrides, base={"model": model, "data": {"path": str(clip_store)}})
    train(cfg, tmp_path / "run", log=lambda m: None)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and np.isfinite(rows[0]["train_loss"])
    result = evaluate_checkpoint(tmp_path / "run", split="test")
    assert result["metrics"]["videos"] == 10
    loaded = load_pretrained(model, str(tmp_path / "run" / "checkpoints" / "best.safetensors"))
    assert loaded.head.out_features == 10


@pytest.mark.slow
def test_squeezetime_trains_skips_a_last_batch_of_one_and_exports_both_ways(synth_h264, tmp_path):
    """SqueezeTime from a clip store: 20 training videos in batches of 19 leave a last batch of one clip,
    which the CTL gate's BatchNorm cannot train on; the loop skips it and says so. The run then exports
    through the CLI: each file, run by onnxruntime or the TorchScript interpreter, gives PyTorch's logits
    on a clip (and a batch size) the test draws itself, and the sidecar says how to feed it."""
    from vidpipe.models import load_pretrained

    extract(build_manifest("synthetic", synth_h264), tmp_path / "store", ExtractConfig(frames=16, size=32))
    overrides = ["optim.epochs=1", "data.workers=0", "data.batch_size=19", "data.crop_size=32", "data.val_fraction=0", "device=cpu"]
    logs = []
    train(load_config(None, overrides, base={"model": "squeezetime", "data": {"path": str(tmp_path / "store")}}), tmp_path / "run", log=logs.append)
    assert any("a last batch of 1 clip(s) skipped" in line for line in logs), logs
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train_clips"] == 19 and np.isfinite(rows[0]["train_loss"])
    assert evaluate_checkpoint(tmp_path / "run", split="test")["metrics"]["videos"] == 10
    model = load_pretrained("squeezetime", str(tmp_path / "run" / "checkpoints" / "last.safetensors"))
    x = torch.randn(3, 3, 16, 32, 32)  # another batch size than the export's check
    with torch.no_grad():
        expected = model(x).numpy()
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / "export" / f"model.{fmt}"
        res = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), "--format", fmt, "-o", str(out)])
        assert res.exit_code == 0, res.output
        side = json.loads(out.with_name(out.name + ".json").read_text())
        assert side["input"]["shape"] == [None, 3, 16, 32, 32] and side["input"]["mean"] == [0.485, 0.456, 0.406] and len(side["classes"]) == 10
        assert side["check"]["max_abs_diff"] < 1e-4
        if fmt == "onnx":
            ort = pytest.importorskip("onnxruntime")
            got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"clip": x.numpy()})[0]
        else:
            got = torch.jit.load(str(out))(x).detach().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code != 0 and "no checkpoint at" in res.output and "Traceback" not in res.output


def test_vote_fusion_is_the_majority_of_view_argmaxes():
    """`evaluate(..., fusion="vote")` against a naive loop: per video, count each view's argmax; the most
    votes wins, a tie goes to the tied class with the highest mean softmax score."""
    import collections

    from vidpipe.train.scoring import evaluate

    rng = np.random.default_rng(3)
    videos, views, classes = 40, 5, 4
    logits = torch.from_numpy(rng.normal(size=(videos, views, classes)).astype(np.float32))
    labels = rng.integers(0, classes, size=videos)

    class Views:  # batches of 8 videos x 5 views; the "model" returns its input as logits
        classes = list("abcd")
        val = [{"ids": [f"v{i}" for i in range(s, s + 8)], "views": views, "x": logits[s:s + 8].reshape(-1, classes),
                "y": torch.from_numpy(labels[s:s + 8])} for s in range(0, videos, 8)]

        @staticmethod
        def to_device(batch, device, train):
            return batch["x"], batch["y"]

    metrics, _, preds = evaluate(torch.nn.Identity(), Views(), torch.device("cpu"), None, fusion="vote")
    expected = []
    for v in range(videos):
        counts = collections.Counter(int(np.argmax(logits[v, k])) for k in range(views))
        top = max(counts.values())
        mean = torch.softmax(logits[v], -1).mean(0)
        expected.append(max((c for c, n in counts.items() if n == top), key=lambda c: float(mean[c])))
    assert [int(np.argmax(r)) for r in preds["ranked"]] == expected
    assert metrics["top1"] == pytest.approx(np.mean(np.array(expected) == labels))
    mean_metrics = evaluate(torch.nn.Identity(), Views(), torch.device("cpu"), None)[0]
    assert mean_metrics["loss"] == pytest.approx(metrics["loss"])  # the loss is the mean score's either way
    assert any(e != int(np.argmax(s)) for e, s in zip(expected, preds["scores"]))  # the two fusions differ here
    with pytest.raises(VidpipeError, match="fusion must be one of"):
        evaluate(torch.nn.Identity(), Views(), torch.device("cpu"), None, fusion="max")


@pytest.fixture(scope="module")
def perceiver_runs(clip_store, tmp_path_factory):
    """The study's Perceiver both ways, tiny: on a token store of R(2+1)D-18 (random weights) and end to end
    with R(2+1)D-18 cut after 4 blocks; each run evaluated on test."""
    base = tmp_path_factory.mktemp("perceiver")
    cache_features(clip_store, base / "tokens", FeatureConfig(backbone="r2plus1d_18", weights="random", tokens=True))
    tiny = ["model_options.num_latents=8", "model_options.dim=32", "model_options.heads=2", "model_options.head_dim=16",
            "model_options.cross_head_dim=16", "optim.epochs=1", "data.workers=0", "data.batch_size=5", "device=cpu"]
    runs = {
        "head-1x1": ("perceiver", base / "tokens", []),
        "head-cross-only": ("perceiver", base / "tokens", ["model_options.self_layers=0"]),
        "e2e-4blocks": ("r2plus1d_perceiver", clip_store, ["model_options.cnn_blocks=4", "data.frames=8", "data.crop_size=32", "data.test_clips=2"]),
    }
    for name, (model, data, extra) in runs.items():
        cfg = load_config(None, tiny + extra, base={"model": model, "data": {"path": str(data)}})
        train(cfg, base / name, log=lambda m: None)
        evaluate_checkpoint(base / name, split="test")
    return base


@pytest.mark.slow
def test_the_perceiver_trains_on_tokens_and_end_to_end(perceiver_runs):
    for name in ("head-1x1", "head-cross-only", "e2e-4blocks"):
        rows = [json.loads(x) for x in (perceiver_runs / name / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 1 and np.isfinite(rows[0]["train_loss"])
        report = json.loads((perceiver_runs / name / "eval-test" / "metrics.json").read_text())
        assert report["metrics"]["videos"] == 10
    meta = read_meta(perceiver_runs / "e2e-4blocks" / "checkpoints" / "last.safetensors")
    step = round(8 * 8 / 24)  # the study's interval, 8 source frames, on an 8-frame store of 24-frame videos
    assert meta["inputs"]["train"] == f"8x{step}x1" and meta["inputs"]["test"] == f"8x{step}x2"
    vote = evaluate_checkpoint(perceiver_runs / "e2e-4blocks", split="test", fusion="vote")
    assert vote["views"] == {"clips": 2, "crops": 1, "fusion": "vote"} and vote["out"].endswith("eval-test-vote")


@pytest.mark.slow
def test_compare_tables_real_runs_and_refuses_other_data(perceiver_runs, features, tmp_path):
    runs = [str(perceiver_runs / n) for n in ("head-1x1", "head-cross-only")]
    res = CliRunner().invoke(cli, ["compare", *runs, "--markdown", str(tmp_path / "t.md"), "--png", str(tmp_path / "t.png"),
                                   "--json", str(tmp_path / "t.json"), "--sort", "params_m"])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["differing"] == ["model_options.self_layers"]  # the one option that differs
    by_run = {r["run"]: r for r in result["rows"]}
    for name in by_run:  # every figure is the run's own record
        meta = json.loads((perceiver_runs / name / "run.json").read_text())
        summary = json.loads((perceiver_runs / name / "summary.json").read_text())
        report = json.loads((perceiver_runs / name / "eval-test" / "metrics.json").read_text())
        assert by_run[name]["params_m"] == pytest.approx(meta["params"] / 1e6)
        assert by_run[name]["val_top1"] == summary["best"]["top1"] and by_run[name]["top1"] == report["metrics"]["top1"]
        assert report["chosen_by"] in by_run[name]["from"]
    assert [r["run"] for r in result["rows"]] == ["head-1x1", "head-cross-only"]  # more parameters first
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| head-1x1 | perceiver | 1 |" in (tmp_path / "t.md").read_text()
    # the end-to-end run splits its parameters into the CNN and the head
    res = CliRunner().invoke(cli, ["compare", str(perceiver_runs / "e2e-4blocks"), "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    e2e = json.loads((tmp_path / "e.json").read_text())["rows"][0]
    assert e2e["backbone_m"] == pytest.approx(1_929_865 / 1e6)
    # a run on other data is refused in one line, then marked with --force
    train(config(features, model="tsn_mean", epochs=1), tmp_path / "other", log=lambda m: None)
    res = CliRunner().invoke(cli, ["compare", *runs, str(tmp_path / "other")])
    assert res.exit_code != 0 and "other data" in res.output and "--force" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["compare", *runs, str(tmp_path / "other"), "--force", "--markdown", str(tmp_path / "f.md")])
    assert res.exit_code == 0 and "| other * |" in (tmp_path / "f.md").read_text()


@pytest.mark.slow
def test_compare_falls_back_to_the_evaluated_split_reads_vote_fusion_and_never_writes_an_empty_chart(perceiver_runs, tmp_path):
    """Runs evaluated only on val, one of them with vote fusion: compare shows val (and says so), takes the
    vote evaluation with its fusion named, and a chart of a figure no run has is not written."""
    runs = []
    for name in ("head-1x1", "head-cross-only"):
        shutil.copytree(perceiver_runs / name, tmp_path / name)
        shutil.rmtree(tmp_path / name / "eval-test")
        runs.append(str(tmp_path / name))
    evaluate_checkpoint(runs[0], split="val", fusion="vote")
    evaluate_checkpoint(runs[1], split="val")
    res = CliRunner().invoke(cli, ["compare", *runs, "--json", str(tmp_path / "c.json"), "--png", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    assert "no run was evaluated on test; showing val" in res.output
    result = json.loads((tmp_path / "c.json").read_text())
    by_run = {r["run"]: r for r in result["rows"]}
    vote = json.loads((tmp_path / "head-1x1" / "eval-val-vote" / "metrics.json").read_text())
    assert result["split"] == "val" and by_run["head-1x1"]["top1"] == vote["metrics"]["top1"]
    assert "vote fusion" in by_run["head-1x1"]["from"] and "vote" not in by_run["head-cross-only"]["from"]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(cli, ["compare", *runs, "--split", "test", "--png", str(tmp_path / "none.png")])
    assert res.exit_code == 0 and not (tmp_path / "none.png").exists() and "no chart written" in res.output
    assert "not evaluated on test" in res.output  # the store has a test split: evaluating on it is the advice


def test_threads_are_set_recorded_and_default_to_the_cores_the_workers_leave(features, tmp_path):
    from vidpipe.devices import cpu_threads

    cores = len(os.sched_getaffinity(0))
    assert cpu_threads(0, workers=0) == cores and cpu_threads(0, workers=cores + 3) == 1 and cpu_threads(3, workers=9) == 3
    before = torch.get_num_threads()
    try:
        train(config(features, model="tsn_mean", epochs=1, threads=1), tmp_path / "one", log=lambda m: None)
        assert torch.get_num_threads() == 1
        rows = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
        assert rows[0]["cpu_threads"] == 1
        assert json.loads((tmp_path / "one" / "run.json").read_text())["config"]["threads"] == 1
        res = CliRunner().invoke(cli, ["eval", str(tmp_path / "one"), "--threads", "2"])
        assert res.exit_code == 0, res.output
        assert json.loads((tmp_path / "one" / "eval-test" / "metrics.json").read_text())["cpu_threads"] == 2
        res = CliRunner().invoke(cli, ["eval", str(tmp_path / "one"), "--threads", "-1"])
        assert res.exit_code != 0 and "Traceback" not in res.output
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_vivit_at_a_non_native_size_exports_and_its_sidecar_alone_rebuilds_the_input(clip_store, synth_h264, tmp_path):
    """A ViViT run at 32 px (its embeddings made for 224): ONNX export prints only what it wrote, and a
    deployment holding only the .onnx and its sidecar turns a video into the input (VideoInputs from the
    sidecar's input_spec) and gets the probabilities vidpipe's own predict gives for that video."""
    import onnxruntime as ort

    from vidpipe.data.inputs import InputSpec
    from vidpipe.predict import Predictor
    from vidpipe.predict.inputs import VideoInputs

    overrides = ["optim.epochs=1", "data.workers=0", "data.batch_size=4", "data.frames=4", "data.crop_size=32", "device=cpu",
                 "model_options.preset=tiny", "model_options.spatial_depth=1", "model_options.temporal_depth=1", "data.val_fraction=0"]
    train(load_config(None, overrides, base={"model": "vivit_fe", "data": {"path": str(clip_store)}}), tmp_path / "run", log=lambda m: None)
    out = tmp_path / "deploy" / "m.onnx"
    res = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), "--format", "onnx", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert len(res.output.splitlines()) < 20 and "graph(" not in res.output
    sidecar = json.loads(out.with_name("m.onnx.json").read_text())
    video = sorted((synth_h264 / "test").rglob("*.mp4"))[0]
    clips = VideoInputs(InputSpec.from_dict(sidecar["input_spec"])).clips_of(video)  # the sidecar and the video, nothing else
    assert list(clips.shape[1:]) == sidecar["input"]["shape"][1:]
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"clip": clips.numpy()})[0]
    predictor = Predictor.load(tmp_path / "run", device="cpu")
    expected = predictor.view_scores(predictor.decode(video)[0]).numpy()
    np.testing.assert_allclose(torch.from_numpy(logits).softmax(-1).numpy(), expected, atol=1e-5)
