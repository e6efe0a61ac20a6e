#!/usr/bin/env bash
# On your GPU machine: time DALI (NVDEC) decode against the ffmpeg path on the same 720p H.264 set,
# every CPU core decoding for ffmpeg. Writes benchmarks/results/extract-gpu.json.
# Needs vidpipe with its DALI extra in the Python that runs it:  pip install -e '.[dali]'
# Usage: benchmarks/extract_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PYTHON" -c "import nvidia.dali" 2>/dev/null || { echo "NVIDIA DALI is not installed: pip install -e '.[dali]'" >&2; exit 1; }
PYTHONUNBUFFERED=1 "$PYTHON" -m vidpipe bench extract --set 720p-h264 --videos-per-class 20 --workers "$(nproc)" \
  --json benchmarks/results/extract-gpu.json
