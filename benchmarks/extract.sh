#!/usr/bin/env bash
# Extraction throughput vs the ffmpeg decode ceiling; writes benchmarks/results/extract.json.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDPIPE=${VIDPIPE:-.venv/bin/vidpipe}
"$VIDPIPE" bench extract --videos-per-class 20 --frames 32 --size 128 --json benchmarks/results/extract.json "$@"
