"""`vidpipe predict`: a trained run on new videos, whole, in windows or as a stream."""

from __future__ import annotations

import contextlib
import json
import sys
import time

import click

from vidpipe.cli import ui
from vidpipe.cli.app import cli
from vidpipe.errors import VidpipeError


@contextlib.contextmanager
def _jsonl(path):
    if path is None:
        yield lambda p, k: None
        return
    with open(path, "w") as fh:
        def write(p, k):
            fh.write(json.dumps(p.to_json(k)) + "\n")
            fh.flush()  # a stream's lines are there while it runs
        yield write


@cli.command("predict")
@click.argument("run_or_checkpoint", type=click.Path())
@click.argument("inputs", nargs=-1, required=True)
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Classes shown per prediction.")
@click.option("--views", type=click.IntRange(min=1), default=None, help="Dense clip models: clips per video [default: the run's data.test_clips].")
@click.option("--crops", type=click.Choice(["1", "3"]), default=None, help="Clip models: 1 centre or 3 spatial crops [default: the run's].")
@click.option("--fusion", type=click.Choice(["mean", "vote"]), default="mean", show_default=True,
              help="How a video's views make its prediction: mean softmax scores, or the majority vote of their argmaxes.")
@click.option("--jsonl", type=click.Path(dir_okay=False), callback=ui.output_file, default=None, help="Also write one JSON object per prediction to this file.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Videos decoded ahead while the model runs.")
@click.option("--backbone-weights", default=None, help="Feature runs: the frozen backbone's weights file, when it is not where the features were made.")
@click.option("--window", type=click.FloatRange(min=0, min_open=True), default=None, help="Predict over sliding windows of this many seconds.")
@click.option("--stride", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds between window starts [default: --window].")
@click.option("--stream", is_flag=True, help="Causal models: frames fed one at a time, a prediction after every frame (INPUT - : a video stream on stdin).")
@click.option("--stream-fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Frames per second fed to a stream [default: the store's fps, or the spacing of the model's frames in training].")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Streams: a prediction every K frames.")
@click.option("--raw", default=None, help="Streams from stdin: raw rgb24 frames of WIDTHxHEIGHT@FPS instead of a container.")
@click.option("--allow-outside-root", is_flag=True, help="Follow links in a folder INPUT that lead outside it (refused by default).")
@ui.threads_option()
def predict_cmd(run_or_checkpoint, inputs, top_k, views, crops, fusion, jsonl, device, workers, backbone_weights, window, stride,
                stream, stream_fps, every, raw, allow_outside_root):
    """Predict the classes of videos no store holds, made into the run's inputs exactly as its training data was.

    INPUT: video files, folders (searched recursively) or - (paths on stdin; with --stream, a video stream, and URLs ffmpeg reads).
    The exit status is 1 when any video failed to decode (each is reported with the reason).
    """
    from vidpipe.predict import Predictor, list_videos
    from vidpipe.predict.frames import parse_raw

    if stride is not None and window is None:
        raise VidpipeError("--stride applies to --window; add --window SECONDS")
    if stream and window is not None:
        raise VidpipeError("--stream and --window are two ways over a video; choose one")
    for flag, value in (("--stream-fps", stream_fps), ("--raw", raw), ("--every", every if every != 1 else None)):
        if value is not None and not stream:
            raise VidpipeError(f"{flag} applies to --stream; add --stream")
    predictor = Predictor.load(run_or_checkpoint, device, views, int(crops) if crops else None, fusion, backbone_weights, warn=ui.warn)
    if stream:
        predictor.stream_session()  # a model that cannot stream is refused before anything is read
        streams = [s for s in inputs if s == "-" or "://" in s]  # stdin and URLs go to ffmpeg as they are
        sources = [s if s in streams else str(p) for s in inputs for p in ([None] if s in streams else list_videos([s], allow_outside_root=allow_outside_root))]
        failed = _stream(predictor, sources, stream_fps, every, parse_raw(raw) if raw else None, jsonl, top_k)
    else:
        paths = list_videos(list(inputs), allow_outside_root=allow_outside_root)
        failed = _windows(predictor, paths, window, stride or window, jsonl, top_k) if window else _whole(predictor, paths, workers, jsonl, top_k)
    if failed:
        ui.warn(f"{failed} of the inputs failed (reasons above)")
        sys.exit(1)


def _describe(predictor) -> str:
    card = predictor.card
    views = f", {predictor.views} views ({predictor.fusion})" if predictor.views > 1 else ""
    return f"{card.model} from {predictor.ckpt} (epoch {card.epoch}), {len(predictor.classes)} classes{views}, on {predictor.device}"


def _whole(predictor, paths, workers, jsonl, k) -> int:
    ui.console.print(f"predict {ui.plural(len(paths), 'video')} with {_describe(predictor)}")
    done, t0 = [], time.perf_counter()
    with _jsonl(jsonl) as write, ui.progress_bar(len(paths), "predict") as advance:
        for p in predictor.predict_many(paths, workers):
            write(p, k)
            done.append(p)
            advance()
    seconds = time.perf_counter() - t0
    for p in done:
        if p.error:
            ui.out.print(f"{p.source}: failed: {p.error}")
            continue
        ui.table(f"{p.source}  (decode {p.decode_ms:.0f} ms, model {p.model_ms:.0f} ms)", ["#", "class", "p"],
                 [[i + 1, c, f"{s:.3f}"] for i, (c, s) in enumerate(p.top(k))])
    ok = sum(p.error is None for p in done)
    ui.out.print(f"{ok} of {ui.plural(len(done), 'video')} predicted in {seconds:.1f}s: {len(done) / seconds:.2f} videos/s")
    return len(done) - ok


def _windows(predictor, paths, window, stride, jsonl, k) -> int:
    from vidpipe.io.ffmpeg import DecodeError

    ui.console.print(f"predict windows of {window:g}s every {stride:g}s in {ui.plural(len(paths), 'video')} with {_describe(predictor)}")
    failed, t0, count, windows = 0, time.perf_counter(), 0, 0
    with _jsonl(jsonl) as write:
        for path in paths:
            rows = []
            try:
                for p in predictor.windows(path, window, stride):
                    write(p, k)
                    rows.append([f"{p.start:.2f}", f"{p.end:.2f}", "-" if p.error else p.top(1)[0][0],
                                 p.error or f"{p.top(1)[0][1]:.3f}", "" if p.error else ui.cells(p, k, skip=1),
                                 "" if p.error else f"{p.model_ms:.0f}"])
            except (DecodeError, VidpipeError) as e:
                ui.out.print(f"{path}: failed: {e}")
                write(ui.failure(path, e), k)
                failed += 1
                continue
            count, windows = count + 1, windows + len(rows)
            ui.table(str(path), ["start s", "end s", "top-1", "p", f"next {k - 1}", "model ms"], rows, justify_right_from=0)
    seconds = time.perf_counter() - t0
    ui.out.print(f"{ui.plural(windows, 'window')} of {count} of {ui.plural(len(paths), 'video')} in {seconds:.1f}s: "
                 f"{ui.two_figures(windows / seconds)} windows/s, {ui.two_figures(len(paths) / seconds)} videos/s")
    return failed


def _stream(predictor, sources, rate, every, raw, jsonl, k) -> int:
    rate = rate or predictor.default_stream_rate()
    ui.console.print(f"stream at {rate:g} frames/s, a prediction every {every} frame{'s' if every > 1 else ''}, with {_describe(predictor)}")
    failed = 0
    with _jsonl(jsonl) as write:
        for source in sources:
            failed += not ui.stream_timeline(predictor, source, rate, every, raw, write, k)
    return failed
