#!/usr/bin/env bash
# Loader throughput on the hmdb51-like set of `bench extract`, both formats, raw and JPEG frames, TSN
# 1x1x8 and dense 16x1x1 clips, and (TSN) the data-wait fraction of R(2+1)D-18 training steps fed by each; writes benchmarks/results/loader.json and loader-dense.json. Shard sizes
# give both codecs about 9 shards per training split (more shards than loader workers).
# Usage: benchmarks/loader.sh WORK   (WORK holds hmdb51-like/ from `vidpipe bench extract --work WORK`)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:?usage: benchmarks/loader.sh WORK}
VIDPIPE=${VIDPIPE:-.venv/bin/vidpipe}
stores=()
for codec in raw jpeg; do
  for fmt in webdataset zarr; do
    rm -rf "$WORK/loader-$fmt-$codec"  # always a store made by this code
    "$VIDPIPE" extract --dataset synthetic --root "$WORK/hmdb51-like" --out "$WORK/loader-$fmt-$codec" --format "$fmt" \
      --frames 32 --size 128 --shard-size "$([ "$codec" = jpeg ] && echo 4MB || echo 32MB)" --frame-codec "$codec"
    stores+=(--store "$WORK/loader-$fmt-$codec")
  done
done
"$VIDPIPE" bench loader --dataset synthetic --root "$WORK/hmdb51-like" "${stores[@]}" --clips 2000 --workers 2 \
  --train-model r2plus1d_18 --train-steps 6 --json benchmarks/results/loader.json
"$VIDPIPE" bench loader --dataset synthetic --root "$WORK/hmdb51-like" "${stores[@]}" --clips 1000 --workers 2 \
  --sampling 16x1x1 --json benchmarks/results/loader-dense.json
