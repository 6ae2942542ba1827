"""Offline checks of the Kubernetes deployment under k8s/ (docs/kubernetes.md).

Every kustomization under k8s/ is rendered with real kustomize (``kubectl kustomize``, tests/_k8s.py), from the
working tree and from a copy holding only the files git tracks (a clean checkout), and then:

* no Secret is rendered, generated or committed; the manifests reference named Secrets, and k8s/init_secrets.py
  builds exactly those (with ``kubectl create secret --dry-run=client``), with random values kept out of argv;
* every built-in object, and every pod template inside a RayJob or RayCluster, validates against the Kubernetes
  OpenAPI schemas shipped by ``kubernetes-validate`` (strict: unknown fields fail), for an older and the newest
  version; the RayJob, the RayCluster it makes and the long-lived RayCluster validate against KubeRay's CRD schemas
  (``ray.io_rayjobs.yaml``, ``ray.io_rayclusters.yaml`` of KubeRay 1.7.0, read from ``$KUBERAY_CRD_DIR``, default
  the project's shared reference copy) with unknown fields refused as ``kubectl apply`` does; and pass the RayJob
  admission rules of KubeRay 1.7.0's operator (mirrored here: no operator runs in a test); each validator is shown
  to reject broken manifests;
* the long-lived RayCluster of the *-raycluster overlays is the RayJob's cluster spec of its overlay, field for
  field (kustomize ``replacements``), and those overlays hold no RayJob;
* pod sizing: no ``/dev/shm`` override (KubeRay sizes it), requests equal limits on every Ray pod, and every pod fits
  the node shapes docs/kubernetes.md states (allocatable estimated with GKE's published reservations);
* lifecycle: deadlines, deletion rules that keep the head on failure, init-container waits that end (run here, with
  a short bound), ``mlflow db upgrade`` before the server, a non-superuser PostgreSQL role for MLflow (its creation
  script run against a real PostgreSQL where one is installed);
* NetworkPolicies, evaluated with Kubernetes' selection rules: only the traffic the sweep needs is admitted;
* Ray token auth and MLflow basic auth in every overlay; image pull secrets in every pod that runs a qshield image
  where the overlay pulls from a registry;
* the RayJob entrypoint parses with the orchestrator's own CLI parser and names a search space that exists; image
  tags and rayVersion agree with requirements/lock.txt and with k8s/image/build.sh; every reference resolves; every
  pod runs unprivileged; docs/kubernetes.md names what exists.
"""

from __future__ import annotations

import base64
import configparser
import copy
import fnmatch
import http.server
import math
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests._k8s import (
    ALL_OVERLAYS,
    K8S,
    OVERLAYS,
    RAYCLUSTER_OVERLAYS,
    ROOT,
    WORKLOAD_KINDS,
    all_pod_specs,
    by_kind,
    cluster_spec,
    containers,
    kustomizations,
    one,
    pod_specs,
    pod_templates,
    ray_object,
    render,
    run_kustomize,
)

# The oldest Kubernetes minor still commonly run with KubeRay 1.7, and the newest that kubernetes-validate ships.
K8S_VERSIONS = ("1.31", "1.37")
# KubeRay's CRDs (not vendored here): $KUBERAY_CRD_DIR, else the shared reference copy next to the checkout.
CRD_DIR = Path(os.environ.get("KUBERAY_CRD_DIR", "/work/shared/reference/kuberay-crds"))
KUBERAY_VERSION = "1.7.0"
# Where k8s/image/Dockerfile puts the repository inside the image.
IMAGE_PROJECT_DIR = "/home/ray/qshield"
EXPECTED_SPACE = {"cpu-dev": "orchestrator/search_spaces/mnist5k-demo.yaml", "gpu": "orchestrator/search_spaces/cifar10.yaml"}
RAY_CONTAINERS = ("ray-head", "ray-worker", "ray-job-submitter")
EXPECTED_KUSTOMIZATIONS = {
    "base",
    "components/image-pull-secret",
    "overlays/cpu-dev",
    "overlays/gpu",
    "overlays/cpu-dev-raycluster",
    "overlays/gpu-raycluster",
}


def _load_module(name: str, path: Path) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


init_secrets = _load_module("qshield_k8s_init_secrets", K8S / "init_secrets.py")


# ------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------


def _lock_pin(package: str) -> str:
    text = (ROOT / "requirements" / "lock.txt").read_text()
    match = re.search(rf"^{re.escape(package)}==([^\s;]+)", text, flags=re.MULTILINE | re.IGNORECASE)
    assert match, f"no {package}== pin in requirements/lock.txt"
    return match.group(1)


def _project_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), flags=re.MULTILINE)
    assert match
    return match.group(1)


def _dockerfile_args(path: Path) -> dict[str, str]:
    """Default values of the ARG instructions of a Dockerfile (first definition wins)."""
    args: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$", line)
        if match and match.group(2) is not None and match.group(1) not in args:
            value = match.group(2).strip()
            args[match.group(1)] = value[1:-1] if value[:1] == value[-1:] == '"' else value
    return args


def _rayjob(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "RayJob")


def _entrypoint_args(rayjob: dict[str, Any]) -> list[str]:
    tokens = shlex.split(rayjob["spec"]["entrypoint"])
    assert tokens[:3] == ["python", "-m", "orchestrator.run"], tokens
    return tokens[3:]


def _flag(tokens: list[str], flag: str) -> str:
    """Value of ``--flag VALUE`` or ``--flag=VALUE`` in a token list (independent of any argparse parser)."""
    for i, token in enumerate(tokens):
        if token == flag:
            return tokens[i + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {tokens}")


def _env_entry(container: dict[str, Any], name: str) -> dict[str, Any]:
    entries = [e for e in container.get("env", []) if e["name"] == name]
    assert len(entries) == 1, f"env {name} appears {len(entries)} times in container {container['name']}"
    return entries[0]


def _env_values(container: dict[str, Any]) -> dict[str, str]:
    """The literal env values of a container."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _mounts_of_claim(pod: dict[str, Any], container: dict[str, Any], claim: str) -> list[str]:
    volumes = {
        v["name"] for v in pod.get("volumes", []) if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    }
    return [m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in volumes]


def _under(path: str, directory: str) -> bool:
    return Path(path) == Path(directory) or Path(directory) in Path(path).parents


def _ray_pods(obj: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = cluster_spec(obj)
    return [cluster["headGroupSpec"]["template"]["spec"], *[g["template"]["spec"] for g in cluster["workerGroupSpecs"]]]


def _init_container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = [c for c in pod.get("initContainers", []) if c["name"] == name]
    return container


_QUANTITY_SUFFIXES = {
    "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
}  # fmt: skip


def _quantity(value: Any) -> float:
    """A Kubernetes resource quantity ("250m", "24Gi", 1) as a number (cores, bytes, devices)."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match and match.group(2) in _QUANTITY_SUFFIXES, f"not a quantity: {value!r}"
    return float(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2)]


def test_quantity_parser() -> None:
    assert _quantity("250m") == 0.25 and _quantity(2) == 2 and _quantity("1.5") == 1.5
    assert _quantity("24Gi") == 24 * 2**30 and _quantity("512Mi") == 2**29 and _quantity("1G") == 1e9
    with pytest.raises(AssertionError, match="not a quantity"):
        _quantity("2 cores")


# ------------------------------------------------------------------------------------------------------------
# Rendering: every kustomization, with real kustomize, from a clean checkout; nothing secret
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every overlay, rendered once a session (tests/_k8s.py)."""
    return {name: render(name) for name in ALL_OVERLAYS}


def test_every_kustomization_renders_from_a_clean_checkout(tmp_path: Path) -> None:
    """What git tracks under k8s/ is all kustomize needs: no generated, ignored or local file (env files, secrets)."""
    found = {path.relative_to(K8S).as_posix() for path in kustomizations()}
    assert found == EXPECTED_KUSTOMIZATIONS
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot tell tracked files from local ones")
    tracked = subprocess.run(
        [git, "ls-files", "-z", "--", "k8s"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout.decode().split("\0")
    for relative in filter(None, tracked):
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    for directory in sorted(found):
        clean = run_kustomize(tmp_path / "k8s" / directory)
        assert clean or directory.startswith("components/"), f"{directory} renders nothing"  # a component patches
        assert clean == render(K8S / directory), f"{directory} renders differently from the working tree"


def test_no_secret_is_rendered_generated_or_committed(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for path in kustomizations():
        kustomization = yaml.safe_load((path / "kustomization.yaml").read_text())
        assert "secretGenerator" not in kustomization, f"{path}: Secrets are pre-created, never generated"
        assert not by_kind(render(path), "Secret"), path
    for name, objects in rendered.items():
        assert not by_kind(objects, "Secret"), f"{name} renders a Secret"
    committed = sorted(p for p in K8S.rglob("*") if p.is_file())
    assert not [p for p in committed if p.name.endswith(".env") or ".env." in p.name], "env files under k8s/"
    for path in committed:
        if path.suffix in (".yaml", ".yml"):
            for document in yaml.safe_load_all(path.read_text()):
                if isinstance(document, dict):
                    assert document.get("kind") != "Secret", f"{path} defines a Secret"
                    assert "stringData" not in yaml.safe_dump(document), f"{path} carries stringData"


def test_overlays_contain_the_whole_deployment(rendered: dict[str, list[dict[str, Any]]]) -> None:
    common = {
        ("Namespace", "qshield"),
        ("PersistentVolumeClaim", "qshield-ray-results"),
        ("PersistentVolumeClaim", "qshield-mlflow-artifacts"),
        ("Deployment", "qshield-mlflow"),
        ("Service", "qshield-mlflow"),
        ("StatefulSet", "qshield-postgres"),
        ("Service", "qshield-postgres"),
        ("NetworkPolicy", "qshield-default-deny-ingress"),
        ("NetworkPolicy", "qshield-postgres"),
        ("NetworkPolicy", "qshield-mlflow"),
        ("NetworkPolicy", "qshield-ray-head"),
        ("NetworkPolicy", "qshield-ray-workers"),
    }
    for overlay, objects in rendered.items():
        names = {(o["kind"], o["metadata"]["name"]) for o in objects}
        ray = ("RayCluster", "qshield-ray") if overlay in RAYCLUSTER_OVERLAYS else ("RayJob", "qshield-sweep")
        assert common | {ray} <= names, f"{overlay} misses {(common | {ray}) - names}"
        assert len([o for o in objects if o["kind"] in ("RayJob", "RayCluster")]) == 1, overlay
        for obj in objects:
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == "qshield", f"{overlay}: {obj['kind']} {obj['metadata']}"
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "qshield"


# ---- Kubernetes schemas (kubernetes-validate) ----------------------------------------------------------------


def _pod_template_objects(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates embedded in a RayJob or RayCluster (and its autoscaler container), as v1 PodTemplate
    objects, to validate them with the Kubernetes schemas."""
    templates = [
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": template}
        for i, (_, template) in enumerate(pod_templates(obj))
    ]
    autoscaler = cluster_spec(obj).get("autoscalerOptions", {})
    if autoscaler:
        container = {"name": "autoscaler", "image": "x"}
        for key in ("resources", "securityContext", "env", "envFrom", "volumeMounts", "imagePullPolicy"):
            if key in autoscaler:
                container[key] = autoscaler[key]
        templates.append(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": "autoscaler"},
                "template": {"spec": {"containers": [container]}},
            }
        )
    return templates


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_objects_validate_against_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, version: str
) -> None:
    validated = []
    for obj in rendered[overlay]:
        # Custom resources are checked against their CRDs below; their pod templates are Kubernetes pod specs.
        targets = _pod_template_objects(obj) if obj["apiVersion"].startswith("ray.io/") else [obj]
        assert targets, f"nothing to validate in {obj['kind']}"
        for target in targets:
            kubernetes_validate.validate(target, version, strict=True)
            validated.append(target["kind"])
    expected = {"Namespace", "Deployment", "StatefulSet", "Service", "PersistentVolumeClaim", "ConfigMap"}
    assert expected | {"NetworkPolicy", "PodTemplate"} <= set(validated)


@pytest.mark.parametrize(
    ("breakage", "culprit"),
    [
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always"),
            "imagePullPolicyy",
        ),
        (lambda d: d["spec"].update(replicas="one"), "'one'"),  # wrong type
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "'name' is a required property"),
        (lambda d: d["spec"].pop("selector"), "'selector' is a required property"),
    ],
)
def test_kubernetes_validation_rejects_broken_manifests(
    rendered: dict[str, list[dict[str, Any]]], breakage: Any, culprit: str
) -> None:
    deployment = copy.deepcopy(one(rendered["gpu"], "Deployment", "qshield-mlflow"))
    kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)  # the intact one passes
    breakage(deployment)
    with pytest.raises(kubernetes_validate.ValidationError) as error:
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    assert culprit in error.value.message


# ---- KubeRay CRD schemas -------------------------------------------------------------------------------------


def _strict_schema(schema: Any) -> Any:
    """A CRD's OpenAPI v3 schema that refuses unknown fields (what ``kubectl apply`` does with strict field
    validation, its default), except where the schema preserves unknown fields."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {key: _strict_schema(value) for key, value in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict_schema(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = _strict_schema(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [_strict_schema(item) for item in out[key]]
    return out


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.protocols.Validator]:
    validators = {}
    for kind, filename in (("RayJob", "ray.io_rayjobs.yaml"), ("RayCluster", "ray.io_rayclusters.yaml")):
        path = CRD_DIR / filename
        if not path.is_file():
            pytest.skip(
                f"KubeRay CRD {path} not found: set KUBERAY_CRD_DIR to a directory holding {filename} "
                f"(ray-project/kuberay v{KUBERAY_VERSION}, ray-operator/config/crd/bases)"
            )
        # libyaml's safe loader when available: the same safe subset, ten times faster on these 20k-line files
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        assert crd["spec"]["names"]["kind"] == kind
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = _strict_schema(version["schema"]["openAPIV3Schema"])
        jsonschema.Draft7Validator.check_schema(schema)
        validators[kind] = jsonschema.Draft7Validator(schema)
    return validators


def _as_raycluster(rayjob: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster object KubeRay creates from a RayJob's rayClusterSpec."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": rayjob["metadata"]["name"] + "-abcde", "namespace": rayjob["metadata"]["namespace"]},
        "spec": rayjob["spec"]["rayClusterSpec"],
    }


def _crd_errors(validator: jsonschema.protocols.Validator, obj: dict[str, Any]) -> list[str]:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    # The CEL rules (x-kubernetes-validations) of the deletion conditions, which jsonschema does not run.
    for i, rule in enumerate(obj.get("spec", {}).get("deletionStrategy", {}).get("deletionRules", [])):
        condition = rule.get("condition", {})
        if ("jobStatus" in condition) == ("jobDeploymentStatus" in condition):
            errors.append(
                f"spec/deletionStrategy/deletionRules/{i}/condition: exactly one of jobStatus, jobDeploymentStatus"
            )
    return errors


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_ray_objects_validate_against_kuberay_crds(
    rendered: dict[str, list[dict[str, Any]]], crd_validators: dict[str, Any], overlay: str
) -> None:
    obj = ray_object(rendered[overlay])
    assert obj["apiVersion"] == "ray.io/v1"
    if obj["kind"] == "RayJob":
        assert _crd_errors(crd_validators["RayJob"], obj) == []
        obj = _as_raycluster(obj)
    assert _crd_errors(crd_validators["RayCluster"], obj) == []


@pytest.mark.parametrize(
    ("breakage", "kind", "culprit"),
    [
        (lambda j: j["spec"].update(shutdownAfterJobFinish=True), "RayJob", "shutdownAfterJobFinish"),  # typo
        (lambda j: j["spec"].update(backoffLimit="3"), "RayJob", "spec/backoffLimit"),  # wrong type
        (
            lambda j: j["spec"]["deletionStrategy"]["deletionRules"][0].update(policy="DeleteHead"),
            "RayJob",
            "deletionRules/0/policy",  # enum
        ),
        (
            lambda j: j["spec"]["deletionStrategy"]["deletionRules"][1]["condition"].update(jobStatus="FAILED"),
            "RayJob",
            "exactly one of jobStatus, jobDeploymentStatus",  # CEL rule
        ),
        (
            lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
            "RayJob",
            "rayStartParams/num-cpus",  # rayStartParams values are strings
        ),
        (
            lambda j: j["spec"]["rayClusterSpec"]["authOptions"].update(mode="password"),
            "RayJob",
            "authOptions/mode",  # enum
        ),
        (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("maxReplicas"), "RayJob", "maxReplicas"),
        (  # unknown field deep inside a pod template
            lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(
                imagePullPolicyy="Always"
            ),
            "RayCluster",
            "imagePullPolicyy",
        ),
        (
            lambda j: j["spec"]["rayClusterSpec"].update(enableInTreeAutoScaling=True),
            "RayCluster",
            "enableInTreeAutoScaling",
        ),
    ],
)
def test_crd_validation_rejects_broken_manifests(
    rendered: dict[str, list[dict[str, Any]]], crd_validators: dict[str, Any], breakage: Any, kind: str, culprit: str
) -> None:
    rayjob = copy.deepcopy(_rayjob(rendered["gpu"]))
    breakage(rayjob)
    obj = rayjob if kind == "RayJob" else _as_raycluster(rayjob)
    errors = _crd_errors(crd_validators[kind], obj)
    assert errors, "the broken manifest passed the CRD schema"
    assert any(culprit in error for error in errors), errors


# ---- KubeRay's admission rules -------------------------------------------------------------------------------


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _kuberay_cluster_errors(cluster: dict[str, Any]) -> list[str]:
    """The checks of ValidateRayClusterSpec (ray-operator/controllers/ray/utils/validation.go, KubeRay v1.7.0) that
    apply to these manifests, with its messages. Mirrored because no KubeRay operator runs in a test."""
    errors = []
    if not cluster["headGroupSpec"]["template"]["spec"].get("containers"):
        errors.append("headGroupSpec should have at least one container")
    autoscaling = cluster.get("enableInTreeAutoscaling") is True
    for group in cluster.get("workerGroupSpecs", []):
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not group["template"]["spec"].get("containers"):
            errors.append("workerGroupSpec should have at least one container")
        if not autoscaling and (low is None or high is None):
            errors.append(f"worker group {group['groupName']} must set both minReplicas and maxReplicas")
        if low is not None and high is not None and low > high:
            errors.append(f"worker group {group['groupName']} has minReplicas {low} greater than maxReplicas {high}")
    if cluster.get("autoscalerOptions", {}).get("idleTimeoutSeconds", 0) < 0:
        errors.append("autoscalerOptions.idleTimeoutSeconds must be non-negative")
    auth = cluster.get("authOptions") or {}
    if auth.get("mode") == "token":
        if "rayVersion" not in cluster:
            errors.append("authOptions.mode is 'token' but RayVersion was not specified")
        elif _version_tuple(cluster["rayVersion"]) < (2, 52, 0):
            errors.append(f"authOptions.mode is 'token' but minimum Ray version is 2.52.0, got {cluster['rayVersion']}")
    if auth.get("enableK8sTokenAuth"):
        errors.append("K8s token auth mode is currently not supported for RayJob")  # the RayCluster is one's copy
    # Alpha features, off by default in KubeRay 1.7 (feature gates): the operator refuses these fields.
    for field, gate in (
        ("networkPolicy", "RayClusterNetworkPolicy"),
        ("tlsOptions", "RayClusterMTLS"),
        ("historyServerOptions", "RayClusterHistoryServer"),
    ):
        if field in cluster:
            errors.append(f"spec.{field} requires the {gate} feature gate to be enabled")
    return errors


def _kuberay_rayjob_errors(rayjob: dict[str, Any]) -> list[str]:
    """The checks of ValidateRayJobSpec and validateDeletionConfiguration (same file and version) that apply here."""
    spec = rayjob["spec"]
    errors = []
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    if not shutdown and spec.get("ttlSecondsAfterFinished", 0) > 0:
        errors.append("a RayJob with shutdownAfterJobFinishes set to false cannot have TTLSecondsAfterFinished")
    strategy = spec.get("deletionStrategy")
    autoscaling = spec.get("rayClusterSpec", {}).get("enableInTreeAutoscaling") is True
    if strategy is not None:
        legacy = "onSuccess" in strategy or "onFailure" in strategy
        rules = strategy.get("deletionRules") or []
        if rules and shutdown:
            errors.append(
                "spec.shutdownAfterJobFinishes and spec.deletionStrategy.deletionRules are mutually exclusive"
            )
        if rules and legacy:
            errors.append("Cannot use both legacy onSuccess/onFailure fields and deletionRules simultaneously")
        if not rules and not ("onSuccess" in strategy and "onFailure" in strategy):
            errors.append("DeletionStrategy requires either BOTH onSuccess and onFailure, OR the deletionRules field")
        ttls: dict[tuple[str, str], dict[str, int]] = {}
        for i, rule in enumerate(rules):
            condition = rule["condition"]
            if ("jobStatus" in condition) == ("jobDeploymentStatus" in condition):
                errors.append(f"deletionRules[{i}]: exactly one of JobStatus and JobDeploymentStatus must be set")
                continue
            if condition.get("ttlSeconds", 0) < 0:
                errors.append(f"deletionRules[{i}]: TTLSeconds must be non-negative")
            if autoscaling and rule["policy"] == "DeleteWorkers":
                errors.append(f"deletionRules[{i}]: DeletionPolicyType 'DeleteWorkers' not supported with autoscaling")
                continue
            key = ("JobStatus", condition["jobStatus"]) if "jobStatus" in condition else (
                "JobDeploymentStatus", condition["jobDeploymentStatus"])  # fmt: skip
            if rule["policy"] in ttls.setdefault(key, {}):
                errors.append(f"deletionRules[{i}]: duplicate rule for '{rule['policy']}' and {key[0]} '{key[1]}'")
                continue
            ttls[key][rule["policy"]] = condition.get("ttlSeconds", 0)
        for key, by_policy in ttls.items():  # Workers <= Cluster <= Self
            ordered = [by_policy[p] for p in ("DeleteWorkers", "DeleteCluster", "DeleteSelf") if p in by_policy]
            if ordered != sorted(ordered):
                errors.append(f"deletion TTLs for {key[0]} '{key[1]}' must not decrease: workers, cluster, self")
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if field in spec and spec[field] <= 0:
            errors.append(f"{field} must be a positive integer")
    if spec.get("backoffLimit", 0) < 0:
        errors.append("backoffLimit must be a positive integer")
    if "rayClusterSpec" not in spec and "clusterSelector" not in spec:
        errors.append("one of RayClusterSpec or ClusterSelector must be set")
    return errors + _kuberay_cluster_errors(spec.get("rayClusterSpec", {"headGroupSpec": {"template": {"spec": {}}}}))


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_ray_objects_pass_kuberay_admission_rules(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    obj = ray_object(rendered[overlay])
    errors = _kuberay_rayjob_errors(obj) if obj["kind"] == "RayJob" else _kuberay_cluster_errors(obj["spec"])
    assert errors == []


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda s: s.update(shutdownAfterJobFinishes=True), "mutually exclusive"),
        (lambda s: s.update(ttlSecondsAfterFinished=600), "cannot have TTLSecondsAfterFinished"),
        (
            lambda s: s["deletionStrategy"]["deletionRules"].append(
                {"policy": "DeleteWorkers", "condition": {"jobStatus": "FAILED", "ttlSeconds": 0}}
            ),
            "'DeleteWorkers' not supported with autoscaling",
        ),
        (
            lambda s: s["deletionStrategy"]["deletionRules"].append(
                copy.deepcopy(s["deletionStrategy"]["deletionRules"][0])
            ),
            "duplicate rule",
        ),
        (lambda s: s["deletionStrategy"].update(onFailure={"policy": "DeleteNone"}), "legacy onSuccess/onFailure"),
        (lambda s: s.update(preRunningDeadlineSeconds=0), "preRunningDeadlineSeconds must be a positive integer"),
        (lambda s: s["rayClusterSpec"].update(rayVersion="2.50.0"), "minimum Ray version is 2.52.0"),
        (lambda s: s["rayClusterSpec"].update(networkPolicy={"mode": "DenyAll"}), "RayClusterNetworkPolicy"),
        (lambda s: s["rayClusterSpec"]["workerGroupSpecs"][0].update(minReplicas=9), "greater than maxReplicas"),
    ],
)
def test_kuberay_admission_rules_reject_what_the_operator_rejects(
    rendered: dict[str, list[dict[str, Any]]], breakage: Any, message: str
) -> None:
    rayjob = copy.deepcopy(_rayjob(rendered["gpu"]))
    breakage(rayjob["spec"])
    errors = _kuberay_rayjob_errors(rayjob)
    assert any(message in error for error in errors), errors


# ---- The sweep: entrypoint, search space, data, restore-or-start, MLflow -------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjob_entrypoint_parses_with_the_orchestrator_cli(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    from orchestrator.run import build_parser

    rayjob = _rayjob(rendered[overlay])
    tokens = _entrypoint_args(rayjob)
    namespace = build_parser().parse_args(tokens)  # argparse exits (SystemExit) on an unknown or bad option
    parsed = {str(value) for value in vars(namespace).values() if value is not None}
    for flag in ("--space", "--name", "--storage-path", "--tracking-uri"):
        assert _flag(tokens, flag) in parsed, f"{flag} was not parsed into the namespace: {vars(namespace)}"
    space = Path(_flag(tokens, "--space"))
    assert space.is_absolute() and _under(str(space), IMAGE_PROJECT_DIR), space
    relative = space.relative_to(IMAGE_PROJECT_DIR).as_posix()
    assert relative == EXPECTED_SPACE[overlay]
    assert (ROOT / relative).is_file(), f"{relative} does not exist in the repository"


def test_image_puts_the_repository_where_the_entrypoint_reads_it() -> None:
    dockerfile = (K8S / "image" / "Dockerfile").read_text()
    assert re.search(rf"^WORKDIR\s+{re.escape(IMAGE_PROJECT_DIR)}\s*$", dockerfile, flags=re.MULTILINE)
    assert re.search(r"^COPY\s+(--chown=\S+\s+)?\.\s+\.\s*$", dockerfile, flags=re.MULTILINE)
    ignore = (K8S / "image" / "Dockerfile.dockerignore").read_text().split()
    for needed in ("!orchestrator", "!qshield", "!pyproject.toml", "!requirements/lock.txt"):
        assert needed in ignore


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sweep_fits_the_cluster_and_finds_its_data(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    from orchestrator.space import load_space
    from qshield.data import DATA_ROOT_ENV, dataset_spec

    objects = rendered[overlay]
    rayjob = _rayjob(objects)
    tokens = _entrypoint_args(rayjob)
    space = load_space(ROOT / EXPECTED_SPACE[overlay])
    assert re.fullmatch(type(space).NAME_PATTERN, _flag(tokens, "--name"))
    # Trials per worker (Ray sees the container's CPU and GPU limits): at least one, and on a GPU worker every GPU
    # share that the space asks for also gets its CPUs (no GPU left idle for lack of CPUs).
    per_worker = []
    for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        cpus, gpus = _quantity(limits["cpu"]), _quantity(limits.get("nvidia.com/gpu", 0))
        by_cpu = math.floor(cpus / space.resources.cpus)
        by_gpu = math.floor(gpus / space.resources.gpus) if space.resources.gpus else by_cpu
        per_worker.append(min(by_cpu, by_gpu))
        if space.resources.gpus:
            assert by_cpu >= by_gpu, f"{by_gpu} trials could share the GPU, but CPUs suffice for {by_cpu}"
    assert max(per_worker) >= 1, f"a trial ({space.resources}) fits on no worker group"
    # The data root: built-in datasets need none; the others must be on the shared volume before the sweep.
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    for pod in _ray_pods(rayjob):
        assert _env_values(pod["containers"][0])[DATA_ROOT_ENV] == "/mnt/qshield/data"
    data_root = _env_values(head["containers"][0])[DATA_ROOT_ENV]
    mounts = _mounts_of_claim(head, head["containers"][0], "qshield-ray-results")
    assert any(_under(data_root, m) for m in mounts), f"{DATA_ROOT_ENV}={data_root} is not on the shared volume"
    if not dataset_spec(space.dataset.value).builtin:
        assert space.data_root is None, "the search space overrides QSHIELD_DATA"
        fetchers = [
            (label, pod)
            for obj in by_kind(objects, "Job")
            for label, pod in pod_specs(obj)
            if any(_under(data_root, m) for m in _mounts_of_claim(pod, pod["containers"][0], "qshield-ray-results"))
        ]
        assert fetchers, f"{space.dataset.value} is not built in, and no Job fills {data_root}"
        # the head waits for the fetch Job's marker file
        marker = re.search(r"touch (\S+)", " ".join(fetchers[0][1]["containers"][0]["command"])).group(1)
        waits = " ".join(" ".join(c.get("command", [])) for c in head.get("initContainers", []))
        assert f"-f {marker}" in waits


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_failed_sweeps_retry_and_resume_from_shared_storage(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    rayjob = _rayjob(objects)
    spec = rayjob["spec"]
    assert spec["backoffLimit"] >= 1
    assert "clusterSelector" not in spec, "deletion rules and retries apply only to a cluster the RayJob creates"
    tokens = _entrypoint_args(rayjob)
    assert _flag(tokens, "--name"), "a fixed sweep name is what lets a retry find the sweep to restore"
    storage_path = _flag(tokens, "--storage-path")
    claim = one(objects, "PersistentVolumeClaim", "qshield-ray-results")
    mount_sets = [set(_mounts_of_claim(pod, pod["containers"][0], "qshield-ray-results")) for pod in _ray_pods(rayjob)]
    common = set.intersection(*mount_sets)
    assert any(_under(storage_path, m) for m in common), (
        f"--storage-path {storage_path} is not under a mount of {claim['metadata']['name']} shared by head and "
        f"workers ({mount_sets})"
    )
    modes = claim["spec"]["accessModes"]
    if overlay == "gpu":
        assert modes == ["ReadWriteMany"], "multi-node workers need a ReadWriteMany volume"
    else:
        assert modes in (["ReadWriteMany"], ["ReadWriteOnce"])


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_sweep_logs_to_the_in_cluster_mlflow_server(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    ray = ray_object(objects)
    uris = {_env_values(pod["containers"][0])["MLFLOW_TRACKING_URI"] for pod in _ray_pods(ray)}
    assert len(uris) == 1, uris
    (uri,) = uris
    if ray["kind"] == "RayJob":
        assert uri == _flag(_entrypoint_args(ray), "--tracking-uri")
    head = cluster_spec(ray)["headGroupSpec"]["template"]["spec"]
    assert _env_values(_init_container(head, "wait-for-mlflow"))["MLFLOW_TRACKING_URI"] == uri
    parsed = urlparse(uri)
    service = one(objects, "Service", parsed.hostname)
    assert parsed.port in [p["port"] for p in service["spec"]["ports"]]
    allowed = _env_entry(_mlflow_container(objects), "MLFLOW_SERVER_ALLOWED_HOSTS")["value"].split(",")
    assert any(fnmatch.fnmatch(parsed.netloc, pattern) for pattern in allowed), "MLflow would refuse this Host"
    assert any(fnmatch.fnmatch("localhost:5000", pattern) for pattern in allowed), "port-forward would be refused"


# ---- Ray cluster shape and pod sizing ------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_ray_cluster_shape(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    cluster = cluster_spec(ray_object(rendered[overlay]))
    assert cluster["rayVersion"] == _lock_pin("ray")
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True
    groups = cluster["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1
    gpu_groups = []
    for group in groups:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        if "nvidia.com/gpu" in resources.get("limits", {}):
            gpu_groups.append(group)
            assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
            tolerations = group["template"]["spec"].get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)
    base = RAYCLUSTER_OVERLAYS.get(overlay, overlay)
    assert bool(gpu_groups) == (base == "gpu")
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "dashboard", "containerPort": 8265} in head["ports"]


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_ray_pods_request_what_they_are_limited_to(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """Guaranteed QoS for every Ray pod: each container (init, sidecar, autoscaler) requests its limits."""
    ray = ray_object(rendered[overlay])
    checked = []
    for label, pod in pod_specs(ray):
        for container in containers(pod):
            resources = container["resources"]
            assert resources["requests"] == resources["limits"], f"{label} {container['name']}: {resources}"
            assert {"cpu", "memory"} <= set(resources["limits"]), f"{label} {container['name']}"
            checked.append(container["name"])
    autoscaler = cluster_spec(ray)["autoscalerOptions"]["resources"]
    assert autoscaler["requests"] == autoscaler["limits"]
    assert {"ray-head", "ray-worker", "wait-for-mlflow"} <= set(checked)


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_no_pod_overrides_dev_shm(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """KubeRay mounts /dev/shm itself, sized to the Ray container's memory limit (room for the object store)."""
    for label, pod in all_pod_specs(rendered[overlay]):
        for volume in pod.get("volumes", []):
            assert volume.get("emptyDir", {}).get("medium") != "Memory", f"{label}: memory emptyDir {volume}"
        for container in containers(pod):
            for mount in container.get("volumeMounts", []):
                assert not _under(mount["mountPath"], "/dev/shm"), f"{label} {container['name']}: {mount}"
    cluster = cluster_spec(ray_object(rendered[overlay]))
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for params in [group["rayStartParams"] for group in groups]:
        assert not {"plasma-directory", "object-store-memory"} & set(params), params


# Node shapes, as docs/kubernetes.md states them: (vCPU, GiB, GPUs, how many nodes of that pool the overlay's
# pods may use at most at once).
@dataclass(frozen=True)
class NodeShape:
    cpu: float
    memory_gib: float
    gpus: int = 0
    # A managed cloud node reserves part of itself for the kubelet and the system (GKE's published formula,
    # below); a kind/minikube node does not, but runs the control plane beside the pods.
    managed: bool = True

    def allocatable(self) -> tuple[float, float, int]:
        """(CPU cores, memory bytes, GPUs) left for this project's pods."""
        if self.managed:
            cpu = self.cpu - _gke_reserved_cpu(self.cpu) - DAEMONSET_CPU
            memory = (self.memory_gib - _gke_reserved_memory_gib(self.memory_gib)) * 2**30 - EVICTION_BYTES
            memory -= DAEMONSET_MEMORY_GIB * 2**30
        else:
            cpu = self.cpu - CONTROL_PLANE_CPU
            memory = (self.memory_gib - CONTROL_PLANE_MEMORY_GIB) * 2**30
        return cpu, memory, self.gpus


# GKE "Plan node sizes", memory and CPU reservations (cloud.google.com/kubernetes-engine/docs/concepts/
# plan-node-sizes): CPU 6% of the first core, 1% of the next, 0.5% of the next 2, 0.25% above 4 cores; memory 25% of
# the first 4 GiB, 20% of the next 4, 10% of the next 8, 6% of the next 112, 2% above 128 GiB, plus a 100 MiB
# eviction threshold. The largest reservations of the big clouds for these sizes, so a shape that fits here fits
# on EKS and AKS too.
def _gke_reserved_cpu(cores: float) -> float:
    tiers = ((1, 0.06), (1, 0.01), (2, 0.005), (math.inf, 0.0025))
    return _tiered(cores, tiers)


def _gke_reserved_memory_gib(gib: float) -> float:
    tiers = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (math.inf, 0.02))
    return _tiered(gib, tiers)


def _tiered(amount: float, tiers: tuple[tuple[float, float], ...]) -> float:
    reserved, left = 0.0, amount
    for size, share in tiers:
        reserved += min(left, size) * share
        left -= min(left, size)
    return reserved


EVICTION_BYTES = 100 * 2**20
# DaemonSets on every node (CNI, kube-proxy, CSI and logging agents; on GPU nodes the NVIDIA device plugin and
# DCGM exporter): what we leave for them.
DAEMONSET_CPU, DAEMONSET_MEMORY_GIB = 0.5, 1.0
# The control plane and system pods of a single-node kind/minikube cluster (apiserver, etcd, controller manager,
# scheduler, CoreDNS, CNI): their requests, about 0.9 CPU and 0.5 GiB, rounded up.
CONTROL_PLANE_CPU, CONTROL_PLANE_MEMORY_GIB = 1.0, 1.0

NODE_POOLS = {
    "cpu-dev": {"single node": (NodeShape(6, 10, managed=False), 1)},
    "gpu": {"cpu pool": (NodeShape(4, 16), 2), "gpu pool": (NodeShape(8, 32, gpus=1), 4)},
}


def test_node_reservation_estimate() -> None:
    # GKE's own examples for the formula: a 4-core node reserves 80 millicores (6% + 1% + 2 x 0.5%) ...
    assert _gke_reserved_cpu(4) == pytest.approx(0.08)
    # ... and memory on a 32 GiB node: 1 + 0.8 + 0.8 + 16 x 6% = 3.56 GiB
    assert _gke_reserved_memory_gib(32) == pytest.approx(3.56)
    cpu, memory, gpus = NodeShape(8, 32, gpus=1).allocatable()
    assert cpu == pytest.approx(8 - 0.09 - DAEMONSET_CPU) and gpus == 1
    assert memory == pytest.approx((32 - 3.56 - DAEMONSET_MEMORY_GIB) * 2**30 - EVICTION_BYTES)


def _pod_request(pod: dict[str, Any], sidecars: list[dict[str, Any]] = ()) -> tuple[float, float, int]:
    """The scheduler's view of a pod's request: per resource, the larger of the largest init container and the sum
    of the app containers (plus sidecars that an operator injects)."""
    def total(items: list[dict[str, Any]], key: str) -> float:
        return sum(_quantity(c.get("resources", {}).get("requests", {}).get(key, 0)) for c in items)

    apps = [*pod["containers"], *sidecars]
    inits = pod.get("initContainers", [])
    return tuple(  # type: ignore[return-value]
        max(total(apps, key), max((total([c], key) for c in inits), default=0.0))
        for key in ("cpu", "memory", "nvidia.com/gpu")
    )


def _pods_at_full_scale(objects: list[dict[str, Any]]) -> Iterator[tuple[str, tuple[float, float, int]]]:
    """(label, request) of every pod the overlay runs at once with every worker group at maxReplicas."""
    for obj in objects:
        if obj["kind"] in ("RayJob", "RayCluster"):
            cluster = cluster_spec(obj)
            autoscaler = {"resources": cluster["autoscalerOptions"]["resources"]}
            yield "ray head", _pod_request(cluster["headGroupSpec"]["template"]["spec"], [autoscaler])
            for group in cluster["workerGroupSpecs"]:
                for i in range(group["maxReplicas"]):
                    yield f"ray worker {group['groupName']} {i}", _pod_request(group["template"]["spec"])
            if obj["kind"] == "RayJob":
                yield "ray submitter", _pod_request(obj["spec"]["submitterPodTemplate"]["spec"])
        elif obj["kind"] in WORKLOAD_KINDS:
            for i in range(obj["spec"].get("replicas", 1)):
                yield f"{obj['kind']} {obj['metadata']['name']} {i}", _pod_request(obj["spec"]["template"]["spec"])


def _fits(pods: list[tuple[str, tuple[float, float, int]]], shape: NodeShape, nodes: int) -> bool:
    """Whether the pods fit on ``nodes`` nodes of ``shape`` (first fit, largest first: a sufficient condition)."""
    free = [list(shape.allocatable()) for _ in range(nodes)]
    for _, request in sorted(pods, key=lambda p: p[1], reverse=True):
        for node in free:
            if all(need <= have for need, have in zip(request, node, strict=True)):
                node[:] = [have - need for need, have in zip(request, node, strict=True)]
                break
        else:
            return False
    return True


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_pods_fit_the_stated_node_shapes(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    pools = NODE_POOLS[RAYCLUSTER_OVERLAYS.get(overlay, overlay)]
    pods = list(_pods_at_full_scale(rendered[overlay]))
    if len(pools) == 1:
        ((shape, count),) = pools.values()
        assert _fits(pods, shape, count), f"{overlay}: {pods} do not fit {count} node(s) of {shape}"
        return
    gpu_pods = [p for p in pods if p[1][2] > 0]
    cpu_pods = [p for p in pods if p[1][2] == 0]
    gpu_shape, gpu_nodes = pools["gpu pool"]
    cpu_shape, cpu_nodes = pools["cpu pool"]
    assert gpu_pods and len(gpu_pods) <= gpu_nodes
    assert _fits(gpu_pods, gpu_shape, gpu_nodes), f"{overlay}: GPU workers do not fit {gpu_shape}"
    assert _fits(cpu_pods, cpu_shape, cpu_nodes), f"{overlay}: {cpu_pods} do not fit {cpu_nodes} x {cpu_shape}"
    # The fit is not vacuous: the GPU worker of issue #11 (8 CPUs, 32 GiB) does not fit the same node.
    assert not _fits([("old", (8.0, 32 * 2**30, 1))], gpu_shape, 1)


def test_docs_state_the_node_shapes() -> None:
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    section = doc.split("## Node shapes", 1)[1].split("\n## ", 1)[0]
    for overlay, pools in NODE_POOLS.items():
        for pool, (shape, count) in pools.items():
            line = next((row for row in section.splitlines() if row.startswith(f"| {overlay} | {pool} |")), None)
            assert line, f"docs/kubernetes.md, Node shapes: no row for {overlay} / {pool}"
            assert f"{shape.cpu:g} vCPU" in line and f"{shape.memory_gib:g} GiB" in line, line
            if shape.gpus:
                assert f"{shape.gpus} NVIDIA GPU" in line, line


# ---- Lifecycle: deadlines, deletion rules, bounded waits -----------------------------------------------------


def _wait_seconds(container: dict[str, Any]) -> int:
    return int(_env_values(container)["WAIT_SECONDS"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjob_deadlines_and_deletion_rules_keep_the_head_on_failure(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    spec = _rayjob(rendered[overlay])["spec"]
    cluster = spec["rayClusterSpec"]
    assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec
    rules = {
        (rule["condition"].get("jobStatus") or rule["condition"]["jobDeploymentStatus"]): rule
        for rule in spec["deletionStrategy"]["deletionRules"]
    }
    assert set(rules) == {"SUCCEEDED", "Failed"}
    assert rules["SUCCEEDED"]["policy"] == rules["Failed"]["policy"] == "DeleteCluster"
    success_ttl, failure_ttl = (rules[k]["condition"]["ttlSeconds"] for k in ("SUCCEEDED", "Failed"))
    assert 0 < success_ttl < failure_ttl and failure_ttl >= 1800, "the head stays long enough to read its logs"
    # Kept after a failure: the head only, since idle workers are removed long before.
    idle = cluster["autoscalerOptions"]["idleTimeoutSeconds"]
    assert all(group["minReplicas"] == 0 for group in cluster["workerGroupSpecs"]) and idle < failure_ttl
    # The head's waits end before the RayJob's pre-running deadline, which ends before its active deadline.
    head = cluster["headGroupSpec"]["template"]["spec"]
    waits = sum(_wait_seconds(c) for c in head["initContainers"])
    assert waits < spec["preRunningDeadlineSeconds"] < spec["activeDeadlineSeconds"]


def _init_containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(label, c) for label, pod in all_pod_specs(objects) for c in pod.get("initContainers", [])]


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_every_waiting_init_container_is_bounded(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    waiting = [(label, c) for label, c in _init_containers(rendered[overlay]) if c["name"].startswith("wait-for-")]
    assert {c["name"] for _, c in waiting} >= {"wait-for-postgres", "wait-for-mlflow"}
    for label, container in waiting:
        assert 0 < _wait_seconds(container) <= 1800, f"{label} {container['name']}"
        assert "WAIT_SECONDS" in " ".join(container["command"]), f"{label} {container['name']} ignores its bound"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_container_command(
    container: dict[str, Any], env: dict[str, str], timeout: float = 60
) -> tuple[int, str, float]:
    """Run a container's command here (its own env, overridden by ``env``): (exit code, stderr, seconds)."""
    command = list(container["command"])
    if command[0] == "python":
        command[0] = sys.executable
    started = time.monotonic()
    result = subprocess.run(
        command,
        env={"PATH": os.environ["PATH"], **_env_values(container), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stderr, time.monotonic() - started


def test_wait_for_mlflow_gives_up_after_its_bound_and_passes_when_mlflow_answers(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    head = cluster_spec(_rayjob(rendered["gpu"]))["headGroupSpec"]["template"]["spec"]
    container = _init_container(head, "wait-for-mlflow")
    closed = f"http://127.0.0.1:{_free_port()}"
    code, stderr, seconds = _run_container_command(container, {"MLFLOW_TRACKING_URI": closed, "WAIT_SECONDS": "0"})
    assert code != 0 and seconds < 30
    assert f"{closed}/health did not answer within 0 s" in stderr

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        code, stderr, _ = _run_container_command(container, {"MLFLOW_TRACKING_URI": url, "WAIT_SECONDS": "30"})
        assert code == 0, stderr
    finally:
        server.shutdown()
        thread.join()


def test_shell_waits_give_up_after_their_bound(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """wait-for-postgres and wait-for-cifar10, run here: nothing they wait for exists, so they must end, non-zero,
    with a message, soon after WAIT_SECONDS. A stand-in pg_isready that succeeds shows the loop ends on success."""
    if shutil.which("timeout") is None or shutil.which("sh") is None:
        pytest.skip("needs sh and coreutils timeout, as the postgres and Ray images have")
    mlflow_pod = one(rendered["gpu"], "Deployment", "qshield-mlflow")["spec"]["template"]["spec"]
    head = cluster_spec(_rayjob(rendered["gpu"]))["headGroupSpec"]["template"]["spec"]
    cases = [
        (_init_container(mlflow_pod, "wait-for-postgres"), "qshield-postgres did not accept connections within 1 s"),
        (_init_container(head, "wait-for-cifar10"), "CIFAR-10 did not appear on the shared volume within 1 s"),
    ]
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    for container, message in cases:
        path = f"{empty_path}:{os.environ['PATH']}"
        if container["name"] == "wait-for-postgres":  # no pg_isready at all here, or one that finds no server
            (empty_path / "pg_isready").write_text("#!/bin/sh\nexit 2\n")
            (empty_path / "pg_isready").chmod(0o755)
        code, stderr, seconds = _run_container_command(container, {"WAIT_SECONDS": "1", "PATH": path})
        assert code != 0 and seconds < 20, (container["name"], code, seconds)
        assert message in stderr, stderr
    (empty_path / "pg_isready").write_text("#!/bin/sh\nexit 0\n")
    code, stderr, _ = _run_container_command(
        cases[0][0], {"WAIT_SECONDS": "30", "PATH": f"{empty_path}:{os.environ['PATH']}"}
    )
    assert code == 0, stderr


# ---- MLflow and PostgreSQL -----------------------------------------------------------------------------------


def _mlflow_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment", "qshield-mlflow")
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    return container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_uses_postgres_and_proxied_artifacts(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment", "qshield-mlflow")
    pod = deployment["spec"]["template"]["spec"]
    container = _mlflow_container(objects)
    args = container["args"]
    assert args[0] == "server"
    assert "--serve-artifacts" in args
    destination = _flag(args, "--artifacts-destination")
    artifact_mounts = _mounts_of_claim(pod, container, "qshield-mlflow-artifacts")
    assert any(_under(destination, m) for m in artifact_mounts), "artifacts must land on the volume"
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "a ReadWriteOnce volume cannot roll"
    assert deployment["spec"]["replicas"] == 1, "one server, so one schema migration at a time"
    backend = _env_entry(container, "MLFLOW_BACKEND_STORE_URI")["value"]
    parsed = urlparse(backend)
    assert parsed.scheme.startswith("postgresql")
    postgres = one(objects, "Service", parsed.hostname)
    assert parsed.port in [p["port"] for p in postgres["spec"]["ports"]]
    assert one(objects, "StatefulSet", "qshield-postgres")["spec"]["volumeClaimTemplates"]
    port = container["ports"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == "/health" and http_get["port"] in (port["name"], port["containerPort"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_migrates_its_database_before_the_server_starts(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    from mlflow.cli import cli

    pod = one(rendered[overlay], "Deployment", "qshield-mlflow")["spec"]["template"]["spec"]
    server = _mlflow_container(rendered[overlay])
    names = [c["name"] for c in pod["initContainers"]]
    assert names == ["wait-for-postgres", "db-upgrade"], "wait for the database, migrate it, then serve"
    upgrade = _init_container(pod, "db-upgrade")
    assert upgrade["image"] == server["image"], "the migration must be the server's own MLflow version"
    # the same connection as the server's
    for name in ("MLFLOW_DB_USER", "MLFLOW_DB_PASSWORD", "MLFLOW_BACKEND_STORE_URI"):
        assert _env_entry(upgrade, name) == _env_entry(server, name)
    shell = upgrade["command"]
    assert shell[:2] == ["sh", "-c"]
    argv = shlex.split(shell[2].removeprefix("exec "))
    assert argv[:3] == ["mlflow", "db", "upgrade"] and argv[3] == "$MLFLOW_BACKEND_STORE_URI", argv
    # MLflow's own CLI accepts the invocation (parsed, not run): `mlflow db upgrade URL`
    group = cli.commands["db"]
    context = group.commands["upgrade"].make_context("upgrade", ["postgresql+psycopg2://u:p@h:5432/mlflow"])
    assert context.params == {"url": "postgresql+psycopg2://u:p@h:5432/mlflow"}


def test_db_upgrade_command_creates_and_keeps_the_schema(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The db-upgrade init container's command, run here against SQLite (no PostgreSQL driver in the test
    environment; the server image has psycopg2): it creates MLflow's schema on an empty database, as on the first
    start. (On later starts `mlflow db upgrade` migrates an old schema, or finds it current.)"""
    import sqlalchemy

    pod = one(rendered["cpu-dev"], "Deployment", "qshield-mlflow")["spec"]["template"]["spec"]
    upgrade = _init_container(pod, "db-upgrade")
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    if not mlflow_bin.exists():
        pytest.skip(f"no mlflow executable next to {sys.executable}")
    database = tmp_path / "mlflow.db"
    env = {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{database}", "PATH": f"{mlflow_bin.parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        upgrade["command"], env={**os.environ, **env}, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    engine = sqlalchemy.create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        tables = set(sqlalchemy.inspect(connection).get_table_names())
        version = connection.execute(sqlalchemy.text("select version_num from alembic_version")).scalar_one()
    engine.dispose()
    assert {"experiments", "runs", "registered_models", "alembic_version"} <= tables and version


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_uses_its_own_database_role_never_the_superuser(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    mlflow_pod = one(objects, "Deployment", "qshield-mlflow")["spec"]["template"]["spec"]
    for container in containers(mlflow_pod):
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            assert not ref or ref["name"] != "qshield-postgres", f"{container['name']} reads the superuser Secret"
    backend = _env_entry(_mlflow_container(objects), "MLFLOW_BACKEND_STORE_URI")["value"]
    assert urlparse(backend).username == "$(MLFLOW_DB_USER)" and urlparse(backend).path == "/mlflow"
    for name, key in (("MLFLOW_DB_USER", "username"), ("MLFLOW_DB_PASSWORD", "password")):
        ref = _env_entry(_mlflow_container(objects), name)["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "qshield-mlflow-db", "key": key}
    # PostgreSQL: superuser password from its own Secret, MLflow's role created by the init script on first start
    stateful = one(objects, "StatefulSet", "qshield-postgres")["spec"]["template"]["spec"]
    postgres = stateful["containers"][0]
    assert _env_entry(postgres, "POSTGRES_PASSWORD")["valueFrom"]["secretKeyRef"]["name"] == "qshield-postgres"
    assert "POSTGRES_USER" not in {e["name"] for e in postgres["env"]}, "the superuser keeps the name postgres"
    assert _env_values(postgres)["MLFLOW_DB_NAME"] == urlparse(backend).path.lstrip("/")
    (mount,) = [m for m in postgres["volumeMounts"] if m["mountPath"] == "/docker-entrypoint-initdb.d"]
    (volume,) = [v for v in stateful["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["defaultMode"] & 0o111, "the image runs executable *.sh files in their own shell"
    config_map = one(objects, "ConfigMap", volume["configMap"]["name"])
    script = config_map["data"]["create-mlflow-role.sh"]
    assert script == (K8S / "base" / "postgres" / "create-mlflow-role.sh").read_text()
    assert "NOSUPERUSER" in script and "NOCREATEROLE" in script and "NOCREATEDB" in script


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_driver_persists_its_optuna_study_in_postgres(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Ray head (where the Tune driver runs) gets QSHIELD_OPTUNA_STORAGE, read by
    orchestrator.runtime.optuna_storage, pointing at database optuna with MLflow's role; the init script
    creates that database; the parent run's tag would show it without the password."""
    from orchestrator.runtime import optuna_storage, redact_url

    head = _rayjob(rendered[overlay])["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    url = _env_entry(head, "QSHIELD_OPTUNA_STORAGE")["value"]
    parsed = urlparse(url)
    assert parsed.scheme == "postgresql+psycopg2" and parsed.hostname == "qshield-postgres" and parsed.path == "/optuna"
    for name, key in (("QSHIELD_OPTUNA_DB_USER", "username"), ("QSHIELD_OPTUNA_DB_PASSWORD", "password")):
        assert _env_entry(head, name)["valueFrom"]["secretKeyRef"] == {"name": "qshield-mlflow-db", "key": key}
    assert parsed.username == "$(QSHIELD_OPTUNA_DB_USER)" and parsed.password == "$(QSHIELD_OPTUNA_DB_PASSWORD)"
    script = (K8S / "base" / "postgres" / "create-mlflow-role.sh").read_text()
    assert 'CREATE DATABASE :"optuna_db" WITH OWNER :"role"' in script and "OPTUNA_DB_NAME:-optuna" in script
    monkeypatch.setenv("QSHIELD_OPTUNA_STORAGE", url.replace("$(QSHIELD_OPTUNA_DB_PASSWORD)", "s3cret"))
    assert optuna_storage("http://qshield-mlflow:5000").endswith("@qshield-postgres:5432/optuna")
    assert "s3cret" not in redact_url(optuna_storage("http://qshield-mlflow:5000"))


def _postgres_bin() -> Path | None:
    for candidate in (shutil.which("initdb"), *sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))):
        if candidate:
            return Path(candidate).resolve().parent
    return None


def test_postgres_init_script_creates_a_role_that_can_migrate_but_not_administer() -> None:
    """k8s/base/postgres/create-mlflow-role.sh against a real, freshly initialised PostgreSQL, as the image's
    entrypoint runs it (superuser postgres over the Unix socket): the role logs in with its password over TCP,
    creates tables in its database (what MLflow's migrations do), and may not create roles or databases."""
    bin_dir = _postgres_bin()
    psql = shutil.which("psql") or (bin_dir / "psql" if bin_dir else None)
    if bin_dir is None or psql is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, psql) not installed")
    demote: Any = None
    # A directory of its own under the system temp dir (pytest's tmp_path sits below a directory only its owner
    # may enter, and the server may have to run as another account).
    tmp_path = Path(tempfile.mkdtemp(prefix="qshield-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres (or nobody) account
        account = next((a for a in ("postgres", "nobody") if _has_account(a)), None)
        if account is None:
            shutil.rmtree(tmp_path)
            pytest.skip("running as root without a postgres or nobody account to run PostgreSQL as")
        entry = pwd.getpwnam(account)
        os.chown(tmp_path, entry.pw_uid, entry.pw_gid)
        demote = (entry.pw_uid, entry.pw_gid)

    def run(
        *command: str | Path, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {"user": demote[0], "group": demote[1]} if demote else {}
        return subprocess.run(
            [str(c) for c in command], env={"PATH": os.environ["PATH"], **(env or {})}, capture_output=True,
            text=True, timeout=120, check=check, cwd=tmp_path, **kwargs,
        )  # fmt: skip

    data, port = tmp_path / "data", str(_free_port())
    try:
        run(bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256")
        run(bin_dir / "pg_ctl", "-D", data, "-w", "-l", tmp_path / "log",
            "-o", f"-k {tmp_path} -p {port} -c listen_addresses=127.0.0.1", "start")  # fmt: skip
        password = "pw'with\"quotes and spaces"
        socket_env = {"PGHOST": str(tmp_path), "PGPORT": port}
        script = K8S / "base" / "postgres" / "create-mlflow-role.sh"
        shutil.copy(script, tmp_path / "init.sh")
        created = run("sh", tmp_path / "init.sh", env={
            **socket_env, "POSTGRES_USER": "postgres", "MLFLOW_DB_USER": "mlflow", "MLFLOW_DB_PASSWORD": password,
            "MLFLOW_DB_NAME": "mlflow"})  # fmt: skip
        assert "created role mlflow" in created.stdout
        query = (
            "select rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolcanlogin from pg_roles "
            "where rolname = 'mlflow'; select pg_get_userbyid(datdba) from pg_database where datname = 'mlflow'; "
            "select pg_get_userbyid(datdba) from pg_database where datname = 'optuna'"
        )
        roles = run(psql, "-U", "postgres", "-d", "postgres", "-Atc", query, env=socket_env).stdout.split()
        assert roles == ["f|f|f|f|t", "mlflow", "mlflow"]  # the sweeps' Optuna studies: database optuna
        as_mlflow = {"PGHOST": "127.0.0.1", "PGPORT": port, "PGUSER": "mlflow", "PGPASSWORD": password}
        ddl = run(psql, "-d", "mlflow", "-v", "ON_ERROR_STOP=1", "-Atc",
                  "create table t (x int); insert into t values (1); select count(*) from t",
                  env=as_mlflow)  # fmt: skip
        assert ddl.stdout.strip().endswith("1")
        for forbidden in ("create role intruder", "create database other", "alter role mlflow superuser"):
            refused = run(psql, "-d", "mlflow", "-v", "ON_ERROR_STOP=1", "-c", forbidden, env=as_mlflow, check=False)
            assert refused.returncode != 0, forbidden
            assert re.search(r"permission denied|must be superuser", refused.stderr), (forbidden, refused.stderr)
        wrong = run(psql, "-d", "mlflow", "-c", "select 1", env={**as_mlflow, "PGPASSWORD": "nope"}, check=False)
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
        # A missing variable is refused with its name before anything is created.
        missing = run("sh", tmp_path / "init.sh", env={**socket_env, "MLFLOW_DB_USER": "x"}, check=False)
        assert missing.returncode != 0 and "MLFLOW_DB_PASSWORD is not set" in missing.stderr
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(tmp_path, ignore_errors=True)


def _has_account(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# ---- NetworkPolicies -----------------------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels AND matchExpressions; an empty selector selects all)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


@dataclass(frozen=True)
class Peer:
    namespace: str
    labels: tuple[tuple[str, str], ...]

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def _peer(namespace: str, **labels: str) -> Peer:
    return Peer(namespace, tuple(sorted(labels.items())))


def _namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}  # set by Kubernetes on every namespace


def _admits(policies: list[dict[str, Any]], source: Peer, target: Peer, port: int) -> bool:
    """Whether ingress from ``source`` to ``target`` on TCP ``port`` is allowed by the NetworkPolicies (Kubernetes
    semantics: a pod selected by no Ingress policy admits all; otherwise the union of the rules of the policies that
    select it; within a peer, namespaceSelector and podSelector both apply; a podSelector alone means the
    policy's namespace)."""
    selecting = [
        p for p in policies
        if p["metadata"]["namespace"] == target.namespace and _selects(p["spec"]["podSelector"], target.label_map)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]  # fmt: skip
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None:
                for entry in ports:
                    assert isinstance(entry["port"], int) and entry.get("protocol", "TCP") == "TCP", entry
                if port not in [entry["port"] for entry in ports]:
                    continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                assert "ipBlock" not in peer, "ipBlock is not evaluated here"
                if "namespaceSelector" in peer:
                    if not _selects(peer["namespaceSelector"], _namespace_labels(source.namespace)):
                        continue
                elif source.namespace != policy["metadata"]["namespace"]:
                    continue
                if _selects(peer.get("podSelector", {}), source.label_map):
                    return True
    return False


def test_network_policy_evaluator_follows_kubernetes_semantics() -> None:
    web, api, other = _peer("ns", app="web"), _peer("ns", app="api"), _peer("elsewhere", app="web")
    policy = {
        "metadata": {"namespace": "ns"},
        "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 80}]}]},
    }  # fmt: skip
    assert _admits([], web, api, 80), "no policy: everything is admitted"
    assert _admits([policy], web, api, 80) and not _admits([policy], web, api, 81)
    assert not _admits([policy], other, api, 80), "a podSelector alone stays in the policy's namespace"
    assert _admits([policy], api, web, 80), "a pod no policy selects admits everything"
    both = copy.deepcopy(policy)
    both["spec"]["ingress"][0]["from"] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}},
         "podSelector": {"matchLabels": {"app": "web"}}}
    ]  # fmt: skip
    assert _admits([both], other, api, 80) and not _admits([both], web, api, 80), "both selectors must match"
    either = copy.deepcopy(both)
    either["spec"]["ingress"][0]["from"] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}}},
        {"podSelector": {"matchLabels": {"app": "web"}}},
    ]
    assert _admits([either], other, api, 80) and _admits([either], web, api, 80), "separate peers: either"
    deny = {"metadata": {"namespace": "ns"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert not _admits([deny], web, api, 80) and _admits([deny, policy], web, api, 80), "policies add up"
    expression = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}
    assert _selects(expression, {"tier": "b"})
    assert not _selects(expression, {"tier": "c"}) and not _selects(expression, {})


def _pods_by_role(objects: list[dict[str, Any]]) -> dict[str, Peer]:
    """The pods of a rendering as NetworkPolicy peers, by role, with the labels of their pod templates."""
    roles = {}
    for obj in objects:
        for label, template in pod_templates(obj):
            labels = template["metadata"]["labels"]
            ray = labels.get("app.kubernetes.io/name") == "qshield-ray"
            role = labels["app.kubernetes.io/component"] if ray else obj["metadata"]["name"]
            roles[role] = _peer(obj["metadata"]["namespace"], **labels)
    return roles


SWEEP_PORTS = (5432, 5000, 6379, 8265, 10001, 8080, 52365, 23456)


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_network_policies_admit_only_what_the_sweep_needs(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    policies = by_kind(objects, "NetworkPolicy")
    pods = _pods_by_role(objects)
    expected_roles = {"qshield-mlflow", "qshield-postgres", "head", "worker"}
    assert expected_roles <= set(pods), pods
    sources = dict(pods)
    sources["operator"] = _peer("kuberay-system", **{"app.kubernetes.io/name": "kuberay-operator"})
    sources["same-namespace pod"] = _peer("qshield", app="debug")
    sources["other-namespace pod"] = _peer("default", **{"app.kubernetes.io/name": "qshield-ray",
                                                         "app.kubernetes.io/component": "worker"})  # fmt: skip
    ray = {"head", "worker"}
    allowed = {  # (source role, target role) -> ports admitted, or "all"
        ("qshield-mlflow", "qshield-postgres"): {5432},
        ("head", "qshield-postgres"): {5432},  # the Tune driver's Optuna study (database optuna)
        **{(r, "qshield-mlflow"): {5000} for r in ray},
        **{(r, t): "all" for r in ray for t in ray},
        ("submitter", "head"): {8265},
        ("operator", "head"): {8265},
    }
    for source_role, source in sources.items():
        for target_role, target in pods.items():
            for port in SWEEP_PORTS:
                expected = allowed.get((source_role, target_role), set())
                admitted = _admits(policies, source, target, port)
                assert admitted == (expected == "all" or port in expected), (
                    f"{overlay}: {source_role} -> {target_role}:{port} {'admitted' if admitted else 'refused'}"
                )
    # every pod of the namespace is isolated (the CIFAR-10 fetch Job and the submitter accept nothing)
    for role, target in pods.items():
        assert not _admits(policies, sources["same-namespace pod"], target, 80), role


# ---- Authentication ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_ray_token_auth_and_mlflow_basic_auth_in_every_overlay(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    container = _mlflow_container(objects)
    pod = one(objects, "Deployment", "qshield-mlflow")["spec"]["template"]["spec"]
    assert "--app-name=basic-auth" in container["args"]
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert _env_entry(container, name)["valueFrom"]["secretKeyRef"] == {"name": "qshield-mlflow-auth", "key": name}
    config_path = Path(_env_entry(container, "MLFLOW_AUTH_CONFIG_PATH")["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = one(objects, "ConfigMap", volume["configMap"]["name"])
    parser = configparser.ConfigParser()
    parser.read_string(config_map["data"][config_path.name])
    # What mlflow.server.auth.config.read_auth_config needs, and no credentials in the file.
    assert parser["mlflow"]["default_permission"] in ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
    assert "admin_password" not in parser["mlflow"]
    database = parser["mlflow"]["database_uri"]
    assert database.startswith("sqlite:////")
    database_dir = str(Path(database.removeprefix("sqlite:///")).parent)
    assert database_dir in _mounts_of_claim(pod, container, "qshield-mlflow-artifacts"), "user store not persisted"
    # Ray: token auth through KubeRay, MLflow credentials for the driver and the trials.
    cluster = cluster_spec(ray_object(objects))
    assert cluster["authOptions"] == {"mode": "token", "secretName": "qshield-ray-auth"}
    for ray_pod in _ray_pods(ray_object(objects)):
        for name, key in (("MLFLOW_TRACKING_USERNAME", "MLFLOW_AUTH_ADMIN_USERNAME"),
                          ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD")):  # fmt: skip
            ref = _env_entry(ray_pod["containers"][0], name)["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "qshield-mlflow-auth", "key": key}


def test_basic_auth_config_is_accepted_by_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    # MLflow's own reader. The module is loaded from its file: importing the mlflow.server.auth package would
    # need Flask-WTF, which the tracking server image has (mlflow.Dockerfile) but the test environment need not.
    config_module = _load_module("mlflow_auth_config", Path(mlflow.__file__).parent / "server" / "auth" / "config.py")
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(K8S / "base" / "mlflow" / "basic_auth.ini"))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "from-the-secret")
    config = config_module.read_auth_config()
    assert config.admin_password == "from-the-secret"
    assert config.database_uri == "sqlite:////mlflow/basic_auth.db"
    assert config.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"


# ---- Secrets: named in the manifests, built by init_secrets.py -----------------------------------------------


def _secret_references(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Secret name -> keys, for every Secret the rendered objects read (env, volumes, KubeRay authOptions)."""
    refs: dict[str, set[str]] = {}
    for label, pod in all_pod_specs(objects):
        for container in containers(pod):
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.setdefault(ref["name"], set()).add(ref["key"])
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, f"{label}: envFrom a whole Secret"
        for volume in pod.get("volumes", []):
            assert "secret" not in volume, f"{label}: Secret volume {volume}"
    for obj in objects:
        if obj["kind"] in ("RayJob", "RayCluster") and cluster_spec(obj).get("authOptions", {}).get("secretName"):
            refs.setdefault(cluster_spec(obj)["authOptions"]["secretName"], set()).add("auth_token")
    return refs


@pytest.fixture(scope="module")
def built_secrets() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not on PATH: init_secrets.py has kubectl build the Secrets")
    return list(yaml.safe_load_all(init_secrets.build_secrets()))


def test_init_secrets_builds_exactly_the_secrets_the_manifests_read(
    rendered: dict[str, list[dict[str, Any]]], built_secrets: list[dict[str, Any]]
) -> None:
    referenced: dict[str, set[str]] = {}
    for objects in rendered.values():
        for name, keys in _secret_references(objects).items():
            referenced.setdefault(name, set()).update(keys)
    built = {s["metadata"]["name"]: s for s in built_secrets}
    assert set(built) == set(referenced) == set(init_secrets.SECRETS)
    for name, secret in built.items():
        assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == "qshield"
        assert referenced[name] <= set(secret["data"]), f"{name} lacks {referenced[name] - set(secret['data'])}"
        assert secret["type"] == init_secrets.SECRETS[name].type
        kubernetes_validate.validate(secret, K8S_VERSIONS[-1], strict=True)
    assert built["qshield-mlflow-db"]["type"] == "kubernetes.io/basic-auth"
    values = []
    for name, secret in built.items():
        for key, fixed in init_secrets.SECRETS[name].keys.items():
            value = base64.b64decode(secret["data"][key]).decode()
            if fixed is init_secrets.GENERATED:
                assert re.fullmatch(r"[0-9a-f]{48}", value), (name, key)
                values.append(value)
            else:
                assert value == fixed
    assert len(values) == len(set(values)) >= 5, "each generated value is fresh"
    # the MLflow database user is a valid PostgreSQL identifier that needs no quoting in the URI
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", init_secrets.SECRETS["qshield-mlflow-db"].keys["username"])


def test_init_secrets_keeps_values_out_of_kubectl_arguments(tmp_path: Path) -> None:
    """The values reach kubectl as files, never as arguments (which other local users could read)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH")
    log = tmp_path / "argv.log"
    wrapper = tmp_path / "kubectl"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {shlex.quote(str(log))}\nexec {shlex.quote(kubectl)} "$@"\n')
    wrapper.chmod(0o755)
    counter = iter(range(1000))
    output = init_secrets.build_secrets(kubectl=str(wrapper), token=lambda: f"sentinel-{next(counter):03d}-value")
    argv = log.read_text()
    assert "--dry-run=client" in argv and "sentinel-" not in argv
    decoded = [base64.b64decode(v).decode() for s in yaml.safe_load_all(output) for v in s["data"].values()]
    assert sum(v.startswith("sentinel-") for v in decoded) == 5
    assert not list(tmp_path.glob("qshield-secrets-*")), "no value file is left behind"


def test_init_secrets_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown Secret qshield-nope; the manifests use: qshield-postgres"):
        init_secrets.build_secrets(["qshield-nope"])
    with pytest.raises(ValueError, match="not a DNS-1123 label"):
        init_secrets.build_secrets(namespace="Bad_Namespace")
    with pytest.raises(ValueError, match="nbytes must be at least 16"):
        init_secrets.build_secrets(nbytes=8)
    with pytest.raises(ValueError, match="kubectl not found"):
        init_secrets.build_secrets(kubectl=str(tmp_path / "no-kubectl"))
    with pytest.raises(SystemExit) as exited:
        init_secrets.main(["--only", "qshield-nope"])
    assert exited.value.code == 2 and "unknown Secret qshield-nope" in capsys.readouterr().err


def test_init_secrets_cli_prints_only_the_chosen_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not on PATH")
    assert init_secrets.main(["--only", "qshield-ray-auth", "--namespace", "sweeps"]) == 0
    (secret,) = yaml.safe_load_all(capsys.readouterr().out)
    assert secret["metadata"] == {"name": "qshield-ray-auth", "namespace": "sweeps", "creationTimestamp": None}
    assert set(secret["data"]) == {"auth_token"}


# ---- Image pull secrets --------------------------------------------------------------------------------------


def _qshield_image_pods(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (label, pod)
        for label, pod in all_pod_specs(objects)
        if any(c["image"].rsplit("/", 1)[-1].startswith(("qshield:", "qshield-mlflow:")) for c in containers(pod))
    ]


def _enable_components(kustomization: Path, wanted: tuple[str, ...]) -> None:
    """Uncomment ``# components:`` and the wanted ``#   - <component>`` lines of an overlay, as a user would."""
    out = []
    for line in kustomization.read_text().splitlines():
        stripped = line.strip()
        uncomment = stripped == "# components:" or any(stripped == f"#   - {c}" for c in wanted)
        out.append(line.replace("# ", "", 1) if uncomment else line)
    text = "\n".join(out) + "\n"
    for component in wanted:
        assert f"\n  - {component}\n" in text, f"{kustomization} has no commented line for {component}"
    kustomization.write_text(text)


def test_pull_secret_reaches_every_pod_that_runs_a_qshield_image(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """In the pod templates, where every pod gets it: the Ray head runs under a ServiceAccount KubeRay creates."""
    for overlay in ("gpu", "gpu-raycluster"):
        pods = _qshield_image_pods(rendered[overlay])
        assert len(pods) >= 4, pods
        for label, pod in pods:
            assert pod.get("imagePullSecrets") == [{"name": "qshield-registry"}], f"{overlay}: {label}"
    for overlay in ("cpu-dev", "cpu-dev-raycluster"):
        assert all("imagePullSecrets" not in pod for _, pod in all_pod_specs(rendered[overlay])), overlay
    # cpu-dev: one line away, as its comment says
    shutil.copytree(K8S, tmp_path / "k8s")
    _enable_components(tmp_path / "k8s" / "overlays" / "cpu-dev" / "kustomization.yaml",
                       ("../../components/image-pull-secret",))  # fmt: skip
    enabled = run_kustomize(tmp_path / "k8s" / "overlays" / "cpu-dev")
    for label, pod in _qshield_image_pods(enabled):
        assert pod.get("imagePullSecrets") == [{"name": "qshield-registry"}], label
    assert by_kind(enabled, "Deployment") and len(_qshield_image_pods(enabled)) >= 4


# ---- Images --------------------------------------------------------------------------------------------------


def test_image_tags_agree_with_the_pinned_versions(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ray_version, mlflow_version, version = _lock_pin("ray"), _lock_pin("mlflow"), _project_version()
    args = _dockerfile_args(K8S / "image" / "Dockerfile")
    assert args["RAY_VERSION"] == ray_version
    assert args["RAY_IMAGE_VARIANT"] == "py311"
    assert re.search(
        r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{RAY_IMAGE_VARIANT\}\s*$",
        (K8S / "image" / "Dockerfile").read_text(),
        flags=re.MULTILINE,
    )
    pins = re.compile(r"\b(torch|torchvision)==([\w.]+)")
    dev_pins = set(pins.findall((ROOT / "scripts" / "dev.sh").read_text()))
    image_pins = set(pins.findall(args["TORCH_SPEC"]))
    assert ("torch", dict(dev_pins)["torch"]) in image_pins and image_pins <= dev_pins, (image_pins, dev_pins)
    assert _dockerfile_args(K8S / "image" / "mlflow.Dockerfile")["MLFLOW_VERSION"] == mlflow_version
    for overlay, objects in rendered.items():
        variant = "py311-gpu" if RAYCLUSTER_OVERLAYS.get(overlay, overlay) == "gpu" else "py311"
        ray = ray_object(objects)
        assert cluster_spec(ray)["rayVersion"] == ray_version
        images = {c["image"] for _, pod in pod_specs(ray) for c in containers(pod)} | {
            c["image"] for obj in by_kind(objects, "Job") for _, pod in pod_specs(obj) for c in containers(pod)
        }
        assert images == {f"qshield:{version}-ray{ray_version}-{variant}"}, images
        mlflow_images = {c["image"] for c in containers(one(objects, "Deployment")["spec"]["template"]["spec"])}
        assert mlflow_images - {"postgres:17.6-bookworm"} == {f"qshield-mlflow:{mlflow_version}"}


def test_build_script_builds_exactly_the_images_the_overlays_use(rendered: dict[str, list[dict[str, Any]]]) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    result = subprocess.run(
        [bash, str(K8S / "image" / "build.sh"), "all"],
        env={**os.environ, "DRY_RUN": "1", "REGISTRY": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    built = {}
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        if "build" not in words:
            continue
        tag = words[words.index("-t") + 1]
        build_args = {}
        for i, word in enumerate(words):
            if word == "--build-arg":
                key, value = words[i + 1].split("=", 1)
                build_args[key] = value
        built[tag] = (words[words.index("-f") + 1], build_args)
    ray_version = _lock_pin("ray")
    used = {
        c["image"]
        for objects in rendered.values()
        for obj in objects
        for _, pod in pod_specs(obj)
        for c in containers(pod)
        if not c["image"].startswith("postgres:")
    }
    assert set(built) == used
    for tag, (dockerfile, build_args) in built.items():
        if dockerfile == "k8s/image/Dockerfile":
            base = f"rayproject/ray:{build_args['RAY_VERSION']}-{build_args['RAY_IMAGE_VARIANT']}"
            expected = (
                f"rayproject/ray:{ray_version}-py311-gpu"
                if tag.endswith("-gpu")
                else f"rayproject/ray:{ray_version}-py311"
            )
            assert base == expected, (tag, base)
        else:
            assert dockerfile == "k8s/image/mlflow.Dockerfile"
            assert build_args["MLFLOW_VERSION"] == _lock_pin("mlflow")
    failed = subprocess.run(
        [bash, str(K8S / "image" / "build.sh"), "tpu"],
        env={**os.environ, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode != 0 and "choose from cpu, gpu, mlflow, all" in failed.stderr


def _inline_python(command: list[str]) -> list[str]:
    """The Python programs a container command runs with ``python -c`` (directly or inside ``sh -c``)."""
    if len(command) >= 3 and command[0] in ("python", "python3") and command[1] == "-c":
        return [command[2]]
    if len(command) >= 3 and command[:2] == ["sh", "-c"]:
        return re.findall(r'python3? -c "([^"]*)"', command[2])
    return []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_inline_python_in_containers_compiles(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    programs = [
        (label, container["name"], program)
        for label, pod in all_pod_specs(rendered[overlay])
        for container in containers(pod)
        for program in _inline_python(container.get("command", []))
    ]
    assert programs, "expected the wait-for-mlflow probe at least"
    for label, name, program in programs:
        compile(program, f"{label}/{name}", "exec")  # SyntaxError fails the test
    with pytest.raises(SyntaxError):
        compile(programs[0][2] + "\n  )", "broken", "exec")


# ---- References and pod security -----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_every_reference_resolves(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    secrets = {name: set(spec.keys) for name, spec in init_secrets.SECRETS.items()}  # created before the apply
    config_maps = {o["metadata"]["name"]: set(o["data"]) for o in by_kind(objects, "ConfigMap")}
    claims = {o["metadata"]["name"] for o in by_kind(objects, "PersistentVolumeClaim")}
    for label, pod in all_pod_specs(objects):
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (label, volume)
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, (label, volume)
        volume_names = {v["name"] for v in pod.get("volumes", [])}
        for obj in objects:  # StatefulSet volumeClaimTemplates are volumes too
            if obj["kind"] == "StatefulSet" and obj["spec"]["template"]["spec"] is pod:
                volume_names |= {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        for container in containers(pod):
            defined: set[str] = set()
            for entry in container.get("env", []):
                source = entry.get("valueFrom", {})
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    assert ref["key"] in secrets.get(ref["name"], set()), (label, container["name"], ref)
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    assert ref["key"] in config_maps.get(ref["name"], set()), (label, container["name"], ref)
                for reference in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")):
                    assert reference in defined, f"{label}: $({reference}) is used before it is defined"
                defined.add(entry["name"])
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volume_names, (label, container["name"], mount)
    auth = cluster_spec(ray_object(objects)).get("authOptions", {})
    assert "auth_token" in secrets.get(auth["secretName"], set()), "KubeRay reads the token from key auth_token"
    # Services select pods that exist and name ports those pods expose
    templates = [obj["spec"]["template"] for obj in objects if obj["kind"] in WORKLOAD_KINDS]
    for service in by_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        matching = [t for t in templates if selector.items() <= t["metadata"].get("labels", {}).items()]
        assert matching, f"Service {service['metadata']['name']} selects no pod"
        ports = {p.get("name") for t in matching for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    # NetworkPolicies select pods that exist
    labels = [t["metadata"]["labels"] for obj in objects for _, t in pod_templates(obj)]
    for policy in by_kind(objects, "NetworkPolicy"):
        assert any(_selects(policy["spec"]["podSelector"], l) for l in labels), policy["metadata"]["name"]


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_every_pod_runs_unprivileged_with_resources(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    pods = all_pod_specs(objects)
    assert len(pods) >= 4
    for label, pod in pods:
        pod_context = pod.get("securityContext", {})
        for container in containers(pod):
            where = f"{overlay}: {label} container {container['name']}"
            context = container.get("securityContext", {})
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, where
            assert context.get("runAsUser", pod_context.get("runAsUser", 1)) != 0, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("privileged", False) is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container.get("resources", {}).get(bound, {})), f"{where}: {bound}"
            # Everything except Ray's own processes (which write under /tmp/ray and $HOME) is read-only.
            if container["name"] not in RAY_CONTAINERS:
                assert context.get("readOnlyRootFilesystem") is True, where
        if "head" not in label:  # the Ray head's autoscaler talks to the Kubernetes API; nothing else does
            assert pod.get("automountServiceAccountToken") is False, label
        assert all("hostPath" not in v for v in pod.get("volumes", [])), label
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), label
    autoscaler = cluster_spec(ray_object(objects))["autoscalerOptions"]
    assert autoscaler["securityContext"]["runAsNonRoot"] is True
    assert autoscaler["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert autoscaler["securityContext"]["allowPrivilegeEscalation"] is False
    # read-only root filesystems get a writable /tmp
    for label, pod in pods:
        empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for container in pod["containers"]:
            if container.get("securityContext", {}).get("readOnlyRootFilesystem") and container["name"] != "fetch":
                tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in empty_dirs, f"{label}: {container['name']} has no writable /tmp"


# ---- The long-lived RayCluster (overlays/*-raycluster) ---------------------------------------------------------


@pytest.mark.parametrize(("variant", "overlay"), sorted(RAYCLUSTER_OVERLAYS.items()))
def test_raycluster_overlay_is_its_overlay_with_the_rayjobs_cluster(
    rendered: dict[str, list[dict[str, Any]]], variant: str, overlay: str
) -> None:
    """The long-lived cluster's spec is the RayJob's cluster spec of its overlay, field for field, and the rest of
    the overlay is unchanged; the plain overlays deploy no RayCluster."""
    raycluster = one(rendered[variant], "RayCluster", "qshield-ray")
    rayjob = _rayjob(rendered[overlay])
    assert raycluster["spec"] == rayjob["spec"]["rayClusterSpec"]
    assert not by_kind(rendered[variant], "RayJob") and not by_kind(rendered[overlay], "RayCluster")
    def rest(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [o for o in objects if o["kind"] not in ("RayJob", "RayCluster")]

    assert rest(rendered[variant]) == rest(rendered[overlay])
    # the comparison is not vacuous: one drifted field is seen
    drifted = copy.deepcopy(raycluster["spec"])
    drifted["workerGroupSpecs"][0]["maxReplicas"] += 1
    assert drifted != rayjob["spec"]["rayClusterSpec"]


def test_raycluster_follows_a_change_to_the_rayjob(tmp_path: Path) -> None:
    """The copy is made by kustomize at render time: change the RayJob's cluster in the overlay, and the long-lived
    cluster changes with it (no second place to edit)."""
    shutil.copytree(K8S, tmp_path / "k8s")
    patch = tmp_path / "k8s" / "overlays" / "gpu" / "patches" / "gpu-workers.yaml"
    field = "  path: /spec/rayClusterSpec/workerGroupSpecs/0/maxReplicas\n  value: "
    assert field + "4\n" in patch.read_text()
    patch.write_text(patch.read_text().replace(field + "4\n", field + "7\n"))
    raycluster = one(run_kustomize(tmp_path / "k8s" / "overlays" / "gpu-raycluster"), "RayCluster", "qshield-ray")
    assert raycluster["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 7


# ---- Documentation -------------------------------------------------------------------------------------------


def test_docs_walk_through_what_exists(rendered: dict[str, list[dict[str, Any]]]) -> None:
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    for match in sorted(set(re.findall(r"\bk8s/[\w./-]*\w", doc))):
        assert (ROOT / match).exists(), f"docs/kubernetes.md mentions {match}, which does not exist"
    assert "render.py" not in doc and ".env" not in doc
    applied = set(re.findall(r"kubectl apply -k (k8s/overlays/[\w-]+)", doc))
    assert applied == {f"k8s/overlays/{o}" for o in ALL_OVERLAYS}
    for overlay in OVERLAYS:
        sweep = _flag(_entrypoint_args(_rayjob(rendered[overlay])), "--name")
        assert re.search(rf"qshield select --sweep {re.escape(sweep)}\b", doc), f"no `qshield select` for {sweep}"
    for name, spec in init_secrets.SECRETS.items():
        assert name in doc, f"docs do not mention Secret {name}"
        for key in spec.keys:
            assert key in doc, f"docs do not name key {key} of {name}"
    assert "python k8s/init_secrets.py | kubectl create -f -" in doc
    assert "kubectl create secret docker-registry qshield-registry" in doc
    for phrase in (
        f"KubeRay {KUBERAY_VERSION}", f"--version {KUBERAY_VERSION}", "preRunningDeadlineSeconds",
        "activeDeadlineSeconds", "deletionRules", "mlflow db upgrade", "pg_dump", "pg_restore", "NetworkPolicy",
        "imagePullSecrets", "Cluster Autoscaler", "Karpenter", "backoffLimit", "port-forward", "RAY_AUTH_TOKEN",
        "build.sh", "/dev/shm",
    ):  # fmt: skip
        assert phrase in doc, phrase


def test_docs_explain_the_long_lived_raycluster() -> None:
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    assert "## Long-lived RayCluster + ray job submit" in doc
    section = doc.split("## Long-lived RayCluster + ray job submit", 1)[1].split("\n## ", 1)[0]
    assert "svc/qshield-ray-head-svc 8265:8265" in section
    assert "ray job submit --address http://localhost:8265" in section
    for variant in RAYCLUSTER_OVERLAYS:
        assert f"k8s/overlays/{variant}" in section


# SHA-256 of ray-operator/config/crd/bases/ray.io_{rayjobs,rayclusters}.yaml at ray-project/kuberay tag v1.7.0.
KUBERAY_CRD_SHA256 = {
    "ray.io_rayjobs.yaml": "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5",
    "ray.io_rayclusters.yaml": "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1",
}


def test_crds_validated_against_are_kuberays_release_that_the_docs_name() -> None:
    import hashlib

    for filename, digest in KUBERAY_CRD_SHA256.items():
        path = CRD_DIR / filename
        if not path.is_file():
            pytest.skip(f"{path} not found")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            pytest.fail(f"{path} is not the CRD of KubeRay v{KUBERAY_VERSION}: update KUBERAY_VERSION, the digests "
                        "and docs/kubernetes.md together")
