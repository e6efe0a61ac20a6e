"""Terminal presentation shared by the commands: progress bars and closing tables (rich)."""

from __future__ import annotations

import contextlib
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# Tables lay out; sentences never wrap mid-word. Piped into a log or file, rich would assume 80 columns
# and cut names short: use 160 there (a terminal's own width otherwise).
console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


class LazyChoice(click.Choice):
    """A click.Choice whose names come from `load()` on first use, so that `vidpipe --help` and the
    commands that do not need them never import torch (the backbone table lives beside the models)."""

    def __init__(self, load):
        self._load, self._names = load, None
        super().__init__(())

    @property
    def choices(self):
        if self._names is None:
            self._names = tuple(self._load())
        return self._names

    @choices.setter
    def choices(self, value):  # click.Choice.__init__ assigns (); the loader is the source
        pass


@contextlib.contextmanager
def progress_bar(total: int, description: str, unit: str = "videos"):
    """Yields advance(n=1). Shows rate and ETA; stays quiet when stderr is not a terminal."""
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total, rate="")

        def advance(n: int = 1):
            bar.advance(task, n)
            speed = bar.tasks[0].speed
            if speed:
                bar.update(task, rate=f"{speed:.1f} {unit}/s")

        yield advance


def table(title: str, columns: list[str], rows: list[list], justify_right_from: int = 1) -> None:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="right" if i >= justify_right_from else "left")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    out.print(t)


def output_file(ctx, param, value):
    """click callback for an option that names a file to write: its folder must exist (checked before
    any work, so a long run does not end in a traceback)."""
    if value is not None:
        from pathlib import Path

        folder = Path(value).parent
        if not folder.is_dir():
            raise click.BadParameter(f"the folder {folder} does not exist; create it or choose another path")
    return value


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")
