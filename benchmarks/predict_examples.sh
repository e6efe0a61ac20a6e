#!/usr/bin/env bash
# The docs' `vidpipe predict` examples (docs/predict.md), on the demo's runs and held-out videos (run `make demo` first):
# whole videos, sliding windows and a stream; outputs in benchmarks/results/predict-examples.txt and *.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
held=demo-output/held-out
{
  echo '$ vidpipe predict demo-output/run-resnet_temporal_vit demo-output/held-out/test/size_grow demo-output/held-out/test/light_darken --top-k 3'
  .venv/bin/vidpipe predict demo-output/run-resnet_temporal_vit $held/test/size_grow $held/test/light_darken --top-k 3 \
    --jsonl $out/predict-example-whole.jsonl 2>&1
  echo
  echo '$ vidpipe predict demo-output/run-resnet_temporal_vit demo-output/held-out/two-videos.mp4 --window 1.92 --stride 0.48 --top-k 3'
  .venv/bin/vidpipe predict demo-output/run-resnet_temporal_vit $held/two-videos.mp4 --window 1.92 --stride 0.48 --top-k 3 \
    --jsonl $out/predict-example-windows.jsonl 2>&1
  echo
  echo '$ vidpipe predict demo-output/run-temporal_retnet demo-output/held-out/two-videos.mp4 --stream --every 4'
  .venv/bin/vidpipe predict demo-output/run-temporal_retnet $held/two-videos.mp4 --stream --every 4 --jsonl $out/predict-example-stream.jsonl 2>&1
} | tee $out/predict-examples.txt
