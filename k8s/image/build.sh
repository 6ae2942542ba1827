#!/usr/bin/env bash
# Build, and optionally push, the qshield images. Versions come from the repository (requirements/lock.txt for Ray
# and MLflow, pyproject.toml for qshield), so the tags are exactly those the overlays reference
# (k8s/overlays/*/kustomization.yaml; tests/test_k8s.py checks that they agree).
#   k8s/image/build.sh [cpu|gpu|mlflow|all]...      (default: all)
# Environment:
#   REGISTRY   image name prefix, e.g. ghcr.io/acme/ (keep the trailing slash); default: none (local images)
#   PUSH=1     push each image after building it
#   DRY_RUN=1  print the commands instead of running them
#   DOCKER     container CLI (default docker; must support BuildKit, e.g. docker >= 23 or podman)
set -euo pipefail
cd "$(dirname "$0")/../.."

pin() {  # pin NAME FILE -> the version pinned as NAME==X in FILE
  local version
  version=$(sed -n "s/^$1==\([^[:space:];]*\).*/\1/p" "$2" | head -n 1)
  if [ -z "$version" ]; then echo "build.sh: no '$1==' pin in $2" >&2; exit 1; fi
  echo "$version"
}
RAY_VERSION=$(pin ray requirements/lock.txt)
MLFLOW_VERSION=$(pin mlflow requirements/lock.txt)
QSHIELD_VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1)
if [ -z "$QSHIELD_VERSION" ]; then echo "build.sh: no version in pyproject.toml" >&2; exit 1; fi
GIT_SHA=$(git rev-parse HEAD 2>/dev/null || true)
REGISTRY=${REGISTRY:-}
DOCKER=${DOCKER:-docker}

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '%s\n' "$*"; else "$@"; fi
}

build() {  # build TAG DOCKERFILE [BUILD ARGS...]
  local tag=$1 dockerfile=$2
  shift 2
  run env DOCKER_BUILDKIT=1 "$DOCKER" build -f "$dockerfile" -t "$tag" "$@" .
  if [ "${PUSH:-0}" = 1 ]; then run "$DOCKER" push "$tag"; fi
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(all); fi
for target in "${targets[@]}"; do
  case "$target" in
    cpu|all)
      build "${REGISTRY}qshield:${QSHIELD_VERSION}-ray${RAY_VERSION}-py311" k8s/image/Dockerfile \
        --build-arg "RAY_VERSION=${RAY_VERSION}" --build-arg RAY_IMAGE_VARIANT=py311 \
        --build-arg "QSHIELD_GIT_SHA=${GIT_SHA}" ;;&
    gpu|all)
      build "${REGISTRY}qshield:${QSHIELD_VERSION}-ray${RAY_VERSION}-py311-gpu" k8s/image/Dockerfile \
        --build-arg "RAY_VERSION=${RAY_VERSION}" --build-arg RAY_IMAGE_VARIANT=py311-gpu \
        --build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg "QSHIELD_GIT_SHA=${GIT_SHA}" ;;&
    mlflow|all)
      build "${REGISTRY}qshield-mlflow:${MLFLOW_VERSION}" k8s/image/mlflow.Dockerfile \
        --build-arg "MLFLOW_VERSION=${MLFLOW_VERSION}" ;;
    cpu|gpu) ;;
    *) echo "build.sh: unknown target '$target'; choose from cpu, gpu, mlflow, all" >&2; exit 2 ;;
  esac
done
