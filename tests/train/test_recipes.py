"""Recipes: every one parses, resolves, builds its model and passes --dry-run against a small store of the
mode it needs; three run end to end for one epoch on small synthetic stores (size overrides) and evaluate;
a wrong store is refused in one line naming the command that makes the right one."""

import json

import pytest
import torch
from click.testing import CliRunner

from vidpipe.cli.main import cli
from vidpipe.datasets.adapters import build_manifest
from vidpipe.datasets.synth import SynthConfig, synth
from vidpipe.errors import VidpipeError
from vidpipe.models import create_model
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.stores.features import FeatureConfig, cache_features
from vidpipe.train.config import load_config
from vidpipe.train.recipes import check_run, list_recipes, load_recipe, recipe_path

SMALL = ["data.crop_size=32", "data.workers=0", "device=cpu"]  # what a small synthetic store can feed


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A uniform 32-frame clip store (6 videos), an fps store, and resnet50 features of a 16-frame store."""
    base = tmp_path_factory.mktemp("recipes")
    synth(base / "data", SynthConfig(videos_per_class=2, frames=24, seed=3))
    m = build_manifest("synthetic", base / "data")
    m.records = [r for s in m.splits for r in m.split_records(s)[:3]]
    extract(m, base / "uniform", ExtractConfig(frames=32, size=40, workers=1))
    extract(m, base / "fps", ExtractConfig(fps=15.0, size=40, workers=1))
    m.records = [r for s in m.splits for r in m.split_records(s)[:2]]
    extract(m, base / "uniform16", ExtractConfig(frames=16, size=32, workers=1))
    cache_features(base / "uniform16", base / "r50", FeatureConfig(backbone="resnet50", weights="random", device="cpu"))
    return base


def cfg_for(recipe, data, *overrides):
    return load_config(recipe_path(recipe), [*SMALL, *overrides], flags={"data.path": ("--data", str(data))})


def test_recipes_cover_the_seed_systems():
    names = set(list_recipes())
    assert {"timesformer_ucf101", "timesformer_hmdb51", "timesformer_retnet_ucf101", "timesformer_retnet_hmdb51", "tin_r50_sthv1",
            "tin_r50_sthv2", "tin_tsm_finetune_k400", "tsm_r50_k400", "squeezetime_k400", "squeezetime_k600", "squeezetime_hmdb51",
            "squeezetime_sthv2", "vivit_fe_k400", "mini_vivit_k400", "vivit_fe_msr", "mini_vivit_msr", "resnet_temporal_vit_msr",
            "r2plus1d_18_hmdb51"} <= names
    assert len([n for n in names if n.startswith("r2plus1d_perceiver_")]) == 9  # with the baseline, the study's ten rows
    published = {n: load_recipe(n).published.top1 for n in names}
    assert published["tin_r50_sthv1"] == 44.25 and published["timesformer_retnet_ucf101"] == 92.60 and published["timesformer_ucf101"] is None


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_resolves_builds_and_passes_a_dry_run(name, stores):
    recipe = load_recipe(name)
    data = stores / ("r50" if recipe.store.backbone else "fps" if recipe.store.mode == "fps" else "uniform")
    extra = ["init=none"] if recipe.init_required else []
    cfg = cfg_for(name, data, *extra)
    assert cfg.model == recipe.model and cfg.recipe["name"] == name and cfg.recipe["published"]["top1"] == recipe.published.top1
    with torch.device("meta"):  # the recipe's model at its own sizes, shapes only
        model = create_model(cfg.model, num_classes=10, in_dim=2048 if recipe.store.backbone else None, options=cfg.model_options)
    assert sum(p.numel() for p in model.parameters()) > 0
    checks = check_run(recipe, cfg)
    store_checks = [c for c in checks if c.what != "init"]
    assert store_checks and all(c.ok for c in store_checks), [c.detail for c in store_checks if not c.ok]
    init = next(c for c in checks if c.what == "init")
    if recipe.init_required:
        assert not init.ok and "init=PATH" in init.detail
    elif recipe.init == "none" or recipe.init in ("IMAGENET1K_V1", "KINETICS400_V1"):  # torchvision's: fetched when the run starts
        assert init.ok, init.detail
    else:
        assert not init.ok and f"init={recipe.init}=PATH" in init.detail
    res = CliRunner().invoke(cli, ["train", "--recipe", name, "--data", str(data), "--dry-run", *SMALL, *extra])
    assert "checks against" in res.output and "Traceback" not in res.output and name in res.output
    assert res.exit_code == (0 if init.ok else 1), res.output


def test_a_wrong_store_is_refused_in_one_line_with_the_command_to_make_the_right_one(stores, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["train", "--recipe", "r2plus1d_18_hmdb51", "--data", str(stores / "r50"), "--out", str(tmp_path / "r"), *SMALL])
    assert res.exit_code == 1 and res.output.count("Error:") == 1 and "Traceback" not in res.output
    assert "vidpipe extract --dataset hmdb51 --root ROOT --split 1 --fps 15 --size 128 --out STORE" in res.output
    res = runner.invoke(cli, ["train", "--recipe", "resnet_temporal_vit_msr", "--data", str(stores / "uniform"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "not a resnet50 feature store" in res.output and "vidpipe cache-features" in res.output
    res = runner.invoke(cli, ["train", "--recipe", "tsm_r50_k400", "--data", str(stores / "uniform"), "--out", str(tmp_path / "r"),
                              "data.workers=0"])  # the recipe's own 224 crop from 40-pixel frames
    assert res.exit_code == 1 and "below the 224-pixel crop" in res.output and "--size 256" in res.output
    res = runner.invoke(cli, ["train", "--recipe", "r2plus1d_perceiver_8b_1c_1s", "--data", str(stores / "fps"), "--out", str(tmp_path / "r"),
                              *SMALL])
    assert res.exit_code == 1 and "is an fps store at 15 fps; the recipe needs a uniform store" in res.output
    assert not (tmp_path / "r").exists()  # refused before anything was written
    with pytest.raises(VidpipeError, match="no recipe 'nope'"):
        recipe_path("nope")


def _train_and_eval(args, tmp_path, eval_args=()):
    runner = CliRunner()
    res = runner.invoke(cli, ["train", *args, "--out", str(tmp_path / "run"), "optim.epochs=1", "data.batch_size=2", "data.val_fraction=0", *SMALL])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["eval", str(tmp_path / "run"), *eval_args])
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "run" / "run.json").read_text())
    return card, res.output


def test_a_feature_head_recipe_runs_end_to_end(stores, tmp_path):
    card, out = _train_and_eval(["--recipe", "resnet_temporal_vit_msr", "--data", str(stores / "r50"), "model_options.dim=32",
                                 "model_options.depth=1", "model_options.heads=2"], tmp_path)
    assert card["config"]["recipe"]["name"] == "resnet_temporal_vit_msr" and card["config"]["recipe"]["published"]["top1"] == 50.0
    assert "top-1" in out
    res = CliRunner().invoke(cli, ["compare", str(tmp_path / "run"), "--split", "test", "--json", str(tmp_path / "c.json"),
                                   "--markdown", str(tmp_path / "c.md")])
    assert res.exit_code == 0 and "published resnet_temporal_vit_msr: top-1 (%) on the test subjects" in res.output
    row = json.loads((tmp_path / "c.json").read_text())["rows"][0]
    assert row["published"] == 50.0 and row["recipe"] == "resnet_temporal_vit_msr" and row["top1"] is not None  # beside this run's
    header = (tmp_path / "c.md").read_text().splitlines()[0]
    assert "| test top-1 | published top-1 (%) |" in header


@pytest.mark.slow
def test_a_clip_recipe_runs_with_amp_off_and_evaluates_by_vote(stores, tmp_path):
    card, out = _train_and_eval(["--recipe", "r2plus1d_perceiver_8b_1c_1s", "--data", str(stores / "uniform"), "init=none", "amp=off",
                                 "data.frames=4", "data.test_clips=2", "model_options.num_latents=8"], tmp_path, ["--fusion", "vote"])
    assert card["config"]["amp"] == "off" and card["config"]["recipe"]["published"]["top1"] == 70.3
    assert "views fused by vote" in out


@pytest.mark.slow
def test_a_recipe_from_a_foreign_checkpoint_runs(stores, tmp_path):
    """timesformer_retnet_ucf101 from its K400 tag's file, given as a Hugging Face TimeSformer folder made here (a
    tiny one, so the run's model options say the same tiny architecture)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.TimesformerConfig(image_size=32, patch_size=8, num_frames=4, hidden_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=128, num_labels=400)
    transformers.TimesformerForVideoClassification(hf_cfg).save_pretrained(tmp_path / "k400")
    card, _ = _train_and_eval(["--recipe", "timesformer_retnet_ucf101", "--data", str(stores / "uniform"), f"init=K400={tmp_path / 'k400'}",
                               "amp=off", "data.frames=4", "data.frame_interval=2", "data.test_crops=1", "model_options.dim=64",
                               "model_options.depth=2", "model_options.heads=4", "model_options.mlp_dim=128", "model_options.patch_size=8",
                               "model_options.image_size=32", "model_options.frames=4"], tmp_path)
    assert card["init"]["layout"] == "hf TimeSformer" and card["init"]["source"].startswith("K400=")
    assert card["config"]["model_options"]["dim"] == 64 and card["inputs"]["augment"]["mean"] == [0.45, 0.45, 0.45]


def test_the_docs_recipe_table_is_the_committed_benchmark_output_for_every_recipe():
    """docs/recipes.md's table is benchmarks/results/recipes.md as benchmarks/recipes.py wrote it, covering every recipe
    (a new recipe means running the script again)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = json.loads((root / "benchmarks" / "results" / "recipes.json").read_text())
    assert [r["recipe"] for r in result["rows"]] == list_recipes()
    assert (root / "benchmarks" / "results" / "recipes.md").read_text().strip() in (root / "docs" / "recipes.md").read_text()
    for row in result["rows"]:
        assert row["published"]["top1"] == load_recipe(row["recipe"]).published.top1


def test_cli_lists_and_shows_recipes():
    runner = CliRunner()
    res = runner.invoke(cli, ["recipes"], terminal_width=400)
    assert res.exit_code == 0 and all(name in res.output for name in list_recipes())
    res = runner.invoke(cli, ["recipes", "tin_r50_sthv1"], terminal_width=400)
    assert res.exit_code == 0 and "44.25" in res.output and "mmaction2" in res.output
    assert "vidpipe extract --dataset sthv1 --root ROOT --frames 32 --size 256 --frame-codec jpeg --out STORE" in res.output
    assert 'model = "tin_r50"' in res.output  # the run config itself
    res = runner.invoke(cli, ["recipes", "nope"])
    assert res.exit_code == 1 and "no recipe 'nope'" in res.output
