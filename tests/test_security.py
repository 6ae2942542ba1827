"""Security (issue 6, item 3): safe loading only, pickled payloads refused everywhere a checkpoint is read, no
secrets in MLflow, non-root read-only containers and authentication in every k8s overlay.

* A scan of the source (the AST of every Python file outside tests/ and .venv/) finds every ``torch.load`` with
  ``weights_only=True``, every YAML read through ``safe_load`` / the safe loader, ``np.load`` with
  ``allow_pickle=False``, and no ``pickle`` / ``dill`` / ``joblib`` / ``eval`` / ``exec`` except the restricted
  CIFAR unpickler in ``qshield/data/_cifar10.py``. The scanner is shown to flag each unsafe form first.
* A checkpoint carrying a pickled payload (which does run when unpickled unsafely: shown) is refused by
  ``load_model``, by a trial resuming from it (``run_trial(resume_from=...)``, the sweep's restore path), by
  ``qshield evaluate`` and by ``load_registered`` for a registered champion, and the
  payload never runs (its marker file is never created).
* Environment variables named like secrets (``*TOKEN*``, ``*PASSWORD*``, ``*SECRET*``, ``*KEY*``) with unique
  sentinel values are set while a real trial is tracked through the sweep's own MLflow path (``SweepTracker``,
  ``run_environment_tags``, the Tune callback ``MLflowTrialCallback``, the sweep summary and the registry's
  ``select_champion`` with verification); then every param, tag, metric key, run name, artifact, registered
  model and model version, and the raw bytes of the store, are searched for the sentinels. The search is shown
  to find a sentinel planted in a param, a tag, an artifact and a model version tag.
* Kubernetes (complementing tests/test_k8s.py, which checks pod security contexts and the auth wiring): the
  images run as the same non-root user the pods declare, and nothing is exposed outside the cluster.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from qshield.models import ModelConfig, UnsafeCheckpointError, build_model, load_model
from tests.test_sweep import TrialStub

ROOT = Path(__file__).resolve().parents[1]
SMALL_CNN = ModelConfig(arch="cnn", in_channels=1, image_size=8, num_classes=10)

# ----------------------------------------------------------------------------------------------------------
# 1. the source loads nothing unsafely

#: the one module allowed to unpickle: CIFAR-10's restricted unpickler (plain containers and numpy arrays only)
RESTRICTED_UNPICKLER = "qshield/data/_cifar10.py"
_UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
_UNSAFE_YAML_LOADERS = {"Loader", "UnsafeLoader", "FullLoader", "CLoader", "CUnsafeLoader", "CFullLoader"}
_PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib"}
_PICKLE_LOADERS = {"load", "loads", "Unpickler", "_Unpickler"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


#: (file, function) -> why a loader the scan flags is safe there; each entry is tested to refuse what it must.
REVIEWED_LOADERS = {
    ("orchestrator/tracking/_model.py", "load_checked_pyfunc"): (
        "mlflow.pyfunc.load_model only after checking the model is a code model whose code file is byte-identical "
        "to qshield's own pyfunc_classifier.py (tests/test_mlflow_model.py: a tampered or pickled model is refused)"
    ),
}


def unsafe_loading(source: str, path: str) -> list[str]:
    """Every unsafe deserialisation or code evaluation in ``source`` as ``path:line: what``.

    Module aliases (``import torch as t``) are followed. Importing ``pickle`` (e.g. for ``pickle.UnpicklingError``)
    is fine; loading through it (``load``, ``loads``, ``Unpickler``) is not, outside the restricted unpickler.
    """
    found: list[str] = []
    tree = ast.parse(source, filename=path)
    pickle_allowed = path == RESTRICTED_UNPICKLER
    aliases = {a.asname or a.name: a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    def resolve(node: ast.AST) -> str:
        name = _dotted(node)
        head, _, rest = name.partition(".")
        head = aliases.get(head, head)
        return f"{head}.{rest}" if rest else head

    reviewed: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and (path, fn.name) in REVIEWED_LOADERS:
            reviewed.update(id(n) for n in ast.walk(fn))

    for node in ast.walk(tree):
        where = f"{path}:{getattr(node, 'lineno', '?')}"
        if id(node) in reviewed:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names = {a.name for a in node.names}
            if node.module == "torch" and "load" in names:
                found.append(f"{where}: from torch import load (use torch.load(..., weights_only=True))")
            if node.module == "yaml" and names & (_UNSAFE_YAML | _UNSAFE_YAML_LOADERS):
                found.append(f"{where}: from yaml import {sorted(names & (_UNSAFE_YAML | _UNSAFE_YAML_LOADERS))}")
            if node.module.split(".")[0] in _PICKLE_MODULES and names & _PICKLE_LOADERS and not pickle_allowed:
                found.append(f"{where}: from {node.module} import {sorted(names & _PICKLE_LOADERS)}")
        elif isinstance(node, ast.Attribute):
            name = resolve(node)
            if name.startswith("yaml.") and node.attr in _UNSAFE_YAML_LOADERS:
                found.append(f"{where}: {name} (use yaml.SafeLoader)")
            elif name.split(".")[0] in _PICKLE_MODULES and node.attr in _PICKLE_LOADERS and not pickle_allowed:
                found.append(f"{where}: {name}")
        elif isinstance(node, ast.Call):
            name = resolve(node.func)
            allow_pickle = _keyword(node, "allow_pickle")
            if name == "torch.load" and not _is_true(_keyword(node, "weights_only")):
                found.append(f"{where}: torch.load without weights_only=True")
            elif name.startswith("yaml.") and name.split(".", 1)[1] in _UNSAFE_YAML:
                found.append(f"{where}: {name} (use yaml.safe_load)")
            elif name == "numpy.load" and not (isinstance(allow_pickle, ast.Constant) and allow_pickle.value is False):
                found.append(f"{where}: numpy.load without allow_pickle=False")
            elif name in ("pandas.read_pickle", "mlflow.pytorch.load_model", "mlflow.pyfunc.load_model",
                          "torch.hub.load", "torch.jit.load", "joblib.load", "shelve.open", "marshal.loads"):
                found.append(f"{where}: {name} (unpickles or runs code)")
            elif name in ("eval", "exec", "__import__"):
                found.append(f"{where}: {name}()")
    return found


def source_files() -> list[Path]:
    """Every Python file of the project outside tests/ (the library, the application, experiments, benchmarks,
    scripts, k8s)."""
    skip = {".venv", "tests", ".git", "build", "dist", "node_modules"}
    return sorted(p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts))


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\nx = torch.load('m.pt')",
        "import torch\nx = torch.load('m.pt', weights_only=False)",
        "import torch\nx = torch.load('m.pt', map_location='cpu', weights_only=flag)",
        "from torch import load\nx = load('m.pt')",
        "import yaml\nx = yaml.load(open('a.yaml'), Loader=yaml.Loader)",
        "import yaml\nx = yaml.unsafe_load('a: 1')",
        "import yaml\nx = yaml.full_load('a: 1')",
        "import yaml\nx = yaml.compose('a: 1', Loader=yaml.UnsafeLoader)",
        "from yaml import load",
        "import torch as t\nx = t.load('m.pt')",
        "import pickle\nx = pickle.loads(b'')",
        "import pickle as p\nx = p.load(open('f', 'rb'))",
        "import pickle\nclass U(pickle.Unpickler):\n    pass",
        "from pickle import Unpickler",
        "import dill\nx = dill.loads(b'')",
        "import joblib\nx = joblib.load('m.joblib')",
        "import numpy as np\nx = np.load('a.npz', allow_pickle=True)",
        "import numpy\nx = numpy.load('a.npz', allow_pickle=flag)",
        "import numpy as np\nx = np.load('a.npz')",
        "import pandas as pd\nx = pd.read_pickle('a.pkl')",
        "import mlflow\nm = mlflow.pytorch.load_model('models:/m@champion')",
        "x = eval('1 + 1')",
    ],
)
def test_the_scan_flags_unsafe_loading(snippet: str) -> None:
    assert unsafe_loading(snippet, "qshield/example.py"), snippet


def test_the_scan_accepts_safe_loading() -> None:
    safe = (
        "import torch, yaml, numpy as np\n"
        "a = torch.load('m.pt', map_location='cpu', weights_only=True)\n"
        "b = yaml.safe_load('a: 1')\n"
        "c = yaml.compose('a: 1', Loader=yaml.SafeLoader)\n"
        "d = np.load('a.npz', allow_pickle=False)\n"
    )
    assert unsafe_loading(safe, "qshield/example.py") == []
    # catching pickle's exception is fine; only the CIFAR module may unpickle (through its restricted unpickler)
    assert unsafe_loading("import pickle\ntry:\n    pass\nexcept pickle.UnpicklingError:\n    pass", "a.py") == []
    unpickler = "import pickle\nclass R(pickle.Unpickler):\n    pass"
    assert unsafe_loading(unpickler, RESTRICTED_UNPICKLER) == []
    assert unsafe_loading(unpickler, "qshield/data/_mnist.py")


def test_the_source_loads_only_safely() -> None:
    files = source_files()
    assert {"qshield/models/_io.py", "orchestrator/space/_load.py", RESTRICTED_UNPICKLER,
            "experiments/reproduce/_run.py"} <= {
        str(p.relative_to(ROOT)) for p in files
    }
    problems = [hit for p in files for hit in unsafe_loading(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert problems == []
    # the scan saw the real loaders: torch.load in the model and ResNet readers, yaml in the space loader and CLI
    text = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in files}
    assert sum(t.count("torch.load(") for t in text.values()) >= 2
    assert "yaml.safe_load(" in text["orchestrator/space/_load.py"]
    # every reviewed exception names a function that exists, and the scan flags the same call anywhere else
    for path, function in REVIEWED_LOADERS:
        assert f"def {function}(" in text[path], (path, function)
    assert unsafe_loading("import mlflow\ndef elsewhere():\n    mlflow.pyfunc.load_model('m')\n",
                          "orchestrator/tracking/_model.py")


def test_the_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    from qshield.data import DatasetFormatError, safe_unpickle

    marker = tmp_path / "payload_ran"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _Payload(str(marker)), "labels": [0]}))
    with pytest.raises(DatasetFormatError, match="refusing to load global"):
        safe_unpickle(path)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------
# 2. a pickled payload in a checkpoint is refused wherever checkpoints are read


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if the payload ever runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def write_evil_model(path: Path, marker: Path) -> Path:
    """A model file in qshield's layout with a payload object next to the (valid) weights."""
    state = dict(build_model(SMALL_CNN, seed=0).state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "qshield-model", "version": 1, "config": json.dumps(SMALL_CNN.to_dict()),
                "state_dict": state, "extra": _Payload(str(marker))}, path)
    return path


def test_the_payload_is_live_when_unpickled_unsafely(tmp_path: Path) -> None:
    """The refusals below mean something: loading this file the unsafe way does run the payload."""
    marker = tmp_path / "payload_ran"
    path = write_evil_model(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)  # deliberately unsafe: this is the attack the project refuses
    assert marker.exists()


def test_load_model_refuses_a_pickled_payload(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    path = write_evil_model(tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match=r"weights_only=True\); nothing in it was run"):
        load_model(path)
    assert not marker.exists()


def _tiny_space(epochs: int = 1) -> Any:
    """Digits, 100 training / 30 test images, a hybrid small CNN + 4 qubits, FGSM and 2-step PGD on 8 images."""
    from orchestrator.space import parse_space

    space = {
        "name": "security", "dataset": "digits", "limit_train": 100, "limit_test": 30, "seed": 0,
        "parameters": {"arch": "hybrid", "backbone": "cnn", "n_qubits": 4, "depth": 1,
                       "entanglement": {"choice": ["none", "linear"]}, "lr": 3.0e-3, "epochs": epochs,
                       "batch_size": 16},
        "attacks": {"names": ["fgsm", "pgd"], "n_eval": 8, "batch_size": 8, "diagnostics": True,
                    "settings": {"pgd": {"steps": 2}}},
        "resources": {"cpus": 1, "gpus": 0}, "num_samples": 1,
    }
    return parse_space(space, source="<test>")


def _params(space: Any) -> dict[str, Any]:
    from orchestrator.runtime import to_tune_param_space

    return {k: ("linear" if hasattr(v, "sample") else v) for k, v in to_tune_param_space(space).items()}


def test_a_resumed_trial_refuses_a_pickled_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's restore path: Tune hands the trial its last checkpoint directory, run_trial loads model.pt."""
    import orchestrator.trial as trial_mod

    marker = tmp_path / "payload_ran"
    ckpt = tmp_path / "checkpoint_000001"
    write_evil_model(ckpt / trial_mod.MODEL_FILE, marker)
    (ckpt / trial_mod.STATE_FILE).write_text('{"epoch": 1}')

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("training ran on an unsafe checkpoint")

    monkeypatch.setattr(trial_mod, "train", no_training)
    space = _tiny_space(epochs=2)
    with pytest.raises(UnsafeCheckpointError, match="pickled Python objects"):
        trial_mod.run_trial(_params(space), space, lambda m, c: None, resume_from=ckpt)
    assert not marker.exists()


def test_opening_a_logged_model_dir_refuses_a_pickled_checkpoint(tmp_path: Path) -> None:
    """The card/probe path (``views.open_model``) loads a downloaded trial directory: weights first, safely."""
    from orchestrator.trial import MODEL_FILE, read_trial_record
    from qshield.models import load_model

    marker = tmp_path / "payload_ran"
    space = _tiny_space()
    write_evil_model(tmp_path / "model" / MODEL_FILE, marker)
    (tmp_path / "model" / "params.json").write_text(json.dumps(_params(space)))
    (tmp_path / "model" / "space.json").write_text(json.dumps(space.to_dict()))
    params, read_space = read_trial_record(tmp_path / "model")  # the record itself is plain JSON
    assert read_space == space and params == _params(space)
    with pytest.raises(UnsafeCheckpointError):
        load_model(tmp_path / "model" / MODEL_FILE)
    assert not marker.exists()


def test_qshield_evaluate_refuses_a_pickled_model(tmp_path: Path) -> None:
    marker = tmp_path / "payload_ran"
    path = write_evil_model(tmp_path / "evil.pt", marker)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "evaluate", str(path), "--dataset", "digits",
                           "--out", str(tmp_path / "results")], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "evil.pt" in proc.stderr and "weights_only=True" in proc.stderr
    assert not marker.exists() and not (tmp_path / "results").exists()


# ----------------------------------------------------------------------------------------------------------
# 3. no secrets reach MLflow

#: environment variables named like credentials (the k8s overlay really sets MLFLOW_TRACKING_PASSWORD and
#: RAY_AUTH_TOKEN in the Ray pods), each given a unique sentinel value
SECRET_NAMES = ("MY_API_TOKEN", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD",
                "GITHUB_TOKEN", "QSHIELD_SECRET", "POSTGRES_PASSWORD", "OPENAI_API_KEY")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real trial tracked into a fresh sqlite store by the sweep's MLflow path, with secrets in the environment.

    Parent run (created with the space as params and the sweep's tags) -> trial run through the Tune callback
    (params, per-epoch and final metrics, attack table, masking diagnostics, model artifacts) -> the sweep
    summary (trials table, Pareto plot, counts) -> select_champion (registered version, tags, aliases, verified
    by reloading and re-evaluating).
    """
    from ray import tune

    from orchestrator.runtime import MLflowTrialCallback
    from orchestrator.tracking import select_champion
    from orchestrator.runtime import SweepResult, TrialRecord, summarise
    from orchestrator.tracking import SweepTracker
    from orchestrator.trial import run_trial

    root = tmp_path_factory.mktemp("secrets")
    sentinels = {name: f"sentinel-{name.lower()}-{uuid.uuid4().hex}" for name in SECRET_NAMES}
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # a sqlite store keeps artifacts under ./mlruns
        for name, value in sentinels.items():
            mp.setenv(name, value)
        mp.setenv("MLFLOW_TRACKING_USERNAME", "qshield-admin")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        torch.set_num_threads(1)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        space = _tiny_space()
        params = _params(space)
        tracker = SweepTracker(space.name, "qshield-security", uri, retries=0)
        parent = tracker.parent_run_id(params={"space": space.to_dict()})
        tracker.set_tags(parent, {"qshield.objectives": json.dumps(space.directions()),
                                  "qshield.constraints": json.dumps(space.constraints.as_dict()),
                                  "qshield.dataset": space.dataset.value, "qshield.storage_path": str(root / "ray")})
        callback = MLflowTrialCallback(tracker)
        callback.setup()
        trial = TrialStub("security_00000", params)
        callback.on_trial_start(0, [], trial)

        reports: list[dict[str, Any]] = []

        def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
            reports.append(metrics)
            trial.last_result = dict(metrics)
            callback.on_trial_result(0, [], trial, result=dict(metrics))
            if checkpoint_dir is not None:  # Tune persists each reported checkpoint; keep a copy like it does
                keep = root / "checkpoints" / f"checkpoint_{len(reports):06d}"
                shutil.copytree(checkpoint_dir, keep)
                trial.checkpoint = tune.Checkpoint.from_directory(str(keep))

        final = run_trial(params, space, report)
        callback.on_trial_complete(0, [], trial)
        result = SweepResult(space.name, str(root / "ray"), uri, parent, space.directions(),
                             [TrialRecord(trial.trial_id, "finished", params, final)])
        summarise(result, tracker)
        # one tiny trial, near chance: flagged; these tests are about secrets and pickles, so allow it
        selection = select_champion(space.name, experiment="qshield-security", tracking_uri=uri, allow_flagged=True)
        torch.set_num_threads(threads)
        yield {"root": root, "uri": uri, "sentinels": sentinels, "selection": selection,
               "trial_run": callback._runs[trial.trial_id], "parent": parent}


def find_secrets(uri: str, roots: list[Path], sentinels: dict[str, str], download_to: Path) -> tuple[list[str], dict]:
    """Every place in the store where a sentinel occurs, and how much was searched."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    hits: list[str] = []
    seen = {"runs": 0, "params": 0, "tags": 0, "metrics": 0, "artifacts": 0, "versions": 0, "files": 0}

    def check(where: str, content: str | bytes) -> None:
        data = content.encode() if isinstance(content, str) else content
        hits.extend(f"{where}: {name}" for name, value in sentinels.items() if value.encode() in data)

    def walk(run_id: str, path: str | None = None) -> Iterator[str]:
        for item in client.list_artifacts(run_id, path):
            if item.is_dir:
                yield from walk(run_id, item.path)
            else:
                yield item.path

    for exp in client.search_experiments(view_type=ViewType.ALL):
        check(f"experiment {exp.name} tags", json.dumps(exp.tags))
        for run in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
            seen["runs"] += 1
            rid = run.info.run_id
            d = run.data
            seen["params"] += len(d.params)
            seen["tags"] += len(d.tags)
            seen["metrics"] += len(d.metrics)
            check(f"run {rid} name", run.info.run_name or "")
            check(f"run {rid} params", json.dumps(d.params))
            check(f"run {rid} tags", json.dumps(d.tags))
            check(f"run {rid} metric keys", json.dumps(sorted(d.metrics)))
            for artifact in walk(rid):
                seen["artifacts"] += 1
                local = client.download_artifacts(rid, artifact, str(download_to / uuid.uuid4().hex))
                check(f"run {rid} artifact {artifact}", Path(local).read_bytes())
    for model in client.search_registered_models():
        check(f"registered model {model.name}", json.dumps([model.tags, model.description, model.aliases]))
    for version in client.search_model_versions():
        seen["versions"] += 1
        check(f"model version {version.name}/{version.version}",
              json.dumps([version.tags, version.description, version.source, version.run_id]))
    for root in roots:  # the raw store: the database file and every artifact file, whatever MLflow shows
        for file in root.rglob("*"):
            if file.is_file():
                seen["files"] += 1
                check(f"file {file.relative_to(root)}", file.read_bytes())
    return hits, seen


def test_no_secret_from_the_environment_reaches_mlflow(tracked: dict[str, Any], tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracked["uri"])
    trial = client.get_run(tracked["trial_run"])
    # the tracked path really ran, including the environment-derived tags
    assert trial.data.tags["qshield.role"] == "trial" and "qshield.git_sha" in trial.data.tags
    assert "version.torch" in trial.data.tags and trial.data.tags["qshield.final"] == "true"
    assert tracked["selection"].verified
    hits, seen = find_secrets(tracked["uri"], [tracked["root"]], tracked["sentinels"], tmp_path)
    assert hits == []
    # and it searched something substantial: both runs, their params/tags/metrics, the artifacts, the version
    assert seen["runs"] == 2 and seen["versions"] == 1
    assert seen["params"] >= 20 and seen["tags"] >= 20 and seen["metrics"] >= 10
    assert seen["artifacts"] >= 7 and seen["files"] >= 8


def test_the_secret_search_finds_planted_sentinels(tracked: dict[str, Any], tmp_path: Path) -> None:
    """On a copy of the store: a sentinel logged as a param, a tag, an artifact and a version tag is found."""
    from mlflow import MlflowClient

    db = tmp_path / "copy.db"
    shutil.copy(tracked["root"] / "mlflow.db", db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    s = tracked["sentinels"]
    exp = client.create_experiment("control", artifact_location=str(tmp_path / "control-artifacts"))
    run = client.create_run(exp).info.run_id
    client.log_param(run, "api_token", s["MY_API_TOKEN"])
    client.set_tag(run, "db", s["DB_PASSWORD"])
    (tmp_path / "env.txt").write_text(f"AWS_SECRET_ACCESS_KEY={s['AWS_SECRET_ACCESS_KEY']}\n")
    client.log_artifact(run, str(tmp_path / "env.txt"))
    (tmp_path / "env.txt").unlink()
    version = tracked["selection"].version
    client.set_model_version_tag(tracked["selection"].model_name, version, "token", s["GITHUB_TOKEN"])
    hits, _ = find_secrets(uri, [tmp_path], s, tmp_path / "downloads")
    assert any(h.startswith(f"run {run} params") and h.endswith("MY_API_TOKEN") for h in hits)
    assert any(h.startswith(f"run {run} tags") and h.endswith("DB_PASSWORD") for h in hits)
    assert any(h.startswith(f"run {run} artifact env.txt") and h.endswith("AWS_SECRET_ACCESS_KEY") for h in hits)
    assert any(h.startswith("model version") and h.endswith("GITHUB_TOKEN") for h in hits)
    assert any(h.startswith("file copy.db") for h in hits)


def test_load_registered_refuses_a_pickled_champion(tracked: dict[str, Any], tmp_path: Path) -> None:
    """A registered version whose model.pt was replaced by a payload (e.g. a tampered artifact store)."""
    from mlflow import MlflowClient

    from orchestrator.tracking import load_registered

    client = MlflowClient(tracked["uri"])
    exp = client.create_experiment("tampered", artifact_location=str(tmp_path / "tampered-artifacts"))
    run = client.create_run(exp).info.run_id
    marker = tmp_path / "payload_ran"
    write_evil_model(tmp_path / "model" / "model.pt", marker)
    client.log_artifacts(run, str(tmp_path / "model"), "model")
    client.create_registered_model("tampered")
    version = client.create_model_version("tampered", source=f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias("tampered", "champion", version.version)
    with pytest.raises(UnsafeCheckpointError):
        load_registered("models:/tampered@champion", tracking_uri=tracked["uri"])
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------
# 4. Kubernetes: what tests/test_k8s.py does not already check


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every overlay, rendered by real kustomize (tests/_k8s.py: kubectl kustomize, skipped without it)."""
    from tests._k8s import ALL_OVERLAYS, render

    return {name: render(name) for name in ALL_OVERLAYS}


def _dockerfile_user(path: Path) -> int:
    users = re.findall(r"^USER\s+(\S+)", path.read_text(), flags=re.MULTILINE)
    assert users, f"{path.name} sets no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"{path.name}: USER {uid} must be numeric for runAsNonRoot to verify it"
    return int(uid)


def test_images_run_as_the_non_root_user_the_pods_declare(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from tests._k8s import all_pod_specs, containers

    image_users = {"qshield": _dockerfile_user(ROOT / "k8s" / "image" / "Dockerfile"),
                   "qshield-mlflow": _dockerfile_user(ROOT / "k8s" / "image" / "mlflow.Dockerfile")}
    assert all(uid != 0 for uid in image_users.values())
    checked = 0
    for overlay, objects in rendered.items():
        for label, pod in all_pod_specs(objects):
            for container in containers(pod):
                image = container["image"].rsplit("/", 1)[-1].split(":")[0]
                if image not in image_users:
                    continue  # third-party images (postgres) declare their own user; test_k8s checks non-root
                uid = container.get("securityContext", {}).get("runAsUser",
                                                               pod.get("securityContext", {}).get("runAsUser"))
                assert uid == image_users[image], f"{overlay}: {label} {container['name']} runs as {uid}"
                checked += 1
    assert checked >= 6


def test_nothing_is_exposed_outside_the_cluster(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """MLflow, Postgres and the Ray dashboard/job API are reached only through the cluster (port-forward)."""
    checked = 0
    for overlay, objects in rendered.items():
        kinds = {o["kind"] for o in objects}
        assert not kinds & {"Ingress", "Route", "Gateway", "HTTPRoute"}, overlay
        for service in (o for o in objects if o["kind"] == "Service"):
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP", (overlay, service["metadata"]["name"])
            assert not service["spec"].get("externalIPs"), (overlay, service["metadata"]["name"])
        for ray in (o for o in objects if o["kind"] in ("RayJob", "RayCluster")):
            cluster = ray["spec"]["rayClusterSpec"] if ray["kind"] == "RayJob" else ray["spec"]
            head = cluster["headGroupSpec"]
            assert head.get("serviceType", "ClusterIP") == "ClusterIP", overlay
            assert not head.get("enableIngress"), overlay
            pods = [head["template"]["spec"], *[g["template"]["spec"] for g in cluster["workerGroupSpecs"]]]
            for pod in pods:
                assert not pod.get("hostNetwork"), overlay
                for container in pod["containers"]:
                    assert not any("hostPort" in p for p in container.get("ports", [])), overlay
            checked += 1
    assert checked == len(rendered) == 4  # one RayJob or RayCluster per overlay
