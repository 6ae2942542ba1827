"""Render the kustomizations under ``k8s/`` offline: the subset of kustomize that they use, and nothing more.

``kubectl apply -k`` (kustomize) is what deploys these manifests. This module exists so that the tests
(``tests/test_k8s.py``) and anyone without a kustomize binary can see exactly what an overlay produces::

    python k8s/render.py k8s/overlays/gpu --env-fallback-suffix .example

Supported, with kustomize's semantics:

* ``resources`` (YAML files, possibly multi-document, and directories holding a kustomization) and
  ``components`` (directories holding a ``kind: Component``);
* ``namespace`` (set on every namespaced object), ``labels`` (``pairs`` on ``metadata.labels`` only);
* ``secretGenerator`` / ``configMapGenerator`` from ``envs`` files, ``files`` and ``literals``, with
  ``generatorOptions``/``options`` ``disableNameSuffixHash: true`` (content-hash suffixes are not implemented);
* ``patches`` holding a JSON6902 operation list (RFC 6902: add, remove, replace, move, copy, test), selected by
  ``target`` (group, version, kind, name, namespace; each compared exactly, absent means any);
* ``images`` (``name`` -> ``newName``/``newTag``/``digest``) on every ``containers``/``initContainers`` list at
  any depth, custom resources included, as kustomize's image transformer does.

Order of operations, as in kustomize: resources, then components (each with its own generators and patches, over
everything accumulated so far), then this kustomization's generators, patches, namespace, labels and images.
Anything else (remote resources, strategic-merge patches, hashed generator names, unknown fields) raises
:class:`KustomizeError` naming what is supported instead of producing a different result than kustomize would.

Secret values come from env files that are not committed. ``env_fallback_suffix=".example"`` renders with the
committed ``*.env.example`` template wherever the real env file is missing (used by the tests).
"""

from __future__ import annotations

import argparse
import base64
import copy
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "KustomizeError",
    "apply_json6902",
    "main",
    "read_env_file",
    "render",
    "set_images",
]

KUSTOMIZATION_FILENAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZATION_KEYS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "components",
        "namespace",
        "labels",
        "secretGenerator",
        "configMapGenerator",
        "generatorOptions",
        "patches",
        "images",
    }
)
API_VERSIONS = {
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
    "Component": "kustomize.config.k8s.io/v1alpha1",
}
GENERATOR_KEYS = frozenset({"name", "namespace", "type", "envs", "files", "literals", "options", "behavior"})
GENERATOR_OPTION_KEYS = frozenset({"labels", "annotations", "disableNameSuffixHash"})
PATCH_KEYS = frozenset({"path", "patch", "target"})
TARGET_KEYS = frozenset({"group", "version", "kind", "name", "namespace"})
IMAGE_KEYS = frozenset({"name", "newName", "newTag", "digest"})
LABEL_KEYS = frozenset({"pairs", "includeSelectors", "includeTemplates"})
JSON6902_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
# Kinds that take no namespace (the ones a qshield kustomization could plausibly contain).
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "RuntimeClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)
# Keys of ConfigMap/Secret data (Kubernetes: IsConfigMapKey), and keys of env files (IsEnvVarName, as kustomize).
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_ENV_KEY = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class KustomizeError(ValueError):
    """A kustomization this renderer cannot render faithfully, or one that kustomize itself would reject."""


# --------------------------------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a kustomize ``envs`` file: ``KEY=VALUE`` per line, ``#`` comments and blank lines skipped.

    As in kustomize, the value is everything after the first ``=``, kept verbatim (no unquoting, no
    interpolation). A line without ``=`` would make kustomize read the variable from its own environment; that
    is refused here (the manifests must not depend on the shell that renders them).

    Raises:
        KustomizeError: on a line without ``=``, an invalid key or a repeated key; the message names the file and
            the line number.
    """
    values: dict[str, str] = {}
    text = path.read_text(encoding="utf-8").lstrip("\ufeff")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise KustomizeError(
                f"{path}:{number}: env file line {line!r} has no '='; expected KEY=VALUE (values are never read "
                "from the environment here)"
            )
        key, value = line.split("=", 1)
        if not _ENV_KEY.match(key):
            raise KustomizeError(
                f"{path}:{number}: key {key!r} is not a valid env file key (a letter, '-', '_' or '.' first, then "
                "letters, digits, '-', '_', '.')"
            )
        if key in values:
            raise KustomizeError(f"{path}:{number}: key {key!r} is repeated; each key may appear once")
        values[key] = value
    return values


def apply_json6902(document: Any, operations: Sequence[Mapping[str, Any]]) -> Any:
    """Apply a JSON Patch (RFC 6902) to ``document`` and return the patched copy; ``document`` is not modified.

    Args:
        document: any JSON-like value (dicts, lists, scalars).
        operations: the operations, each a mapping with ``op`` (add, remove, replace, move, copy, test), ``path``
            (an RFC 6901 JSON pointer), and ``value`` (add, replace, test) or ``from`` (move, copy).

    Raises:
        KustomizeError: on an unknown operation, a missing field, a path that does not exist (or, for ``add``,
            whose parent does not exist), an array index out of range, or a failed ``test``.
    """
    if not isinstance(operations, Sequence) or isinstance(operations, (str, bytes)):
        raise KustomizeError(f"a JSON6902 patch must be a list of operations, got {type(operations).__name__}")
    result = copy.deepcopy(document)
    for index, operation in enumerate(operations):
        result = _apply_operation(result, operation, index)
    return result


def set_images(resource: dict[str, Any], images: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return a copy of ``resource`` with kustomize ``images`` entries applied.

    Every ``image`` of every entry of a ``containers`` or ``initContainers`` list, at any depth (a Deployment's
    ``spec.template.spec.containers`` as well as a RayJob's ``spec.rayClusterSpec.headGroupSpec.template...``),
    whose image name equals an entry's ``name`` gets ``newName`` (if given) and ``newTag`` or ``digest`` (if
    given; otherwise the existing tag or digest is kept).

    Raises:
        KustomizeError: on an entry without ``name``, with unknown keys, or with both ``newTag`` and ``digest``.
    """
    for entry in images:
        _check_keys(entry, IMAGE_KEYS, "images entry")
        if not entry.get("name"):
            raise KustomizeError(f"images entry {dict(entry)!r} has no 'name'")
        if entry.get("newTag") is not None and entry.get("digest") is not None:
            raise KustomizeError(f"images entry {entry['name']!r} sets both newTag and digest; choose one")
    result = copy.deepcopy(resource)
    for containers in _container_lists(result):
        for container in containers:
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                container["image"] = _retag(container["image"], images)
    return result


def render(path: str | Path, *, env_fallback_suffix: str | None = None) -> list[dict[str, Any]]:
    """Render the kustomization in directory ``path`` to a list of Kubernetes objects (plain dicts).

    Args:
        path: a directory holding ``kustomization.yaml`` (``kind: Kustomization``).
        env_fallback_suffix: when an ``envs`` file of a generator is missing, read ``<file><suffix>`` instead
            (``".example"`` renders with the committed templates). ``None`` (default): a missing file is an
            error, as with kustomize.

    Raises:
        KustomizeError: see the module docstring.
    """
    root = Path(path)
    return _Renderer(env_fallback_suffix).build(root, expected_kind="Kustomization", stack=())


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the rendered YAML stream of a kustomization directory."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="directory holding kustomization.yaml, e.g. k8s/overlays/gpu")
    parser.add_argument(
        "--env-fallback-suffix",
        default=None,
        help="read <envfile><suffix> (e.g. .example) where a generator's env file is missing",
    )
    args = parser.parse_args(argv)
    try:
        objects = render(args.directory, env_fallback_suffix=args.env_fallback_suffix)
    except KustomizeError as error:
        parser.exit(1, f"error: {error}\n")
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))
    return 0


# --------------------------------------------------------------------------------------------------------------
# Kustomization build
# --------------------------------------------------------------------------------------------------------------


class _Renderer:
    def __init__(self, env_fallback_suffix: str | None) -> None:
        self.env_fallback_suffix = env_fallback_suffix

    def build(self, directory: Path, *, expected_kind: str, stack: tuple[Path, ...]) -> list[dict[str, Any]]:
        kustomization, directory = self._load_kustomization(directory, expected_kind, stack)
        stack = (*stack, directory)
        objects: list[dict[str, Any]] = []
        for entry in _as_list(kustomization.get("resources"), "resources", directory):
            objects.extend(self._load_resource(directory, entry, stack))
        self._check_unique(objects, directory)
        for entry in _as_list(kustomization.get("components"), "components", directory):
            objects = self._apply_component(directory, entry, objects, stack)
        return self._transform(kustomization, directory, objects)

    def _apply_component(
        self, directory: Path, entry: Any, objects: list[dict[str, Any]], stack: tuple[Path, ...]
    ) -> list[dict[str, Any]]:
        if not isinstance(entry, str):
            raise KustomizeError(f"{directory}: components entries must be directory paths, got {entry!r}")
        component_dir = (directory / entry).resolve()
        kustomization, component_dir = self._load_kustomization(component_dir, "Component", stack)
        inner_stack = (*stack, component_dir)
        objects = list(objects)
        for resource in _as_list(kustomization.get("resources"), "resources", component_dir):
            objects.extend(self._load_resource(component_dir, resource, inner_stack))
        for nested in _as_list(kustomization.get("components"), "components", component_dir):
            objects = self._apply_component(component_dir, nested, objects, inner_stack)
        return self._transform(kustomization, component_dir, objects)

    def _transform(
        self, kustomization: Mapping[str, Any], directory: Path, objects: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        objects = list(objects) + self._generate(kustomization, directory)
        self._check_unique(objects, directory)
        for patch in _as_list(kustomization.get("patches"), "patches", directory):
            objects = self._patch(directory, patch, objects)
        namespace = kustomization.get("namespace")
        if namespace is not None:
            if not isinstance(namespace, str) or not namespace:
                raise KustomizeError(f"{directory}: namespace must be a non-empty string, got {namespace!r}")
            objects = [_set_namespace(obj, namespace) for obj in objects]
        for label in _as_list(kustomization.get("labels"), "labels", directory):
            objects = [_add_labels(obj, label, directory) for obj in objects]
        images = _as_list(kustomization.get("images"), "images", directory)
        if images:
            objects = [set_images(obj, images) for obj in objects]
        self._check_unique(objects, directory)
        return objects

    # ---- loading ------------------------------------------------------------------------------------------

    def _load_kustomization(
        self, directory: Path, expected_kind: str, stack: tuple[Path, ...]
    ) -> tuple[dict[str, Any], Path]:
        directory = directory.resolve()
        if directory in stack:
            chain = " -> ".join(str(p) for p in (*stack, directory))
            raise KustomizeError(f"kustomization cycle: {chain}")
        if not directory.is_dir():
            raise KustomizeError(f"{directory} is not a directory holding a kustomization")
        files = [directory / name for name in KUSTOMIZATION_FILENAMES if (directory / name).is_file()]
        if len(files) != 1:
            raise KustomizeError(
                f"{directory}: expected exactly one of {', '.join(KUSTOMIZATION_FILENAMES)}, found "
                f"{[f.name for f in files] or 'none'}"
            )
        data = yaml.safe_load(files[0].read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise KustomizeError(f"{files[0]}: a kustomization must be a mapping, got {type(data).__name__}")
        _check_keys(data, KUSTOMIZATION_KEYS, str(files[0]))
        kind = data.get("kind", "Kustomization")
        if kind != expected_kind:
            raise KustomizeError(
                f"{files[0]}: kind is {kind!r} but a {expected_kind} is expected here "
                "(resources take Kustomizations, components take Components)"
            )
        api_version = data.get("apiVersion", API_VERSIONS[kind])
        if api_version != API_VERSIONS[kind]:
            raise KustomizeError(
                f"{files[0]}: apiVersion {api_version!r} is not supported for kind {kind}; use {API_VERSIONS[kind]!r}"
            )
        return data, directory

    def _load_resource(self, directory: Path, entry: Any, stack: tuple[Path, ...]) -> list[dict[str, Any]]:
        if not isinstance(entry, str) or not entry:
            raise KustomizeError(f"{directory}: resources entries must be paths, got {entry!r}")
        if "://" in entry or entry.startswith(("github.com/", "git@")):
            raise KustomizeError(
                f"{directory}: remote resource {entry!r} is not supported; only local files and directories"
            )
        target = (directory / entry).resolve()
        if target.is_dir():
            return self.build(target, expected_kind="Kustomization", stack=stack)
        # Files (unlike kustomization directories) must lie inside the kustomization, as kustomize requires.
        target = self._local_file(directory, entry, "resource")
        if not target.is_file():
            raise KustomizeError(f"{directory}: resource {entry!r} does not exist")
        objects = []
        for document in yaml.safe_load_all(target.read_text(encoding="utf-8")):
            if document is None:
                continue
            if not isinstance(document, dict) or not all(
                isinstance(document.get(key), expected)
                for key, expected in (("apiVersion", str), ("kind", str), ("metadata", dict))
            ):
                raise KustomizeError(f"{target}: every document must be an object with apiVersion, kind, metadata")
            if not document["metadata"].get("name"):
                raise KustomizeError(f"{target}: a {document['kind']} has no metadata.name")
            objects.append(document)
        return objects

    def _local_file(self, directory: Path, name: Any, what: str) -> Path:
        if not isinstance(name, str) or not name:
            raise KustomizeError(f"{directory}: {what} must be a file path, got {name!r}")
        path = (directory / name).resolve()
        if directory != path and directory not in path.parents:
            raise KustomizeError(
                f"{directory}: {what} {name!r} lies outside the kustomization directory (kustomize's load "
                "restrictor refuses it)"
            )
        return path

    # ---- generators ---------------------------------------------------------------------------------------

    def _generate(self, kustomization: Mapping[str, Any], directory: Path) -> list[dict[str, Any]]:
        global_options = kustomization.get("generatorOptions") or {}
        if not isinstance(global_options, dict):
            raise KustomizeError(f"{directory}: generatorOptions must be a mapping")
        _check_keys(global_options, GENERATOR_OPTION_KEYS, f"{directory}: generatorOptions")
        objects = []
        for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
            for generator in _as_list(kustomization.get(key), key, directory):
                objects.append(self._generate_one(generator, kind, global_options, directory))
        return objects

    def _generate_one(
        self, generator: Any, kind: str, global_options: Mapping[str, Any], directory: Path
    ) -> dict[str, Any]:
        where = f"{directory}: {kind} generator"
        if not isinstance(generator, dict):
            raise KustomizeError(f"{where}: entries must be mappings, got {generator!r}")
        _check_keys(generator, GENERATOR_KEYS, where)
        name = generator.get("name")
        if not isinstance(name, str) or not name:
            raise KustomizeError(f"{where}: 'name' is required")
        where = f"{directory}: {kind} generator {name!r}"
        behavior = generator.get("behavior", "create")
        if behavior != "create":
            raise KustomizeError(f"{where}: behavior {behavior!r} is not supported; only 'create'")
        options = generator.get("options") or {}
        _check_keys(options, GENERATOR_OPTION_KEYS, f"{where} options")
        merged = {**global_options, **options}
        if merged.get("disableNameSuffixHash") is not True:
            raise KustomizeError(
                f"{where}: content-hash name suffixes are not implemented; set generatorOptions (or options) "
                "disableNameSuffixHash: true"
            )
        data: dict[str, str] = {}

        def put(key: str, value: str, origin: str) -> None:
            _check_data_key(key, origin)
            if key in data:
                raise KustomizeError(f"{where}: key {key!r} is defined twice (again in {origin})")
            data[key] = value

        for env_name in _as_list(generator.get("envs"), "envs", directory):
            env_path = self._env_file(directory, env_name, where)
            for key, value in read_env_file(env_path).items():
                put(key, value, str(env_path))
        for file_entry in _as_list(generator.get("files"), "files", directory):
            if not isinstance(file_entry, str):
                raise KustomizeError(f"{where}: files entries must be 'path' or 'key=path', got {file_entry!r}")
            key, _, file_name = file_entry.rpartition("=")
            file_path = self._local_file(directory, file_name, f"{kind} file")
            if not file_path.is_file():
                raise KustomizeError(f"{where}: file {file_name!r} does not exist")
            try:
                content = file_path.read_text(encoding="utf-8")
            except UnicodeDecodeError as error:
                raise KustomizeError(f"{where}: file {file_name!r} is not UTF-8 text") from error
            put(key or file_path.name, content, str(file_path))
        for literal in _as_list(generator.get("literals"), "literals", directory):
            if not isinstance(literal, str) or "=" not in literal:
                raise KustomizeError(f"{where}: literals must be 'KEY=VALUE', got {literal!r}")
            key, value = literal.split("=", 1)
            put(key, value, "literals")

        metadata: dict[str, Any] = {"name": name}
        if generator.get("namespace"):
            metadata["namespace"] = generator["namespace"]
        for field in ("labels", "annotations"):
            if merged.get(field):
                metadata[field] = {str(k): str(v) for k, v in merged[field].items()}
        obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": metadata}
        if kind == "Secret":
            obj["type"] = generator.get("type", "Opaque")
            obj["data"] = {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()}
        else:
            if "type" in generator:
                raise KustomizeError(f"{where}: 'type' applies to Secrets only")
            obj["data"] = data
        return obj

    def _env_file(self, directory: Path, name: Any, where: str) -> Path:
        path = self._local_file(directory, name, "env file")
        if path.is_file():
            return path
        if self.env_fallback_suffix is not None:
            fallback = path.with_name(path.name + self.env_fallback_suffix)
            if fallback.is_file():
                return fallback
        raise KustomizeError(
            f"{where}: env file {name!r} does not exist (create it from {name}.example; "
            "python k8s/init_secrets.py does that)"
        )

    # ---- patches ------------------------------------------------------------------------------------------

    def _patch(self, directory: Path, patch: Any, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not isinstance(patch, dict):
            raise KustomizeError(f"{directory}: patches entries must be mappings, got {patch!r}")
        _check_keys(patch, PATCH_KEYS, f"{directory}: patches entry")
        if ("path" in patch) == ("patch" in patch):
            raise KustomizeError(f"{directory}: a patches entry needs exactly one of 'path' and 'patch'")
        if "path" in patch:
            patch_file = self._local_file(directory, patch["path"], "patch")
            if not patch_file.is_file():
                raise KustomizeError(f"{directory}: patch file {patch['path']!r} does not exist")
            text, origin = patch_file.read_text(encoding="utf-8"), str(patch_file)
        else:
            text, origin = str(patch["patch"]), f"{directory}: inline patch"
        operations = yaml.safe_load(text)
        if not isinstance(operations, list):
            raise KustomizeError(
                f"{origin}: only JSON6902 patches (a list of operations) are supported, not strategic-merge "
                "patches; write the change as op/path/value operations with a target"
            )
        target = patch.get("target")
        if not isinstance(target, dict) or not target:
            raise KustomizeError(f"{origin}: a JSON6902 patch needs a 'target' (group, version, kind, name)")
        _check_keys(target, TARGET_KEYS, f"{origin}: target")
        matched = 0
        patched = []
        for obj in objects:
            if _matches(obj, target):
                matched += 1
                try:
                    obj = apply_json6902(obj, operations)
                except KustomizeError as error:
                    raise KustomizeError(f"{origin}: on {_describe(obj)}: {error}") from error
            patched.append(obj)
        if matched == 0:
            raise KustomizeError(f"{origin}: target {target!r} matches no resource")
        return patched

    @staticmethod
    def _check_unique(objects: list[dict[str, Any]], directory: Path) -> None:
        seen: set[tuple[str, str, str, str]] = set()
        for obj in objects:
            key = (_group(obj), obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            if key in seen:
                raise KustomizeError(f"{directory}: {_describe(obj)} is defined more than once")
            seen.add(key)


# --------------------------------------------------------------------------------------------------------------
# Transformers
# --------------------------------------------------------------------------------------------------------------


def _set_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    if obj["kind"] in CLUSTER_SCOPED_KINDS:
        return obj
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    return obj


def _add_labels(obj: dict[str, Any], label: Any, directory: Path) -> dict[str, Any]:
    if not isinstance(label, dict):
        raise KustomizeError(f"{directory}: labels entries must be mappings, got {label!r}")
    _check_keys(label, LABEL_KEYS, f"{directory}: labels entry")
    for flag in ("includeSelectors", "includeTemplates"):
        if label.get(flag, False) is not False:
            raise KustomizeError(
                f"{directory}: labels {flag}: {label[flag]!r} is not supported; only false (metadata labels)"
            )
    pairs = label.get("pairs") or {}
    if not isinstance(pairs, dict):
        raise KustomizeError(f"{directory}: labels pairs must be a mapping")
    obj = copy.deepcopy(obj)
    labels = obj["metadata"].setdefault("labels", {})
    labels.update({str(k): str(v) for k, v in pairs.items()})
    return obj


def _container_lists(node: Any) -> Iterator[list[Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield value
            yield from _container_lists(value)
    elif isinstance(node, list):
        for item in node:
            yield from _container_lists(item)


def _split_image(image: str) -> tuple[str, str]:
    """Split ``registry/name:tag@digest`` into (name, suffix) where suffix is ``:tag``, ``@digest`` or ''."""
    if "@" in image:
        name, digest = image.split("@", 1)
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _retag(image: str, images: Sequence[Mapping[str, Any]]) -> str:
    name, suffix = _split_image(image)
    for entry in images:
        if entry["name"] != name:
            continue
        new_name = entry.get("newName") or name
        if entry.get("digest") is not None:
            return f"{new_name}@{entry['digest']}"
        if entry.get("newTag") is not None:
            return f"{new_name}:{entry['newTag']}"
        return new_name + suffix
    return image


# --------------------------------------------------------------------------------------------------------------
# JSON6902
# --------------------------------------------------------------------------------------------------------------


def _pointer(path: Any, index: int) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise KustomizeError(f"operation {index}: path {path!r} is not a JSON pointer (must start with '/')")
    if path == "":
        return []
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _array_index(container: list[Any], token: str, *, allow_end: bool, index: int, path: str) -> int:
    if allow_end and token == "-":
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise KustomizeError(f"operation {index}: {token!r} in {path!r} is not an array index")
    position = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if position > limit:
        raise KustomizeError(
            f"operation {index}: index {position} in {path!r} is out of range (array length {len(container)})"
        )
    return position


def _resolve(document: Any, tokens: list[str], index: int, path: str) -> Any:
    node = document
    for token in tokens:
        if isinstance(node, dict):
            if token not in node:
                raise KustomizeError(f"operation {index}: path {path!r} does not exist (no key {token!r})")
            node = node[token]
        elif isinstance(node, list):
            node = node[_array_index(node, token, allow_end=False, index=index, path=path)]
        else:
            raise KustomizeError(f"operation {index}: path {path!r} runs into a scalar at {token!r}")
    return node


def _add(document: Any, tokens: list[str], value: Any, index: int, path: str) -> Any:
    if not tokens:
        return copy.deepcopy(value)
    parent = _resolve(document, tokens[:-1], index, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_array_index(parent, last, allow_end=True, index=index, path=path), copy.deepcopy(value))
    else:
        raise KustomizeError(f"operation {index}: the parent of {path!r} is a scalar")
    return document


def _remove(document: Any, tokens: list[str], index: int, path: str) -> Any:
    if not tokens:
        raise KustomizeError(f"operation {index}: cannot remove the whole document")
    parent = _resolve(document, tokens[:-1], index, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise KustomizeError(f"operation {index}: path {path!r} does not exist (no key {last!r})")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_array_index(parent, last, allow_end=False, index=index, path=path)]
    else:
        raise KustomizeError(f"operation {index}: the parent of {path!r} is a scalar")
    return document


def _replace(document: Any, tokens: list[str], value: Any, index: int, path: str) -> Any:
    if not tokens:
        return copy.deepcopy(value)
    parent = _resolve(document, tokens[:-1], index, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise KustomizeError(f"operation {index}: path {path!r} does not exist (no key {last!r})")
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent[_array_index(parent, last, allow_end=False, index=index, path=path)] = copy.deepcopy(value)
    else:
        raise KustomizeError(f"operation {index}: the parent of {path!r} is a scalar")
    return document


def _json_equal(left: Any, right: Any) -> bool:
    """Equality of JSON values (RFC 6902 'test'): unlike Python's ==, true is not 1 and 1 is not "1"."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right))
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left == right
    return type(left) is type(right) and left == right


def _apply_operation(document: Any, operation: Any, index: int) -> Any:
    if not isinstance(operation, Mapping):
        raise KustomizeError(f"operation {index}: must be a mapping with op and path, got {operation!r}")
    op = operation.get("op")
    if op not in JSON6902_OPS:
        raise KustomizeError(f"operation {index}: op {op!r} is not one of {sorted(JSON6902_OPS)}")
    path = operation.get("path")
    tokens = _pointer(path, index)
    if op in ("add", "replace", "test") and "value" not in operation:
        raise KustomizeError(f"operation {index}: op {op!r} needs a 'value'")
    if op == "add":
        return _add(document, tokens, operation["value"], index, path)
    if op == "remove":
        return _remove(document, tokens, index, path)
    if op == "replace":
        return _replace(document, tokens, operation["value"], index, path)
    if op == "test":
        actual = _resolve(document, tokens, index, path)
        if not _json_equal(actual, operation["value"]):
            raise KustomizeError(
                f"operation {index}: test failed at {path!r}: expected {operation['value']!r}, found {actual!r}"
            )
        return document
    source = operation.get("from")
    source_tokens = _pointer(source, index)
    value = copy.deepcopy(_resolve(document, source_tokens, index, source))
    if op == "move":
        if tokens[: len(source_tokens)] == source_tokens and len(tokens) > len(source_tokens):
            raise KustomizeError(f"operation {index}: cannot move {source!r} into its own child {path!r}")
        document = _remove(document, source_tokens, index, source)
    return _add(document, tokens, value, index, path)


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------


def _check_keys(data: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise KustomizeError(f"{where}: expected a mapping, got {data!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise KustomizeError(f"{where}: unsupported field(s) {unknown}; supported: {sorted(allowed)}")


def _check_data_key(key: str, where: str) -> None:
    if not _DATA_KEY.match(key):
        raise KustomizeError(
            f"{where}: key {key!r} is not a valid ConfigMap/Secret key (letters, digits, '-', '_', '.')"
        )


def _as_list(value: Any, field: str, directory: Path) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise KustomizeError(f"{directory}: {field} must be a list, got {type(value).__name__}")
    return value


def _group(obj: Mapping[str, Any]) -> str:
    api_version = obj["apiVersion"]
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def _version(obj: Mapping[str, Any]) -> str:
    return obj["apiVersion"].rsplit("/", 1)[-1]


def _matches(obj: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    actual = {
        "group": _group(obj),
        "version": _version(obj),
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"].get("namespace", ""),
    }
    return all(actual[key] == str(value) for key, value in target.items() if value is not None)


def _describe(obj: Mapping[str, Any]) -> str:
    namespace = obj["metadata"].get("namespace")
    where = f" in namespace {namespace}" if namespace else ""
    return f"{obj['kind']} {obj['metadata']['name']!r}{where}"


if __name__ == "__main__":
    raise SystemExit(main())
