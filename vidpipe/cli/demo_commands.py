"""`vidpipe demo` (what `make demo` runs): the whole chain on the bundled synthetic dataset, ending with a
readable result. Each step is the library call the matching command makes; the printing is the CLI's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import click

from vidpipe.cli import ui
from vidpipe.cli.app import cli
from vidpipe.errors import VidpipeError

DEMO_MODELS = ("tsn_mean", "resnet_temporal_vit", "temporal_retnet")
PREDICT_MODEL, STREAM_MODEL = "resnet_temporal_vit", "temporal_retnet"  # fixed choices: nothing is picked by its test figures
STREAM_EVERY = 4  # a timeline line every 4 frames
HELD_OUT_SEED = 99  # videos rendered for predict only: in no store
DEMO_TRAINING = ["optim.epochs=40", "optim.lr=5e-4", "data.frames=16", "data.batch_size=16", "data.workers=0"]
MARKER = ".vidpipe-demo"  # written into the output folder; only such a folder is ever cleared


def prepare_out(out: Path) -> None:
    """Start every demo from an empty folder, clearing an earlier demo's output but nothing else."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise VidpipeError(f"{out} exists and was not made by the demo; remove it or pass another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `vidpipe demo` (`make demo`); cleared by the next demo\n")


def run(out: Path) -> None:
    from vidpipe.datasets import adapters, cards
    from vidpipe.datasets.synth import SynthConfig, synth, within_pair_accuracy
    from vidpipe.stores.clips import Store
    from vidpipe.stores.extract import ExtractConfig, extract
    from vidpipe.stores.features import FeatureConfig, cache_features
    from vidpipe.train.config import load_config
    from vidpipe.train.evaluate import evaluate_checkpoint
    from vidpipe.train.loop import train

    t0 = time.perf_counter()
    prepare_out(out)
    data = out / "data"
    ui.console.print(f"[bold]1. synth[/bold] -> {data}")
    synth(data, SynthConfig(videos_per_class=20))
    manifest = adapters.build_manifest("synthetic", data)
    manifest.write(out / "manifest.jsonl")
    counts = manifest.counts()
    ui.table("synthetic manifest", ["split", "videos", "classes"],
             [[s, sum(c.values()), len(c)] for s, c in counts.items()])
    defaults = cards.load_card("synthetic")["extract"]
    for fmt in ("webdataset", "zarr"):
        store = out / f"store-{fmt}"
        ui.console.print(f"[bold]2. extract[/bold] -> {store} ({fmt}, {defaults['frames']} frames, height {defaults['size']})")
        report = extract(manifest, store, ExtractConfig(frames=defaults["frames"], size=defaults["size"], format=fmt))
        ui.print_store_summary(report.summary, f"{fmt} store")
        problems = Store.open(store).verify()
        ui.console.print(f"   verify: {'OK' if not problems else problems}")
    Store.open(out / "store-zarr").contact_sheet(out / "frames.png", "train")
    ui.console.print(f"   a frame grid per class: {out / 'frames.png'}")
    features = out / "features-resnet18"
    ui.console.print(f"[bold]3. cache-features[/bold] -> {features} (frozen resnet18, --weights random: offline demo)")
    report = cache_features(out / "store-zarr", features, FeatureConfig(backbone="resnet18", weights="random"))
    shape = "x".join(map(str, report.summary["features"]["shape"]))
    rate = f", {ui.two_figures(report.videos / report.seconds)} videos/s" if report.videos else ""
    ui.console.print(f"   {sum(e['count'] for e in report.summary['splits'].values())} videos -> {shape} float16 features each{rate}")
    rows, results = [], {}
    for step, model in enumerate(DEMO_MODELS, start=4):
        run = out / f"run-{model}"
        ui.console.print(f"[bold]{step}. train[/bold] {model} -> {run} ({' '.join(DEMO_TRAINING)})")
        t_train = time.perf_counter()
        cfg = load_config(None, DEMO_TRAINING, base={"model": model, "data": {"path": str(features)}})
        train(cfg, run, log=lambda m: None)
        seconds = time.perf_counter() - t_train
        result = evaluate_checkpoint(run, split="test")  # the checkpoint validation chose, measured on test
        m = result["metrics"]
        pair = within_pair_accuracy(result["confusion"], result["classes"])
        rows.append([model, f"{m['top1']:.3f}", f"{pair:.3f}", f"{m['top5']:.3f}", f"{m['macro_f1']:.3f}",
                     f"epoch {result['epoch']}", f"{seconds:.0f}s"])
        results[model] = {"split": result["split"], "videos": m["videos"], "checkpoint": Path(result["checkpoint"]).name,
                          "epoch": result["epoch"], "chosen_by": result["chosen_by"], "top1": m["top1"], "within_pair": pair,
                          "top5": m["top5"], "macro_f1": m["macro_f1"], "train_seconds": seconds}
    ui.table("synthetic pairs, test split (features from a frozen resnet18 with RANDOM weights)",
             ["model", "top-1", "in-pair", "top-5", "macro-F1", "val chose", "train"], rows)
    ui.out.print("checkpoint: the epoch with the best top-1 on val, 10% of each class's training videos held out by a hash of "
                 "the video id; the test split was never used to choose anything")
    ui.out.print("in-pair: within-pair accuracy, of the videos placed in their own pair, the share given the right member "
                 "(0.5 = chance; the two members have the same frames in opposite orders)")
    predicted = predict_held_out(out, step + 1)
    total = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps({"training": DEMO_TRAINING, "models": results, "predict": predicted, "seconds": total},
                                                  indent=2) + "\n")
    ui.out.print(f"demo finished in {total:.1f}s; figures in {out / 'results.json'}")


def predict_held_out(out: Path, step: int) -> dict:
    """`vidpipe predict` on synthetic videos no store holds (another seed), then a stream of two of them
    played one after the other through the causal model, printed as a timeline."""
    from vidpipe.datasets.synth import SynthConfig, synth
    from vidpipe.io.ffmpeg import ffmpeg_binary, probe
    from vidpipe.predict import Predictor, list_videos

    new = out / "held-out"
    synth(new, SynthConfig(videos_per_class=2, seed=HELD_OUT_SEED))
    videos = list_videos([str(new / "test")])  # one per class
    run = out / f"run-{PREDICT_MODEL}"
    ui.console.print(f"[bold]{step}. predict[/bold] {len(videos)} new videos (seed {HELD_OUT_SEED}, in no store) with {run}")
    predictor = Predictor.load(run)
    rows, right = [], 0
    for p in predictor.predict_many(videos, workers=2):
        truth = Path(p.source).parent.name
        (top, prob), (second, prob2) = p.top(2)
        right += top == truth
        rows.append([Path(p.source).name, truth, top, f"{prob:.3f}", f"{second} {prob2:.3f}", "yes" if top == truth else "no",
                     f"{p.decode_ms:.0f}", f"{p.model_ms:.0f}"])
    ui.table(f"vidpipe predict {run} {new / 'test'}", ["video", "truth", "top-1", "p", "next", "right", "decode ms", "model ms"], rows)
    ui.out.print(f"{right} of {len(videos)} held-out videos right")
    first, second = videos[1], videos[-1]  # two classes of different pairs
    joined = out / "held-out" / "two-videos.mp4"
    listing = joined.with_suffix(".txt")
    listing.write_text(f"file '{first.resolve()}'\nfile '{second.resolve()}'\n")
    subprocess.run([ffmpeg_binary(), "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(joined)], check=True)
    first_seconds = probe(first).num_frames / probe(first).fps
    stream_run = out / f"run-{STREAM_MODEL}"
    streamer = Predictor.load(stream_run)
    rate = streamer.default_stream_rate()
    ui.console.print(f"[bold]{step + 1}. predict --stream[/bold] {first.parent.name} then {second.parent.name}, one frame at a time "
                     f"through {STREAM_MODEL}'s recurrent form at {rate:.2f} frames/s (the video changes at {first_seconds:.2f}s)")
    ui.stream_timeline(streamer, str(joined), rate, every=STREAM_EVERY)
    ui.out.print(f"{STREAM_MODEL}'s head averages every frame so far, so after the change the second video's frames dilute the "
                 "first one's evidence rather than replace it; `--window` gives predictions that forget")
    return {"model": PREDICT_MODEL, "videos": len(videos), "right": right, "stream": {"model": STREAM_MODEL, "video": str(joined), "fps": rate}}


@cli.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"), show_default=True,
              help="Output folder (only a folder an earlier demo made is ever cleared).")
def demo_cmd(out):
    """Run the whole chain (synth, extract, cache-features, train, eval, predict) on a bundled synthetic dataset."""
    run(out)
