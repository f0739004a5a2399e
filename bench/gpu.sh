#!/usr/bin/env bash
# Every GPU benchmark of the project in one call, for a session lent a device (under 8 minutes):
#   bash bench/gpu.sh [OUT_DIR]
# 1. diffusion train/sample throughput against the diffusers peer, measured in the same call
#    (bench/diffusion_throughput.py --peer; the ratios are the goal), then
# 2. the VAE and VQ-VAE/PixelCNN train throughput and prior sampling.
# Tables go to OUT_DIR (default bench/results/gpu) and are printed at the end; each step has
# its own time limit so that one slow benchmark cannot eat the others' time.
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

run diffusion_peer 270 "$PY" bench/diffusion_throughput.py --peer --seconds 10 \
  --out "$OUT/diffusion_gpu.md"
run vae 60 "$PY" bench/vae_throughput.py --seconds 5 --out "$OUT/vae_gpu.md"
run vqvae 120 "$PY" bench/vqvae_throughput.py --seconds 5 --out "$OUT/vqvae_gpu.md"
cat "$OUT"/device.txt "$OUT"/*.md 2>/dev/null
