#!/usr/bin/env bash
# Evaluate every checkpoint of the deep trajectory and rebuild this board from it. The run
# folder keeps its checkpoints (to be evaluated again or trained deeper); rerunning skips
# what is already evaluated.
set -euo pipefail
cd "$(dirname "$0")/../.."
run=leaderboard/trajectory/runs/digits-cnn-deep-s0
# All 450 test points and 500 training points, the grid's attacks and budgets.
OMP_NUM_THREADS=1 marginrobust eval "$run" --device cpu --quiet --attacks autoattack,fmn \
  --aa-attacks apgd-ce,apgd-t --norms L2,Linf --eps-l2 0.5 --eps-linf 0.1 --n 500 --eval-seed 0
marginrobust leaderboard --out leaderboard/trajectory --force
