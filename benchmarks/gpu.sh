#!/usr/bin/env bash
# benchmarks/gpu.py on this machine's accelerator, with the devices JAX sees
# printed first and a hard stop at 8 minutes.
#
#   benchmarks/gpu.sh runs/gpu [more gpu.py flags, e.g. --rows=unet3d]
set -euo pipefail
out=${1:?usage: benchmarks/gpu.sh OUT_DIR [gpu.py flags]}
shift
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "nvidia-smi: none"
python -c 'import jax; print("jax", jax.__version__, jax.default_backend(), jax.devices())'
exec timeout --kill-after=10 470 python benchmarks/gpu.py --out="$out" "$@"
