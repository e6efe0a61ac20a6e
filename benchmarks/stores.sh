#!/usr/bin/env bash
# Store size and extraction speed per mode and frame codec on 10 s clips (the kinetics-like set of
# `bench extract`: 50 H.264 videos, 340x256, 25 fps), against the source bytes and the bare ffmpeg
# decode ceiling; writes benchmarks/results/stores.json.
# Usage: benchmarks/stores.sh WORK
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:?usage: benchmarks/stores.sh WORK}
VIDPIPE=${VIDPIPE:-.venv/bin/vidpipe}
"$VIDPIPE" bench extract --set kinetics-like --videos-per-class 5 --work "$WORK" --json benchmarks/results/stores.json
