#!/usr/bin/env bash
# The project's GPU benchmark in one call, for a session lent a device (under 9 minutes):
#   bash bench/gpu.sh [OUT_DIR]
# diffusion train/sample throughput against the diffusers peer, measured in the same call
# (bench/diffusion_throughput.py --peer; the ratios are the goal). The other throughput
# benchmarks (vae_, vqvae_, gan_, prior_throughput.py) time their children on the CPU
# (harness.run_in_child's default), so they do not belong here: on 2026-12-04 they ran on the
# device machine's 16 host cores and measured nothing about the GPU.
# The table goes to OUT_DIR (default bench/results/gpu) and is printed at the end.
#
# The device machine's image has jax, flax, optax, orbax and torch but not ml_collections or
# diffusers, and the peer script lives beside the checkout. Before the call, here:
#   echo /.whl/ >> .git/info/exclude; echo /shared/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata lazy-importer \
#     ml_collections
#   mkdir -p shared/bench && cp ../shared/bench/peer_torch_ddpm.py shared/bench/
# and the call (carry [".whl"], timeout_s 600):
#   pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
#   export PYTHONPATH=/tmp/site:$PWD PYTHON=python3 && mkdir -p ../shared/bench && \
#   cp shared/bench/* ../shared/bench/ && bash bench/gpu.sh $OUT/gpu
# Seen 2026-12-04 (H200, jax 0.11.2): our CIFAR-10 case alone took 194 s (106 s training child,
# 88 s sampling child; most of it compiling and starting), and the step's old 270 s limit
# killed it before the peer ran: the step now has most of the call.
# DIFFUSION_LIMIT=<seconds> shortens the step to leave part of the call to other work.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/results/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>&1 || true
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" >> "$OUT/device.txt" 2>&1

run() {  # name, seconds allowed, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $? ($(tail -n 1 "$OUT/$name.log" | cut -c1-120))"
}

run diffusion_peer "${DIFFUSION_LIMIT:-520}" "$PY" bench/diffusion_throughput.py --peer --seconds 10 \
  --out "$OUT/diffusion_gpu.md"
cat "$OUT"/device.txt "$OUT"/*.md 2>/dev/null
