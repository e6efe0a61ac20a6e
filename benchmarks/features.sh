#!/usr/bin/env bash
# Feature-caching speed of each frozen backbone; writes benchmarks/results/features.json.
# 20 hmdb51-like videos (Xvid AVI 320x240, 90 frames) stored as 16 x 128 x 170 clips, random weights.
# Usage: benchmarks/features.sh WORK
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:?usage: benchmarks/features.sh WORK}
VIDPIPE=${VIDPIPE:-.venv/bin/vidpipe}
"$VIDPIPE" synth "$WORK/feat-src" --videos-per-class 2 --codec mpeg4 --size 320x240 --frames 90
"$VIDPIPE" extract --dataset synthetic --root "$WORK/feat-src" --out "$WORK/feat-store" --frames 16 --size 128
"$VIDPIPE" bench features --store "$WORK/feat-store" --json benchmarks/results/features.json
