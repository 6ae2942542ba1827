#!/usr/bin/env bash
# One entry point for developers and CI: set up the virtual environment (idempotent) and run things.
#   bash scripts/dev.sh setup   create .venv and install the pinned set (skipped when already current)
#   bash scripts/dev.sh test    setup, then the whole test suite
#   bash scripts/dev.sh demo    setup, then the offline demo sweep (real Ray, sqlite MLflow, mnist5k)
#   bash scripts/dev.sh bench   setup, then the benchmarks in bench/ (write docs/benchmarks.md)
#   bash scripts/dev.sh gpu-check   setup, then the GPU checks (one CUDA GPU, ~10 min): CUDA tests, quantum layer on
#                               CUDA vs CPU vs PennyLane, hybrid training throughput, a 4-trial gpus: 0.25 sweep;
#                               figures to docs/benchmarks.md (python -m bench.gpu_check; exit 2 without a GPU)
# Environment: PYTHON (interpreter to build the venv from, default python3), QSHIELD_VENV (default .venv),
# TORCH_SPEC (default "torch==2.13.0", plus torchvision==0.28.0 where nvidia-smi exists; PyPI's torch is the CUDA build),
# PIP_EXTRA (extra pip arguments for the torch install, e.g. "--index-url https://download.pytorch.org/whl/cu128").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${QSHIELD_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
# torchvision 0.28.0 on PyPI is built against CUDA torch: next to a CPU torch its import fails, so it is only
# installed where a GPU driver is present (qshield never needs it: own dataset readers, own ResNet-18 fallback).
if [ -z "${TORCH_SPEC:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then TORCH_SPEC="torch==2.13.0 torchvision==0.28.0"; else TORCH_SPEC="torch==2.13.0"; fi
fi

# pip, quiet; drops the harmless "Location ... is ignored" notes some machines' pip config produces
pipq() {
  "$VENV/bin/python" -m pip "$1" -q --disable-pip-version-check "${@:2}" 2> >(grep -v '^WARNING: Location' >&2)
}

setup() {
  local stamp="$VENV/.qshield-stamp"
  local want
  want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -c1-16)-$(echo "$TORCH_SPEC" | sha256sum | cut -c1-8)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "[qshield] setting up $VENV (one-off, a few minutes)" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # shellcheck disable=SC2086
  pipq install $TORCH_SPEC ${PIP_EXTRA:-}
  pipq install --no-deps -r requirements/lock.txt
  pipq install --no-deps --no-build-isolation -e .
  "$VENV/bin/python" -c "import torch, torchattacks, qulacs, pennylane, ray, mlflow, optuna, medmnist, mlxtend; print('[qshield] environment ok: torch', torch.__version__)"
  echo "$want" > "$stamp"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  setup) setup ;;
  test)
    setup
    exec "$VENV/bin/python" -m pytest "$@" ;;
  demo)
    setup
    exec "$VENV/bin/qshield" demo "$@" ;;
  bench)
    setup
    for f in bench/quantum_layer.py bench/trajectories.py bench/hybrid_epoch.py bench/orchestration.py bench/tracking.py; do
      m=${f%.py}; m=${m//\//.}
      echo "== python -m $m"; "$VENV/bin/python" -m "$m"
    done ;;
  gpu-check)
    setup
    exec "$VENV/bin/python" -m bench.gpu_check "$@" ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
