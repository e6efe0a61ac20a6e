#!/usr/bin/env bash
# On a GPU machine: install the carried wheels, then time DALI (NVDEC) against the ffmpeg path on the
# same 720p H.264 set, every CPU core decoding for ffmpeg. Writes benchmarks/results/extract-gpu.json.
# Usage there: benchmarks/extract_gpu.sh WHEELS_DIR   (WHEELS_DIR filled by `gpu_setup.sh collect`)
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/gpu_setup.sh install "${1:?usage: benchmarks/extract_gpu.sh WHEELS_DIR}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
PYTHONUNBUFFERED=1 python3 -m vidpipe bench extract --set 720p-h264 --videos-per-class 20 --workers "$(nproc)" \
  --json benchmarks/results/extract-gpu.json
if [ -n "${OUT:-}" ]; then cp benchmarks/results/extract-gpu.json "$OUT"/; fi  # a remote runner's way back
