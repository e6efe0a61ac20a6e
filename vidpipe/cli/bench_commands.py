"""`vidpipe bench ...`: measurements that print a table and write JSON."""

from __future__ import annotations

import platform
from pathlib import Path

import click

from vidpipe.cli import ui
from vidpipe.cli.main import cli


@cli.group("bench")
def bench():
    """Benchmarks: each prints a table and writes JSON."""


@bench.command("extract")
@click.option("--work", type=click.Path(file_okay=False), default=None, help="Scratch directory [default: a temp dir].")
@click.option("--videos-per-class", default=20, help="Videos per class in each generated set (10 classes).")
@click.option("--workers", type=int, default=None, help="Parallel decoders [default: all CPUs].")
@click.option("--frames", default=32, help="Frames per stored clip.")
@click.option("--size", default=128, help="Stored frame height.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default="benchmarks/results/extract.json", help="Where to write the results.")
def bench_extract_cmd(work, videos_per_class, workers, frames, size, json_path):
    """Extraction videos/s and frames/s vs a bare ffmpeg decode of the same files (the ceiling)."""
    from vidpipe.pipeline.bench_extract import bench_extract, table_rows, write_json

    results = bench_extract(work, videos_per_class, workers, frames, size, log=lambda m: ui.console.print(m))
    results["machine"] = platform.platform()
    ui.table(f"extract throughput ({results['workers']} workers on {results['cpus']} CPUs, clips {frames}x{size})",
             ["set", "path", "videos", "videos/s", "src frames/s", "of ceiling", "store", "per video"], results["rows"] and table_rows(results), justify_right_from=2)
    write_json(results, Path(json_path))
    ui.out.print(f"wrote {json_path}")
