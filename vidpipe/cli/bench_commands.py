"""`vidpipe bench ...`: measurements that print a table and write JSON."""

from __future__ import annotations

import platform
from pathlib import Path

import click

from vidpipe.cli import ui
from vidpipe.cli.app import cli


@cli.group("bench")
@ui.threads_option()
def bench():
    """Benchmarks: each prints a table and writes JSON."""


def _bench_sets():
    from vidpipe.bench.extract import BENCH_SETS

    return BENCH_SETS


@bench.command("extract")
@click.option("--work", type=click.Path(file_okay=False), default=None, help="Scratch directory [default: a temp dir].")
@click.option("--videos-per-class", type=click.IntRange(min=1), default=20, help="Videos per class in each generated set (10 classes).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Parallel decoders [default: all CPUs].")
@click.option("--frames", type=click.IntRange(min=1), default=32, help="Frames per stored clip.")
@click.option("--size", type=click.IntRange(min=16), default=128, help="Stored frame height.")
@click.option("--set", "sets", multiple=True, type=ui.LazyChoice(_bench_sets),
              help="Video sets to run (repeat) [default: synthetic and hmdb51-like, plus 720p-h264 where DALI has a GPU].")
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False), help="Where to write the results (JSON).")
def bench_extract_cmd(work, videos_per_class, workers, frames, size, sets, json_path):
    """Extraction videos/s and frames/s vs a bare ffmpeg decode of the same files (the ceiling).

    The 720p-h264 set compares DALI on the GPU with the ffmpeg path; its DALI row is skipped, with the
    reason, where DALI or a GPU is missing.
    """
    from vidpipe.bench.extract import TABLE_COLUMNS, bench_extract, table_rows, write_json

    results = bench_extract(work, videos_per_class, workers, frames, size, sets=sets or None, log=lambda m: ui.console.print(m))
    results["machine"] = platform.platform()
    ui.table(f"extract throughput ({results['workers']} workers on {results['cpus']} CPUs, clips {frames}x{size})",
             TABLE_COLUMNS, results["rows"] and table_rows(results), justify_right_from=2)
    write_json(results, Path(json_path))
    ui.out.print(f"wrote {json_path}")


@bench.command("loader")
@click.option("--dataset", required=True, help="Dataset adapter of the source videos (for the decode-every-epoch row).")
@click.option("--root", required=True, type=click.Path(), help="Dataset root.")
@click.option("--store", "stores", required=True, multiple=True, type=click.Path(file_okay=False),
              help="A store of the same videos, a folder or a URL (s3://, https://: remote rows); repeat for several.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Also time each remote WebDataset store through a shard cache here.")
@click.option("--split", default="train", help="Split to read.")
@click.option("--workers", type=click.IntRange(min=0), default=2, help="DataLoader workers for every row.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, help="Clips per batch.")
@click.option("--clips", type=click.IntRange(min=1), default=400, help="Clips drawn from each store row per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, help="Interleaved rounds over the store rows (the median is reported).")
@click.option("--decode-clips", type=click.IntRange(min=1), default=64, help="Clips drawn in the (slow) decode-every-epoch row.")
@click.option("--sampling", default="1x1x8", help="clip_len x frame_interval x num_clips (1x1x8 = TSN 8 segments).")
@click.option("--train-model", default=None, help="Also measure the data-wait fraction of this clip model's training steps (e.g. r2plus1d_18).")
@click.option("--train-steps", type=click.IntRange(min=1), default=8, show_default=True, help="Training steps timed per loader with --train-model.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Where --train-model steps run.")
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False), help="Where to write the results (JSON).")
def bench_loader_cmd(dataset, root, stores, cache_dir, split, workers, batch_size, clips, rounds, decode_clips, sampling, train_model, train_steps, device,
                     json_path):
    """Clips/s: decode every epoch vs WebDataset and zarr stores vs a raw read of the store files."""
    from vidpipe.datasets import adapters
    from vidpipe.data.augment import AugmentConfig
    from vidpipe.bench.extract import write_json
    from vidpipe.devices import resolve_device

    from vidpipe.bench.loader import bench_loader, table_columns, table_rows
    from vidpipe.data.loaders import ClipConfig
    from vidpipe.data.sampling import Sampling
    from vidpipe.stores.clips import Store

    if train_model:
        from vidpipe.errors import VidpipeError
        from vidpipe.models.registry import model_entry

        if model_entry(train_model).input != "clips":
            raise VidpipeError(f"--train-model {train_model} reads features, not clips; choose a clip model (`vidpipe models`)")
    opened = [Store.open(s) for s in stores]
    manifest = adapters.build_manifest(dataset, root)
    cfg = ClipConfig(sampling=Sampling.parse(sampling), train=True, augment=AugmentConfig(size=112))
    device = resolve_device(device).type
    results = bench_loader(manifest, opened, cfg, split, workers, batch_size, clips, decode_clips, train_model, train_steps, device, rounds, cache_dir)
    results["machine"] = platform.platform()
    t, h, w, _ = results["clip_shape"]
    ui.table(f"loader throughput ({split}, sampling {sampling}, stored clips {t}x{h}x{w}, batch {batch_size})",
             table_columns(results), table_rows(results))
    write_json(results, Path(json_path))
    ui.out.print(f"wrote {json_path}")


@bench.command("features")
@click.option("--store", required=True, type=click.Path(file_okay=False), help="A clip store.")
@click.option("--backbone", "backbones", multiple=True, default=("resnet18", "resnet50", "r2plus1d_18"), help="Backbones to time (repeat).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, help="Videos per forward pass.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Where the backbones run.")
@click.option("--tokens", is_flag=True, help="Also store token maps of frame backbones.")
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False), help="Where to write the results (JSON).")
def bench_features_cmd(store, backbones, batch_size, device, tokens, json_path):
    """Features/s and bytes per video of each backbone over a clip store (random weights: speed only)."""
    from vidpipe.bench.extract import write_json
    from vidpipe.bench.features import bench_features, table_rows

    results = bench_features(store, backbones, batch_size, device, tokens)
    ui.table(f"feature caching over {store} (torch threads {results['torch_threads']})",
             ["backbone", "device", "videos", "videos/s", "frames/s", "stored per video", "bytes/video"], table_rows(results), justify_right_from=2)
    write_json(results, Path(json_path))
    ui.out.print(f"wrote {json_path}")


@bench.command("models")
@click.option("--models", default="timesformer,timesformer_retnet,vivit_fe,tsm_r50,tin_r50", show_default=True,
              help="Comma-separated models (each with its variants: fused/explicit attention, parallel/chunkwise retention, "
                   "ViViT at --preset and the Mini-ViViT, TSM with and without its shift) or variant names.")
@click.option("--frames", default="8,16,32,64", show_default=True, help="Comma-separated frame counts T.")
@click.option("--size", type=click.IntRange(min=16), default=112, show_default=True, help="Input side S (224 is the models' own; CPU: smaller).")
@click.option("--preset", type=click.Choice(["base", "small", "tiny"]), default="base", show_default=True,
              help="Model size preset (models without presets ignore it).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Clips per step.")
@click.option("--steps", type=click.IntRange(min=1), default=2, show_default=True, help="Timed train steps and inference passes per row.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Where the models run.")
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False), help="Where to write the results (JSON); a PNG of memory vs T goes beside it.")
def bench_models_cmd(models, frames, size, preset, batch_size, steps, device, json_path):
    """Parameters, FLOPs, activation and peak memory, step time and clips/s of clip models as T grows."""
    from vidpipe.bench.models import TABLE_COLUMNS, bench_models, plot, table_rows, write_json
    from vidpipe.devices import resolve_device
    from vidpipe.errors import VidpipeError

    variants = _model_variants(models)
    try:
        ts = [int(f) for f in frames.split(",")]
    except ValueError:
        raise VidpipeError(f"--frames takes comma-separated integers like 8,16,32; got '{frames}'") from None
    device = resolve_device(device).type
    results = bench_models(list(dict.fromkeys(variants)), ts, size, batch_size, preset, steps, device, log=lambda m: ui.console.print(m),
                           save=json_path)
    ui.table(f"models ({preset} preset, {size}x{size}, batch {batch_size}, {device}, torch threads {results['torch_threads']})",
             TABLE_COLUMNS, table_rows(results), justify_right_from=1)
    exps = results["summary"]["exponents"]
    if exps:
        ui.table("growth in T (least-squares exponent: 1 linear, 2 quadratic)", ["variant", "activation memory", "FLOPs"],
                 [[v, f"{e['activation_memory']:.2f}", f"{e['gflops']:.2f}"] for v, e in exps.items()])
    write_json(results, Path(json_path))
    png = Path(json_path).with_suffix(".png")
    plot(results, png)
    ui.out.print(f"wrote {json_path} and {png}")


def _model_variants(models: str) -> list[str]:
    """--models of `bench models` / `bench latency`: model names (each with its variants) or variant names."""
    from vidpipe.bench.models import VARIANTS
    from vidpipe.errors import VidpipeError

    names = [m.strip() for m in models.split(",") if m.strip()]
    variants = [v for n in names for v, (model, _, _) in VARIANTS.items() if v == n or model == n]
    if not variants or len(set(names) - {VARIANTS[v][0] for v in variants} - set(variants)):
        raise VidpipeError(f"--models: choose among {', '.join(sorted({m for m, _, _ in VARIANTS.values()}))} or the variants {', '.join(VARIANTS)}")
    return variants


@bench.command("latency")
@click.option("--models", default="squeezetime,r2plus1d_18,tsm_r50,timesformer,vivit_fe", show_default=True,
              help="Comma-separated models (each with its variants, as in `bench models`) or variant names.")
@click.option("--frames", type=click.IntRange(min=1), default=16, show_default=True, help="Frames per clip T.")
@click.option("--sizes", default="112,224", show_default=True, help="Comma-separated input sides S.")
@click.option("--preset", type=click.Choice(["base", "small", "tiny"]), default="base", show_default=True,
              help="Model size preset (models without presets ignore it).")
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True, help="Timed passes per figure (median).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", help="Where PyTorch runs (onnxruntime: CPU).")
@click.option("--no-onnx", is_flag=True, help="Skip the onnxruntime column (no export).")
@click.option("--json", "json_path", required=True, type=click.Path(dir_okay=False), help="Where to write the results (JSON).")
def bench_latency_cmd(models, frames, sizes, preset, steps, device, no_onnx, json_path):
    """Inference latency per clip at batch 1 (PyTorch, onnxruntime) and throughput at batch 8: mobile and deployment figures."""
    from vidpipe.bench.models import LATENCY_COLUMNS, bench_latency, latency_rows, write_json
    from vidpipe.devices import resolve_device
    from vidpipe.errors import VidpipeError

    variants = _model_variants(models)
    try:
        side = [int(s) for s in sizes.split(",")]
    except ValueError:
        raise VidpipeError(f"--sizes takes comma-separated integers like 112,224; got '{sizes}'") from None
    device = resolve_device(device).type
    results = bench_latency(list(dict.fromkeys(variants)), frames, side, preset, steps, device, not no_onnx, log=lambda m: ui.console.print(m))
    ui.table(f"inference latency ({preset} preset, {device}, torch threads {results['torch_threads']})", LATENCY_COLUMNS,
             latency_rows(results), justify_right_from=2)
    write_json(results, Path(json_path))
    ui.out.print(f"wrote {json_path}")
