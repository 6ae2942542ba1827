#!/usr/bin/env bash
# The GPU check on a GPU machine without network access whose Python already holds a CUDA build of torch (an
# air-gapped node, or a lent machine with a fixed image), where `bash scripts/dev.sh gpu-check` cannot install.
#
#   bash scripts/offline-gpu.sh wheels DIR --have FILE [--python X.Y] [--parts N]
#       here, with a package registry: download into DIR/all (emptied first) the wheels, for the target's Python
#       (manylinux x86_64), of every package of requirements/lock.txt that the target lacks and that the GPU check
#       imports. FILE: the target's packages (`python3 -m pip list --format=freeze` there; an empty file for a
#       bare Python); a package it has at another version than the lock is named in a warning. With --parts N
#       (1-99) also one xz archive cut into N equal parts, DIR/part-1 .. DIR/part-N, for size-limited transfers.
#   bash scripts/offline-gpu.sh pack DIR N
#       only that archive, from the wheels in DIR/all.
#   bash scripts/offline-gpu.sh stage DIR
#       on the target: keep the wheels or archive part of DIR in $QSHIELD_WHEELHOUSE for a later `check`.
#   bash scripts/offline-gpu.sh check [DIR ...] [-- COMMAND ...]
#       on the target: stage each DIR, join and unpack the archive's parts (all of them, checked against their
#       sha256), install every staged wheel into an emptied $QSHIELD_SITE (`pip install --no-index --no-deps
#       --target`; `pip check` reports what does not fit the target's own packages), and run `python3 -m
#       bench.gpu_check` (or COMMAND) with that folder and this checkout on PYTHONPATH. The target's own
#       packages (torch, numpy, ...) are used as they are. Needs `python3 -m pip` on the target.
#
# Paths may be relative to the current folder. Environment: PYTHON (the target's interpreter, default python3),
# QSHIELD_WHEELHOUSE (default /tmp/qshield-wheelhouse), QSHIELD_SITE (default /tmp/qshield-site), QSHIELD_OUT (a
# folder: docs/benchmarks.md is copied there every 5 s while the check runs and when it ends, whatever its outcome).
#
# Hand-written because pip has no "install from several transfers" or "skip what the target has" mode; the rest is
# pip's (`download --only-binary`, `install --no-index --target`, `check`).
set -euo pipefail
SELF=$(realpath "$0")
ROOT=$(dirname "$(dirname "$SELF")")
PY=${PYTHON:-python3}
HOUSE=$(realpath -m "${QSHIELD_WHEELHOUSE:-/tmp/qshield-wheelhouse}")
SITE=$(realpath -m "${QSHIELD_SITE:-/tmp/qshield-site}")
OUTDIR=${QSHIELD_OUT:+$(realpath -m "$QSHIELD_OUT")}

# Locked packages that the GPU check (bench/gpu_check.py: pytest -m gpu, the quantum-layer, hybrid-throughput and
# fractional-GPU benchmarks) never imports: the Kubernetes schema validator (22 MB; tests/test_k8s.py is left out
# of the check's pytest run), the browser-test client and its dependencies, the PostgreSQL driver, the profiler,
# virtualenv (Ray's runtime environments) and PennyLane-Lightning (the check compares with default.qubit/.mixed).
NOT_FOR_GPU_CHECK="kubernetes-validate selenium trio trio-websocket outcome wsproto pysocks psycopg2-binary py-spy
virtualenv distlib python-discovery pennylane-lightning scipy-openblas32"
IGNORED_TESTS="tests/test_k8s.py"
# what `pip check` reports on every install of the lock (docs/install.md), and what NOT_FOR_GPU_CHECK leaves out
KNOWN_PIP_CHECK="torchattacks 3.5.1 has requirement requests~=|requires torchvision|requires pennylane-lightning|\
requires scipy-openblas32"

usage() { sed -n '2,27p' "$SELF"; exit 2; }
die() { echo "offline-gpu.sh $*" >&2; exit 2; }
say() { echo "[offline-gpu] $*" >&2; }

wheels() {
  local dir=${1:-}; shift || true
  [ -n "$dir" ] && [ "${dir#-}" = "$dir" ] || usage
  dir=$(realpath -m "$dir")
  local pyver have="" parts=1
  pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  while [ $# -gt 0 ]; do
    case "$1" in
      --python|--have|--parts) [ $# -ge 2 ] || die "wheels: $1 needs a value"
        case "$1" in --python) pyver=$2 ;; --have) have=$(realpath -m "$2") ;; --parts) parts=$2 ;; esac
        shift 2 ;;
      *) die "wheels: unknown argument '$1' (allowed: --have FILE, --python X.Y, --parts N)" ;;
    esac
  done
  [[ "$pyver" =~ ^3\.[0-9]+$ ]] || die "wheels: --python '$pyver': expected 3.N, e.g. 3.12"
  [[ "$parts" =~ ^[1-9][0-9]?$ ]] || die "wheels: --parts '$parts': expected a whole number from 1 to 99"
  [ -n "$have" ] || die "wheels: --have FILE is required: the target's packages (python3 -m pip list" \
    "--format=freeze there; an empty file for a bare Python), so that its own torch, numpy, ... are kept"
  [ -f "$have" ] || die "wheels: --have '$have': no such file"
  rm -rf "$dir/all" && mkdir -p "$dir/all"
  local reqs="$dir/requirements.txt"
  # the lock's pins, less what the target has (a version other than the lock's is warned about) and what the check
  # never imports
  "$PY" - "$ROOT/requirements/lock.txt" "$have" "$NOT_FOR_GPU_CHECK" >"$reqs" <<'EOF'
import re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
have = {}  # name -> version ("" when the file gives none): pip freeze lines, or bare names
for token in open(sys.argv[2]).read().split():
    if token == "@" or "://" in token or token.startswith("#"):
        continue  # the "name @ url" form of pip freeze: the name is its own token
    name, _, version = token.partition("==")
    have[norm(re.split(r"[<>=!~;\[]", name, maxsplit=1)[0])] = version
skip = {norm(n) for n in sys.argv[3].split()}
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    key = norm(name)
    if key in have:
        if have[key] and have[key] != pinned:
            print(f"[offline-gpu] warning: the target has {name} {have[key]}, the lock pins {pinned}; the target's "
                  "is used", file=sys.stderr)
    elif key not in skip:
        print(line)
EOF
  local platforms=()
  for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
           manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --implementation cp \
    --python-version "$pyver" "${platforms[@]}" -d "$dir/all" -r "$reqs" 2> >(grep -v '^WARNING: Location' >&2)
  say "$(find "$dir/all" -name '*.whl' | wc -l) wheels for Python $pyver in $dir/all ($(du -sh "$dir/all" | cut -f1))"
  [ "$parts" -eq 1 ] || pack "$dir" "$parts"
}

pack() {
  local dir=${1:-} parts=${2:-}
  [ -n "$dir" ] && [ -d "$dir/all" ] || die "pack: '$dir' has no folder all/ of wheels"
  dir=$(realpath "$dir")
  [[ "$parts" =~ ^[1-9][0-9]?$ ]] || die "pack: '$parts': expected a whole number of parts from 1 to 99"
  ls "$dir/all"/*.whl >/dev/null 2>&1 || die "pack: no wheels in '$dir/all'"
  # one archive cut into N equal parts: the wheels re-stored uncompressed (a wheel is a zip; pip installs it either
  # way), so that xz compresses across them (about 20% smaller than the wheels as downloaded)
  rm -rf "$dir/stored" && mkdir -p "$dir/stored"
  "$PY" - "$dir/all" "$dir/stored" <<'PYEOF'
import sys, zipfile
from pathlib import Path
for wheel in Path(sys.argv[1]).glob("*.whl"):
    out = Path(sys.argv[2]) / wheel.name
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            info.compress_type = zipfile.ZIP_STORED
            zout.writestr(info, data)
PYEOF
  tar -C "$dir/stored" -cf - . | xz -T0 -6 >"$dir/wheels.tar.xz"
  rm -rf "$dir/stored"
  local sum i
  sum=$(sha256sum "$dir/wheels.tar.xz" | cut -d' ' -f1)
  rm -rf "$dir"/part-* "$dir/pieces" && mkdir -p "$dir/pieces"
  split -n "$parts" -d -a 2 "$dir/wheels.tar.xz" "$dir/pieces/wheels.tar.xz.part"
  for ((i = 0; i < parts; i++)); do
    mkdir -p "$dir/part-$((i + 1))"
    mv "$dir/pieces/wheels.tar.xz.part$(printf %02d "$i")" "$dir/part-$((i + 1))/"
    echo "$parts $sum" >"$dir/part-$((i + 1))/wheels.tar.xz.manifest"
    say "$dir/part-$((i + 1)): $(du -sh "$dir/part-$((i + 1))" | cut -f1)"
  done
  rm -rf "$dir/pieces" "$dir/wheels.tar.xz"
}

stage() {
  local dir=${1:-}
  [ -n "$dir" ] && [ -d "$dir" ] || die "stage: '$dir' is not a folder of wheels"
  mkdir -p "$HOUSE"
  local f n=0
  for f in "$dir"/*.whl "$dir"/wheels.tar.xz.*; do
    [ -e "$f" ] || continue
    cp -f "$f" "$HOUSE"/
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || die "stage: no wheels and no archive part in '$dir'"
  say "staged $n files of $dir in $HOUSE ($(du -sh "$HOUSE" | cut -f1) there)"
}

check() {
  local dirs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do dirs+=("$1"); shift; done
  [ "${1:-}" != "--" ] || shift
  local d
  for d in "${dirs[@]}"; do stage "$d"; done
  cd "$ROOT"
  # an archive in parts: every part there, joined, checked against the manifest, unpacked
  if [ -e "$HOUSE/wheels.tar.xz.manifest" ]; then
    local parts sum got
    read -r parts sum <"$HOUSE/wheels.tar.xz.manifest"
    got=$(find "$HOUSE" -maxdepth 1 -name 'wheels.tar.xz.part??' | wc -l)
    [ "$got" -eq "$parts" ] || die "check: $got of the archive's $parts parts are in $HOUSE; stage the others first"
    cat "$HOUSE"/wheels.tar.xz.part?? >"$HOUSE/wheels.tar.xz"
    [ "$(sha256sum "$HOUSE/wheels.tar.xz" | cut -d' ' -f1)" = "$sum" ] \
      || die "check: the joined archive's sha256 is not its manifest's (a part is damaged or from another download)"
    tar -C "$HOUSE" -xJf "$HOUSE/wheels.tar.xz"
    rm -f "$HOUSE"/wheels.tar.xz*
  fi
  ls "$HOUSE"/*.whl >/dev/null 2>&1 || die "check: no wheels in $HOUSE (stage them first, or name their folder)"
  # one version of each project (a wheelhouse left from another download would make pip refuse, or mix them)
  local twice
  twice=$(for f in "$HOUSE"/*.whl; do basename "$f" | cut -d- -f1 | tr 'A-Z_.' 'a-z--'; done \
          | sort | uniq -d | tr '\n' ' ')
  [ -z "$twice" ] || die "check: $HOUSE holds two versions of: ${twice% }; empty it (rm -rf $HOUSE) and stage again"
  rm -rf "$SITE"
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --target "$SITE" \
    "$HOUSE"/*.whl 2> >(grep -v '^WARNING: Location' >&2)
  export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  # what the installed wheels need and the target's own packages do not give (reported; the check still runs)
  "$PY" -m pip check 2>/dev/null | grep -Ev "$KNOWN_PIP_CHECK|^No broken requirements" \
    | sed 's/^/[offline-gpu] pip check: /' >&2 || true
  # the check's pytest run leaves out test modules whose imports were not carried (none holds a GPU test)
  local ignore=""
  for d in $IGNORED_TESTS; do ignore+=" --ignore=$d"; done
  export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-}$ignore"
  "$PY" -c "import torch, ray, mlflow, optuna, pennylane, qulacs, torchattacks, qshield, orchestrator.runtime; \
print('[offline-gpu] environment ok: torch', torch.__version__, 'CUDA', torch.version.cuda, \
'available' if torch.cuda.is_available() else 'NOT available', '; ray', ray.__version__)" >&2
  local rc=0
  if [ -n "$OUTDIR" ]; then
    # every step writes its section as it ends: copied every 5 s too (while this script lives), so a check cut
    # short keeps what it measured
    mkdir -p "$OUTDIR"
    local me=$$
    (while kill -0 "$me" 2>/dev/null && sleep 5; do cp -f docs/benchmarks.md "$OUTDIR"/ || true; done) \
      </dev/null >/dev/null 2>&1 &
  fi
  if [ $# -gt 0 ]; then "$@" || rc=$?; else "$PY" -m bench.gpu_check || rc=$?; fi
  if [ -n "$OUTDIR" ]; then
    cp -f docs/benchmarks.md "$OUTDIR"/
  fi
  return $rc
}

cmd=${1:-help}
shift || true
case "$cmd" in
  wheels) wheels "$@" ;;
  pack) pack "$@" ;;
  stage) stage "$@" ;;
  check) check "$@" ;;
  *) usage ;;
esac
