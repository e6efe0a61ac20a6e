"""`vidpipe bench extract`: extraction throughput against the decode ceiling on the same files.

The ceiling is a bare `ffmpeg -i X -f null -` of every file (a full decode, nothing kept) at the same
parallelism and threads per process as extraction. Extraction does that decode too, plus a probe,
scaling T frames, and writing the store, so `% of ceiling` is how much of the machine's decode
capacity reaches the store. That ceiling pays a process start per video, as the `ffmpeg` backend
does; the `pyav` backend does not, so a second ceiling decodes every frame in-process with PyAV
(nothing converted or kept) and the rows give both fractions.

Neither ceiling does all the work a store needs: a third decodes every video in-process and resizes
its kept frames to the store's size, nothing written (`resize_ceiling_s`), and the disk's write speed
(measured in the same run, fsync included) bounds how fast a store's bytes can land. Each run's
`of_bound` is its time against the larger of the two; `stages` splits its thread-seconds into probe,
decode (with the resize), encode (JPEG or zstd) and write (tar or zarr shards, sha256, fsync).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vidpipe.datasets.adapters import build_manifest
from vidpipe.stores.extract import ExtractConfig, extract, remove_store
from vidpipe.io.ffmpeg import ffmpeg_binary, probe
from vidpipe.io.pyav import pyav_installed
from vidpipe.datasets.synth import CLASSES, SynthConfig, synth

# name -> (synth settings, what it stands for)
BENCH_SETS = {
    "synthetic": (dict(codec="h264", width=128, height=96, frames=32), "the demo's synthetic set: H.264 mp4, 128x96, 32 frames"),
    "hmdb51-like": (dict(codec="mpeg4", width=320, height=240, frames=90, fps=30.0, noise=8.0, encoder_args=("-q:v", "5")),
                    "Xvid AVI 320x240, 90 frames at 30 fps (~3 s), ~200 KB a video like HMDB51's"),
    # noise 8 at crf 23 gives ~4 Mbps, a usual 720p30 bitrate (crf 18 would spend ~25 Mbps on the noise)
    "720p-h264": (dict(codec="h264", width=1280, height=720, frames=90, fps=30.0, noise=8.0, encoder_args=("-crf", "23")),
                  "H.264 mp4 1280x720, 90 frames at 30 fps (3 s), ~4 Mbps: the DALI (GPU) vs ffmpeg (CPU) comparison"),
    "kinetics-like": (dict(codec="h264", width=340, height=256, frames=250, fps=25.0, noise=8.0, encoder_args=("-crf", "23")),
                      "H.264 mp4 340x256, 250 frames at 25 fps (10 s) like Kinetics' resized clips: store modes and codecs"),
}
JPEG, FPS15, PROCESS = dict(frame_codec="jpeg"), dict(fps=15.0, max_seconds=10.0), dict(backend="ffmpeg")
JPEG444 = dict(frame_codec="jpeg", jpeg_subsampling="444")  # full-resolution chroma (every JPEG store before the choice)
# (row label, extract settings) per set; rows decode with the default backend (PyAV on a CPU machine) unless
# they name one; the DALI row needs DALI and a GPU
RUNS = {
    "synthetic": [("webdataset", dict(format="webdataset")), ("zarr", dict(format="zarr"))],
    "hmdb51-like": [("webdataset", dict(format="webdataset")), ("zarr", dict(format="zarr")),
                    ("webdataset, ffmpeg process", dict(format="webdataset", **PROCESS)), ("zarr, ffmpeg process", dict(format="zarr", **PROCESS)),
                    ("webdataset, jpeg", dict(format="webdataset", **JPEG)), ("zarr, jpeg", dict(format="zarr", **JPEG))],
    "kinetics-like": [("webdataset", dict(format="webdataset")), ("webdataset, ffmpeg process", dict(format="webdataset", **PROCESS)),
                      ("webdataset, jpeg", dict(format="webdataset", **JPEG)),
                      ("webdataset, 15 fps", dict(format="webdataset", **FPS15)),
                      ("webdataset, 15 fps, ffmpeg process", dict(format="webdataset", **FPS15, **PROCESS)),
                      ("webdataset, 15 fps, jpeg", dict(format="webdataset", **FPS15, **JPEG)),
                      ("webdataset, 15 fps, jpeg 4:4:4", dict(format="webdataset", **FPS15, **JPEG444)),
                      ("zarr, 15 fps", dict(format="zarr", **FPS15)), ("zarr, 15 fps, jpeg", dict(format="zarr", **FPS15, **JPEG))],
    "720p-h264": [("webdataset", dict(format="webdataset", backend="ffmpeg")), ("webdataset, DALI", dict(format="webdataset", backend="dali"))],
}


def dali_gpu_missing() -> str | None:
    """Why the DALI GPU row cannot run here, or None when it can."""
    from vidpipe.io import dali

    if not dali.dali_installed():
        return "DALI is not installed"
    if not dali.gpu_present():
        return "no GPU"
    return None


def default_sets() -> tuple[str, ...]:
    return ("synthetic", "hmdb51-like") + (("720p-h264",) if dali_gpu_missing() is None else ())


def _threads(workers: int) -> int:
    """Decoder threads per file when `workers` files decode at once (as extraction shares the cores)."""
    return max(1, (os.cpu_count() or 1) // workers)


def _timed(run, paths: list[Path], workers: int) -> float:
    """Seconds to run `run` on every path, `workers` at a time."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, paths))
    return time.perf_counter() - t0


def decode_ceiling(paths: list[Path], workers: int) -> float:
    threads = _threads(workers)

    def run(p):
        subprocess.run([ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-threads", str(threads), "-i", str(p),
                        "-map", "0:v:0", "-f", "null", "-"], check=True)

    return _timed(run, paths, workers)


def pyav_ceiling(paths: list[Path], workers: int) -> float:
    """Seconds to decode every frame of every file in-process with PyAV (nothing converted or kept)."""
    import av

    threads = _threads(workers)

    def run(p):
        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            stream.thread_count = threads
            for _ in container.decode(stream):
                pass

    return _timed(run, paths, workers)


def resize_ceiling(paths: list[Path], workers: int, frames: int, size: int) -> float:
    """Seconds to decode every video in-process and resize its kept frames to the store's clips (probe
    and decode as extraction does them with PyAV, nothing encoded or written)."""
    from vidpipe.io import pyav as pyav_io
    from vidpipe.io.decode import decode_clip

    spec, threads = ExtractConfig(frames=frames, size=size).spec, _threads(workers)
    return _timed(lambda p: decode_clip(p, spec, threads, pyav_io.probe(p), "pyav"), paths, workers)


def disk_write_speed(work: Path, nbytes: int = 256 * 2**20) -> float:
    """Bytes per second this disk takes: `nbytes` written in 4 MiB blocks, then fsynced (as a shard is)."""
    block = os.urandom(4 * 2**20)
    path = work / "write-speed.bin"
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        for _ in range(nbytes // len(block)):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    seconds = time.perf_counter() - t0
    path.unlink()
    return nbytes / seconds


def bench_extract(work: Path | None = None, videos_per_class: int = 20, workers: int | None = None,
                  frames: int = 32, size: int = 128, sets=None, log=print) -> dict:
    workers = workers or os.cpu_count() or 1
    work = Path(work) if work else Path(tempfile.mkdtemp(prefix="vidpipe-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"workers": workers, "cpus": os.cpu_count(), "frames": frames, "size": size,
               "disk_write_bytes_per_s": disk_write_speed(work), "rows": []}
    for name in sets or default_sets():
        settings, description = BENCH_SETS[name]
        data = work / name
        log(f"[{name}] writing {videos_per_class * len(CLASSES)} videos: {description}")
        synth(data, SynthConfig(videos_per_class=videos_per_class, **settings), workers=workers)
        manifest = build_manifest("synthetic", data)
        paths = [manifest.abspath(r) for r in manifest.records]
        source_frames = sum(probe(p).num_frames for p in paths)
        source_bytes = sum(p.stat().st_size for p in paths)
        decode_ceiling(paths[: 2 * workers], workers)  # warm the page cache and the binary
        ceiling = decode_ceiling(paths, workers)
        row = {"set": name, "description": description, "videos": len(paths), "source_frames": source_frames,
               "source_bytes": source_bytes, "ceiling_s": ceiling, "ceiling_videos_per_s": len(paths) / ceiling,
               "ceiling_frames_per_s": source_frames / ceiling}
        if pyav_installed():
            row["pyav_ceiling_s"] = pyav_ceiling(paths, workers)
            row["pyav_ceiling_videos_per_s"] = len(paths) / row["pyav_ceiling_s"]
            row["resize_ceiling_s"] = resize_ceiling(paths, workers, frames, size)
            row["resize_ceiling_videos_per_s"] = len(paths) / row["resize_ceiling_s"]
        row["runs"] = {}
        for label, settings in RUNS[name]:
            if settings.get("backend") == "dali" and (missing := dali_gpu_missing()):
                row["runs"][label] = {"skipped": missing}
                log(f"[{name}] {label}: skipped ({missing})")
                continue
            out = work / f"{name}-{label.replace(', ', '-')}"
            if out.exists():
                remove_store(out)  # time a full extraction, not a no-op rerun
            report = extract(manifest, out, ExtractConfig(frames=frames, size=size, workers=workers, **settings))
            store_bytes = sum(f["bytes"] for s in report.summary["splits"].values() for f in s["files"])
            row["runs"][label] = {
                "seconds": report.seconds, "backends": report.summary["backends"],
                "videos_per_s": report.videos / report.seconds, "frames_per_s": report.source_frames / report.seconds,
                "fraction_of_ceiling": ceiling / report.seconds,
                **({"fraction_of_pyav_ceiling": row["pyav_ceiling_s"] / report.seconds} if "pyav_ceiling_s" in row else {}),
                **({"fraction_of_resize_ceiling": row["resize_ceiling_s"] / report.seconds} if "resize_ceiling_s" in row else {}),
                "write_bound_s": store_bytes / results["disk_write_bytes_per_s"],
                "stages": {k: round(v, 3) for k, v in sorted(report.stages.seconds.items())},
                "store_bytes": store_bytes, "bytes_per_video": store_bytes / len(paths),
                "of_source_bytes": store_bytes / source_bytes,
                "kb_per_video_second": store_bytes / 1000 / sum(s["source_seconds"] for s in report.summary["splits"].values()),
            }
            x = row["runs"][label]
            bound = max(row.get("resize_ceiling_s", 0.0), x["write_bound_s"])
            x["of_bound"] = bound / report.seconds  # of the larger of decode + resize and writing the bytes
            raw = label.replace(", jpeg 4:4:4", "").replace(", jpeg", "")
            if settings.get("frame_codec") == "jpeg" and raw in row["runs"]:  # the JPEG frames against the same store's raw frames
                x["psnr_db_vs_raw"] = psnr_between(work / f"{name}-{raw.replace(', ', '-')}", out)
        results["rows"].append(row)
    return results


def psnr_between(raw_store: Path, jpeg_store: Path) -> float:
    """PSNR (dB) of every stored frame of one store against the same frame of another (the MSE over all of them)."""
    import numpy as np

    from vidpipe.stores.clips import Store

    raw, coded = Store.open(raw_store), Store.open(jpeg_store)
    total, count = 0.0, 0
    for split in raw.splits:
        frames = {vid: clip for vid, clip, _, _ in raw.samples(split)}
        for vid, clip, _, _ in coded.samples(split):
            total += float(np.sum((clip.astype(np.float64) - frames[vid]) ** 2))
            count += clip.size
    return 10 * np.log10(255**2 / max(total / count, 1e-12))


TABLE_COLUMNS = ["set", "path", "videos", "videos/s", "src frames/s", "of ceiling (ffmpeg / PyAV)", "of decode+resize",
                 "of bound", "store", "per video"]


def table_rows(results: dict) -> list[list]:
    """One row per ceiling and run, in TABLE_COLUMNS' order."""
    rows = []
    for r in results["rows"]:
        pyav_ceiling = "pyav_ceiling_s" in r
        resize = r.get("resize_ceiling_s")
        rows.append([r["set"], "ffmpeg -f null (ceiling)", r["videos"], f"{r['ceiling_videos_per_s']:.1f}",
                     f"{r['ceiling_frames_per_s']:.0f}", "100%" + (f" / {r['pyav_ceiling_s'] / r['ceiling_s']:.0%}" if pyav_ceiling else ""),
                     f"{resize / r['ceiling_s']:.0%}" if resize else "-", "-", "-", f"{r['source_bytes'] / r['videos'] / 1024:.0f} KB (source)"])
        if pyav_ceiling:
            rows.append([r["set"], "PyAV decode, nothing kept (ceiling)", r["videos"], f"{r['pyav_ceiling_videos_per_s']:.1f}",
                         f"{r['source_frames'] / r['pyav_ceiling_s']:.0f}", f"{r['ceiling_s'] / r['pyav_ceiling_s']:.0%} / 100%",
                         f"{resize / r['pyav_ceiling_s']:.0%}" if resize else "-", "-", "-", "-"])
        if resize:
            rows.append([r["set"], "PyAV decode + resize, nothing written", r["videos"], f"{r['resize_ceiling_videos_per_s']:.1f}",
                         f"{r['source_frames'] / resize:.0f}", f"{r['ceiling_s'] / resize:.0%} / {r['pyav_ceiling_s'] / resize:.0%}",
                         "100%", "-", "-", "-"])
        for label, x in r["runs"].items():
            if "skipped" in x:
                rows.append([r["set"], f"extract -> {label}", r["videos"], "-", "-", "-", "-", "-", "-", f"skipped ({x['skipped']})"])
                continue
            quality = f", {x['psnr_db_vs_raw']:.1f} dB" if "psnr_db_vs_raw" in x else ""
            rows.append([r["set"], f"extract -> {label}", r["videos"], f"{x['videos_per_s']:.1f}", f"{x['frames_per_s']:.0f}",
                         f"{x['fraction_of_ceiling']:.0%}" + (f" / {x['fraction_of_pyav_ceiling']:.0%}" if pyav_ceiling else ""),
                         f"{x['fraction_of_resize_ceiling']:.0%}" if "fraction_of_resize_ceiling" in x else "-",
                         f"{x['of_bound']:.0%}" if "of_bound" in x else "-",
                         f"{x['store_bytes'] / 2**20:.1f} MB",
                         f"{x['bytes_per_video'] / 1024:.0f} KB ({x['of_source_bytes']:.2f}x source, "
                         f"{x['kb_per_video_second']:.0f} KB/s of video{quality})"])
    return rows


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
