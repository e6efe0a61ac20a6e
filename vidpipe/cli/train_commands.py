"""Commands that train and evaluate: models, train, eval."""

from __future__ import annotations

import dataclasses
import typing

import click

from vidpipe.cli import ui
from vidpipe.cli.app import cli

def _sampling(entry) -> str:
    t = entry.transforms
    if t is None:
        return "every stored clip's tokens"
    if entry.input == "frame_features":
        return f"TSN {t.frames} segments of the stored features"
    return t.describe()


def _options(config) -> list[list[str]]:
    """(option, type, default) of a model config; a default the config resolves (a preset's width, say,
    declared as 0) is shown resolved."""
    hints = typing.get_type_hints(config)
    resolved = config()
    rows = []
    for f in dataclasses.fields(config):
        declared = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        value = getattr(resolved, f.name)
        shown = repr(value) if value == declared else f"{value!r} (preset {resolved.preset})" if hasattr(resolved, "preset") else repr(value)
        kind = str(hints[f.name]).replace("typing.", "") if not isinstance(hints[f.name], type) else hints[f.name].__name__
        rows.append([f.name, kind, shown])
    return rows


@cli.command("models")
@click.argument("name", required=False)
@click.option("--classes", type=click.IntRange(min=1), default=51, help="Classes to size the classifier for the parameter count.")
@click.option("--in-dim", type=click.IntRange(min=1), default=2048, help="Feature width for feature models (2048 = resnet50, 512 = resnet18/r2plus1d_18).")
def models_cmd(name, classes, in_dim):
    """List registered models (input, default sampling and transforms, parameters, weights tags), or
    show one model's options and weights records."""
    import torch

    from vidpipe.models import count_params, create_model, list_models, model_entry
    from vidpipe.models.registry import INPUTS

    def params(e) -> str:
        with torch.device("meta"):  # shapes only: nothing is allocated or downloaded
            width = None if e.input == "clips" else 512 if e.input == "clip_tokens" else in_dim
            return f"{count_params(create_model(e.name, num_classes=classes, in_dim=width)) / 1e6:.2f} M"

    if name is None:
        rows = [[e.name, INPUTS[e.input], _sampling(e), "\n".join(w.tag for w in e.weights) or "-", params(e)]
                for e in map(model_entry, list_models())]
        ui.table(f"models (parameters for {classes} classes); `vidpipe models NAME` shows one model's options and weights",
                 ["name", "input", "default sampling and transforms", "weights tags", "params"], rows, justify_right_from=4)
        return
    e = model_entry(name)
    ui.out.print(f"{e.name}: {e.description}\ninput: {INPUTS[e.input]}; default sampling and transforms: {_sampling(e)}; "
                 f"{params(e)} parameters for {classes} classes; checkpoint layouts: {', '.join(lay.name for lay in e.layouts)}")
    ui.table(f"{e.name} options (model_options.NAME=VALUE)", ["option", "type", "default"], _options(e.config), justify_right_from=3)
    if e.weights:
        ui.table(f"{e.name} weights (init=TAG or init=TAG=PATH in training, or load_pretrained('{e.name}', TAG))",
                 ["tag", "source", "transforms", "classes", "reported"],
                 [[w.tag, w.source, w.transforms.describe(), w.num_classes, _reported(w.meta)] for w in e.weights],
                 justify_right_from=5)


def _reported(meta: dict) -> str:
    """'77.9 top-1 on Kinetics-400 (protocol)', or the dataset alone where nothing is reported."""
    dataset = meta.get("dataset", "?")
    if "top1" not in meta:
        return dataset
    return f"{meta['top1']} top-1 on {dataset}" + (f" ({meta['protocol']})" if meta.get("protocol") else "")


class TrainCommand(click.Command):
    """`vidpipe train --model NAME --help` ends with that model's options."""

    def parse_args(self, ctx, args):
        for i, arg in enumerate(args):
            if arg == "--model" and i + 1 < len(args):
                ctx.meta["model"] = args[i + 1]
            elif arg.startswith("--model="):
                ctx.meta["model"] = arg.split("=", 1)[1]
        return super().parse_args(ctx, args)

    def format_epilog(self, ctx, formatter):
        super().format_epilog(ctx, formatter)
        name = ctx.meta.get("model")
        if not name:
            formatter.write_paragraph()
            formatter.write_text("`vidpipe train --model NAME --help` lists that model's options.")
            return
        from vidpipe.models import model_entry

        e = model_entry(name)
        with formatter.section(f"Options of {name} (model_options.NAME=VALUE)"):
            formatter.write_dl([(o, f"{tp}, default {default}") for o, tp, default in _options(e.config)])


@cli.command("train", cls=TrainCommand, context_settings={"ignore_unknown_options": True})
@click.option("--model", help="A registered model (see `vidpipe models`) [default: the recipe's or config's].")
@click.option("--data", "data_path", type=click.Path(file_okay=False), help="Feature store or clip store (a folder, or a clip store's URL: "
              "s3://, gs://, az://, https://) [with --resume: the run's].")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="A bucket's WebDataset store: keep its shards here after their first read (data.cache_dir).")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML or YAML run config.")
@click.option("--recipe", help="Start from a recipe (`vidpipe recipes`): its model, init and schedule; overrides go on top.")
@click.option("--dry-run", is_flag=True, help="Print the resolved settings and whether the store and init fit the recipe; train nothing.")
@click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped, with its saved settings "
              "(overrides may change only optim.epochs, data.workers, data.path, threads and device).")
@click.argument("overrides", nargs=-1)
def train_cmd(model, data_path, cache_dir, out, config_path, recipe, dry_run, resume, overrides):
    """Train a model. Extra arguments are dotted overrides: optim.lr=3e-4 data.frames=16 model_options.depth=4"""
    from vidpipe.errors import VidpipeError
    from vidpipe.train.config import as_today, load_config, resolved_settings
    from vidpipe.train.loop import train
    from vidpipe.train.rundir import RunDir
    from vidpipe.train.metrics import two_figures
    from vidpipe.train.recipes import check_run, load_recipe, recipe_path

    if recipe and config_path:
        raise VidpipeError("--recipe and --config both give the run's settings; pass one (a recipe is a config file too)")
    if recipe:
        config_path = recipe_path(recipe)
    if not (out or dry_run):
        raise VidpipeError("--out RUN is required (or --dry-run)")
    saved = RunDir(out).read_card() if resume and out and not config_path else None
    if not (model or config_path or saved):
        raise VidpipeError("pass --model NAME, --recipe NAME or --config FILE (or --resume a run in --out)")
    if not (data_path or saved):
        raise VidpipeError("--data STORE is required (a feature store or a clip store)")
    flags = {**({"data.path": ("--data", data_path)} if data_path else {}), **({"model": ("--model", model)} if model else {}),
             **({"data.cache_dir": ("--cache-dir", cache_dir)} if cache_dir else {})}
    # a resumed run starts from its saved settings: the command line adds only what it changes
    cfg = load_config(config_path, list(overrides), base=as_today(saved["config"]) if saved else None, flags=flags, log=ui.warn)
    if cfg.recipe:
        checks = check_run(load_recipe(config_path), cfg)
        failing = [c for c in checks if not c.ok]
        if dry_run:
            ui.out.print(f"recipe {cfg.recipe['name']}: {cfg.recipe['title']}\nresolved: {resolved_settings(cfg)}")
            ui.table(f"checks against {data_path}", ["", "check", "detail"],
                     [["ok" if c.ok else "NO", c.what, c.detail] for c in checks], justify_right_from=3)
            if failing:
                raise VidpipeError(f"{len(failing)} check(s) fail; first: {failing[0].detail}")
            return
        if failing:
            raise VidpipeError(f"recipe {cfg.recipe['name']}: {failing[0].detail}")
    elif dry_run:
        ui.out.print(f"resolved: {resolved_settings(cfg)}")
        return
    model = cfg.model
    summary = train(cfg, out, resume=resume, log=lambda m: ui.console.print(m))
    if summary:
        last, best = summary["last"], summary["best"]
        v = last["val"]
        val_cells = [f"{v['top1']:.3f}", f"{v['top5']:.3f}", f"{v['mean_class_acc']:.3f}", f"{v['macro_f1']:.3f}"] if v else ["-"] * 4
        chosen = f"best val top-1 {best['top1']:.3f} (epoch {best['epoch']})" if best else "last epoch (no val split)"
        ui.table(f"{model} -> {out}; val = {summary['selection']['split'] or 'none'}",
                 ["epoch", "val top-1", "top-5", "mean-class", "macro-F1", "checkpoint for eval", "clips/s", "data wait", "peak MB"],
                 [[last["epoch"], *val_cells, chosen, two_figures(last['clips_per_s']), f"{100 * last['data_wait_fraction']:.0f}%",
                   f"{last['peak_memory_mb']:.0f}"]], justify_right_from=0)


@cli.command("eval")
@click.argument("run_or_checkpoint", type=click.Path())
@click.option("--data", "data_path", type=click.Path(file_okay=False), help="Store to evaluate on, a folder or a URL [default: the training data].")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="A bucket's WebDataset store: keep its shards here.")
@click.option("--split", default=None, help="Split [default: test if present, else val]; val on a store without one is the run's carve of train.")
@click.option("--out", type=click.Path(file_okay=False), help="Report directory [default: RUN/eval-SPLIT].")
@click.option("--test-clips", type=click.IntRange(min=1), default=None, help="Clip stores: clips per video, averaged.")
@click.option("--test-crops", type=click.Choice(["1", "3"]), default=None, help="Clip stores: 1 centre or 3 spatial crops.")
@click.option("--fusion", type=click.Choice(["mean", "vote"]), default="mean", show_default=True,
              help="How a video's views make its prediction: mean softmax scores, or the majority vote of their argmaxes.")
@ui.threads_option(apply=False)
def eval_cmd(run_or_checkpoint, data_path, cache_dir, split, out, test_clips, test_crops, fusion, threads):
    """Evaluate a checkpoint: top-1/top-5, mean-class accuracy, macro-F1, per-class CSV, confusion PNG."""
    from vidpipe.train.evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(run_or_checkpoint, data_path, split, out, test_clips, int(test_crops) if test_crops else None, fusion=fusion,
                            threads=threads, cache_dir=cache_dir)
    m = r["metrics"]
    if r["random_weights_features"]:
        ui.warn("features from RANDOM backbone weights: a demo number, not an accuracy claim")
    ui.out.print(f"checkpoint: {r['checkpoint']}, chosen by {r['chosen_by']}")
    top5 = len(r["classes"]) > 5  # with 5 classes or fewer, top-5 is 1 by construction
    ui.table(f"{r['model']} on {r['split']} ({m['videos']} videos, views fused by {fusion}) -> {r['out']}",
             ["top-1", *(["top-5"] if top5 else []), "mean-class acc", "macro-F1", "loss"],
             [[f"{m['top1']:.3f}", *([f"{m['top5']:.3f}"] if top5 else []), f"{m['mean_class_acc']:.3f}", f"{m['macro_f1']:.3f}", f"{m['loss']:.3f}"]],
             justify_right_from=0)


@cli.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--split", default=None, help="Whose `vidpipe eval` figures to show (RUN/eval-SPLIT, else its vote-fusion "
              "RUN/eval-SPLIT-vote) [default: test, else the split the runs were evaluated on].")
@click.option("--sort", default="top1", show_default=True, help="Column to sort by, descending: top1, val_top1, params_m, epoch_s, ...")
@click.option("--markdown", type=click.Path(dir_okay=False), callback=ui.output_file, help="Write the table as Markdown.")
@click.option("--png", type=click.Path(dir_okay=False), callback=ui.output_file, help="Write a bar chart of the sort column.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), callback=ui.output_file, help="Write the rows as JSON.")
@click.option("--force", is_flag=True, help="Compare runs trained on different data; they are marked *.")
def compare_cmd(runs, split, sort, markdown, png, json_out, force):
    """Runs side by side: the options that differ, parameters, val and test metrics with their checkpoint, speed, memory."""
    import json

    from vidpipe.files import write_text_atomic
    from vidpipe.train.compare import compare_runs, plot_bars, table_rows, to_markdown

    result = compare_runs(list(runs), split=split, sort=sort, force=force)
    split = result["split"]
    if result["note"]:
        ui.warn(result["note"])
    heads, cells = table_rows(result, sources=False)
    ui.table(f"{len(cells)} runs, sorted by {sort}", heads, cells, justify_right_from=2 + len(result["differing"]))
    for r in result["rows"]:
        ui.out.print(f"{r['run']}: val top-1 from {r['val_from']}; {split} figures from {r['from']}")
        if "published_as" in r:
            ui.out.print(f"{r['run']}: published {r['published_as']}")
    if result["marked"]:
        ui.warn(f"* trained on other data than {result['rows'][0]['run']}: figures are not comparable")
    if markdown:
        write_text_atomic(markdown, to_markdown(result))
    if png and not plot_bars(result, png):
        ui.warn(f"no run has a {sort} figure on {split}: no chart written to {png}")
        png = None
    if json_out:
        write_text_atomic(json_out, json.dumps(result, indent=2) + "\n")
    for path in (markdown, png, json_out):
        if path:
            ui.out.print(f"wrote {path}")


@cli.command("export")
@click.argument("run_or_checkpoint", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx", help="What to export to.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="The exported file; FILE.json beside it describes its input.")
@click.option("--opset", type=click.IntRange(min=11), default=17, help="ONNX opset.")
def export_cmd(run_or_checkpoint, fmt, out, opset):
    """Export a trained clip model (the checkpoint val chose) to ONNX or TorchScript, checked against PyTorch."""
    from vidpipe.train.export import export_model

    s = export_model(run_or_checkpoint, fmt, out, opset=opset)
    i = s["input"]
    ui.table(f"{s['model']} -> {out} ({fmt})", ["input", "mean / std", "sampling", "classes", "max |export - PyTorch|", "checked with"],
             [[f"{i['layout']} = (B, 3, {i['shape'][2]}, {i['shape'][3]}, {i['shape'][4]})", f"{i['mean']} / {i['std']}", i["sampling"],
               len(s["classes"]), f"{s['check']['max_abs_diff']:.2e}", s["check"]["runner"]]], justify_right_from=3)
    ui.out.print(f"wrote {out} and {out}.json")


@cli.command("recipes")
@click.argument("name", required=False)
def recipes_cmd(name):
    """List the recipes (the seed systems' experiments), or show one: its source, store, init, schedule and published result."""
    from vidpipe.train.recipes import list_recipes, load_recipe

    if name is None:
        rows = []
        for n in list_recipes():
            r = load_recipe(n)
            rows.append([n, r.model, r.store.describe(), r.weights_needed(), "-" if r.published.top1 is None else f"{r.published.top1:g}"])
        ui.table("recipes: `vidpipe recipes NAME` shows one (the exact commands); `vidpipe train --recipe NAME --data STORE --out RUN` runs it",
                 ["recipe", "model", "store it needs", "weights", "published top-1 (%)"], rows, justify_right_from=4)
        return
    r = load_recipe(name)
    p = r.published
    ui.out.print(f"[bold]{r.name}[/bold]: {r.title}\nsource: {r.source}\n"
                 f"published: {p.describe()}; protocol: {p.protocol}" + "".join(f"; {k} {v}" for k, v in p.extra.items()))
    if r.notes:
        ui.out.print(f"notes: {r.notes}")
    ui.out.print(f"1. store: {r.store.extract_command()}")
    step = 2
    if r.store.backbone:
        ui.out.print(f"2. features: {r.store.cache_command()}")
        step = 3
    data = "FEATURES" if r.store.backbone else "STORE"
    ui.out.print(f"{step}. train: vidpipe train --recipe {r.name} --data {data} --out RUN  (init {r.init}; `--dry-run` checks first)")
    ui.out.print(f"\n{r.path.read_text().split('[recipe]')[0].strip()}", markup=False, highlight=False)
