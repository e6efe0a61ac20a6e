"""`vidpipe cache-features`: frozen backbone features, computed once."""

from __future__ import annotations

import click

from vidpipe.cli import ui
from vidpipe.cli.app import cli


def _backbones():
    from vidpipe.models.backbones import BACKBONES

    return BACKBONES


@cli.command("cache-features")
@click.option("--store", required=True, type=click.Path(file_okay=False), help="A clip store from `vidpipe extract`.")
@click.option("--backbone", type=ui.LazyChoice(_backbones), default="resnet50", help="Frozen torchvision backbone.")
@click.option("--weights", default="DEFAULT",
              help="torchvision weights name (IMAGENET1K_V2, KINETICS400_V1, DEFAULT), NAME=PATH (a local copy of that file), "
                   "a .pth/.safetensors PATH, or random.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Feature store directory.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, help="Videos per forward pass.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Where the backbone runs.")
@click.option("--tokens", is_flag=True, help="Also store spatial token maps (frame backbones; clip backbones always store them).")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", help="Storage precision.")
@click.option("--overwrite", is_flag=True, help="Replace a feature store made with other settings.")
@ui.threads_option()
def cache_features_cmd(store, backbone, weights, out, batch_size, device, tokens, dtype, overwrite):
    """Run a frozen backbone once over every stored clip and store its features."""
    from vidpipe.stores.features import FeatureConfig, cache_features
    from vidpipe.stores.clips import Store

    cfg = FeatureConfig(backbone=backbone, weights=weights, tokens=tokens or _backbones()[backbone][0] == "clip",
                        batch_size=batch_size, device=device, dtype=dtype)
    total = sum(e["count"] for e in Store.open(store).index["splits"].values())
    with ui.progress_bar(total, "features") as advance:
        report = cache_features(store, out, cfg, overwrite=overwrite, progress=advance)
    s = report.summary
    if report.nothing_to_do:
        ui.out.print(f"nothing to do: {out} already holds these features")
    if s["random_weights"]:
        ui.warn("RANDOM weights (--weights random): these features are for demos and tests, not for accuracy numbers")
    rate = report.frames / report.seconds if report.seconds and report.frames else 0
    rows = [[split, e["count"], "x".join(map(str, s["features"]["shape"])),
             f"{sum(f['bytes'] for f in e['files']) / 2**20:.1f} MB"] for split, e in s["splits"].items()]
    ui.table(f"{backbone} features ({s['weights']['id']}, {s['dtype']}) -> {out}", ["split", "videos", "per video", "bytes"], rows)
    if rate:
        ui.out.print(f"{ui.plural(report.videos, 'video')} in {report.seconds:.1f}s: {ui.two_figures(report.videos / report.seconds)} videos/s, "
                     f"{ui.two_figures(rate)} frames/s")
