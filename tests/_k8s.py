"""The kustomizations under k8s/, rendered by real kustomize, and helpers to walk what they deploy.

Shared by tests/test_k8s.py and tests/test_security.py. Each kustomization is rendered once per test session with
``kubectl kustomize`` (kubectl's built-in kustomize, what ``kubectl apply -k`` uses), or with a standalone
``kustomize build`` where only that is installed; without either, the tests that need a rendering are skipped with
that reason. Callers get their own deep copy, so a test may change what it receives.
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
#: the overlays that run the sweep as a RayJob
OVERLAYS = ("cpu-dev", "gpu")
#: the long-lived RayCluster variants, and the overlay whose RayJob cluster each one copies
RAYCLUSTER_OVERLAYS = {"cpu-dev-raycluster": "cpu-dev", "gpu-raycluster": "gpu"}
ALL_OVERLAYS = (*OVERLAYS, *RAYCLUSTER_OVERLAYS)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet")


def kustomize_command() -> list[str]:
    """The command that renders a kustomization directory given as its last argument."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize is not None:
        return [kustomize, "build"]
    pytest.skip("neither kubectl (which has kustomize built in) nor kustomize is on PATH: cannot render k8s/")


def run_kustomize(directory: Path) -> list[dict[str, Any]]:
    """Render one kustomization directory (uncached); a failure raises AssertionError with kustomize's message."""
    result = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kustomize failed on {directory}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@functools.lru_cache(maxsize=None)
def _rendered(directory: str) -> tuple[dict[str, Any], ...]:
    return tuple(run_kustomize(Path(directory)))


def render(directory: Path | str) -> list[dict[str, Any]]:
    """The objects of a kustomization under k8s/ (a path, or a name under k8s/overlays), rendered once a session."""
    path = Path(directory) if isinstance(directory, Path) else K8S / "overlays" / directory
    return copy.deepcopy(list(_rendered(str(path.resolve()))))


def kustomizations(root: Path = K8S) -> list[Path]:
    """Every directory under ``root`` holding a kustomization.yaml (overlays, the base and components)."""
    return sorted(path.parent for path in root.rglob("kustomization.yaml"))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [obj for obj in by_kind(objects, kind) if name is None or obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def ray_object(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The one RayJob or RayCluster of a rendering."""
    found = [obj for obj in objects if obj["kind"] in ("RayJob", "RayCluster")]
    assert len(found) == 1, [f"{o['kind']}/{o['metadata']['name']}" for o in found]
    return found[0]


def cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec of a RayJob (spec.rayClusterSpec) or of a standalone RayCluster (spec)."""
    return obj["spec"]["rayClusterSpec"] if obj["kind"] == "RayJob" else obj["spec"]


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, pod spec) of every pod an object will create."""
    for label, template in pod_templates(obj):
        yield label, template["spec"]


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, pod template) of every pod an object will create."""
    name = obj["metadata"]["name"]
    if obj["kind"] in WORKLOAD_KINDS:
        yield f"{obj['kind']}/{name}", obj["spec"]["template"]
    elif obj["kind"] in ("RayJob", "RayCluster"):
        cluster = cluster_spec(obj)
        yield f"{obj['kind']}/{name} head", cluster["headGroupSpec"]["template"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"{obj['kind']}/{name} worker group {group['groupName']}", group["template"]
        if obj["kind"] == "RayJob" and "submitterPodTemplate" in obj["spec"]:
            yield f"RayJob/{name} submitter", obj["spec"]["submitterPodTemplate"]


def all_pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [pair for obj in objects for pair in pod_specs(obj)]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]
