#!/usr/bin/env bash
# What one device call runs (see the device tool's README): bench/gpu.sh first, then
# bench/gpu_budget30.sh, both in a process of its own that outlives the call; the call waits up
# to WAIT seconds, then copies what is done into $OUT. A second call while the machine is still
# warm waits for the rest:
#   bash bench/gpu_call.sh 555       # the first call (carry [".whl"], timeout_s 600)
#   bash bench/gpu_call.sh 250       # the next, at once (no carry)
# Before the first call, here (the device's image lacks these; bench/gpu.sh's header has the
# pip download command for the wheels):
#   echo /.whl/ >> .git/info/exclude; echo /shared/ >> .git/info/exclude
#   mkdir -p shared/bench shared/data/fashion-mnist && cp ../shared/bench/peer_torch_ddpm.py \
#     shared/bench/ && cp ../shared/data/mnist.npz shared/data/ && \
#     cp /usr/share/datasets/fashion-mnist/* shared/data/fashion-mnist/
# Seen 2026-12-04 (H200): gpu.sh about 300 s, then the budget's 15 GAN, VAE, VQ-VAE and PixelCNN
# runs side by side about 4 minutes, and their scores a few more: 15 minutes of device time
# were too few for all of it (bench/results/gpu/README.md).
set -u
cd "$(dirname "$0")/.."
WAIT="${1:-555}"
if [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHON=python3
mkdir -p ../shared/bench ../shared/data /usr/share/datasets
cp shared/bench/* ../shared/bench/
cp shared/data/mnist.npz ../shared/data/
cp -r shared/data/fashion-mnist /usr/share/datasets/
B=/tmp/gpu_call
if [ ! -f $B/started ]; then
  mkdir -p $B
  touch $B/started
  # The VQ-GAN's rows train on the CPU (gpu_budget30.sh's header says why).
  skip=""
  for ds in mnist fashion_mnist; do
    skip+="vqgan_$ds,gpt_$ds,gpt_${ds}_cfg_2,maskgit_$ds,maskgit_${ds}_cfg_2,"
  done
  export SKIP="${SKIP:-$skip}"
  setsid nohup bash -c "DIFFUSION_LIMIT=${DIFFUSION_LIMIT:-400} bash bench/gpu.sh $B/gpu; \
    bash bench/gpu_budget30.sh $B/out ${JOBS:-16}; touch $B/done" > $B/log 2>&1 < /dev/null &
fi
deadline=$((SECONDS + WAIT))
while [ ! -f $B/done ] && [ $SECONDS -lt $deadline ]; do sleep 5; done
[ -f $B/done ] || bash bench/gpu_budget30.sh --pack $B/out > /dev/null 2>&1
mkdir -p "$OUT/gpu"
cp $B/gpu/* "$OUT/gpu/" 2>/dev/null
cp $B/out/*.tgz "$OUT/" 2>/dev/null
tail -n 40 $B/log
