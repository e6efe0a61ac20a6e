"""Streaming memory and speed: `vidpipe predict RUN VIDEO --stream` on a 10-minute video.

Renders a 10-minute test-pattern video (ffmpeg's testsrc2, 128x96 at 25 fps), streams it through RUN (a
causal model: the demo's temporal_retnet by default) in a fresh process, and records that process's peak
RSS (VmHWM) after 10 seconds of video and at the end, with frames/s. Writes the table and JSON.

    python benchmarks/predict_stream.py [--run demo-output/run-temporal_retnet] [--minutes 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
from vidpipe.predict import Predictor
def peak_mb():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024
p = Predictor.load(sys.argv[1], device='cpu')
rate = p.default_stream_rate()
marks, t0, frames = {}, time.perf_counter(), 0
for pred in p.stream(sys.argv[2], rate):
    frames = pred.frames
    if 'after_10s' not in marks and pred.end >= 10:
        marks['after_10s'] = {'frames': frames, 'video_s': round(pred.end, 2), 'peak_rss_mb': round(peak_mb(), 1)}
seconds = time.perf_counter() - t0
marks['end'] = {'frames': frames, 'video_s': round(frames / rate, 2), 'peak_rss_mb': round(peak_mb(), 1)}
print(json.dumps({'stream_fps': rate, 'seconds': round(seconds, 1), 'frames_per_s': round(frames / seconds, 1), **marks}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "demo-output" / "run-temporal_retnet"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "predict-stream.json"))
    args = ap.parse_args()
    from vidpipe.io.ffmpeg import ffmpeg_binary

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "long.mp4"
        subprocess.run([ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=128x96:rate=25", "-t", str(args.minutes * 60),
                        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(video)], check=True)
        res = subprocess.run([sys.executable, "-c", CHILD, args.run, str(video)], capture_output=True, text=True, check=True)
    result = {"run": args.run, "video": f"testsrc2 128x96, 25 fps, {args.minutes:g} min, H.264", "machine": f"{platform.machine()}, "
              f"{__import__('os').cpu_count()} cores", **json.loads(res.stdout)}
    result["peak_rss_growth_mb"] = round(result["end"]["peak_rss_mb"] - result["after_10s"]["peak_rss_mb"], 1)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"| video | frames | peak RSS after 10 s | peak RSS at the end | growth | frames/s |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"
          f"| {result['video']} at {result['stream_fps']:.2f} frames/s | {result['end']['frames']} | {result['after_10s']['peak_rss_mb']} MB | "
          f"{result['end']['peak_rss_mb']} MB | {result['peak_rss_growth_mb']} MB | {result['frames_per_s']} |")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
