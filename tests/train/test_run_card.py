"""The run card: one typed record of a run, written in every checkpoint and RUN/run.json, read back only by
`load_run` (eval, predict, export, compare); a checkpoint written before the card (the committed fixture,
vidpipe at ea7e36e) still evaluates and predicts; a run folder's file names live in RunDir alone."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

import vidpipe
from tests.fixtures.make_run_v1 import EXTRACT, FEATURES, SYNTH
from vidpipe.data.inputs import InputSpec
from vidpipe.datasets.adapters import build_manifest
from vidpipe.datasets.synth import synth
from vidpipe.predict import Predictor, list_videos
from vidpipe.stores.extract import extract
from vidpipe.stores.features import cache_features
from vidpipe.train.card import CARD_VERSION, RunCard, load_run
from vidpipe.train.checkpoint import read_meta, save_checkpoint
from vidpipe.train.compare import compare_runs
from vidpipe.train.config import load_config
from vidpipe.train.evaluate import evaluate_checkpoint
from vidpipe.train.loop import train

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run-v1"


@pytest.fixture(scope="module")
def v1_data(tmp_path_factory):
    """The fixture's data made again with today's code: the same synthetic videos, store and features."""
    base = tmp_path_factory.mktemp("v1_data")
    synth(base / "videos", SYNTH)
    extract(build_manifest("synthetic", base / "videos"), base / "store", EXTRACT)
    cache_features(base / "store", base / "features", FEATURES)
    return base


def test_a_checkpoint_from_before_the_card_still_evaluates_and_predicts(v1_data, tmp_path):
    run = tmp_path / "run-v1"
    shutil.copytree(FIXTURE, run)
    assert not (run / "run.json").exists() and "card_version" not in read_meta(run / "checkpoints" / "best.safetensors")
    card = load_run(run).card
    assert card.version == CARD_VERSION and card.input == InputSpec("frame_features", card.provenance["clip"], None, "1x1x4", "1x1x4")
    report = evaluate_checkpoint(run, v1_data / "features", split="test")
    assert report["metrics"]["videos"] == 10 and report["chosen_by"].startswith("best val top-1")
    evaluated = {json.loads(line)["id"]: json.loads(line)["pred"] for line in (Path(report["out"]) / "predictions.jsonl").read_text().splitlines()}
    predictor = Predictor.load(run, device="cpu")
    videos = list_videos([str(v1_data / "videos" / "test")])
    predicted = {f"{p.parent.name}/{p.stem}": pred for p, pred in zip(videos, predictor.predict_many(videos))}
    assert set(predicted) == set(evaluated)
    for vid, pred in predicted.items():  # predict cuts its inputs as eval did: the same class for every video
        assert pred.classes.index(pred.top(1)[0][0]) == evaluated[vid], vid
    rows = compare_runs([run], split="test")["rows"]  # compare reads the legacy RUN/config.json too
    assert rows[0]["model"] == "tsn_mean" and rows[0]["top1"] == report["metrics"]["top1"]


def test_a_run_writes_one_card_and_every_reader_gets_it_back(v1_data, tmp_path):
    cfg = load_config(None, ["optim.epochs=1", "data.workers=0", "data.frames=4", "device=cpu"],
                      base={"model": "temporal_retnet", "data": {"path": str(v1_data / "features")}})
    train(cfg, tmp_path / "run", log=lambda m: None)
    assert (tmp_path / "run" / "run.json").is_file() and not (tmp_path / "run" / "config.json").exists()
    on_disk = RunCard.from_record(json.loads((tmp_path / "run" / "run.json").read_text()))
    loaded = load_run(tmp_path / "run")
    assert loaded.card == on_disk.at_epoch(loaded.card.epoch, loaded.card.metrics)  # the checkpoint's card is the run's, at its epoch
    assert loaded.card.input.decoder == "pyav" and loaded.card.input.train == "1x1x4"  # the store's decoder travels with the inputs
    assert RunCard.from_record(loaded.card.to_record()) == loaded.card
    newer = {**loaded.card.to_record(), "card_version": CARD_VERSION + 1}
    with pytest.raises(vidpipe.errors.VidpipeError, match="upgrade vidpipe"):
        RunCard.from_record(newer)


def test_predict_says_once_that_a_dali_store_is_decoded_with_ffmpeg(tmp_path):
    run = load_run(FIXTURE)
    card = dataclasses.replace(run.card, input=dataclasses.replace(run.card.input, decoder="dali"))
    save_checkpoint(tmp_path / "dali.safetensors", run.model, card.to_record())
    said = []
    Predictor.load(tmp_path / "dali.safetensors", device="cpu", warn=said.append)
    assert len(said) == 1 and "DALI decoded" in said[0] and "may differ" in said[0]


def test_only_the_card_reads_checkpoint_metadata_and_only_rundir_names_run_files():
    package = Path(vidpipe.__file__).parent
    readers, namers = [], []
    for path in sorted(package.rglob("*.py")):
        text, rel = path.read_text(), path.relative_to(package).as_posix()
        if re.search(r"\bread_meta\(", text) and rel not in ("train/checkpoint.py", "train/card.py", "train/loop.py"):
            readers.append(rel)
        if re.search(r"""["'](metrics\.jsonl|summary\.json|run\.json|best\.safetensors|last\.safetensors)["']""", text) and rel != "train/rundir.py":
            namers.append(rel)
    assert readers == [], f"checkpoint metadata read outside the run card: {readers}"
    assert namers == [], f"run folder names spelled outside RunDir: {namers}"


def test_the_initialisation_is_the_runs_not_a_model_option():
    """`init` replaced `model_options.weights` (no model reads a file): the old option is refused with the new
    name, and a card that recorded it is read with it moved (cards up to version 2)."""
    from vidpipe.errors import VidpipeError
    from vidpipe.train.config import upgrade

    with pytest.raises(VidpipeError, match="model_options.weights is now the run's init .*pass init=K400"):
        load_config(None, ["model_options.weights=K400"], base={"model": "tsm_r50"})
    assert load_config(None, ["init=K400"], base={"model": "tsm_r50"}).init == "K400"
    old = {"model": "tsm_r50", "model_options": {"weights": "IMAGENET1K_V1", "dropout": 0.5}, "data": {}}
    assert upgrade(old) == {"model": "tsm_r50", "model_options": {"dropout": 0.5}, "data": {}, "init": "IMAGENET1K_V1"}
    assert old["model_options"]["weights"] == "IMAGENET1K_V1"  # the record itself is left as it was
