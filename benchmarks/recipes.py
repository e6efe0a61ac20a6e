"""What this machine can verify of each recipe (`vidpipe recipes`), written as data and as the README's table.

For every recipe:
- its model is built at the recipe's own sizes (on the meta device) and its parameters counted; where the
  recipe's source publishes parameter counts (the R(2+1)D + Perceiver study), they are compared;
- `vidpipe train --recipe NAME --dry-run`'s checks run against a small synthetic store of the mode the recipe
  needs (uniform 32 frames, or 15 fps; resnet50 features from random weights for the feature head), with the crop
  lowered to what that store holds (`data.crop_size=48`); the initialisation check is reported as it is (a tag
  vidpipe cannot download here fails it, with what to pass instead).
- three recipes run end to end for one epoch with size overrides (`SMOKE`): a feature head, a clip model with AMP
  off, and the RetNet hybrid from a tiny Hugging Face TimeSformer folder standing in for its K400 file. Their
  figures are on 10-class synthetic videos at toy sizes: they show the recipe runs, not that it reproduces.

No published figure is reproduced on this machine: a 2-core CPU cannot train these protocols (the datasets and
their weights are not here either). Writes benchmarks/results/recipes.{json,md}.

Usage: .venv/bin/python benchmarks/recipes.py WORK
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from vidpipe.datasets.adapters import build_manifest
from vidpipe.datasets.synth import SynthConfig, synth
from vidpipe.models import create_model
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.stores.features import FeatureConfig, cache_features
from vidpipe.train.config import load_config
from vidpipe.train.evaluate import evaluate_checkpoint
from vidpipe.train.loop import train
from vidpipe.train.recipes import check_run, list_recipes, load_recipe, recipe_path

FIT = ["data.crop_size=48", "data.workers=2", "device=cpu"]  # what the synthetic stand-in stores can feed
TINY_TIMESFORMER = ["model_options.dim=64", "model_options.depth=2", "model_options.heads=4", "model_options.mlp_dim=128",
                    "model_options.patch_size=8", "model_options.image_size=48", "model_options.frames=4"]
SMOKE = {  # recipe -> (store, overrides): one epoch at toy sizes
    "resnet_temporal_vit_msr": ("r50", ["model_options.dim=64", "model_options.depth=2", "model_options.heads=4"]),
    "r2plus1d_perceiver_8b_1c_1s": ("uniform", ["init=none", "amp=off", "data.frames=8", "data.test_clips=2", "model_options.num_latents=32"]),
    "timesformer_retnet_ucf101": ("uniform", ["init=K400={hf}", "amp=off", "data.frames=4", "data.frame_interval=2", "data.test_crops=1",
                                              *TINY_TIMESFORMER]),
}
SMOKE_SETTINGS = ["optim.epochs=1", "data.batch_size=4"]


def stores(work: Path) -> dict:
    if not (work / "data").exists():
        synth(work / "data", SynthConfig(videos_per_class=6, frames=32, seed=5))
    m = build_manifest("synthetic", work / "data")
    made = {"uniform": work / "uniform", "fps": work / "fps", "r50": work / "r50"}
    extract(m, made["uniform"], ExtractConfig(frames=32, size=64))
    extract(m, made["fps"], ExtractConfig(fps=15.0, size=64))
    extract(m, work / "uniform16", ExtractConfig(frames=16, size=64))
    if not (made["r50"] / "store.json").is_file():
        cache_features(work / "uniform16", made["r50"], FeatureConfig(backbone="resnet50", weights="random", device="cpu"))
    return made


def hf_timesformer(work: Path) -> Path:
    """A tiny Hugging Face TimeSformer folder (400 classes) standing in for facebook/timesformer-base-finetuned-k400."""
    import transformers

    folder = work / "hf-timesformer-tiny"
    if not folder.exists():
        torch.manual_seed(0)
        cfg = transformers.TimesformerConfig(image_size=48, patch_size=8, num_frames=4, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=128, num_labels=400)
        transformers.TimesformerForVideoClassification(cfg).save_pretrained(folder)
    return folder


def parameters(recipe, cfg) -> dict:
    with torch.device("meta"):
        model = create_model(cfg.model, num_classes=51, in_dim=2048 if recipe.store.backbone else None, options=cfg.model_options)
    total = sum(p.numel() for p in model.parameters())
    out = {"params_m_51_classes": round(total / 1e6, 2)}
    prefixes = getattr(model, "backbone_prefixes", None)
    if prefixes:
        backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))
        out.update(backbone_params_m=round(backbone / 1e6, 2), head_params_m=round((total - backbone) / 1e6, 2))
    return out


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    made = stores(work)
    rows = []
    for name in list_recipes():
        recipe = load_recipe(name)
        data = made["r50" if recipe.store.backbone else "fps" if recipe.store.mode == "fps" else "uniform"]
        overrides = FIT + (["init=none"] if recipe.init_required else [])
        cfg = load_config(recipe_path(name), overrides, flags={"data.path": ("--data", str(data))})
        checks = check_run(recipe, cfg)
        row = {"recipe": name, "title": recipe.title, "dataset": recipe.store.dataset, "model": recipe.model, "init": recipe.weights_needed(),
               "published": {"top1": recipe.published.top1, "metric": recipe.published.metric, "protocol": recipe.published.protocol,
                             **recipe.published.extra},
               "store_command": recipe.store.commands(), **parameters(recipe, cfg),
               "dry_run": [{"what": c.what, "ok": c.ok, "detail": c.detail.replace(str(work), "WORK")} for c in checks],
               "dry_run_stand_in": data.name}
        rows.append(row)
        print(f"{name}: {'store ok' if all(c.ok for c in checks if c.what != 'init') else 'STORE CHECK FAILS'}; "
              f"init {'ok' if all(c.ok for c in checks if c.what == 'init') else 'needs a file'}")
    hf = hf_timesformer(work)
    for name, (store, overrides) in SMOKE.items():
        run = work / f"smoke-{name}"
        overrides = [o.format(hf=hf) for o in overrides]
        cfg = load_config(recipe_path(name), [*FIT, *SMOKE_SETTINGS, *overrides], flags={"data.path": ("--data", str(made[store]))})
        t0 = time.perf_counter()
        train(cfg, run, resume=run.exists(), log=print)
        metrics = evaluate_checkpoint(run, split="test", fusion="vote" if name.startswith("r2plus1d") else "mean")["metrics"]
        row = next(r for r in rows if r["recipe"] == name)
        row["smoke"] = {"overrides": [o.replace(str(work), "WORK") for o in [*FIT, *SMOKE_SETTINGS, *overrides]], "store": store,
                        "seconds": round(time.perf_counter() - t0, 1), "test_top1": metrics["top1"], "test_videos": metrics["videos"],
                        "note": "1 epoch on 10-class synthetic videos at toy sizes: shows the recipe runs, not a reproduction"}
    result = {"machine": platform.platform(), "cpus": torch.get_num_threads(), "rows": rows,
              "reproduced_here": "none: no published figure was reproduced on this machine (2-core CPU, no datasets, no hub access)"}
    out = Path(__file__).parent / "results" / "recipes"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    print(f"wrote {out}.json and .md")


def verified(row: dict) -> str:
    store_ok = all(c["ok"] for c in row["dry_run"] if c["what"] != "init")
    said = [f"dry run on a synthetic {row['dry_run_stand_in']} stand-in: store checks {'pass' if store_ok else 'FAIL'}"]
    init = next(c for c in row["dry_run"] if c["what"] == "init")
    said.append("init check passes" if init["ok"] else "init needs a file passed by hand")
    published = row["published"]
    if "head_params_m" in published and "head_params_m" in row:
        same = abs(published["head_params_m"] - row["head_params_m"]) < 0.01
        said.append(f"head {row['head_params_m']:.2f} M params vs published {published['head_params_m']:.2f} M ({'same' if same else 'DIFFERENT'})")
    if "cnn_params_m" in published and "backbone_params_m" in row:
        same = abs(published["cnn_params_m"] - row["backbone_params_m"]) < 0.01
        said.append(f"CNN {row['backbone_params_m']:.2f} M vs published {published['cnn_params_m']:.2f} M ({'same' if same else 'DIFFERENT'})")
    if "smoke" in row:
        said.append(f"1-epoch smoke run + eval ({row['smoke']['seconds']:.0f} s)")
    return "; ".join(said)


def to_markdown(result: dict) -> str:
    lines = ["| recipe | dataset | model | published top-1 (%) | params (M) | verified on this machine (CPU only) |",
             "| --- | --- | --- | ---: | ---: | --- |"]
    for r in result["rows"]:
        top1 = "-" if r["published"]["top1"] is None else f"{r['published']['top1']:g}"
        lines.append(f"| {r['recipe']} | {r['dataset']} | {r['model']} | {top1} | {r['params_m_51_classes']:.2f} | {verified(r)} |")
    return "\n".join(lines) + f"\n\nPublished figures are the sources' own, in their protocols (`vidpipe recipes NAME`); {result['reproduced_here']}.\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path)
    main(parser.parse_args().work)
