#!/usr/bin/env bash
# Evaluate every checkpoint of the deep trajectories and rebuild this board from them. The
# run folders keep their checkpoints (to be evaluated again or trained deeper); rerunning
# skips what is already evaluated.
#
# Usage: bash leaderboard/trajectory/evaluate.sh [RUN_DIR ...]   (default: every run here)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -eq 0 ]; then
  set -- leaderboard/trajectory/runs/*/
fi
for run in "$@"; do
  # The grid's attacks and budgets for the run's dataset (leaderboard/make_runs.sh); the
  # points depend only on the data split and --eval-seed, so every seed gets the same ones.
  case "$(basename "$run")" in
    # 400 of the 1,000 test and of the 1,000 training images.
    fashion-*) budgets=(--eps-l2 1 --eps-linf 0.1 --n 400) ;;
    # Digits: all 450 test points and 500 training points.
    *) budgets=(--eps-l2 0.5 --eps-linf 0.1 --n 500) ;;
  esac
  OMP_NUM_THREADS=1 marginrobust eval "$run" --device cpu --quiet --attacks autoattack,fmn \
    --aa-attacks apgd-ce,apgd-t --norms L2,Linf "${budgets[@]}" --eval-seed 0
done
marginrobust leaderboard --out leaderboard/trajectory --force
