#!/usr/bin/env bash
# Install vidpipe with its DALI extra on a GPU machine that reaches no package registry.
#
#   here (online):      benchmarks/gpu_setup.sh pack          # wheels -> .gpu-wheels/part-00, part-01, ... (60 MiB each)
#   there, each call:   benchmarks/gpu_setup.sh collect DIR   # copy the part(s) this call carried to DIR (outside the tree)
#   there, at the end:  benchmarks/gpu_setup.sh install DIR   # reassemble, check sha256s, pip install --no-index
#
# `pack` downloads every runtime dependency of vidpipe and of its `dali` extra (read from pyproject.toml)
# except torch and torchvision, for CPython $PY (default 3.12) on manylinux x86-64, plus a vidpipe wheel.
# The wheels are tarred and split so that a tool which carries at most 64 MiB per call can move them one
# part per call (the DALI wheel alone is ~190 MB). `install` expects torch and torchvision to be there
# already: vidpipe goes in with --no-deps (its torchvision pin is for registry installs), everything else
# resolves against what is installed plus the carried wheels. Then, for the DALI vs ffmpeg rows:
#
#   vidpipe bench extract --set 720p-h264 --workers $(nproc) --json benchmarks/results/extract-gpu.json
set -euo pipefail
cmd=${1:?usage: gpu_setup.sh pack | collect DIR | install DIR}
cd "$(dirname "$0")/.."
PY=${PY:-3.12}
PYTHON=${PYTHON:-python3}
PIP="$PYTHON -m pip"

runtime_requirements() {  # one per line: vidpipe's dependencies and its dali extra, without torch/torchvision
  "$PYTHON" - <<'EOF'
import re
try:
    import tomllib
except ImportError:
    import tomli as tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["dali"]:
    name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
    if name not in ("torch", "torchvision") and ";" not in req:
        print(req)
EOF
}

case "$cmd" in
  pack)
    rm -rf .gpu-wheels && mkdir -p .gpu-wheels/wheels
    runtime_requirements > .gpu-wheels/wheels/requirements.txt
    $PIP download -q -d .gpu-wheels/wheels --only-binary=:all: --python-version "$PY" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -r .gpu-wheels/wheels/requirements.txt
    $PIP wheel -q --no-deps -w .gpu-wheels/wheels .
    (cd .gpu-wheels/wheels && sha256sum -- *.whl requirements.txt > SHA256SUMS)
    tar -C .gpu-wheels -cf - wheels | split -b 60M -d -a 2 - .gpu-wheels/part-
    rm -rf .gpu-wheels/wheels
    ls -l .gpu-wheels
    echo "carry one .gpu-wheels/part-NN per call and run 'benchmarks/gpu_setup.sh collect DIR' there; then 'install DIR'" ;;
  collect)
    dest=${2:?DIR}
    mkdir -p "$dest"
    found=0
    for part in .gpu-wheels/part-*; do
      [ -e "$part" ] || continue
      cp "$part" "$dest"/ && found=1
    done
    [ "$found" = 1 ] || { echo "no .gpu-wheels/part-* here: name one in this call's carry" >&2; exit 1; }
    ls -l "$dest" ;;
  install)
    dir=${2:?DIR}
    ls "$dir"/part-* >/dev/null 2>&1 || { echo "no parts in $dir: run 'collect $dir' after each carrying call" >&2; exit 1; }
    rm -rf "$dir/wheels"
    cat "$dir"/part-* | tar -x -C "$dir" || { echo "the parts in $dir do not make a whole archive: is one missing?" >&2; exit 1; }
    (cd "$dir/wheels" && sha256sum --quiet -c SHA256SUMS)
    $PIP install -q --no-index --find-links "$dir/wheels" -r "$dir/wheels/requirements.txt"
    $PIP install -q --no-index --no-deps "$dir"/wheels/vidpipe-*.whl
    "$PYTHON" -c "import nvidia.dali, webdataset, zarr, imageio_ffmpeg, vidpipe.stores.extract; print('DALI', nvidia.dali.__version__, 'ready')" ;;
  *) echo "unknown command $cmd (pack | collect DIR | install DIR)" >&2; exit 2 ;;
esac
