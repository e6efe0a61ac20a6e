#!/usr/bin/env bash
# TimeSformer, its RetNet hybrid, ViViT FE, the Mini-ViViT, TSN, TSM and TIN (ResNet-50), SqueezeTime and
# R(2+1)D-18 as T grows (base presets; 112 x 112 on a CPU, where 224 at T=64 is too slow; on a GPU pass
# --size 224): parameters, FLOPs, activation and peak memory, step time, clips/s.
# Writes benchmarks/results/models.json and models.png.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDPIPE=${VIDPIPE:-.venv/bin/vidpipe}
"$VIDPIPE" bench models --models timesformer,timesformer_retnet,vivit_fe,tsm_r50,tin_r50,squeezetime,r2plus1d_18 \
    --frames 8,16,32,64 --size 112 --preset base --json benchmarks/results/models.json "$@"
