"""TimeSformer and its RetNet hybrid trained from scratch on the synthetic pairs (a clip store), on CPU.

The synthetic set's classes come in pairs whose members show the same frames in opposite orders, so
within-pair accuracy (0.5 = chance) measures whether a model uses temporal order. Both models: the
tiny preset (192 wide, 3 heads) cut to 4 blocks, 64 x 64 crops of 16-frame uniform clips (TSN 8
segments), the same schedule. The checkpoint is the one val (10 % of train, by video-id hash) chose;
its figures are on the test split, which chooses nothing. Writes benchmarks/results/timesformer-synthetic.json.

Usage: .venv/bin/python benchmarks/timesformer_synthetic.py WORK
"""

import json
import shutil
import platform
import sys
import time
from pathlib import Path

from vidpipe.datasets.adapters import build_manifest
from vidpipe.datasets.synth import SynthConfig, synth, within_pair_accuracy
from vidpipe.stores.extract import ExtractConfig, extract
from vidpipe.train.config import load_config
from vidpipe.train.evaluate import evaluate_checkpoint
from vidpipe.train.loop import train

MODELS = {"timesformer": [], "timesformer_retnet": ["model_options.cls_mode=causal"]}
OPTIONS = ["model_options.preset=tiny", "model_options.depth=4", "model_options.image_size=64", "data.crop_size=64",
           "data.frames=8", "data.batch_size=16", "optim.epochs=30", "optim.lr=5e-4", "data.workers=2", "device=cpu"]


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "data").exists():
        synth(work / "data", SynthConfig(videos_per_class=20))
    store = work / "store"
    extract(build_manifest("synthetic", work / "data"), store, ExtractConfig(frames=16, size=64))
    results = {"machine": platform.platform(), "options": OPTIONS, "store": "uniform, 16 frames, height 64", "models": {}}
    for model, extra in MODELS.items():
        run = work / f"run-{model}"
        t0 = time.perf_counter()
        cfg = load_config(None, OPTIONS + extra, base={"model": model, "data": {"path": str(store)}})
        if run.exists():
            shutil.rmtree(run)  # always a run made by this code
        train(cfg, run, log=print)
        seconds = time.perf_counter() - t0
        result = evaluate_checkpoint(run, split="test")
        m = result["metrics"]
        results["models"][model] = {"options": extra, "split": result["split"], "videos": m["videos"], "epoch": result["epoch"],
                                    "chosen_by": result["chosen_by"], "top1": m["top1"], "within_pair": within_pair_accuracy(result["confusion"], result["classes"]),
                                    "macro_f1": m["macro_f1"], "train_seconds": seconds,
                                    "params": json.loads((run / "config.json").read_text()).get("params")}
        print(model, results["models"][model])
    out = Path(__file__).parent / "results" / "timesformer-synthetic.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
