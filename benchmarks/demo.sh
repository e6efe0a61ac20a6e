#!/usr/bin/env bash
# The README's demo table: `make demo`'s chain, its figures copied to benchmarks/results/demo.json.
set -euo pipefail
cd "$(dirname "$0")/.."
make demo
cp demo-output/results.json benchmarks/results/demo.json
