"""The R(2+1)D + Perceiver study's ten configurations, trained and evaluated, ending in `vidpipe compare`.

The study (seed "hmdb51-recognition", HMDB51 split 1, video-level val accuracy, CNN from Kinetics-400):
baseline R(2+1)D 72.7; 8 blocks + 1 cross + 1 self 70.3; + 2 self 67.5; + 6 self 66.7; 7 blocks + 1 + 1
64.4; 6 blocks + 1 + 6 58.3; 4 blocks + 1 + 6 40.6; 4 blocks + 2 cross + 12 self 28.2; 8 blocks + 1 cross
only 70.5; 8 blocks + 1 self only 67.5.

--scale tiny (the default, what a 2-core CPU runs): the synthetic pairs (200 videos, 10 classes, a uniform
16-frame store at height 64), clips of 8 frames 2 stored frames apart (the whole video) at 48 x 48, 2 test
clips; 32 latents instead of 256, everything else at the study's sizes (512 wide, 1 cross head of 64, 8 self
heads of 64, GEGLU x4). The CNN
starts from random weights unless --weights names a torchvision r2plus1d_18 Kinetics-400 file. A few epochs:
the table shows the ablation's shape on what runs here, not the study's accuracy.

--scale study: the study's sizes (16 frames, 112 crop, 256 latents, batch 8, 30 epochs); pass --store an
HMDB51 store (`vidpipe extract --dataset hmdb51 --split-id 1 ...`) and --weights KINETICS400_V1 or its file.

Every run's checkpoint is the one val (10 % of train by video-id hash, or the store's val split) chose; its
figures are on the test split, which chooses nothing, with 5 clips per video (10 at the study scale) fused by
score averaging ("mean") and by the study's majority vote of clip argmaxes ("vote"). At the tiny scale an
8 x 2 clip spans all 16 stored frames, so the 5 test clips coincide and both fusions agree. Writes benchmarks/results/perceiver-ablation-<scale>.{json,md,png}.

Usage: .venv/bin/python benchmarks/perceiver_ablation.py WORK [--scale tiny|study] [--store STORE] [--weights W]
       [--epochs N] [--runs NAME,...]
"""

import argparse
import json
import platform
from pathlib import Path

from vidpipe.datasets.adapters import build_manifest
from vidpipe.datasets.synth import SynthConfig, synth
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.train.compare import compare_runs, plot_bars, to_markdown
from vidpipe.train.config import load_config
from vidpipe.train.evaluate import evaluate_checkpoint
from vidpipe.train.loop import train

# name -> (model, options): the study's ten rows, in its order
RUNS = {
    "r2plus1d-baseline": ("r2plus1d_18", []),
    "8b-1c-1s": ("r2plus1d_perceiver", ["model_options.cnn_blocks=8", "model_options.cross_layers=1", "model_options.self_layers=1"]),
    "8b-1c-2s": ("r2plus1d_perceiver", ["model_options.cnn_blocks=8", "model_options.cross_layers=1", "model_options.self_layers=2"]),
    "8b-1c-6s": ("r2plus1d_perceiver", ["model_options.cnn_blocks=8", "model_options.cross_layers=1", "model_options.self_layers=6"]),
    "7b-1c-1s": ("r2plus1d_perceiver", ["model_options.cnn_blocks=7", "model_options.cross_layers=1", "model_options.self_layers=1"]),
    "6b-1c-6s": ("r2plus1d_perceiver", ["model_options.cnn_blocks=6", "model_options.cross_layers=1", "model_options.self_layers=6"]),
    "4b-1c-6s": ("r2plus1d_perceiver", ["model_options.cnn_blocks=4", "model_options.cross_layers=1", "model_options.self_layers=6"]),
    "4b-2c-12s": ("r2plus1d_perceiver", ["model_options.cnn_blocks=4", "model_options.cross_layers=2", "model_options.self_layers=6"]),
    "8b-1c-only": ("r2plus1d_perceiver", ["model_options.cnn_blocks=8", "model_options.cross_layers=1", "model_options.self_layers=0"]),
    "8b-1s-only": ("r2plus1d_perceiver", ["model_options.cnn_blocks=8", "model_options.cross_layers=0", "model_options.self_layers=1"]),
}
STUDY = {"r2plus1d-baseline": 72.7, "8b-1c-1s": 70.3, "8b-1c-2s": 67.5, "8b-1c-6s": 66.7, "7b-1c-1s": 64.4, "6b-1c-6s": 58.3,
         "4b-1c-6s": 40.6, "4b-2c-12s": 28.2, "8b-1c-only": 70.5, "8b-1s-only": 67.5}
SCALES = {
    # 8 of the 16 stored frames (the whole video) at 48 px, 2 test clips, 32 latents; batch 8 as the study
    "tiny": {"options": ["data.frames=8", "data.frame_interval=2", "data.crop_size=48", "data.test_clips=2", "data.batch_size=8",
                         "optim.epochs=6", "optim.lr=5e-4", "data.workers=2", "device=cpu"],
             "perceiver": ["model_options.num_latents=32"], "test_clips": 5},
    "study": {"options": ["data.frames=16", "data.crop_size=112", "data.test_clips=5", "data.batch_size=8", "optim.epochs=30",
                          "optim.lr=1e-4", "data.workers=8"],
              "perceiver": [], "test_clips": 10},
}


def main(work: Path, scale: str, store: Path | None, weights: str | None, epochs: int | None, only: list[str] | None) -> None:
    work.mkdir(parents=True, exist_ok=True)
    if store is None:  # the synthetic pairs, as benchmarks/synthetic_pairs.py makes them
        if not (work / "data").exists():
            synth(work / "data", SynthConfig(videos_per_class=20))
        store = work / "store"
        extract(build_manifest("synthetic", work / "data"), store, ExtractConfig(frames=16, size=64))
    out = Path(__file__).parent / "results" / f"perceiver-ablation-{scale}"
    settings = SCALES[scale]["options"] + ([f"optim.epochs={epochs}"] if epochs else [])
    for name, (model, options) in RUNS.items():
        run = work / f"run-{name}"
        if only and name not in only:
            continue
        if (run / "summary.json").is_file():
            print(f"{name}: trained before, kept")  # an interrupted ablation picks up where it stopped
        else:
            extra = options + (SCALES[scale]["perceiver"] if model == "r2plus1d_perceiver" else [])
            extra += [f"init={weights}"] if weights else []
            cfg = load_config(None, settings + extra, base={"model": model, "data": {"path": str(store)}})
            train(cfg, run, resume=run.exists(), log=print)
        for fusion in ("mean", "vote"):  # the test split, more clips per video than val used: the vote needs several
            evaluate_checkpoint(run, split="test", test_clips=SCALES[scale]["test_clips"], fusion=fusion)
    runs = [work / f"run-{name}" for name in RUNS if (work / f"run-{name}" / "summary.json").is_file()]
    result = compare_runs(runs, split="test", sort="top1")
    for row in result["rows"]:
        vote = json.loads((Path(row["path"]) / "eval-test-vote" / "metrics.json").read_text())["metrics"]
        row["vote_top1"], row["study_val_top1"] = vote["top1"], STUDY[row["run"].removeprefix("run-")] / 100
    result.update({"scale": scale, "settings": settings, "weights": weights or "none (random initialisation)",
                   "store": str(store), "machine": platform.platform(), "study": STUDY})
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = to_markdown(result)
    study = "\n| run | study val top-1 (HMDB51, K400 CNN) | here: test top-1 (mean) | here: test top-1 (vote) |\n| --- | ---: | ---: | ---: |\n"
    study += "".join(f"| {r['run']} | {r['study_val_top1']:.3f} | {r['top1']:.3f} | {r['vote_top1']:.3f} |\n"
                     for r in sorted(result["rows"], key=lambda r: list(RUNS).index(r["run"].removeprefix("run-"))))
    out.with_suffix(".md").write_text(table + study)
    plot_bars(result, out.with_suffix(".png"))
    print(table + study)
    print(f"wrote {out}.json, .md, .png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    parser.add_argument("--store", type=Path, default=None, help="a clip store (default: the synthetic pairs, built in WORK)")
    parser.add_argument("--weights", default=None, help="the CNN's initialisation: KINETICS400_V1 or a torchvision r2plus1d_18 file")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--runs", type=lambda s: s.split(","), default=None, help="only these runs")
    args = parser.parse_args()
    main(args.work, args.scale, args.store, args.weights, args.epochs, args.runs)
