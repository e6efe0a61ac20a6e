#!/usr/bin/env bash
# The TimeSformer/RetNet hybrid against TimeSformer as T grows (issue 32): activation bytes saved for backward,
# peak memory and train step, base preset at 112 px, every hybrid form: parallel and chunkwise retention with
# the temporal update recomputed in backward (the default), and parallel with every activation kept.
# Writes benchmarks/results/hybrid-memory.json (and .png). On a GPU, add --size 224.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDPIPE=${VIDPIPE:-.venv/bin/vidpipe}
"$VIDPIPE" bench models --models timesformer,timesformer_retnet --frames 8,16,32,64 --size 112 --preset base \
    --json benchmarks/results/hybrid-memory.json "$@"
