#!/usr/bin/env bash
# The remote loader rows: the JPEG WebDataset store of benchmarks/loader.sh (hmdb51-like, TSN 1x1x8, 2
# workers) read from local disk, from an S3 server (moto, what s3fs tests against) and from an HTTP server
# (python -m http.server), both on 127.0.0.1 of this machine, streamed and through --cache-dir, timed in
# interleaved rounds by `vidpipe bench loader`; writes benchmarks/results/loader-remote.json.
# Usage: benchmarks/remote.sh WORK   (WORK holds hmdb51-like/ from `vidpipe bench extract --work WORK`)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(realpath "${1:?usage: benchmarks/remote.sh WORK}")
VIDPIPE=${VIDPIPE:-.venv/bin/vidpipe}
PY=${PY:-.venv/bin/python}
store="$WORK/remote-webdataset-jpeg"
rm -rf "$store" "$WORK/shard-cache"  # a store made by this code, and a cold cache
"$VIDPIPE" extract --dataset synthetic --root "$WORK/hmdb51-like" --out "$store" --format webdataset --frames 32 --size 128 \
  --shard-size 4MB --frame-codec jpeg
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
s3_port=$(free_port); http_port=$(free_port)
"$PY" -m moto.server -H 127.0.0.1 -p "$s3_port" >/dev/null 2>&1 & s3_pid=$!
"$PY" -m http.server "$http_port" --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 & http_pid=$!
trap 'kill $s3_pid $http_pid' EXIT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port"
"$PY" - "$store" <<'PYTHON'
import sys, time, urllib.request
from pathlib import Path

import s3fs

for _ in range(200):  # the servers are up
    try:
        urllib.request.urlopen(f"{__import__('os').environ['AWS_ENDPOINT_URL']}/moto-api/", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
fs, store = s3fs.S3FileSystem(), Path(sys.argv[1])
fs.mkdir("bench")
for p in sorted(store.rglob("*")):
    if p.is_file() and p.suffix != ".lock":
        fs.put_file(str(p), f"bench/{store.name}/{p.relative_to(store)}")
PYTHON
"$VIDPIPE" bench loader --dataset synthetic --root "$WORK/hmdb51-like" --store "$store" --store "s3://bench/remote-webdataset-jpeg" \
  --store "http://127.0.0.1:$http_port/remote-webdataset-jpeg" --cache-dir "$WORK/shard-cache" --clips 2000 --workers 2 \
  --json benchmarks/results/loader-remote.json
# the CPU the two servers used over the whole benchmark (they share the machine's cores with the loader)
"$PY" - "$s3_pid" "$http_pid" <<'PYTHON'
import json, os, sys

def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

path = "benchmarks/results/loader-remote.json"
data = json.load(open(path))
data["server_cpu_s"] = {"s3 (moto server)": cpu_seconds(sys.argv[1]), "http (python -m http.server)": cpu_seconds(sys.argv[2])}
json.dump(data, open(path, "w"), indent=2)
print(data["server_cpu_s"])
PYTHON
