#!/usr/bin/env bash
# Install vidpipe's runtime wheels (DALI extra included) on a GPU machine that reaches no registry.
#
#   here:   benchmarks/gpu_setup.sh pack            # download wheels into .gpu-wheels/, split files > 60 MiB
#   there:  benchmarks/gpu_setup.sh collect DIR     # after each call that carried one part: move it to DIR
#   there:  benchmarks/gpu_setup.sh install DIR     # reassemble split wheels, pip install --no-index
#
# The GPU machine already has torch and torchvision; everything else (DALI ~190 MB, webdataset, zarr,
# imageio-ffmpeg for the ffmpeg binary, ...) travels as wheels. A tool that carries at most 64 MiB per
# call moves the parts one call at a time while the machine stays warm.
set -euo pipefail
cmd=${1:?usage: gpu_setup.sh pack | collect DIR | install DIR}
cd "$(dirname "$0")/.."
case "$cmd" in
  pack)
    rm -rf .gpu-wheels && mkdir -p .gpu-wheels/parts
    pip download -q -d .gpu-wheels --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
      nvidia-dali-cuda130 webdataset 'zarr>=3.1' numcodecs ffmpeg-python imageio-ffmpeg safetensors click rich \
      donfig crc32c google-crc32c typing_extensions braceexpand pyyaml
    pip wheel -q --no-deps -w .gpu-wheels .
    for f in .gpu-wheels/*.whl; do
      if [ "$(stat -c %s "$f")" -gt $((60 << 20)) ]; then
        split -b 60M -d "$f" ".gpu-wheels/parts/$(basename "$f").part-" && rm "$f"
      fi
    done
    ls -la .gpu-wheels .gpu-wheels/parts ;;
  collect)
    dest=${2:?DIR}; mkdir -p "$dest"; cp -r .gpu-wheels/. "$dest"/ ;;
  install)
    dir=${2:?DIR}
    for first in "$dir"/parts/*.part-00; do
      [ -e "$first" ] || continue
      whl="$dir/$(basename "${first%.part-00}")"
      cat "${first%-00}"-* > "$whl"
    done
    pip install --no-index --find-links "$dir" vidpipe nvidia-dali-cuda130 ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
