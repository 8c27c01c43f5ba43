#!/usr/bin/env bash
# The cuda suite on one GPU: the CUDA tests, then `python -m benchmarks --device cuda`
# (train, loss, margins, eval, certify, presets), results to benchmarks/results-cuda.json.
# Sized to finish within 8 minutes on one H100/H200: each stage has a time limit, and the
# benchmarks write their results after every module, so a stage cut short still leaves
# what it measured.
#
# Usage: benchmarks/gpu.sh [--device cuda|cpu] [--out FILE] [--quick] [--no-tests] [--check]
#   --device cuda   the real run (default)
#   --device cpu    a dry run on a CPU-only machine: the same stages at toy sizes, about a
#                   minute; writes only to --out (or $MARGINROBUST_BENCH_OUT), never to
#                   the committed results
#   --out FILE      where the results go (default benchmarks/results-cuda.json on cuda)
#   --quick         fewer repetitions
#   --no-tests      skip the CUDA tests
#   --check         install the wheels (if any), check the imports and the device, stop
#
# Environment:
#   PYTHON                  the interpreter (default: python3)
#   MARGINROBUST_WHEELS     a folder of wheels to install first, for a machine without
#                           network whose torch (CUDA build) is already there: installed
#                           with pip --no-index --no-deps --target, torch untouched
#                           (foolbox, eagerpy, pyautoattack, gitpython, gitdb, smmap,
#                           tabulate, markdown-it-py, mdurl: what a typical CUDA image
#                           lacks); made where
#                           pip works by `python -m benchmarks.gpu_wheels` (.gpu/whl)
#   MARGINROBUST_SITE       where those wheels go (default /tmp/marginrobust-site), put on
#                           PYTHONPATH with the repository itself (no install of the project)
#   MARGINROBUST_BENCH_OUT  the results file, as --out
#   MARGINROBUST_TEST_LIMIT / MARGINROBUST_BENCH_LIMIT  seconds for each stage (120 / 330)
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
PY=${PYTHON:-python3}
DEVICE=cuda
OUT=${MARGINROBUST_BENCH_OUT:-}
QUICK=()
TESTS=1
CHECK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=${2:-}; shift 2 ;;
    --device=*) DEVICE=${1#*=}; shift ;;
    --out) OUT=${2:-}; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --quick) QUICK=(--quick); shift ;;
    --no-tests) TESTS=0; shift ;;
    --check) CHECK=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
               exit 0 ;;
    *) echo "gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in
  cuda) TINY=() ; OUT=${OUT:-benchmarks/results-cuda.json} ;;
  # One thread: a CPU that runs the dry run is often shared (CI), and two threads there
  # stall each other.
  cpu) TINY=(--tiny --threads 1) ;;
  *) echo "gpu.sh: --device must be cuda or cpu, not '$DEVICE'" >&2; exit 2 ;;
esac
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ -z "$OUT" ]; then
  OUT=$TMP/results.json  # a dry run without --out: checked, then thrown away
fi

# Deterministic cuBLAS needs this before the first cuBLAS call of each process.
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1

if [ -n "${MARGINROBUST_WHEELS:-}" ]; then
  SITE=${MARGINROBUST_SITE:-/tmp/marginrobust-site}
  shopt -s nullglob
  wheels=("$MARGINROBUST_WHEELS"/*.whl)
  shopt -u nullglob
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "gpu.sh: no wheels in MARGINROBUST_WHEELS=$MARGINROBUST_WHEELS" >&2; exit 2
  fi
  echo "[gpu.sh] installing ${#wheels[@]} wheels into $SITE (no index, no dependencies)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" \
    "${wheels[@]}" || { echo "gpu.sh: installing the wheels failed" >&2; exit 2; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
# The project runs from the checkout: no install, so nothing outside it changes.
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

"$PY" - "$DEVICE" <<'EOF' || exit 2
import importlib, sys
missing = []
for name in ("torch", "numpy", "foolbox", "pyautoattack", "tabulate", "markdown_it", "pytest",
             "marginrobust"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if missing:
    sys.exit("gpu.sh: cannot import " + "; ".join(missing)
             + " (set MARGINROBUST_WHEELS to a folder of wheels: foolbox, eagerpy, pyautoattack, tabulate, "
             "markdown-it-py)")
import torch
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu.sh: no CUDA device here (torch " + torch.__version__
             + "); use --device cpu for a dry run")
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"[gpu.sh] torch {torch.__version__}, cuda {torch.version.cuda}, GPU: {gpu}")
EOF
if [ "$CHECK" = 1 ]; then
  echo "[gpu.sh] check passed"; exit 0
fi

start=$(date +%s)
test_rc=0
JUNIT=()
if [ "$TESTS" = 1 ]; then
  echo "[gpu.sh] CUDA tests: pytest -k cuda (skipped without a GPU)"
  timeout "${MARGINROBUST_TEST_LIMIT:-120}" "$PY" -m pytest -q -k cuda -p no:cacheprovider \
    --junitxml="$TMP/junit.xml" tests/
  test_rc=$?
  # 5: nothing selected, which a checkout without CUDA tests would give: not a failure.
  [ "$test_rc" = 5 ] && test_rc=0
  JUNIT=(--junit "$TMP/junit.xml")
fi

echo "[gpu.sh] benchmarks: python -m benchmarks --device $DEVICE" \
  ${TINY[@]+"${TINY[@]}"} ${QUICK[@]+"${QUICK[@]}"}
# ${a[@]+"${a[@]}"}: an empty array expands to nothing, even under set -u in old bash.
timeout "${MARGINROBUST_BENCH_LIMIT:-330}" "$PY" -m benchmarks --device "$DEVICE" \
  ${TINY[@]+"${TINY[@]}"} ${QUICK[@]+"${QUICK[@]}"} ${JUNIT[@]+"${JUNIT[@]}"} --out "$OUT"
bench_rc=$?

echo "[gpu.sh] $(( $(date +%s) - start )) s; tests exit $test_rc, benchmarks exit $bench_rc;" \
  "results in $OUT"
[ "$test_rc" = 124 ] && echo "gpu.sh: the tests ran past their time limit" >&2
[ "$bench_rc" = 124 ] && echo "gpu.sh: the benchmarks ran past their time limit" >&2
if [ "$test_rc" != 0 ] || [ "$bench_rc" != 0 ]; then
  exit 1
fi
