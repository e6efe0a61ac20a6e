"""README tables made from committed benchmark JSON (no figure typed by hand).

Usage: .venv/bin/python benchmarks/tables.py stores|extract|hybrid|loader|peers|demo   (prints the Markdown table)
"""

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
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


def stores() -> str:
    row = next(r for r in json.loads((RESULTS / "stores.json").read_text())["rows"] if r["set"] == "kinetics-like")
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
    data = json.loads((RESULTS / "extract.json").read_text())
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
    data = json.loads((RESULTS / "hybrid-memory.json").read_text())
    names = {"timesformer": "TimeSformer (fused attention)", "timesformer-math": "TimeSformer (explicit softmax, as HF)",
             "timesformer_retnet": "hybrid, parallel, recompute_time (default)", "timesformer_retnet-chunkwise": "hybrid, chunkwise (8), recompute_time",
             "timesformer_retnet-kept": "hybrid, parallel, every activation kept"}
    base = {r["frames"]: r for r in data["rows"] if r["variant"] == "timesformer"}
    lines = ["| model | T | activations MB | x TimeSformer | peak MB | x TimeSformer | train step s | x TimeSformer |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in data["rows"]:
        b = base[r["frames"]]
        lines.append(f"| {names.get(r['variant'], r['variant'])} | {r['frames']} | {r['activation_mb']:,.0f} | {r['activation_mb'] / b['activation_mb']:.3f} | "
                     f"{r['peak_mb']:,.0f} | {r['peak_mb'] / b['peak_mb']:.2f} | {r['train_step_s']:.2f} | {r['train_step_s'] / b['train_step_s']:.2f} |")
    exps = data["summary"]["exponents"]
    lines.append("\nActivation growth in T (fitted exponent): " + ", ".join(f"{names.get(k, k)} {v['activation_memory']:.2f}" for k, v in exps.items()))
    return "\n".join(lines) + "\n"


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
    tsn = json.loads((RESULTS / "loader.json").read_text())
    dense = {r["path"]: r for r in json.loads((RESULTS / "loader-dense.json").read_text())["rows"]}
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


def peers() -> str:
    data = json.loads((RESULTS / "peers.json").read_text())
    lines = ["| contender | clips/s (median) | x vidpipe WebDataset raw |", "| --- | ---: | ---: |"]
    for r in data["rows"]:
        lines.append(f"| {r['contender']} | {r['clips_per_s']:,.0f} | {r['x_vidpipe_webdataset_raw']:.2f} |")
    for name, why in data["skipped"].items():
        lines.append(f"| {name} | skipped: {why} | |")
    return "\n".join(lines) + "\n"


def demo() -> str:
    data = json.loads((RESULTS / "demo.json").read_text())
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


if __name__ == "__main__":
    print({"stores": stores, "extract": extract, "hybrid": hybrid, "loader": loader, "peers": peers, "demo": demo}[sys.argv[1]](), end="")
