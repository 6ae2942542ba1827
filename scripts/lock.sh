#!/usr/bin/env bash
# Regenerate requirements/lock.txt: resolve pyproject's dependencies in a scratch venv (torch pinned first so the
# resolver keeps it), add torchattacks with --no-deps (its requests~=2.25.1 pin is overridden on purpose), freeze.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
python3 -m venv "$tmp/venv"
pip="$tmp/venv/bin/python -m pip"
$pip install -q torch==2.13.0
$pip install -q torch==2.13.0 -e ".[test,postgres]"
$pip install -q --no-deps torchattacks==3.5.1
{
  echo "# Fully pinned, conflict-free set for Python 3.11 (torch/torchvision installed separately: see scripts/dev.sh)."
  echo "# Installed with 'pip install --no-deps -r requirements/lock.txt'. Regenerate with: bash scripts/lock.sh"
  echo "# Deliberate override: torchattacks==3.5.1 declares requests~=2.25.1; we keep the requests that mlflow/ray need."
  $pip freeze | grep -v -i -E "^(torch|torchvision|qshield)==|^-e |^#"
} > requirements/lock.txt
rm -rf "$tmp"
echo "wrote requirements/lock.txt"
