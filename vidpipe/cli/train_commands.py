"""Commands that train and evaluate: models, train, eval."""

from __future__ import annotations

import click

from vidpipe.cli import ui
from vidpipe.cli.main import cli

INPUT_HELP = {"frame_features": "frame features (B, T, D)", "clip_tokens": "clip tokens (B, C, D, t, h, w)",
              "clips": "clips (B, 3, T, H, W)"}


@cli.command("models")
@click.option("--classes", type=click.IntRange(min=1), default=51, help="Classes to size the classifier for the parameter count.")
@click.option("--in-dim", type=click.IntRange(min=1), default=2048, help="Feature width for feature models (2048 = resnet50, 512 = resnet18/r2plus1d_18).")
def models_cmd(classes, in_dim):
    """List registered models, their parameter counts and the input each expects."""
    from vidpipe.models import count_params, create_model, list_models, model_entry

    rows = []
    for name in list_models():
        e = model_entry(name)
        width = 512 if e.input == "clip_tokens" else in_dim
        rows.append([name, f"{count_params(create_model(name, classes, width)) / 1e6:.2f} M", INPUT_HELP[e.input], e.description])
    ui.table(f"models (parameters for {classes} classes)", ["name", "params", "input", "what"], rows, justify_right_from=1)


@cli.command("train", context_settings={"ignore_unknown_options": True})
@click.option("--model", required=True, help="A registered model (see `vidpipe models`).")
@click.option("--data", "data_path", required=True, type=click.Path(file_okay=False), help="Feature store or clip store.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML or YAML run config.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.argument("overrides", nargs=-1)
def train_cmd(model, data_path, out, config_path, resume, overrides):
    """Train a model. Extra arguments are dotted overrides: optim.lr=3e-4 data.frames=16 model_options.depth=4"""
    from vidpipe.train.config import load_config
    from vidpipe.train.loop import train

    cfg = load_config(config_path, list(overrides), base={"model": model, "data": {"path": data_path}})
    summary = train(cfg, out, resume=resume, log=lambda m: ui.console.print(m))
    if summary:
        last, best = summary["last"], summary["best"]
        v = last["val"]
        val_cells = [f"{v['top1']:.3f}", f"{v['top5']:.3f}", f"{v['mean_class_acc']:.3f}", f"{v['macro_f1']:.3f}"] if v else ["-"] * 4
        chosen = f"best val top-1 {best['top1']:.3f} (epoch {best['epoch']})" if best else "last epoch (no val split)"
        ui.table(f"{model} -> {out}; val = {summary['selection']['split'] or 'none'}",
                 ["epoch", "val top-1", "top-5", "mean-class", "macro-F1", "checkpoint for eval", "clips/s", "data wait", "peak MB"],
                 [[last["epoch"], *val_cells, chosen, f"{last['clips_per_s']:.0f}", f"{100 * last['data_wait_fraction']:.0f}%",
                   f"{last['peak_memory_mb']:.0f}"]], justify_right_from=0)


@cli.command("eval")
@click.argument("run_or_checkpoint", type=click.Path())
@click.option("--data", "data_path", type=click.Path(file_okay=False), help="Store to evaluate on [default: the training data].")
@click.option("--split", default=None, help="Split [default: test if present, else val]; val on a store without one is the run's carve of train.")
@click.option("--out", type=click.Path(file_okay=False), help="Report directory [default: RUN/eval-SPLIT].")
@click.option("--test-clips", type=click.IntRange(min=1), default=None, help="Clip stores: clips per video, averaged.")
@click.option("--test-crops", type=click.Choice(["1", "3"]), default=None, help="Clip stores: 1 centre or 3 spatial crops.")
def eval_cmd(run_or_checkpoint, data_path, split, out, test_clips, test_crops):
    """Evaluate a checkpoint: top-1/top-5, mean-class accuracy, macro-F1, per-class CSV, confusion PNG."""
    from vidpipe.train.evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(run_or_checkpoint, data_path, split, out, test_clips, int(test_crops) if test_crops else None)
    m = r["metrics"]
    if r["random_weights_features"]:
        ui.warn("features from RANDOM backbone weights: a demo number, not an accuracy claim")
    ui.out.print(f"checkpoint: {r['checkpoint']}, chosen by {r['chosen_by']}")
    ui.table(f"{r['model']} on {r['split']} ({m['videos']} videos) -> {r['out']}", ["top-1", "top-5", "mean-class acc", "macro-F1", "loss"],
             [[f"{m['top1']:.3f}", f"{m['top5']:.3f}", f"{m['mean_class_acc']:.3f}", f"{m['macro_f1']:.3f}", f"{m['loss']:.3f}"]],
             justify_right_from=0)
