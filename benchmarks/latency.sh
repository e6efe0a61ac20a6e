#!/usr/bin/env bash
# Inference figures for deployment: latency per clip at batch 1 (PyTorch and onnxruntime on the CPU) and
# throughput at batch 8, 16 frames at 112 and 224: SqueezeTime next to R(2+1)D-18, TSN/TSM/TIN and the
# transformers (base presets). Writes benchmarks/results/latency.json.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDPIPE=${VIDPIPE:-.venv/bin/vidpipe}
"$VIDPIPE" bench latency --models squeezetime,r2plus1d_18,tsm_r50,tin_r50,timesformer,vivit_fe --frames 16 --sizes 112,224 --steps 3 \
    --json benchmarks/results/latency.json "$@"
