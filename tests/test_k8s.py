"""Offline checks of the Kubernetes deployment under k8s/ (docs/kubernetes.md).

Each overlay (cpu-dev, gpu) is rendered with k8s/render.py (the subset of kustomize the manifests use; tested
first, against hand-computed results) and then:

* every built-in object, and every pod template inside the RayJob, validates against the Kubernetes OpenAPI
  schemas shipped by ``kubernetes-validate`` (strict: unknown fields fail), for an older and the newest version;
* the RayJob, and the RayCluster it makes, validate against KubeRay's CRD schemas (``ray.io_rayjobs.yaml`` and
  ``ray.io_rayclusters.yaml`` from ray-project/kuberay ``ray-operator/config/crd/bases``, read from
  ``$KUBERAY_CRD_DIR``, default the project's shared reference copy), with unknown fields refused as
  ``kubectl apply`` does; both validators are shown to reject broken manifests;
* the RayJob entrypoint parses with the orchestrator's own CLI parser and names a search space that exists;
* image tags and the RayCluster's rayVersion agree with the pins of requirements/lock.txt, and with what
  k8s/image/build.sh builds;
* no committed file carries a secret value; every Secret/ConfigMap/PVC/Service reference resolves;
* every pod runs as non-root with no privilege escalation, all capabilities dropped and RuntimeDefault seccomp;
* the Ray head has num-cpus "0", autoscaling is on, the gpu overlay's worker group requests nvidia.com/gpu, the
  shared results volume is mounted on head and workers under the sweep's storage path, and a retry resumes;
* the standalone RayCluster qshield-ray (components/raycluster: in the gpu overlay, opt-in in cpu-dev) validates
  against the CRD and the Kubernetes schemas and equals the RayJob's rayClusterSpec but for the runtime env.
"""

from __future__ import annotations

import base64
import configparser
import copy
import fnmatch
import importlib.util
import os
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu-dev", "gpu")
# The oldest Kubernetes minor still commonly run with KubeRay 1.6+, and the newest that kubernetes-validate ships.
K8S_VERSIONS = ("1.31", "1.37")
# KubeRay's CRDs (not vendored here): $KUBERAY_CRD_DIR, else the shared reference copy next to the checkout.
CRD_DIR = Path(os.environ.get("KUBERAY_CRD_DIR", "/work/shared/reference/kuberay-crds"))
# Where k8s/image/Dockerfile puts the repository inside the image.
IMAGE_PROJECT_DIR = "/home/ray/qshield"
EXPECTED_SPACE = {"cpu-dev": "search_spaces/mnist5k-demo.yaml", "gpu": "search_spaces/cifar10.yaml"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet")


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_mod = _load_module("qshield_k8s_render", K8S / "render.py")
init_secrets = _load_module("qshield_k8s_init_secrets", K8S / "init_secrets.py")
KustomizeError = render_mod.KustomizeError


# ------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [obj for obj in _by_kind(objects, kind) if name is None or obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


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


def _cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec of a RayJob (spec.rayClusterSpec) or of a standalone RayCluster (spec)."""
    return obj["spec"]["rayClusterSpec"] if obj["kind"] == "RayJob" else obj["spec"]


def _pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, pod spec) of every pod an object will create."""
    name = obj["metadata"]["name"]
    if obj["kind"] in WORKLOAD_KINDS:
        yield f"{obj['kind']}/{name}", obj["spec"]["template"]["spec"]
    elif obj["kind"] in ("RayJob", "RayCluster"):
        cluster = _cluster_spec(obj)
        yield f"{obj['kind']}/{name} head", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"{obj['kind']}/{name} worker group {group['groupName']}", group["template"]["spec"]
        if obj["kind"] == "RayJob" and "submitterPodTemplate" in obj["spec"]:
            yield f"RayJob/{name} submitter", obj["spec"]["submitterPodTemplate"]["spec"]


def _all_pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [pair for obj in objects for pair in _pod_specs(obj)]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _rayjob(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return _one(objects, "RayJob")


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


def _env_value(container: dict[str, Any], name: str) -> dict[str, Any]:
    entries = [e for e in container.get("env", []) if e["name"] == name]
    assert len(entries) == 1, f"env {name} appears {len(entries)} times in container {container['name']}"
    return entries[0]


def _mounts_of_claim(pod: dict[str, Any], container: dict[str, Any], claim: str) -> list[str]:
    volumes = {
        v["name"] for v in pod.get("volumes", []) if v.get("persistentVolumeClaim", {}).get("claimName") == claim
    }
    return [m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in volumes]


def _under(path: str, directory: str) -> bool:
    return Path(path) == Path(directory) or Path(directory) in Path(path).parents


# ------------------------------------------------------------------------------------------------------------
# The renderer (k8s/render.py), against hand-computed results
# ------------------------------------------------------------------------------------------------------------


def test_json6902_operations_follow_rfc6902() -> None:
    document = {"a": {"b": [1, 2, 3], "c": "x"}, "d": [{"n": "p"}, {"n": "q"}], "e~f": 1, "g/h": 2}
    operations = [
        {"op": "add", "path": "/a/b/1", "value": 9},
        {"op": "add", "path": "/a/b/-", "value": 10},
        {"op": "add", "path": "/a/new", "value": {"k": [1]}},
        {"op": "remove", "path": "/a/c"},
        {"op": "replace", "path": "/d/1/n", "value": "r"},
        {"op": "copy", "from": "/d/0", "path": "/d/-"},
        {"op": "move", "from": "/a/new/k", "path": "/moved"},
        {"op": "replace", "path": "/e~0f", "value": 3},
        {"op": "remove", "path": "/g~1h"},
        {"op": "test", "path": "/d/2", "value": {"n": "p"}},
    ]
    expected = copy.deepcopy(document)
    expected["a"]["b"].insert(1, 9)
    expected["a"]["b"].append(10)
    expected["a"]["new"] = {}
    del expected["a"]["c"]
    expected["d"][1]["n"] = "r"
    expected["d"].append({"n": "p"})
    expected["moved"] = [1]
    expected["e~f"] = 3
    del expected["g/h"]
    before = copy.deepcopy(document)
    assert render_mod.apply_json6902(document, operations) == expected
    assert document == before, "apply_json6902 must not modify its input"
    # the copied element is a copy, not an alias
    patched = render_mod.apply_json6902(document, [{"op": "copy", "from": "/d/0", "path": "/d/-"}])
    patched["d"][-1]["n"] = "changed"
    assert patched["d"][0]["n"] == "p"


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        ({"op": "merge", "path": "/a"}, "op 'merge' is not one of"),
        ({"op": "add", "path": "a", "value": 1}, "not a JSON pointer"),
        ({"op": "add", "path": "/a"}, "needs a 'value'"),
        ({"op": "replace", "path": "/missing", "value": 1}, "does not exist"),
        ({"op": "remove", "path": "/list/5"}, "out of range"),
        ({"op": "add", "path": "/list/4", "value": 1}, "out of range"),
        ({"op": "add", "path": "/list/01", "value": 1}, "not an array index"),
        ({"op": "add", "path": "/nope/x", "value": 1}, "does not exist"),
        ({"op": "test", "path": "/a", "value": 2}, "test failed"),
        ({"op": "test", "path": "/flag", "value": 1}, "test failed"),  # true is not 1 in JSON
        ({"op": "move", "from": "/obj", "path": "/obj/inner"}, "into its own child"),
    ],
)
def test_json6902_rejects_invalid_operations(operation: dict[str, Any], message: str) -> None:
    document = {"a": 1, "list": [1, 2, 3], "flag": True, "obj": {"x": 1}}
    with pytest.raises(KustomizeError, match=re.escape(message)):
        render_mod.apply_json6902(document, [operation])


def test_read_env_file_parses_kustomize_env_format(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.env", '# comment\n\nUSER=mlflow\n  PASS=a=b c\nEMPTY=\nquoted="x"\n')
    assert render_mod.read_env_file(path) == {"USER": "mlflow", "PASS": "a=b c", "EMPTY": "", "quoted": '"x"'}
    for text, message in [
        ("JUST_A_KEY\n", "has no '='"),
        ("BAD KEY=1\n", "not a valid env file key"),
        ("1KEY=1\n", "not a valid env file key"),
        ("A=1\nA=2\n", "is repeated"),
    ]:
        with pytest.raises(KustomizeError, match=re.escape(message)):
            render_mod.read_env_file(_write(tmp_path / "bad.env", text))


def test_set_images_rewrites_containers_at_any_depth() -> None:
    resource = {
        "kind": "RayJob",
        "spec": {
            "deep": {"containers": [{"name": "a", "image": "app"}, {"name": "b", "image": "other:1"}]},
            "initContainers": [{"name": "c", "image": "reg.io:5000/app:old"}],
            "x": [{"containers": [{"name": "d", "image": "app@sha256:abc"}]}],
        },
    }
    images = [{"name": "app", "newTag": "2"}, {"name": "reg.io:5000/app", "newName": "mirror/app"}]
    result = render_mod.set_images(resource, images)
    assert result["spec"]["deep"]["containers"][0]["image"] == "app:2"
    assert result["spec"]["deep"]["containers"][1]["image"] == "other:1"
    assert result["spec"]["initContainers"][0]["image"] == "mirror/app:old"  # tag kept, registry port not a tag
    assert result["spec"]["x"][0]["containers"][0]["image"] == "app:2"
    assert resource["spec"]["deep"]["containers"][0]["image"] == "app", "input must not change"
    with pytest.raises(KustomizeError, match="both newTag and digest"):
        render_mod.set_images(resource, [{"name": "app", "newTag": "1", "digest": "sha256:0"}])
    with pytest.raises(KustomizeError, match="unsupported field"):
        render_mod.set_images(resource, [{"name": "app", "tag": "1"}])


def _mini_kustomization(tmp_path: Path) -> Path:
    """A base + component + overlay exercising every feature the renderer supports."""
    base = tmp_path / "base"
    _write(
        base / "kustomization.yaml",
        """
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: demo
resources: [ns.yaml, app.yaml]
secretGenerator:
  - name: creds
    envs: [creds.env]
configMapGenerator:
  - name: conf
    files: [settings.ini, renamed.ini=other.ini]
generatorOptions:
  disableNameSuffixHash: true
""",
    )
    _write(base / "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n")
    _write(
        base / "app.yaml",
        """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  template:
    spec:
      containers:
        - name: app
          image: app
          env: []
---
apiVersion: ray.io/v1
kind: RayJob
metadata:
  name: job
spec:
  rayClusterSpec:
    headGroupSpec:
      template:
        spec:
          containers:
            - name: head
              image: app:latest
""",
    )
    _write(base / "creds.env.example", "PASSWORD=CHANGE_ME\n")
    _write(base / "settings.ini", "[s]\nk = v\n")
    _write(base / "other.ini", "[o]\n")
    component = tmp_path / "component"
    _write(
        component / "kustomization.yaml",
        """
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
secretGenerator:
  - name: extra
    literals: [TOKEN=abc]
    options:
      disableNameSuffixHash: true
patches:
  - target: {group: apps, kind: Deployment, name: app}
    patch: |
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: FROM_COMPONENT, value: "1"}
""",
    )
    overlay = tmp_path / "overlay"
    _write(
        overlay / "kustomization.yaml",
        """
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: demo
labels:
  - pairs: {team: q}
resources: [../base]
components: [../component]
images:
  - {name: app, newName: reg/app, newTag: "7"}
patches:
  - path: job.yaml
    target: {group: ray.io, version: v1, kind: RayJob, name: job}
""",
    )
    _write(overlay / "job.yaml", "- op: add\n  path: /spec/entrypoint\n  value: python -m x\n")
    _write(tmp_path / "plain" / "kustomization.yaml", "kind: Kustomization\nresources: []\n")
    return overlay


def test_render_combines_resources_components_generators_and_transformers(tmp_path: Path) -> None:
    overlay = _mini_kustomization(tmp_path)
    objects = render_mod.render(overlay, env_fallback_suffix=".example")
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("ConfigMap", "conf"),
        ("Deployment", "app"),
        ("Namespace", "demo"),
        ("RayJob", "job"),
        ("Secret", "creds"),
        ("Secret", "extra"),
    ]
    for obj in objects:
        assert obj["metadata"]["labels"]["team"] == "q"
        if obj["kind"] == "Namespace":
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] == "demo"
    creds = _one(objects, "Secret", "creds")
    assert base64.b64decode(creds["data"]["PASSWORD"]).decode() == "CHANGE_ME"
    assert creds["type"] == "Opaque"
    assert base64.b64decode(_one(objects, "Secret", "extra")["data"]["TOKEN"]).decode() == "abc"
    conf = _one(objects, "ConfigMap", "conf")
    assert conf["data"] == {
        "settings.ini": (tmp_path / "base" / "settings.ini").read_text(),
        "renamed.ini": (tmp_path / "base" / "other.ini").read_text(),
    }
    deployment = _one(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg/app:7"
    assert container["env"] == [{"name": "FROM_COMPONENT", "value": "1"}]
    job = _one(objects, "RayJob")
    assert job["spec"]["entrypoint"] == "python -m x"
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == "reg/app:7"
    # without the fallback, the missing (gitignored) env file is an error, as with kustomize
    with pytest.raises(KustomizeError, match=r"env file 'creds.env' does not exist"):
        render_mod.render(overlay)
    # a real env file wins over the template
    _write(tmp_path / "base" / "creds.env", "PASSWORD=s3cret\n")
    creds = _one(render_mod.render(overlay, env_fallback_suffix=".example"), "Secret", "creds")
    assert base64.b64decode(creds["data"]["PASSWORD"]).decode() == "s3cret"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda k: k.update(commonLabels={"a": "b"}), "unsupported field(s) ['commonLabels']"),
        (lambda k: k.update(resources=["https://example.com/x.yaml"]), "remote resource"),
        (lambda k: k.update(resources=["missing.yaml"]), "does not exist"),
        (lambda k: k.update(resources=["app.yaml", "app.yaml"]), "defined more than once"),
        (lambda k: k.update(resources=["../outside.yaml"]), "outside the kustomization directory"),
        (lambda k: k.update(generatorOptions={}), "content-hash name suffixes are not implemented"),
        (lambda k: k["secretGenerator"][0].update(behavior="merge"), "behavior 'merge' is not supported"),
        (lambda k: k["secretGenerator"][0].update(envs=["../outside.env"]), "outside the kustomization directory"),
        (lambda k: k.update(labels=[{"pairs": {"a": "b"}, "includeSelectors": True}]), "includeSelectors"),
        (
            lambda k: k.update(patches=[{"patch": "apiVersion: apps/v1\nkind: Deployment\n", "target": {"kind": "X"}}]),
            "not strategic-merge",
        ),
        (
            lambda k: k.update(patches=[{"patch": "- {op: remove, path: /spec}", "target": {"kind": "Service"}}]),
            "matches no resource",
        ),
        (lambda k: k.update(patches=[{"patch": "- {op: remove, path: /spec}"}]), "needs a 'target'"),
        (
            lambda k: k.update(
                patches=[{"patch": "- {op: remove, path: /spec/nope}", "target": {"kind": "Deployment"}}]
            ),
            "on Deployment 'app'",
        ),
        (lambda k: k.update(components=["../plain"]), "kind is 'Kustomization' but a Component is expected"),
        (lambda k: k.update(apiVersion="kustomize.config.k8s.io/v1"), "apiVersion"),
    ],
)
def test_render_refuses_what_it_cannot_render_faithfully(tmp_path: Path, edit: Any, message: str) -> None:
    overlay = _mini_kustomization(tmp_path)
    _write(tmp_path / "outside.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: out}\n")
    _write(tmp_path / "outside.env", "A=1\n")
    base_file = tmp_path / "base" / "kustomization.yaml"
    kustomization = yaml.safe_load(base_file.read_text())
    edit(kustomization)
    base_file.write_text(yaml.safe_dump(kustomization))
    with pytest.raises(KustomizeError, match=re.escape(message)):
        render_mod.render(overlay, env_fallback_suffix=".example")


def test_render_detects_cycles(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "kustomization.yaml", "resources: [../b]\n")
    _write(tmp_path / "b" / "kustomization.yaml", "resources: [../a]\n")
    with pytest.raises(KustomizeError, match="kustomization cycle"):
        render_mod.render(tmp_path / "a")


def test_render_cli_prints_yaml_and_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overlay = _mini_kustomization(tmp_path)
    assert render_mod.main([str(overlay), "--env-fallback-suffix", ".example"]) == 0
    printed = list(yaml.safe_load_all(capsys.readouterr().out))
    assert printed == render_mod.render(overlay, env_fallback_suffix=".example")
    with pytest.raises(SystemExit) as exit_info:
        render_mod.main([str(overlay)])
    assert exit_info.value.code == 1
    assert "creds.env" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# Rendering the real overlays
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Both overlays rendered against the committed *.env.example templates."""
    return {name: render_mod.render(K8S / "overlays" / name, env_fallback_suffix=".example") for name in OVERLAYS}


def test_overlays_contain_the_whole_deployment(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, objects in rendered.items():
        names = {(o["kind"], o["metadata"]["name"]) for o in objects}
        required = {
            ("Namespace", "qshield"),
            ("RayJob", "qshield-sweep"),
            ("PersistentVolumeClaim", "qshield-ray-results"),
            ("PersistentVolumeClaim", "qshield-mlflow-artifacts"),
            ("Deployment", "qshield-mlflow"),
            ("Service", "qshield-mlflow"),
            ("StatefulSet", "qshield-postgres"),
            ("Service", "qshield-postgres"),
            ("Secret", "qshield-postgres"),
        }
        assert required <= names, f"{overlay} misses {required - names}"
        for obj in objects:
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == "qshield", f"{overlay}: {obj['kind']} {obj['metadata']}"
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "qshield"


# ---- Kubernetes schemas (kubernetes-validate) ----------------------------------------------------------------


def _pod_template_objects(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates embedded in a RayJob or RayCluster, as v1 PodTemplate objects, to validate them with k8s
    schemas."""
    templates = []
    if obj["kind"] in ("RayJob", "RayCluster"):
        cluster = _cluster_spec(obj)
        raw = [cluster["headGroupSpec"]["template"], *[g["template"] for g in cluster["workerGroupSpecs"]]]
        if obj["kind"] == "RayJob" and "submitterPodTemplate" in obj["spec"]:
            raw.append(obj["spec"]["submitterPodTemplate"])
        for i, template in enumerate(raw):
            templates.append(
                {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": template}
            )
        autoscaler = cluster.get("autoscalerOptions", {})
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
@pytest.mark.parametrize("overlay", OVERLAYS)
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
    expected = {"Namespace", "Deployment", "StatefulSet", "Service", "PersistentVolumeClaim", "Secret", "PodTemplate"}
    assert expected <= set(validated)


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
    deployment = copy.deepcopy(_one(rendered["gpu"], "Deployment", "qshield-mlflow"))
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
                "(ray-project/kuberay, ray-operator/config/crd/bases)"
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
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayjob_and_its_raycluster_validate_against_kuberay_crds(
    rendered: dict[str, list[dict[str, Any]]], crd_validators: dict[str, Any], overlay: str
) -> None:
    rayjob = _rayjob(rendered[overlay])
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert _crd_errors(crd_validators["RayJob"], rayjob) == []
    assert _crd_errors(crd_validators["RayCluster"], _as_raycluster(rayjob)) == []


@pytest.mark.parametrize(
    ("breakage", "kind", "culprit"),
    [
        (lambda j: j["spec"].update(shutdownAfterJobFinish=True), "RayJob", "shutdownAfterJobFinish"),  # typo
        (lambda j: j["spec"].update(backoffLimit="3"), "RayJob", "spec/backoffLimit"),  # wrong type
        (
            lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
            "RayJob",
            "rayStartParams/num-cpus",  # rayStartParams values are strings
        ),
        (
            lambda j: j["spec"]["rayClusterSpec"]["autoscalerOptions"].update(upscalingMode="Fast"),
            "RayJob",
            "autoscalerOptions/upscalingMode",  # enum
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


# ---- The sweep: entrypoint, search space, restore-or-start ---------------------------------------------------


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
    for needed in ("!search_spaces", "!orchestrator", "!qshield", "!pyproject.toml", "!requirements/lock.txt"):
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
    # Every trial fits on one worker of some group (Ray sees the container's CPU and GPU limits).
    fits = []
    for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        cpus = float(str(limits["cpu"]).removesuffix("m")) / (1000 if str(limits["cpu"]).endswith("m") else 1)
        gpus = int(limits.get("nvidia.com/gpu", 0))
        fits.append(space.resources.cpus <= cpus and space.resources.gpus <= gpus)
    assert any(fits), f"a trial ({space.resources}) fits on no worker group"
    # The data root: built-in datasets need none; the others must be on the shared volume before the sweep.
    env_vars = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]
    data_root = env_vars[DATA_ROOT_ENV]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = _mounts_of_claim(head, head["containers"][0], "qshield-ray-results")
    assert any(_under(data_root, m) for m in mounts), f"{DATA_ROOT_ENV}={data_root} is not on the shared volume"
    if not dataset_spec(space.dataset.value).builtin:
        assert space.data_root is None, "the search space overrides QSHIELD_DATA"
        fetchers = [
            (label, pod)
            for obj in _by_kind(objects, "Job")
            for label, pod in _pod_specs(obj)
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
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert "clusterSelector" not in spec, "shutdownAfterJobFinishes applies only to a cluster the RayJob creates"
    tokens = _entrypoint_args(rayjob)
    assert _flag(tokens, "--name"), "a fixed sweep name is what lets a retry find the sweep to restore"
    storage_path = _flag(tokens, "--storage-path")
    claim = _one(objects, "PersistentVolumeClaim", "qshield-ray-results")
    cluster = spec["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"], *[g["template"]["spec"] for g in cluster["workerGroupSpecs"]]]
    mount_sets = [set(_mounts_of_claim(pod, pod["containers"][0], "qshield-ray-results")) for pod in pods]
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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sweep_logs_to_the_in_cluster_mlflow_server(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    rayjob = _rayjob(objects)
    env_vars = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]
    uri = env_vars["MLFLOW_TRACKING_URI"]
    assert uri == _flag(_entrypoint_args(rayjob), "--tracking-uri")
    parsed = urlparse(uri)
    service = _one(objects, "Service", parsed.hostname)
    assert parsed.port in [p["port"] for p in service["spec"]["ports"]]
    allowed = _env_value(_mlflow_container(objects), "MLFLOW_SERVER_ALLOWED_HOSTS")["value"].split(",")
    assert any(fnmatch.fnmatch(parsed.netloc, pattern) for pattern in allowed), "MLflow would refuse this Host"
    assert any(fnmatch.fnmatch("localhost:5000", pattern) for pattern in allowed), "port-forward would be refused"


# ---- Ray cluster shape ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_cluster_shape(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    cluster = _rayjob(rendered[overlay])["spec"]["rayClusterSpec"]
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
            # extended resources: a request, if given, must equal the limit
            limit = resources["limits"]["nvidia.com/gpu"]
            assert resources.get("requests", {}).get("nvidia.com/gpu", limit) == limit
            tolerations = group["template"]["spec"].get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)
    if overlay == "gpu":
        assert gpu_groups, "the gpu overlay has no worker group with nvidia.com/gpu limits"
    else:
        assert not gpu_groups


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
    variant = {"cpu-dev": "py311", "gpu": "py311-gpu"}
    for overlay, objects in rendered.items():
        rayjob = _rayjob(objects)
        assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == ray_version
        images = {c["image"] for _, pod in _pod_specs(rayjob) for c in _containers(pod)} | {
            c["image"] for obj in _by_kind(objects, "Job") for _, pod in _pod_specs(obj) for c in _containers(pod)
        }
        assert images == {f"qshield:{version}-ray{ray_version}-{variant[overlay]}"}, images
        mlflow = _mlflow_container(objects)
        assert mlflow["image"] == f"qshield-mlflow:{mlflow_version}"


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
        for _, pod in _pod_specs(obj)
        for c in _containers(pod)
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
        for label, pod in _all_pod_specs(rendered[overlay])
        for container in _containers(pod)
        for program in _inline_python(container.get("command", []))
    ]
    assert programs, "expected the wait-for-mlflow probe at least"
    for label, name, program in programs:
        compile(program, f"{label}/{name}", "exec")  # SyntaxError fails the test
    with pytest.raises(SyntaxError):
        compile(programs[0][2] + "\n  )", "broken", "exec")


# ---- Secrets -------------------------------------------------------------------------------------------------


def _kustomizations() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, yaml.safe_load(path.read_text())) for path in sorted(K8S.rglob("kustomization.yaml"))]


def test_no_committed_file_carries_a_secret_value() -> None:
    yaml_files = sorted([*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")])
    assert yaml_files
    for path in yaml_files:
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict):
                assert document.get("kind") != "Secret", f"{path} defines a Secret; use a secretGenerator"
            text = yaml.safe_dump(document)
            assert "stringData" not in text, f"{path} carries stringData"
    generators = 0
    for path, kustomization in _kustomizations():
        for generator in kustomization.get("secretGenerator", []):
            generators += 1
            assert set(generator) <= {"name", "envs", "type", "options"}, f"{path}: {generator} (envs files only)"
            for env in generator["envs"]:
                example = path.parent / (env + ".example")
                assert example.is_file(), f"{path}: {env} has no committed template {example.name}"
                for key, value in render_mod.read_env_file(example).items():
                    if re.search(r"PASSWORD|SECRET|TOKEN|KEY", key, flags=re.IGNORECASE):
                        assert value == init_secrets.PLACEHOLDER, f"{example}: {key} holds a value"
    assert generators >= 3  # postgres, ray token, mlflow auth


def test_env_files_are_gitignored_and_templates_are_not() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    env_files = [
        path.parent / env
        for path, kustomization in _kustomizations()
        for generator in kustomization.get("secretGenerator", [])
        for env in generator["envs"]
    ]
    assert env_files
    for env_file in env_files:
        relative = env_file.relative_to(ROOT).as_posix()
        ignored = subprocess.run([git, "check-ignore", "-q", "--no-index", relative], cwd=ROOT, timeout=30, check=False)
        assert ignored.returncode == 0, f"{relative} is not gitignored"
        example = relative + ".example"
        not_ignored = subprocess.run(
            [git, "check-ignore", "-q", "--no-index", example], cwd=ROOT, timeout=30, check=False
        )
        assert not_ignored.returncode == 1, f"{example} is gitignored but must be committed"
        tracked = subprocess.run(
            [git, "ls-files", "--error-unmatch", relative], cwd=ROOT, capture_output=True, timeout=30, check=False
        )
        assert tracked.returncode != 0, f"{relative} is committed"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_resolves(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    secrets = {o["metadata"]["name"]: set(o["data"]) for o in _by_kind(objects, "Secret")}
    config_maps = {o["metadata"]["name"]: set(o["data"]) for o in _by_kind(objects, "ConfigMap")}
    claims = {o["metadata"]["name"] for o in _by_kind(objects, "PersistentVolumeClaim")}
    for label, pod in _all_pod_specs(objects):
        pod_claims = set(claims)
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in pod_claims, (label, volume)
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, (label, volume)
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, (label, volume)
        volume_names = {v["name"] for v in pod.get("volumes", [])}
        for obj in objects:  # StatefulSet volumeClaimTemplates are volumes too
            if obj["kind"] == "StatefulSet" and obj["spec"]["template"]["spec"] is pod:
                volume_names |= {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        for container in _containers(pod):
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
    rayjob = _rayjob(objects)
    auth = rayjob["spec"]["rayClusterSpec"].get("authOptions")
    if auth and auth.get("secretName"):
        assert "auth_token" in secrets.get(auth["secretName"], set()), "KubeRay reads the token from key auth_token"
    # Services select pods that exist and name ports those pods expose
    templates = [obj["spec"]["template"] for obj in objects if obj["kind"] in WORKLOAD_KINDS]
    for service in _by_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        matching = [t for t in templates if selector.items() <= t["metadata"].get("labels", {}).items()]
        assert matching, f"Service {service['metadata']['name']} selects no pod"
        ports = {p.get("name") for t in matching for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)


# ---- Pod security --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_unprivileged_with_resources(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    pods = _all_pod_specs(objects)
    assert len(pods) >= 5
    for label, pod in pods:
        pod_context = pod.get("securityContext", {})
        for container in _containers(pod):
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
            if container["name"] not in ("ray-head", "ray-worker", "ray-job-submitter"):
                assert context.get("readOnlyRootFilesystem") is True, where
        if not label.startswith(("RayJob", "RayCluster")):
            assert pod.get("automountServiceAccountToken") is False, label
            assert all("hostPath" not in v for v in pod.get("volumes", [])), label
    for ray_object in [*_by_kind(objects, "RayJob"), *_by_kind(objects, "RayCluster")]:
        autoscaler = _cluster_spec(ray_object)["autoscalerOptions"]
        assert autoscaler["securityContext"]["runAsNonRoot"] is True
        assert autoscaler["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert autoscaler["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= set(autoscaler["resources"]["limits"])
    # read-only root filesystems get a writable /tmp
    for label, pod in pods:
        empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for container in pod["containers"]:
            if container.get("securityContext", {}).get("readOnlyRootFilesystem") and container["name"] != "fetch":
                tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in empty_dirs, f"{label}: {container['name']} has no writable /tmp"


# ---- MLflow --------------------------------------------------------------------------------------------------


def _mlflow_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = _one(objects, "Deployment", "qshield-mlflow")
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    return container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_uses_postgres_and_proxied_artifacts(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objects = rendered[overlay]
    deployment = _one(objects, "Deployment", "qshield-mlflow")
    pod = deployment["spec"]["template"]["spec"]
    container = _mlflow_container(objects)
    args = container["args"]
    assert args[0] == "server"
    assert "--serve-artifacts" in args
    destination = _flag(args, "--artifacts-destination")
    artifact_mounts = _mounts_of_claim(pod, container, "qshield-mlflow-artifacts")
    assert any(_under(destination, m) for m in artifact_mounts), "artifacts must land on the volume"
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "a ReadWriteOnce volume cannot roll"
    backend = _env_value(container, "MLFLOW_BACKEND_STORE_URI")["value"]
    parsed = urlparse(backend)
    assert parsed.scheme.startswith("postgresql")
    postgres = _one(objects, "Service", parsed.hostname)
    assert parsed.port in [p["port"] for p in postgres["spec"]["ports"]]
    assert _one(objects, "StatefulSet", "qshield-postgres")["spec"]["volumeClaimTemplates"]
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert f"$({name})" in backend
        assert _env_value(container, name)["valueFrom"]["secretKeyRef"]["name"] == "qshield-postgres"
    port = container["ports"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/health" and http["port"] in (port["name"], port["containerPort"])


def test_mlflow_basic_auth_and_ray_token_auth_in_the_gpu_overlay(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["gpu"]
    container = _mlflow_container(objects)
    pod = _one(objects, "Deployment", "qshield-mlflow")["spec"]["template"]["spec"]
    assert "--app-name=basic-auth" in container["args"]
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert _env_value(container, name)["valueFrom"]["secretKeyRef"]["name"] == "qshield-mlflow-auth"
    config_path = Path(_env_value(container, "MLFLOW_AUTH_CONFIG_PATH")["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = _one(objects, "ConfigMap", volume["configMap"]["name"])
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
    rayjob = _rayjob(objects)
    assert rayjob["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": "qshield-ray-auth"}
    cluster = rayjob["spec"]["rayClusterSpec"]
    for pod_spec in [
        cluster["headGroupSpec"]["template"]["spec"],
        *[g["template"]["spec"] for g in cluster["workerGroupSpecs"]],
    ]:
        ray_container = pod_spec["containers"][0]
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert "secretKeyRef" in _env_value(ray_container, name)["valueFrom"]
    # cpu-dev leaves auth off (a local dev cluster); the component is one line away.
    assert "authOptions" not in _rayjob(rendered["cpu-dev"])["spec"]["rayClusterSpec"]
    assert "--app-name=basic-auth" not in _mlflow_container(rendered["cpu-dev"])["args"]


def test_basic_auth_config_is_accepted_by_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    # MLflow's own reader. The module is loaded from its file: importing the mlflow.server.auth package would
    # need Flask-WTF, which the tracking server image has (mlflow.Dockerfile) but the test environment need not.
    config_module = _load_module("mlflow_auth_config", Path(mlflow.__file__).parent / "server" / "auth" / "config.py")
    read_auth_config = config_module.read_auth_config
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(K8S / "components" / "auth" / "basic_auth.ini"))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "from-the-secret")
    config = read_auth_config()
    assert config.admin_password == "from-the-secret"
    assert config.database_uri == "sqlite:////mlflow/basic_auth.db"
    assert config.authorization_function == "mlflow.server.auth:authenticate_request_basic_auth"


# ---- init_secrets.py -----------------------------------------------------------------------------------------


def test_init_secrets_fills_placeholders_and_keeps_existing_files(tmp_path: Path) -> None:
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.env", "__pycache__"))
    templates = sorted(tree.rglob("*.env.example"))
    assert len(templates) >= 3
    counter = iter(range(1000))
    written = init_secrets.init_env_files(tree, token=lambda: f"tok{next(counter)}")
    assert sorted(written) == sorted(t.with_name(t.name.removesuffix(".example")) for t in templates)
    for template in templates:
        target = template.with_name(template.name.removesuffix(".example"))
        before, after = render_mod.read_env_file(template), render_mod.read_env_file(target)
        assert before.keys() == after.keys()
        for key, value in before.items():
            if value == init_secrets.PLACEHOLDER:
                assert re.fullmatch(r"tok\d+", after[key]), (target, key)
            else:
                assert after[key] == value
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
    values = [v for t in written for v in render_mod.read_env_file(t).values() if v.startswith("tok")]
    assert len(values) == len(set(values)), "each placeholder must get its own secret"
    # the overlays now render without the template fallback, with no placeholder left
    for overlay in OVERLAYS:
        for secret in _by_kind(render_mod.render(tree / "overlays" / overlay), "Secret"):
            for value in secret["data"].values():
                assert base64.b64decode(value).decode() != init_secrets.PLACEHOLDER
    # re-running keeps what exists; --force regenerates
    first = written[0].read_text()
    assert init_secrets.init_env_files(tree) == []
    assert written[0].read_text() == first
    assert init_secrets.init_env_files(tree, force=True) == written
    assert written[0].read_text() != first
    default_values = render_mod.read_env_file(written[0]).values()
    assert any(re.fullmatch(r"[0-9a-f]{48}", v) for v in default_values)


def test_init_secrets_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory"):
        init_secrets.init_env_files(tmp_path / "missing")
    with pytest.raises(ValueError, match="nbytes must be at least 16"):
        init_secrets.init_env_files(tmp_path, nbytes=8)
    _write(tmp_path / "bad.env.example", "NOT A PAIR\n")
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        init_secrets.init_env_files(tmp_path)


# ---- Documentation -------------------------------------------------------------------------------------------


def test_docs_walk_through_what_exists(rendered: dict[str, list[dict[str, Any]]]) -> None:
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    for match in sorted(set(re.findall(r"\bk8s/[\w./-]*\w", doc))):
        # the gitignored env files exist only where someone created them: their template must exist
        path = ROOT / (match + ".example" if match.endswith(".env") else match)
        assert path.exists(), f"docs/kubernetes.md mentions {match}, which does not exist"
    applied = set(re.findall(r"kubectl apply -k (k8s/overlays/[\w-]+)", doc))
    assert applied == {f"k8s/overlays/{o}" for o in OVERLAYS}
    for objects in rendered.values():
        sweep = _flag(_entrypoint_args(_rayjob(objects)), "--name")
        assert re.search(rf"qshield select --sweep {re.escape(sweep)}\b", doc), f"no `qshield select` for {sweep}"
        for secret in _by_kind(objects, "Secret"):
            assert secret["metadata"]["name"] in doc, f"docs do not mention Secret {secret['metadata']['name']}"
    for phrase in ("backoffLimit", "port-forward", "MLFLOW_TRACKING_URI", "RAY_AUTH_TOKEN", "build.sh"):
        assert phrase in doc


# ---- Standalone long-lived RayCluster (components/raycluster) -------------------------------------------------

RAYCLUSTER = "qshield-ray"
# runtimeEnvYAML's env_vars become container env vars on a standalone RayCluster (it has no runtime env).
RUNTIME_ENV_NAMES = ("MLFLOW_TRACKING_URI", "QSHIELD_DATA", "PYTHONUNBUFFERED")
CPU_DEV_COMPONENTS = ("../../components/auth", "../../components/raycluster", "../../components/raycluster-auth")


def _enable_components(kustomization: Path, wanted: tuple[str, ...]) -> None:
    """Uncomment ``# components:`` and the wanted ``#   - <component>`` lines of an overlay, as a user would."""
    lines = kustomization.read_text().splitlines()
    out = []
    for line in lines:
        stripped = line.strip()
        if stripped == "# components:" or any(stripped == f"#   - {c}" for c in wanted):
            out.append(line.replace("# ", "", 1))
        else:
            out.append(line)
    text = "\n".join(out) + "\n"
    for component in wanted:
        assert f"\n  - {component}\n" in text, f"{kustomization} has no commented line for {component}"
    kustomization.write_text(text)


@pytest.fixture(scope="module")
def raycluster_variants(
    tmp_path_factory: pytest.TempPathFactory, rendered: dict[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Renderings holding the standalone RayCluster: the gpu overlay as committed, and cpu-dev with the opt-in
    component lines uncommented (without and with authentication)."""
    variants = {"gpu": rendered["gpu"]}
    for name, wanted in (
        ("cpu-dev+raycluster", CPU_DEV_COMPONENTS[1:2]),
        ("cpu-dev+raycluster+auth", CPU_DEV_COMPONENTS),
    ):
        tree = tmp_path_factory.mktemp(name.replace("+", "-")) / "k8s"
        shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("*.env", "__pycache__"))
        _enable_components(tree / "overlays" / "cpu-dev" / "kustomization.yaml", wanted)
        variants[name] = render_mod.render(tree / "overlays" / "cpu-dev", env_fallback_suffix=".example")
    return variants


def test_raycluster_is_in_the_gpu_overlay_and_opt_in_for_cpu_dev(
    rendered: dict[str, list[dict[str, Any]]], raycluster_variants: dict[str, list[dict[str, Any]]]
) -> None:
    assert _one(rendered["gpu"], "RayCluster", RAYCLUSTER)["metadata"]["namespace"] == "qshield"
    assert _by_kind(rendered["cpu-dev"], "RayCluster") == [], "cpu-dev as committed deploys the RayJob alone"
    for name, objects in raycluster_variants.items():
        assert len(_by_kind(objects, "RayCluster")) == 1, name
        assert len(_by_kind(objects, "RayJob")) == 1, name


@pytest.mark.parametrize("variant", ["gpu", "cpu-dev+raycluster", "cpu-dev+raycluster+auth"])
def test_raycluster_validates_against_kuberay_crd_and_kubernetes_schemas(
    raycluster_variants: dict[str, list[dict[str, Any]]], crd_validators: dict[str, Any], variant: str
) -> None:
    raycluster = _one(raycluster_variants[variant], "RayCluster", RAYCLUSTER)
    assert raycluster["apiVersion"] == "ray.io/v1"
    assert _crd_errors(crd_validators["RayCluster"], raycluster) == []
    templates = _pod_template_objects(raycluster)
    assert len(templates) == 1 + len(raycluster["spec"]["workerGroupSpecs"]) + 1  # head, workers, autoscaler
    for version in K8S_VERSIONS:
        for template in templates:
            kubernetes_validate.validate(template, version, strict=True)
    # the validator sees the RayCluster itself: a typo in its spec fails
    broken = copy.deepcopy(raycluster)
    broken["spec"]["enableInTreeAutoScaling"] = True
    assert any("enableInTreeAutoScaling" in e for e in _crd_errors(crd_validators["RayCluster"], broken))


def _without_runtime_env(cluster: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A copy of a RayCluster spec with the runtime-env variables taken out of its Ray containers, and those
    variables per container."""
    cluster = copy.deepcopy(cluster)
    taken = []
    pods = [cluster["headGroupSpec"]["template"]["spec"], *[g["template"]["spec"] for g in cluster["workerGroupSpecs"]]]
    for pod in pods:
        container = pod["containers"][0]
        env = container.get("env", [])
        taken.append({e["name"]: e["value"] for e in env if e["name"] in RUNTIME_ENV_NAMES})
        kept = [e for e in env if e["name"] not in RUNTIME_ENV_NAMES]
        if kept:
            container["env"] = kept
        else:
            container.pop("env", None)
    return cluster, taken


@pytest.mark.parametrize("variant", ["gpu", "cpu-dev+raycluster", "cpu-dev+raycluster+auth"])
def test_raycluster_is_the_rayjobs_cluster(raycluster_variants: dict[str, list[dict[str, Any]]], variant: str) -> None:
    """The standalone cluster is the RayJob's rayClusterSpec, apart from the runtime env moved into the containers
    (and, in cpu-dev, the Ray container sizes, which cpu-dev's small-cluster patch sets on the RayJob only)."""
    objects = raycluster_variants[variant]
    rayjob = _rayjob(objects)
    standalone, env_per_container = _without_runtime_env(_one(objects, "RayCluster", RAYCLUSTER)["spec"])
    expected = copy.deepcopy(rayjob["spec"]["rayClusterSpec"])
    runtime_env = {k: str(v) for k, v in yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"].items()}
    assert set(runtime_env) == set(RUNTIME_ENV_NAMES), "a new runtime env var must reach the RayCluster too"
    assert env_per_container == [runtime_env] * len(env_per_container)
    if variant.startswith("cpu-dev"):
        for cluster in (standalone, expected):
            for pod in [
                cluster["headGroupSpec"]["template"]["spec"],
                *[g["template"]["spec"] for g in cluster["workerGroupSpecs"]],
            ]:
                pod["containers"][0].pop("resources")
    assert standalone == expected
    # the comparison is not vacuous: one drifted field is seen
    drifted = copy.deepcopy(standalone)
    drifted["workerGroupSpecs"][0]["maxReplicas"] += 1
    assert drifted != expected


@pytest.mark.parametrize("variant", ["gpu", "cpu-dev+raycluster", "cpu-dev+raycluster+auth"])
def test_raycluster_shape_security_and_image(
    raycluster_variants: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    objects = raycluster_variants[variant]
    cluster = _one(objects, "RayCluster", RAYCLUSTER)["spec"]
    ray_version, version = _lock_pin("ray"), _project_version()
    assert cluster["rayVersion"] == ray_version
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True
    for group in cluster["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1
    gpu_limits = [
        group["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
        for group in cluster["workerGroupSpecs"]
    ]
    if variant == "gpu":
        assert any(limit is not None and int(limit) >= 1 for limit in gpu_limits), gpu_limits
    else:
        assert gpu_limits == [None] * len(gpu_limits)
    variant_tag = "py311-gpu" if variant == "gpu" else "py311"
    pods = list(_pod_specs(_one(objects, "RayCluster", RAYCLUSTER)))
    images = {c["image"] for _, pod in pods for c in _containers(pod)}
    assert images == {f"qshield:{version}-ray{ray_version}-{variant_tag}"}, images
    for label, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, label
        assert pod["securityContext"]["runAsUser"] != 0, label
        for container in _containers(pod):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, (label, container["name"])
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], (label, container["name"])
        claims = _mounts_of_claim(pod, pod["containers"][0], "qshield-ray-results")
        assert claims == ["/mnt/qshield"], (label, claims)
    assert cluster["autoscalerOptions"]["securityContext"]["runAsNonRoot"] is True
    # the dashboard / job API port that `ray job submit` reaches through port-forward
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "dashboard", "containerPort": 8265} in head["ports"]
    secrets = {o["metadata"]["name"]: set(o["data"]) for o in _by_kind(objects, "Secret")}
    if "qshield-ray-auth" in secrets:  # authentication on for the RayJob: on for the long-lived cluster too
        assert cluster["authOptions"] == {"mode": "token", "secretName": "qshield-ray-auth"}
        assert "auth_token" in secrets["qshield-ray-auth"]
    else:
        assert "authOptions" not in cluster


def test_docs_explain_the_long_lived_raycluster() -> None:
    doc = (ROOT / "docs" / "kubernetes.md").read_text()
    assert "## Long-lived RayCluster + ray job submit" in doc
    section = doc.split("## Long-lived RayCluster + ray job submit", 1)[1].split("\n## ", 1)[0]
    assert f"svc/{RAYCLUSTER}-head-svc 8265:8265" in section
    assert "ray job submit --address http://localhost:8265" in section
    for component in CPU_DEV_COMPONENTS:
        assert component.removeprefix("../../") in section
