"""The documentation's benchmark tables, made from the committed JSON (no figure typed by hand).

A page holds a generated table between `<!-- table: NAME ... -->` and `<!-- /table -->`; `--write` rewrites
every such block from the JSON (`make docs` runs it), `--check` lists the blocks that differ (a test runs it).

Usage: .venv/bin/python benchmarks/tables.py NAME | --write | --check     (NAME prints one table)
"""

import json
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DOCS = Path(__file__).parent.parent / "docs"
BLOCK = re.compile(r"(<!-- table: (\w+)[^>]*-->\n)(.*?)(<!-- /table -->)", re.S)  # the content may be empty
STORE_ROWS = [  # README label -> the run's label in stores.json
    ("uniform 32 frames, raw, webdataset", "webdataset"),
    ("same, an ffmpeg process per video (`--backend ffmpeg`)", "webdataset, ffmpeg process"),
    ("uniform 32 frames, JPEG q90, webdataset", "webdataset, jpeg"),
    ("15 fps, 10 s, raw, webdataset", "webdataset, 15 fps"),
    ("same, an ffmpeg process per video", "webdataset, 15 fps, ffmpeg process"),
    ("15 fps, 10 s, raw, zarr (zstd)", "zarr, 15 fps"),
    ("15 fps, 10 s, JPEG q90, webdataset", "webdataset, 15 fps, jpeg"),
    ("same, 4:4:4 chroma (`--jpeg-subsampling 444`)", "webdataset, 15 fps, jpeg 4:4:4"),
    ("15 fps, 10 s, JPEG q90, zarr", "zarr, 15 fps, jpeg"),
]


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _table(header: list[str], rows) -> str:
    """A Markdown table: its header and rule lines, then one line per row."""
    return "\n".join([*header, *rows]) + "\n"


def stores() -> str:
    row = next(r for r in _load("stores.json")["rows"] if r["set"] == "kinetics-like")
    lines = ["| store | bytes per video | vs source | KB per s of video | PSNR vs raw | extraction videos/s | of the ffmpeg / PyAV ceiling |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
             f"| source files | {row['source_bytes'] / row['videos'] / 1024:,.0f} KB | 1x | "
             f"{row['source_bytes'] / 1000 / (row['videos'] * 10):,.0f} | | | |"]
    for label, key in STORE_ROWS:
        x = row["runs"][key]
        psnr = f"{x['psnr_db_vs_raw']:.1f} dB" if "psnr_db_vs_raw" in x else ""
        lines.append(f"| {label} | {x['bytes_per_video'] / 1024:,.0f} KB | {x['of_source_bytes']:.2f}x | {x['kb_per_video_second']:,.0f} | {psnr} | "
                     f"{x['videos_per_s']:.1f} | {x['fraction_of_ceiling']:.0%} / {x['fraction_of_pyav_ceiling']:.0%} |")
    return "\n".join(lines) + "\n"


EXTRACT_SETS = {"hmdb51-like": "Xvid AVI 320x240, 90 frames", "synthetic": "H.264 128x96, 32 frames"}


def extract() -> str:
    data = _load("extract.json")
    lines = ["| set | path | videos/s | source frames/s | of the ffmpeg / PyAV ceiling | of decode + resize | store size | per video |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    rows = {r["set"]: r for r in data["rows"]}
    for name, what in EXTRACT_SETS.items():
        r = rows[name]
        frames, seconds = r["source_frames"], {k: r[k] for k in ("ceiling_s", "pyav_ceiling_s", "resize_ceiling_s")}
        ceilings = [("ffmpeg -f null (ceiling)", "ceiling_s"), ("PyAV decode, nothing kept (ceiling)", "pyav_ceiling_s"),
                    ("PyAV decode + resize, nothing written", "resize_ceiling_s")]
        for k, (label, key) in enumerate(ceilings):
            first = f"{name} ({what}, {r['source_bytes'] / r['videos'] / 1024:,.0f} KB)" if k == 0 else ""
            s = seconds[key]
            source = f"{r['source_bytes'] / r['videos'] / 1024:,.0f} KB source" if k == 0 else ""
            lines.append(f"| {first} | {label} | {r['videos'] / s:.1f} | {frames / s:,.0f} | {seconds['ceiling_s'] / s:.0%} / "
                         f"{seconds['pyav_ceiling_s'] / s:.0%} | {seconds['resize_ceiling_s'] / s:.0%} | | {source} |")
        for label, x in r["runs"].items():
            lines.append(f"| | extract -> {label} | {x['videos_per_s']:.1f} | {x['frames_per_s']:,.0f} | {x['fraction_of_ceiling']:.0%} / "
                         f"{x['fraction_of_pyav_ceiling']:.0%} | {x['fraction_of_resize_ceiling']:.0%} | {x['store_bytes'] / 2**20:,.0f} MB | "
                         f"{x['bytes_per_video'] / 1024:,.0f} KB |")
    lines.append(f"\nThe disk took {data['disk_write_bytes_per_s'] / 2**20:,.0f} MB/s (written and fsynced in the same run): writing the "
                 "largest store's bytes takes " + ", ".join(f"{max(x['write_bound_s'] for x in rows[n]['runs'].values()):.1f} s ({n})"
                                                          for n in EXTRACT_SETS)
                 + ", less than its decode + resize, so decoding bounds every run here. Where the thread-seconds of the "
                 "hmdb51-like WebDataset run went: " + ", ".join(f"{k} {v:.1f} s" for k, v in rows["hmdb51-like"]["runs"]["webdataset"]["stages"].items() if v)
                 + ".")
    return "\n".join(lines) + "\n"


def hybrid() -> str:
    data = _load("hybrid-memory.json")
    names = {"timesformer": "TimeSformer (fused attention)", "timesformer-math": "TimeSformer (explicit softmax, as HF)",
             "timesformer_retnet": "hybrid, parallel, recompute_time (default)", "timesformer_retnet-chunkwise": "hybrid, chunkwise (8), recompute_time",
             "timesformer_retnet-kept": "hybrid, parallel, every activation kept",
             "timesformer_retnet-mean": "hybrid, one video CLS (`cls_mode=mean`), recompute_time"}
    base = {r["frames"]: r for r in data["rows"] if r["variant"] == "timesformer"}
    lines = ["| model | T | activations MB | x TimeSformer | peak MB | x TimeSformer | train step s | x TimeSformer |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in data["rows"]:
        b = base[r["frames"]]
        lines.append(f"| {names.get(r['variant'], r['variant'])} | {r['frames']} | {r['activation_mb']:,.0f} | {r['activation_mb'] / b['activation_mb']:.3f} | "
                     f"{r['peak_mb']:,.0f} | {r['peak_mb'] / b['peak_mb']:.2f} | {r['train_step_s']:.2f} | {r['train_step_s'] / b['train_step_s']:.2f} |")
    exps = data["summary"]["exponents"]
    lines.append("\nActivation growth in T (fitted exponent): " + ", ".join(f"{names.get(k, k)} {v['activation_memory']:.2f}" for k, v in exps.items()))
    lines.append("\n" + _hybrid_verdict(data))
    return "\n".join(lines) + "\n"


def _hybrid_verdict(data: dict) -> str:
    """The card's claim (a quarter less memory than TimeSformer, faster training) against this run, in words made from its rows."""
    rows = {(r["variant"], r["frames"]): r for r in data["rows"]}
    ts = sorted(t for v, t in rows if v == "timesformer")

    def ratios(variant: str, key: str) -> list[float]:
        return [rows[variant, t][key] / rows["timesformer", t][key] for t in ts if (variant, t) in rows]

    def span(values: list[float], digits: int = 2) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:.{digits}f}x" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else f"{lo:.{digits}f}-{hi:.{digits}f}x"

    act, peak, step = (ratios("timesformer_retnet", k) for k in ("activation_mb", "peak_mb", "train_step_s"))
    met = lambda ok: "met" if ok else "not met"  # noqa: E731
    out = [f"**The card's claim, measured here** (the hybrid's default, parallel retention with `recompute_time`, against TimeSformer "
           f"with fused attention, T = {', '.join(map(str, ts))}): activations {span(act, 3)} (goal <= 0.75x: {met(max(act) <= 0.75)}); "
           f"peak memory {span(peak)} (goal below 1x at every T: {met(max(peak) < 1)}); train step {span(step)} "
           f"(goal <= 1x at T = 8 and below at T = 32: {met(step[0] <= 1 and (32 not in ts or step[ts.index(32)] < 1))})."]
    if ("timesformer_retnet-mean", ts[0]) in rows:
        mean = span(ratios("timesformer_retnet-mean", "activation_mb"), 3)
        out.append(f"With TimeSformer's single video CLS (`cls_mode=mean`, not causal) the activations are {mean}.")
    if ("timesformer_retnet-chunkwise", ts[-1]) in rows:
        long = [t for t in ts if t >= 32]
        def versus(key: str) -> list[float]:  # chunkwise / parallel at T >= 32
            return [rows["timesformer_retnet-chunkwise", t][key] / rows["timesformer_retnet", t][key] for t in long]

        out.append(f"Chunkwise against parallel at T >= 32: activations {span(versus('activation_mb'), 3)}, peak {span(versus('peak_mb'))} "
                   f"(goal strictly below: {met(max(versus('activation_mb') + versus('peak_mb')) < 1)}).")
    return " ".join(out)


LOADER_ROWS = [  # README label -> the row's path in loader.json
    ("decode every epoch, PyAV in-process (vidpipe's own decode path)", "decode every epoch (PyAV, in-process)"),
    ("decode every epoch, an ffmpeg process per video", "decode every epoch (an ffmpeg process per video)"),
    ("webdataset, raw frames", "webdataset raw store"),
    ("zarr, raw frames (zstd, a chunk per frame)", "zarr raw store"),
    ("webdataset, JPEG q90", "webdataset jpeg store"),
    ("zarr, JPEG q90", "zarr jpeg store"),
]


def _percent(row: dict, key: str) -> str:
    return f"{row[key]:.0%}" if key in row else ""


def loader() -> str:
    tsn = _load("loader.json")
    dense = {r["path"]: r for r in _load("loader-dense.json")["rows"]}
    rows = {r["path"]: r for r in tsn["rows"]}
    lines = ["| loader | bytes per video | TSN 1x1x8 clips/s | vs decode | of the read limit | of the JPEG decode limit | dense 16x1 clips/s | vs decode |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, path in LOADER_ROWS:
        r, d = rows[path], dense[path]
        size = f"{r['stored_bytes_per_video'] / 1024:,.0f} KB" if "stored_bytes_per_video" in r else "(source)"
        lines.append(f"| {label} | {size} | {r['clips_per_s']:,.0f} | {r['x_decode']:.1f}x | {_percent(r, 'of_read_limit')} | "
                     f"{_percent(r, 'of_jpeg_decode_limit')} | {d['clips_per_s']:,.0f} | {d['x_decode']:.1f}x |")
    for name, limit in tsn["limits"].items():
        if "clips_per_s" in limit:
            lines.append(f"| limit: {limit['what']} | | {limit['clips_per_s']:,.0f} | {limit['clips_per_s'] / tsn['decode_clips_per_s']:.0f}x | | | | |")
    return "\n".join(lines) + "\n"


def remote() -> str:
    """benchmarks/results/loader-remote.json: the same JPEG WebDataset store from local disk, a bucket and an HTTP server."""
    data = _load("loader-remote.json")
    rows = [r for r in data["rows"] if r["path"].startswith("webdataset jpeg store")]
    table = _table(["| where the store is | TSN 1x1x8 clips/s (median of rounds) | MB/s of frames | of local disk |", "| --- | ---: | ---: | ---: |"],
                   [f"| {r['path'].removeprefix('webdataset jpeg store').strip() or 'local disk'} | {r['clips_per_s']:,.0f} | {r['mb_per_s']:,.0f} | "
                    f"{_percent(r, 'of_local') or '100%'} |" for r in rows])
    short = [f"{r['path'].removeprefix('webdataset jpeg store at ')} {r['of_local']:.0%}" for r in rows if r.get("of_local", 1) < 0.8]
    verdict = ("Every remote row reaches the goal of 80% of local disk." if not short else
               f"Goal (80% of local disk) met by every row but {', '.join(short)}.")
    servers = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in data.get("server_cpu_s", {}).items())
    return table + (f"\n{verdict} Machine: {data['cpus']} CPUs, both servers on 127.0.0.1 sharing them with the loader"
                    + (f" (CPU time the servers used over the whole run: {servers})." if servers else ".") + "\n")


def peers() -> str:
    data = _load("peers.json")
    return _table(["| contender | clips/s (median) | x vidpipe WebDataset raw |", "| --- | ---: | ---: |"],
                  [*(f"| {r['contender']} | {r['clips_per_s']:,.0f} | {r['x_vidpipe_webdataset_raw']:.2f} |" for r in data["rows"]),
                   *(f"| {name} | skipped: {why} | |" for name, why in data["skipped"].items())])


def demo() -> str:
    data = _load("demo.json")
    lines = ["| model | test top-1 | within-pair accuracy | top-5 | macro-F1 | checkpoint (chosen on val) | train time |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in data["models"].items():
        chance = " (chance 0.5)" if name == "tsn_mean" else ""
        lines.append(f"| `{name}` | {m['top1']:.3f} | {m['within_pair']:.3f}{chance} | {m['top5']:.3f} | {m['macro_f1']:.3f} | "
                     f"epoch {m['epoch']} | {m['train_seconds']:.0f} s |")
    p = data["predict"]
    lines.append(f"\n`vidpipe predict` with `{p['model']}` on {p['videos']} new videos: {p['right']} right. The whole demo took "
                 f"{data['seconds']:.0f} s here.")
    return "\n".join(lines) + "\n"


MODEL_NAMES = {"timesformer": "TimeSformer (fused attention)", "timesformer-math": "TimeSformer (explicit softmax, as HF)",
               "timesformer_retnet": "hybrid, parallel retention, recompute_time (default)",
               "timesformer_retnet-chunkwise": "hybrid, chunkwise retention (8), recompute_time",
               "timesformer_retnet-kept": "hybrid, parallel retention, every activation kept",
               "timesformer_retnet-mean": "hybrid, one video CLS (`cls_mode=mean`)",
               "vivit_fe": "ViViT FE base (t = 2)", "vivit_fe-mini": "Mini-ViViT (`vivit_fe` tiny)", "tsn_r50": "TSN ResNet-50 (shift off)",
               "tsm_r50": "TSM ResNet-50", "tin_r50": "TIN ResNet-50", "squeezetime": "SqueezeTime (trained at batch 2)",
               "r2plus1d_18": "R(2+1)D-18"}


def models() -> str:
    """benchmarks/results/models.json: the smallest and largest T of every variant."""
    data = _load("models.json")
    lines = ["| model | T | params | GFLOPs | activations MB | peak MB | train step s | clips/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for variant in dict.fromkeys(r["variant"] for r in data["rows"]):
        rows = sorted((r for r in data["rows"] if r["variant"] == variant), key=lambda r: r["frames"])
        name = MODEL_NAMES.get(variant, variant)
        described = data["variants"].get(variant, "")
        if variant.startswith("timesformer_retnet") and "recompute" not in described and "kept" not in described:
            name = f"hybrid, {described.removeprefix('RetNet hybrid, ')}, every activation kept (measured before recompute_time)"
        for k, r in enumerate([rows[0], rows[-1]] if len(rows) > 1 else rows):
            name, params = (name, f"{r['params'] / 1e6:.1f} M") if k == 0 else ("", "")
            lines.append(f"| {name} | {r['frames']} | {params} | {r['gflops_per_clip']:,.0f} | {r['activation_mb']:,.0f} | {r['peak_mb']:,.0f} | "
                         f"{r['train_step_s']:.2f} | {r['infer_clips_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def pairs(family: str) -> str:
    """benchmarks/results/<family>-synthetic.json: each run on the synthetic pairs (test split, the checkpoint val chose)."""
    data = _load(f"{family}-synthetic.json")
    inits = any(r["init"] != "none" for r in data["models"].values())
    lines = ["| run | " + ("init | " if inits else "") + "params | val chose | test top-1 | within-pair (chance 0.5) | macro-F1 | train time |",
             "| --- | " + ("--- | " if inits else "") + "---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in data["models"].items():
        init = f"{r['init']} | " if inits else ""
        lines.append(f"| `{name}` | {init}{r['params'] / 1e6:.2f} M | epoch {r['epoch']} | {r['top1']:.3f} | {r['within_pair']:.3f} | "
                     f"{r['macro_f1']:.3f} | {r['train_seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


def features() -> str:
    """benchmarks/results/features.json: each backbone over the same store."""
    def row(r: dict) -> str:
        stored = " x ".join(map(str, r["features"])) + (" + tokens " + " x ".join(map(str, r["tokens"])) if r["tokens"] else "")
        return f"| {r['backbone']} | {r['videos_per_s']:.2f} | {r['frames_per_s']:.1f} | {stored} | {r['bytes_per_video'] / 1024:.1f} KB |"

    return _table(["| backbone | videos/s | frames/s | stored per video | bytes per video |", "| --- | ---: | ---: | --- | ---: |"],
                  map(row, _load("features.json")["rows"]))


def latency() -> str:
    """benchmarks/results/latency.json: batch-1 latency (PyTorch, onnxruntime) and batch-8 throughput."""
    def row(r: dict) -> str:
        onnx = f"{r['onnxruntime_latency_ms']:.0f}" if r.get("onnxruntime_latency_ms") is not None else "no export"
        return (f"| `{r['variant']}` | {r['frames']}x{r['size']} | {r['params'] / 1e6:.1f} M | {r['gflops_per_clip']:.1f} | "
                f"{r['latency_ms']:.0f} | {onnx} | {r['throughput_clips_per_s']:.2f} |")

    return _table(["| model | T x S | params | GFLOPs / clip | PyTorch ms (batch 1) | onnxruntime ms (batch 1) | clips/s (batch 8) |",
                   "| --- | --- | ---: | ---: | ---: | ---: | ---: |"], map(row, _load("latency.json")["rows"]))


def extract_720p() -> str:
    """benchmarks/results/extract-720p-cpu.json: the 720p set's ffmpeg path (and the DALI row, where it ran)."""
    r = _load("extract-720p-cpu.json")["rows"][0]
    lines = ["| set | path | videos/s | source frames/s | of ceiling |", "| --- | --- | ---: | ---: | ---: |",
             f"| 720p-h264 ({r['videos']} videos, {r['source_bytes'] / r['videos'] / 1024:,.0f} KB each) | ffmpeg -f null (ceiling) | "
             f"{r['ceiling_videos_per_s']:.1f} | {r['ceiling_frames_per_s']:,.0f} | 100% |"]
    for label, x in r["runs"].items():
        if "skipped" in x:
            lines.append(f"| | extract -> {label} | skipped ({x['skipped']}) | | |")
        else:
            lines.append(f"| | extract -> {label} | {x['videos_per_s']:.1f} | {x['frames_per_s']:,.0f} | {x['fraction_of_ceiling']:.0%} |")
    return "\n".join(lines) + "\n"


def stream() -> str:
    """benchmarks/results/predict-stream.json: a long stream's memory and speed."""
    d = _load("predict-stream.json")
    return ("| video | frames | peak RSS after 10 s of video | peak RSS at the end | growth | frames/s |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: |\n"
            f"| {d['video']} at {d['stream_fps']:.2f} frames/s | {d['end']['frames']:,} | {d['after_10s']['peak_rss_mb']:.1f} MB | "
            f"{d['end']['peak_rss_mb']:.1f} MB | {d['peak_rss_growth_mb']:.1f} MB | {d['frames_per_s']:.1f} |\n")


PERCEIVER_ORDER = ["r2plus1d-baseline", "8b-1c-1s", "8b-1c-2s", "8b-1c-6s", "7b-1c-1s", "6b-1c-6s", "4b-1c-6s", "4b-2c-12s", "8b-1c-only", "8b-1s-only"]


def _perceiver_label(run: str) -> str:
    """"8b-1c-6s" -> "8 blocks + 1 cross + 6 self"; "8b-1s-only" -> "8 blocks + 1 self only"."""
    if run == "r2plus1d-baseline":
        return "R(2+1)D-18 baseline"
    words = {"b": "blocks", "c": "cross", "s": "self"}
    parts = [f"{p[:-1]} {words[p[-1]]}" for p in run.split("-") if p != "only"]
    return " + ".join(parts) + (" only" if run.endswith("-only") else "")


def perceiver() -> str:
    """benchmarks/results/perceiver-ablation-tiny.json: the study's ablation at the tiny scale, beside the study's figures."""
    data = _load("perceiver-ablation-tiny.json")
    rows = {r["run"].removeprefix("run-"): r for r in data["rows"]}
    lines = ["| configuration | study: val top-1 (HMDB51, K400 CNN) | here: params | here: val top-1 (epoch) | here: test top-1 | test macro-F1 | s/epoch |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for run in PERCEIVER_ORDER:
        r = rows[run]
        epoch = re.match(r"epoch (\d+)", r["val_from"]).group(1)
        lines.append(f"| {_perceiver_label(run)} | {r['study_val_top1']:.3f} | {r['params_m']:.2f} M | {r['val_top1']:.3f} ({epoch}) | {r['top1']:.3f} | "
                     f"{r['macro_f1']:.3f} | {r['epoch_s']:.0f} |")
    return "\n".join(lines) + "\n"


def predict_examples() -> str:
    """benchmarks/results/predict-examples.txt (benchmarks/predict_examples.sh's output), as a shell session."""
    return "```\n" + (RESULTS / "predict-examples.txt").read_text().rstrip("\n") + "\n```\n"


TABLES = {"stores": stores, "extract": extract, "hybrid": hybrid, "models": models, "loader": loader, "remote": remote, "peers": peers, "demo": demo,
          "features": features, "latency": latency, "perceiver": perceiver, "predict_examples": predict_examples, "extract_720p": extract_720p, "stream": stream,
          "timesformer_pairs": lambda: pairs("timesformer"), "vivit_pairs": lambda: pairs("vivit"), "tsm_pairs": lambda: pairs("tsm"),
          "squeezetime_pairs": lambda: pairs("squeezetime")}


def update_docs(write: bool) -> list[str]:
    """The pages whose generated blocks differ from what the JSON gives (rewritten when `write`)."""
    stale = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        fresh = BLOCK.sub(lambda m: m.group(1) + TABLES[m.group(2)]().strip() + "\n" + m.group(4), text)
        if fresh != text:
            stale.append(str(page.relative_to(DOCS.parent)))
            if write:
                page.write_text(fresh)
    return stale


if __name__ == "__main__":
    if sys.argv[1] in ("--write", "--check"):
        stale = update_docs(write=sys.argv[1] == "--write")
        print("\n".join(f"{'rewrote' if sys.argv[1] == '--write' else 'stale'}: {p}" for p in stale) or "every generated table is current")
        sys.exit(1 if stale and sys.argv[1] == "--check" else 0)
    print(TABLES[sys.argv[1]](), end="")
