#!/usr/bin/env bash
# The 720p H.264 set on this machine's CPU (the DALI row is listed as skipped without a GPU);
# writes benchmarks/results/extract-720p-cpu.json. 100 videos: encoding them takes several minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDPIPE=${VIDPIPE:-.venv/bin/vidpipe}
"$VIDPIPE" bench extract --set 720p-h264 --videos-per-class 10 --frames 32 --size 128 --json benchmarks/results/extract-720p-cpu.json "$@"
