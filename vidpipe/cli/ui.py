"""Terminal presentation shared by the commands: progress bars, closing tables (rich), a store's summary
and a stream's timeline."""

from __future__ import annotations

import contextlib
import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vidpipe.errors import VidpipeError
from vidpipe.train.metrics import two_figures  # noqa: F401  (the commands' figures: ui.two_figures)

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


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 window', '3 windows'."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


PLAIN_EVERY = 30.0  # seconds between plain progress lines (output that is not a terminal), at most


@contextlib.contextmanager
def plain_progress(total: int, description: str, unit: str = "videos"):
    """Yields advance(n=1) for output that is not a terminal (a log file, CI): a line at every tenth of the
    work or every PLAIN_EVERY seconds, whichever comes first, and one at the end."""
    state = {"done": 0, "shown": 0, "t": time.monotonic()}
    t0 = time.monotonic()

    def line() -> None:
        done, elapsed = state["done"], time.monotonic() - t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f", eta {round((total - done) / rate)} s" if rate and done < total else ""
        console.print(f"{description}: {done}/{total} {unit} ({100 * done / max(total, 1):.0f}%), "
                      f"{two_figures(rate)} {unit}/s{eta}", highlight=False)
        state["shown"], state["t"] = done, time.monotonic()

    def advance(n: int = 1):
        state["done"] += n
        tenth = max(1, total // 10)
        if state["done"] - state["shown"] >= tenth or time.monotonic() - state["t"] >= PLAIN_EVERY:
            line()

    yield advance
    if state["done"] != state["shown"]:
        line()


@contextlib.contextmanager
def progress_bar(total: int, description: str, unit: str = "videos"):
    """Yields advance(n=1). A bar with rate and ETA on a terminal; plain progress lines otherwise."""
    if not console.is_terminal:
        with plain_progress(total, description, unit) as advance:
            yield advance
        return
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=total, rate="")

        def advance(n: int = 1):
            bar.advance(task, n)
            speed = bar.tasks[0].speed
            if speed:
                bar.update(task, rate=f"{two_figures(speed)} {unit}/s")

        yield advance


def table(title: str, columns: list[str], rows: list[list], justify_right_from: int = 1) -> None:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="right" if i >= justify_right_from else "left")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    out.print(t)


THREADS_HELP = "torch CPU threads; 0: the CPU cores loader workers leave (at least 1). Lower it on a busy machine."


def threads_option(apply: bool = True):
    """`--threads N`, torch's CPU threads for the command (vidpipe.devices.cpu_threads). apply=True: set as
    soon as it is parsed (0: every core); apply=False: passed to the command, which knows its loader workers."""
    def set_threads(ctx, param, value):
        from vidpipe.devices import set_cpu_threads

        set_cpu_threads(value)
        return value

    return click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True, help=THREADS_HELP,
                        **({"callback": set_threads, "expose_value": False} if apply else {}))


def output_file(ctx, param, value):
    """click callback for an option that names a file to write: its folder must exist (checked before
    any work, so a long run does not end in a traceback)."""
    if value is not None:
        from pathlib import Path

        folder = Path(value).parent
        if not folder.is_dir():
            raise click.BadParameter(f"the folder {folder} does not exist; create it or choose another path")
    return value


def mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def kb(n: float) -> str:
    return f"{n / 2**10:,.0f} KB"


def print_store_summary(index: dict, title: str) -> None:
    rows = []
    for split, e in index["splits"].items():
        size = sum(f["bytes"] for f in e["files"])
        seconds, source = e.get("source_seconds"), e.get("source_bytes")  # absent in stores made before they were recorded
        rows.append([split, e["listed"], e["count"], e["failed"], e["shards"], mb(size), kb(size / max(1, e["count"])),
                     kb(size / seconds) if seconds else "-", f"{size / source:.2f}x" if source else "-"])
    table(title, ["split", "listed", "stored", "failed", "shards", "bytes", "per video", "per s of video", "vs source"], rows)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


def cells(p, k: int, skip: int = 0) -> str:
    """A prediction's classes from `skip` to k, with their probabilities."""
    return ", ".join(f"{c} {s:.3f}" for c, s in p.top(k)[skip:])


def failure(source, error):
    """The Prediction that records a failed input (its JSONL line carries the error)."""
    from vidpipe.predict import Prediction

    return Prediction(str(source), error=str(error))


def stream_timeline(predictor, source, rate, every=1, raw=None, write=lambda p, k: None, k=5) -> bool:
    """Stream one source, a timeline line per prediction (its time, top classes, a bar of the top-1's
    probability); False when it failed."""
    from vidpipe.io.ffmpeg import DecodeError

    out.print(f"[bold]{'stdin' if source == '-' else source}[/bold]")
    t0, last = time.perf_counter(), None
    try:
        for p in predictor.stream(source, rate, every, raw):
            write(p, k)
            (top, prob), rest = p.top(1)[0], cells(p, min(k, 3), skip=1)
            out.print(f"  {p.end:7.2f}s  {'#' * round(20 * prob):<20}  {top} {prob:.3f}  | {rest}", highlight=False)
            last = p
    except (DecodeError, VidpipeError) as e:
        out.print(f"  failed: {e}")
        write(failure(source, e), k)
        return False
    seconds = time.perf_counter() - t0
    frames = last.frames if last else 0
    out.print(f"  {frames} frames ({frames / rate:.1f}s of video) in {seconds:.1f}s: {frames / seconds:.1f} frames/s")
    return True
