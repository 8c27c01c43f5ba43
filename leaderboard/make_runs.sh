#!/usr/bin/env bash
# The commands that made every run published in leaderboard/runs/: three configurations,
# four schedules, three seeds each, trained and evaluated with `marginrobust bench` on the
# CPU, one torch thread per run, into runs/grid/<name>. Rerunning skips what is already done
# (bench resumes), and the last line publishes the results (no checkpoints) into leaderboard/.
#
#   bash leaderboard/make_runs.sh            # all 36 runs, one after another
#   bash leaderboard/make_runs.sh digits-mlp # only the runs whose name matches this regex
set -euo pipefail
cd "$(dirname "$0")/.."
filter="${1:-}"
export OMP_NUM_THREADS=1

# Evaluation, the same for every run: AutoAttack (APGD-CE + APGD-T) at one budget per norm,
# FMN for the minimal distances, the certificates; the same 200 seeded points per split.
common=(--device cpu --no-leaderboard --quiet --attacks autoattack,fmn
        --aa-attacks apgd-ce,apgd-t --norms L2,Linf --n 200 --eval-seed 0)

run() {  # run NAME ARGS...: one bench run into leaderboard/runs/NAME
  local name="$1"; shift
  [[ -z "$filter" || "$name" =~ $filter ]] || return 0
  echo "[make_runs] $name"
  marginrobust bench --out "runs/grid/$name" "${common[@]}" "$@"
}

for seed in 0 1 2; do
  # The paper's CNN at width 0.5 on digits (1,347 training, 450 test images).
  cnn=(--dataset digits --model cnn --width 0.5 --bias first --seed "$seed"
       --eps-l2 0.5 --eps-linf 0.1)
  run "digits-cnn-lb-s$seed" "${cnn[@]}" --schedule loss-based --epochs 120 \
    --checkpoint-decades 2
  run "digits-cnn-capped-s$seed" "${cnn[@]}" --schedule loss-based-capped --epochs 120 \
    --checkpoint-decades 2
  run "digits-cnn-c0.1-s$seed" "${cnn[@]}" --schedule constant --lr 0.1 --epochs 450 \
    --checkpoint-decades 1
  run "digits-cnn-c0.5-s$seed" "${cnn[@]}" --schedule constant --lr 0.5 --epochs 450 \
    --checkpoint-decades 1

  # The MLP (512-512 at width 0.5) on digits.
  mlp=(--dataset digits --model mlp --width 0.5 --bias first --seed "$seed"
       --eps-l2 0.5 --eps-linf 0.1)
  run "digits-mlp-lb-s$seed" "${mlp[@]}" --schedule loss-based --epochs 200 \
    --checkpoint-decades 1
  run "digits-mlp-capped-s$seed" "${mlp[@]}" --schedule loss-based-capped --epochs 200 \
    --checkpoint-decades 1
  run "digits-mlp-c0.5-s$seed" "${mlp[@]}" --schedule constant --lr 0.5 --epochs 600 \
    --checkpoint-decades 1
  run "digits-mlp-c1-s$seed" "${mlp[@]}" --schedule constant --lr 1 --epochs 600 \
    --checkpoint-decades 1

  # The MLP on Fashion-MNIST, 2,000 training and 500 test images held fixed across seeds
  # (at constant rates of 0.5 and 1 it collapsed here: training accuracy 0 after 600 epochs).
  fm=(--dataset fashion-mnist --model mlp --width 0.5 --bias first --seed "$seed"
      --data-seed 0 --train-subset 2000 --test-subset 500 --eps-l2 1 --eps-linf 0.1)
  run "fashion-mlp-lb-s$seed" "${fm[@]}" --schedule loss-based --epochs 200 \
    --checkpoint-decades 0.5
  run "fashion-mlp-capped-s$seed" "${fm[@]}" --schedule loss-based-capped --epochs 200 \
    --checkpoint-decades 0.5
  run "fashion-mlp-c0.1-s$seed" "${fm[@]}" --schedule constant --lr 0.1 --epochs 600 \
    --checkpoint-decades 0.5
  run "fashion-mlp-c0.2-s$seed" "${fm[@]}" --schedule constant --lr 0.2 --epochs 600 \
    --checkpoint-decades 0.5
done

# Publish every finished run (results only) and rebuild the leaderboard from them.
marginrobust leaderboard runs/grid/* --out leaderboard --force
