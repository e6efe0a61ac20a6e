"""`vidpipe` console script: a thin click layer, one library call per command."""

from __future__ import annotations

from vidpipe.cli import bench_commands, data_commands, demo_commands, feature_commands, predict_commands, store_commands, train_commands  # noqa: F401  (each registers its commands on `cli`)
from vidpipe.cli.app import cli


def main():  # console-script entry point
    cli(prog_name="vidpipe")
