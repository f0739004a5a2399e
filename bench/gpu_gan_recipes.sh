#!/usr/bin/env bash
# The GAN budget30 recipe search, run on a lent GPU (one call, about 2 minutes): candidate
# recipes at the step count that 30 minutes buy on the 2-core CPU, trained side by side on the
# one GPU and each scored on 10,000 samples by python -m jaxgen.eval. Only the choice of recipe
# comes from here; the budget table's row is the chosen recipe trained on the CPU.
#   bash bench/gpu_gan_recipes.sh OUT_DIR [DATASET]
# Needs the data set beside the checkout (../shared/data) and runs/evaluators/<data set>.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?OUT_DIR}"
DS="${2:-mnist}"
PY="${PYTHON:-python3}"
# A smoke test here: STEPS=20 NUM=200 bash bench/gpu_gan_recipes.sh /tmp/gg
EXTRA="${STEPS:+--config.train.num_steps=$STEPS}"
NUM="${NUM:-10000}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false JAXGEN_CACHE_DIR= PYTHONUNBUFFERED=1
mkdir -p "$OUT" runs/gpu_gan
declare -A FLAGS=(
  [dcgan]="--config.gan.ema_decay=0.0"
  [ema999]=""
  [ema9999]="--config.gan.ema_decay=0.9999"
  [ema999_cos]="--config.optimizer.decay_steps=10500 --config.optimizer_d.decay_steps=10500"
)
for name in "${!FLAGS[@]}"; do
  (
    wd="runs/gpu_gan/${name}_${DS}"
    # shellcheck disable=SC2086
    timeout 150 "$PY" train.py --config="configs/gan.py:$DS,budget30" --workdir="$wd" \
      --config.train.progress=False ${FLAGS[$name]} $EXTRA > "runs/gpu_gan/train_$name.log" 2>&1 &&
      timeout 60 "$PY" -m jaxgen.eval --workdir="$wd" --num="$NUM" --out="$OUT/$name.json" \
        > "runs/gpu_gan/eval_$name.log" 2>&1
    echo "$name exit $?"
  ) &
done
wait
for f in runs/gpu_gan/*.log; do echo "== $f"; tail -n 3 "$f" | cut -c1-300; done
"$PY" - "$OUT" <<'PY'
import glob, json, os, sys
print("| recipe | FD | KID | precision | recall | samples/s |")
print("|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    m = json.load(open(path))
    r = m["metrics"]
    print(f"| {os.path.basename(path)[:-5]} | {r['fd']:.1f} | {r['kid']:.3f} | "
          f"{r['precision']:.3f} | {r['recall']:.3f} | {m.get('samples_per_s', 0):.0f} |")
PY
