"""Commands that describe and prepare datasets: datasets, manifest, synth."""

from __future__ import annotations

from pathlib import Path

import click

from vidpipe.cli import ui
from vidpipe.cli.app import cli
from vidpipe.datasets import adapters, cards, synth as synth_mod


@cli.command("datasets")
@click.option("--verbose", "-v", is_flag=True, help="Also print each card's layout.")
def datasets_cmd(verbose):
    """List dataset adapters with their cards."""
    rows = []
    for name in adapters.ADAPTERS:
        card = cards.load_card(name)
        exp = card.get("expected", {})
        counts = " / ".join(f"{s} {v['total'] if not isinstance(v.get('total'), dict) else v['total'].get('1')}"
                            for s, v in exp.items() if "total" in v)
        rows.append([name, card.get("title", ""), card.get("classes", "any"), counts or "-"])
    ui.table("dataset adapters (cards in manifests/)", ["name", "dataset", "classes", "expected videos"], rows, justify_right_from=2)
    if verbose:
        for name in adapters.ADAPTERS:
            card = cards.load_card(name)
            ui.out.print(f"\n[bold]{name}[/bold]\n  {card['layout'].strip()}\n  {card.get('notes', '')}")


@cli.command("manifest")
@click.option("--dataset", required=True, type=click.Choice(list(adapters.ADAPTERS)), help="Dataset adapter.")
@click.option("--root", required=True, type=click.Path(), help="Dataset root in its official layout.")
@click.option("--split", type=click.IntRange(1, 3), default=None, help="Official split number (HMDB51, UCF101: 1-3; default 1).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="`folder` only: the fraction of each class carved into val (at least one video of a class of two or more) [0.2].")
@click.option("--frame-fps", type=click.FloatRange(0, 1000, min_open=True), default=None,
              help="Frame-folder datasets: the rate the frames were extracted at [sthv1: 12, rawframes: 30].")
@click.option("-o", "--output", required=True, type=click.Path(), help="Manifest file to write (JSONL).")
@click.option("--per-class", is_flag=True, help="Print the count of every class, not just the totals.")
def manifest_cmd(dataset, root, split, val_fraction, frame_fps, output, per_class):
    """Write a manifest (one JSON line per video) and print counts per split and class."""
    m = adapters.build_manifest(dataset, root, split, val_fraction=val_fraction, frame_fps=frame_fps)
    m.write(output)
    counts = m.counts()
    splits = list(counts)
    rows = [[c] + [counts[s][c] for s in splits] for c in m.classes] if per_class else []
    rows.append(["[bold]total[/bold]"] + [sum(counts[s].values()) for s in splits])
    ui.table(f"{dataset} -> {output}", ["class"] + splits, rows)
    for w in cards.check_against_card(m, cards.load_card(dataset)):
        ui.warn(w)
    if note := m.small_val():
        ui.warn(note)
    if m.missing:
        ui.warn(f"missing videos are listed in the manifest header, e.g. {m.missing[0]['id']}")


@cli.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--videos-per-class", type=click.IntRange(min=2), default=20, help="Videos per class (70 % train, 30 % test).")
@click.option("--codec", type=click.Choice(["h264", "vp9", "mpeg4"]), default="h264", help="Video codec (mp4 / webm / Xvid avi).")
@click.option("--size", default="128x96", help="Frame size WxH (even numbers).")
@click.option("--frames", type=click.IntRange(min=4), default=48,
              help="Frames per video (48: an odd multiple of the 16 the synthetic card stores, so stored pairs stay exact reversals).")
@click.option("--seed", default=0, help="Random seed; the output is deterministic for a seed.")
@click.option("--workers", type=click.IntRange(min=1), default=2, help="Parallel encoders.")
def synth_cmd(out, videos_per_class, codec, size, frames, seed, workers):
    """Write the synthetic temporal-order dataset (classes that differ only in time order)."""
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WxH such as 128x96, got '{size}'", param_hint="--size") from None
    cfg = synth_mod.SynthConfig(videos_per_class=videos_per_class, codec=codec, width=width, height=height, frames=frames, seed=seed)
    total = len(synth_mod.CLASSES) * videos_per_class
    with ui.progress_bar(total, "synth") as advance:
        summary = synth_mod.synth(out, cfg, workers=workers, progress=advance)
    ui.table(
        f"synthetic dataset -> {Path(out)}",
        ["classes", "train / class", "test / class", "codec", "size", "frames"],
        [[len(summary["classes"]), summary["train_per_class"], summary["test_per_class"], codec, f"{width}x{height}", frames]],
        justify_right_from=0,
    )
