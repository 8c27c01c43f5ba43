#!/usr/bin/env bash
# The Fashion-MNIST deep trajectories of this board: the paper's CNN at width 0.5 on a
# class-balanced subset of 1,000 training and 1,000 test images (the same for every seed:
# --data-seed 0), trained with loss-based-fast to a summed loss of 1e-200, a checkpoint
# every 25 decades, one torch thread. Rerunning resumes a run that was stopped. TARGET
# (default -200) sets the depth: seeds 0 and 1 were trained with TARGET=-125, about 2 hours
# of one core each (see NOTES.md).
#
#   TARGET=-125 bash leaderboard/trajectory/train_fashion.sh 0   # seed 0 (then 1)
#   bash leaderboard/trajectory/evaluate.sh            # every checkpoint, then the board
set -euo pipefail
cd "$(dirname "$0")/../.."
seed="${1:-0}"
out="leaderboard/trajectory/runs/fashion-cnn-deep-s$seed"
resume=()
[[ -f "$out/resume.pt" ]] && resume=(--resume)
OMP_NUM_THREADS=1 marginrobust train --model cnn --width 0.5 --dataset fashion-mnist \
  --train-subset 1000 --test-subset 1000 --schedule loss-based-fast --epochs 1000000 \
  --target-log10-loss "${TARGET:--200}" --checkpoint-decades 25 --seed "$seed" --data-seed 0 \
  --device cpu --out "$out" "${resume[@]}"
