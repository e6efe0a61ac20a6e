#!/usr/bin/env bash
# Loader throughput on the hmdb51-like set of `bench extract`; writes benchmarks/results/loader.json.
# Usage: benchmarks/loader.sh WORK   (WORK holds hmdb51-like/ from `vidpipe bench extract --work WORK`)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:?usage: benchmarks/loader.sh WORK}
VIDPIPE=${VIDPIPE:-.venv/bin/vidpipe}
for fmt in webdataset zarr; do
  "$VIDPIPE" extract --dataset synthetic --root "$WORK/hmdb51-like" --out "$WORK/loader-$fmt" --format "$fmt" \
    --frames 32 --size 128 --shard-size 32MB
done
"$VIDPIPE" bench loader --dataset synthetic --root "$WORK/hmdb51-like" --store "$WORK/loader-webdataset" \
  --store "$WORK/loader-zarr" --clips 2000 --workers 2 --json benchmarks/results/loader.json
