"""Commands that build and check stores: extract, inspect, verify."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import click

from vidpipe.cli import ui
from vidpipe.cli.app import cli
from vidpipe.errors import VidpipeError
from vidpipe.datasets import adapters, cards
from vidpipe.stores.extract import BACKENDS, FORMATS, FRAME_CODECS, ExtractConfig, extract, finalize
from vidpipe.datasets.manifest import Manifest
from vidpipe.stores.clips import Store
from vidpipe.stores.remote import is_url, shown


@cli.command("extract")
@click.option("--dataset", type=click.Choice(list(adapters.ADAPTERS)), help="Dataset adapter (with --root).")
@click.option("--root", type=click.Path(), help="Dataset root in its official layout.")
@click.option("--split", type=int, default=None, help="Official split number (HMDB51, UCF101).")
@click.option("--frame-fps", type=click.FloatRange(0, 1000, min_open=True), default=None,
              help="Frame-folder datasets (with --root): the rate the frames were extracted at [sthv1: 12, rawframes: 30].")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="`folder` (with --root): the fraction of each class carved into val [0.2].")
@click.option("--manifest", "manifest_path", type=click.Path(), help="A manifest from `vidpipe manifest`, instead of --dataset/--root.")
@click.option("--out", type=click.Path(file_okay=False), help="Store directory.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="webdataset", help="Store format.")
@click.option("--frames", type=click.IntRange(min=1), default=None, help="Frames per video, spread over the whole video [default: the dataset card's, else 32].")
@click.option("--fps", type=click.FloatRange(0, 120, min_open=True), default=None,
              help="fps mode instead: every video resampled to this constant rate (15 is the common choice), T = duration x fps.")
@click.option("--max-seconds", type=click.FloatRange(0, min_open=True), default=None, help="fps mode: longer videos keep a centred window this long [default: 10].")
@click.option("--size", type=click.IntRange(min=16), default=None, help="Frame height; width = floor(size * 4/3) [default: the card's, else 128].")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto",
              help="Decoder: auto = DALI when installed and a GPU is present (uniform stores), else pyav (FFmpeg in-process), else "
                   "ffmpeg (a process per video); dali and pyav route what they cannot decode to an ffmpeg process.")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count(), help="Videos decoded in parallel.")
@click.option("--shard-size", default="256MB", help="Bytes of frames per shard file (JPEG frames: estimated at a tenth of raw).")
@click.option("--frame-codec", type=click.Choice(FRAME_CODECS), default="raw", help="raw uint8 frames, or one JPEG per frame (about 10x smaller).")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=90, show_default=True, help="JPEG quality with --frame-codec jpeg.")
@click.option("--jpeg-subsampling", type=click.Choice(["auto", "444", "422", "420"]), default="auto", show_default=True,
              help="JPEG chroma with --frame-codec jpeg: auto keeps each source's (4:2:0 for nearly every video file).")
@click.option("--max-failures", type=click.FloatRange(0, 1), default=0.05, help="Fraction of failed videos above which the exit status is non-zero.")
@click.option("--num-shards", type=click.IntRange(min=1), default=None, help="Split the work into this many parts (several machines) [default: $WORLD_SIZE or 1].")
@click.option("--shard-id", type=click.IntRange(min=0), default=None, help="Which part this process extracts [default: $RANK or 0].")
@click.option("--overwrite", is_flag=True, help="Replace an existing store made with other settings (only a folder vidpipe wrote).")
@click.option("--allow-outside-root", is_flag=True, help="Let --manifest paths be absolute or lead out of its root with `..` (refused by default).")
@click.option("--allow-stills", is_flag=True, help="Store a still image (or cover art) as a video of one repeated frame instead of failing it.")
@click.option("--finalize", "finalize_store", type=click.Path(file_okay=False), help="Only merge the parts of STORE into store.json.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="With a bucket --out: where the shards in flight are staged [default: a temporary folder].")
def extract_cmd(dataset, root, split, frame_fps, val_fraction, manifest_path, out, fmt, frames, fps, max_seconds, size, backend, workers, shard_size,
                frame_codec, jpeg_quality, jpeg_subsampling, max_failures, num_shards, shard_id, overwrite, allow_outside_root, allow_stills, finalize_store,
                cache_dir):
    """Decode every video once into a WebDataset or zarr store, in a folder or a bucket (s3://, gs://, az://)."""
    if finalize_store:
        index = finalize(finalize_store, cache_dir)
        ui.print_store_summary(index, f"finalized {shown(finalize_store)}")
        return
    if not out:
        raise VidpipeError("--out STORE is required")
    if manifest_path:
        manifest = Manifest.read(manifest_path, allow_outside_root=allow_outside_root)
    elif dataset and root:
        manifest = adapters.build_manifest(dataset, root, split, frame_fps=frame_fps, val_fraction=val_fraction)
    else:
        raise VidpipeError("give --dataset and --root, or --manifest")
    if note := manifest.small_val():
        ui.warn(note)
    if fps is not None and frames is not None:
        raise VidpipeError("--frames (uniform mode) and --fps (fps mode) exclude each other; pass one")
    defaults = cards.load_card(manifest.dataset).get("extract", {}) if (cards.CARDS_DIR / f"{manifest.dataset}.toml").is_file() else {}
    cfg = ExtractConfig(
        frames=frames if frames is not None else defaults.get("frames", 32), size=size if size is not None else defaults.get("size", 128),
        format=fmt, backend=backend,
        shard_size=shard_size, workers=workers, max_failures=max_failures, frame_codec=frame_codec, jpeg_quality=jpeg_quality, jpeg_subsampling=jpeg_subsampling,
        fps=fps, max_seconds=max_seconds, allow_stills=allow_stills,
    )
    num_shards = num_shards or int(os.environ.get("WORLD_SIZE", 1))
    shard_id = shard_id if shard_id is not None else int(os.environ.get("RANK", 0))
    spec = cfg.spec
    ui.console.print(f"extract {len(manifest.records)} videos of {manifest.dataset} -> {shown(out)} "
                     f"({cfg.format}, {f'{cfg.fps:g} fps, at most {cfg.max_seconds:g} s, ' if cfg.fps else f'{spec.frames}x'}{spec.height}x{spec.width}, "
                     f"{cfg.frame_codec} frames, {cfg.workers} workers, part {shard_id + 1}/{num_shards})")
    with ui.progress_bar(len(manifest.records), "extract") as advance:
        report = extract(manifest, out, cfg, overwrite=overwrite, part=(shard_id, num_shards), progress=advance, cache_dir=cache_dir)
    out = shown(out)
    if report.nothing_to_do:
        ui.out.print(f"nothing to do: every shard of this part is already in {out}")
    else:
        rate = report.videos / report.seconds if report.seconds else 0
        ui.table("this run", ["videos", "failed", "rerouted to ffmpeg", "seconds", "videos/s", "source frames/s", "written"],
                 [[report.videos, report.failures, report.rerouted, f"{report.seconds:.1f}", f"{rate:.1f}",
                   f"{report.source_frames / max(report.seconds, 1e-9):.0f}", ui.mb(report.bytes_written)]], justify_right_from=0)
    if report.finalized:
        ui.print_store_summary(report.summary, f"store {out} ({report.summary['format']})")
        rerouted = report.summary.get("rerouted", [])
        if rerouted:
            reasons = collections.Counter(r["reason"] for r in rerouted)
            ui.table(f"decoded by an ffmpeg process instead of {report.summary['settings']['backend']}", ["reason", "videos"], [[r, n] for r, n in reasons.most_common()])
        if report.summary["failures"]:
            ui.warn(f"{len(report.summary['failures'])} videos failed; reasons in {out}/failures.jsonl")
        if note := above_source_rate(report.summary):
            ui.warn(note)
    else:
        ui.out.print(f"{report.units_done}/{report.units_total} shards done; the last part to finish writes store.json "
                     f"(or run `vidpipe extract --finalize {out}`)")


def above_source_rate(index: dict) -> str | None:
    """A warning for an fps store sampled faster than its videos were filmed (frames repeat), or None."""
    fps = index["clip"].get("fps") if index["clip"].get("mode") == "fps" else None
    splits = index["splits"].values()
    seconds, frames = sum(e.get("source_seconds") or 0 for e in splits), sum(e.get("source_frames") or 0 for e in splits)
    if not fps or not seconds or not frames or fps <= 1.05 * frames / seconds:
        return None
    return (f"--fps {fps:g} is above the videos' own {frames / seconds:.3g} frames per second: every stored frame beyond theirs "
            f"repeats one ({fps * seconds / frames:.2g}x the frames there are); extract at --fps {frames / seconds:.3g} or lower")


def _is_feature_store(store: str) -> bool:
    from vidpipe.files import read_json

    if is_url(store):  # feature stores are folders
        return False
    index = Path(store) / "store.json"
    if not index.is_file():
        return False
    data = read_json(index, f"re-extract {store}, or cache its features again")
    return isinstance(data, dict) and data.get("format") == "vidpipe-features"


@cli.command("inspect")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--grid", type=click.Path(dir_okay=False), callback=ui.output_file, help="Write a PNG with sample frames of each class (clip stores).")
@click.option("--split", default=None, help="Split for the grid [default: the first with stored videos].")
@click.option("--per-class", type=click.IntRange(min=1), default=1, help="Videos per class in the grid.")
def inspect_cmd(store, grid, split, per_class):
    """Print a clip or feature store's summary; optionally write a PNG grid of frames per class."""
    if _is_feature_store(store):
        from vidpipe.stores.features import FeatureStore

        i = FeatureStore.open(store).index
        if grid:
            raise VidpipeError(f"{store} is a feature store: it holds no frames to draw; run inspect --grid on {i['source_store']['path']}")
        weights = i["weights"]["id"] + (" (RANDOM)" if i["random_weights"] else "")
        ui.out.print(f"{store}: feature store of {i['source_store']['dataset']}, {i['backbone']} {weights}, "
                     f"features {'x'.join(map(str, i['features']['shape']))} {i['dtype']}, from {i['source_store']['path']}")
        ui.table("splits", ["split", "videos", "bytes"],
                 [[sp, e["count"], ui.mb(sum(f["bytes"] for f in e["files"]))] for sp, e in i["splits"].items()], justify_right_from=1)
        return
    s = Store.open(store)
    c = s.index["clip"]
    ui.out.print(f"{s.name}: {s.format} store of {s.index['dataset']}, {s.index['num_classes']} classes, "
                 f"clips {c['frames']}x{c['height']}x{c['width']}x3 uint8"
                 f"{', JPEG q%d frames' % c['jpeg_quality'] if c.get('codec') == 'jpeg' else ''}, backends {s.index['backends']}")
    ui.print_store_summary(s.index, "splits")
    if grid:
        ui.out.print(f"wrote {s.contact_sheet(grid, split, per_class=per_class)}")


@cli.command("verify")
@click.argument("store", type=click.Path(file_okay=False))
def verify_cmd(store):
    """Re-check every checksum (and, for clip stores, read every sample)."""
    if _is_feature_store(store):
        from vidpipe.stores.features import FeatureStore

        s, what, fix = FeatureStore.open(store), "checksums and rows", "cache the features again (cache-features --overwrite)"
    else:
        s, what, fix = Store.open(store), "checksums and samples", "re-extract the affected shards (delete them and rerun extract)"
    n = sum(len(e["files"]) for e in s.index["splits"].values())
    with ui.progress_bar(n, "verify", unit="files") as advance:
        problems = s.verify(progress=advance)
    if problems:
        for p in problems[:20]:
            ui.console.print(f"[red]{p}[/red]")
        raise VidpipeError(f"{ui.plural(len(problems), 'problem')} in {shown(store)}; {fix}")
    ui.out.print(f"{shown(store)}: {n} files, {what} OK")
