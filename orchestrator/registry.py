"""Choose a sweep's champion, register it in the MLflow Model Registry, and verify it by reloading it.

``select_champion`` reads the finished trial runs of a sweep from MLflow, applies the sweep's constraints, picks
one by a rule (``knee``, ``weighted`` or ``constrained_best``, see :mod:`orchestrator.scoring`), registers its
logged model directory (weights + config, a safe ``torch.load(weights_only=True)`` format) as a new version of a
registered model, tags the version with its objective values, points alias ``champion`` at it (the next
Pareto-front member by the same rule gets ``challenger``), then downloads ``models:/<name>@champion`` and
re-evaluates it on the test set. If the numbers disagree with the logged ones the aliases are put back as they
were and :class:`SelectionError` is raised: a registry entry that does not reproduce is never left as champion.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from .scoring import NoFeasiblePointError, pareto_front, select
from .tracking import SweepTracker

CHAMPION, CHALLENGER = "champion", "challenger"
#: objectives compared after reloading the champion (all deterministic on CPU for a fixed seed)
VERIFY_KEYS = ("accuracy", "asr", "robust_accuracy")


class SelectionError(RuntimeError):
    """No champion could be chosen, registered or verified (the message says why)."""


@dataclass
class Selection:
    model_name: str
    version: str
    run_id: str
    rule: str
    objectives: dict[str, float]
    challenger_version: str | None = None
    verified: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (logged, re-evaluated)


def _finished_trials(tracker: SweepTracker) -> list[Any]:
    runs = [r for r in tracker.trial_runs() if r.info.status == "FINISHED" and r.data.tags.get("qshield.final") == "true"]
    if not runs:
        raise SelectionError(
            f"sweep {tracker.sweep!r} has no finished trials in experiment {tracker.experiment_name!r} at "
            f"{tracker.tracking_uri}; run `qshield sweep` first (or check --experiment / MLFLOW_TRACKING_URI)"
        )
    return sorted(runs, key=lambda r: r.info.start_time)


def _sweep_settings(tracker: SweepTracker) -> tuple[dict[str, str], dict[str, float]]:
    parent_id = tracker.find_parent_run_id()  # read only: selecting must not reopen the finished sweep run
    if parent_id is None:
        raise SelectionError(f"sweep {tracker.sweep!r} has no parent run in experiment {tracker.experiment_name!r}")
    parent = tracker.client.get_run(parent_id)
    tags = parent.data.tags
    directions = json.loads(tags.get("qshield.objectives", '{"accuracy": "max", "asr": "min"}'))
    constraints = json.loads(tags.get("qshield.constraints", "{}"))
    return directions, constraints


def select_champion(
    sweep: str,
    *,
    model_name: str | None = None,
    rule: str = "knee",
    weights: dict[str, float] | None = None,
    primary: str | None = None,
    experiment: str = "qshield",
    tracking_uri: str | None = None,
    verify: bool = True,
    tolerance: float = 1e-6,
) -> Selection:
    """Pick, register, alias and verify the champion of ``sweep`` (see the module docstring)."""
    tracker = SweepTracker(sweep, experiment, tracking_uri)
    if tracker.client.get_experiment_by_name(experiment) is None:
        raise SelectionError(f"experiment {experiment!r} does not exist at {tracker.tracking_uri}")
    runs = _finished_trials(tracker)
    directions, constraints = _sweep_settings(tracker)
    # a non-finite objective (asr with no correctly classified image to attack) is not logged: such a trial
    # cannot be ranked (as in the sweep's own summary)
    runs = [r for r in runs if all(k in r.data.metrics for k in directions)]
    if not runs:
        raise SelectionError(f"sweep {sweep!r}: no finished trial has a value for every objective "
                             f"({', '.join(directions)}); nothing can be ranked")
    points = [{k: r.data.metrics[k] for k in directions} for r in runs]
    try:
        best = select(points, rule, directions, weights=weights, constraints=constraints, primary=primary)
    except NoFeasiblePointError as exc:
        raise SelectionError(f"sweep {sweep!r}: {exc}") from exc
    name = model_name or f"qshield-{sweep}"
    client = tracker.client
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, tags={"qshield.sweep": sweep}, description=f"Champion of sweep {sweep}")

    previous = _aliases(client, name)
    champion = _register(client, name, runs[best], points[best], rule, sweep)
    challenger = None
    front = [i for i in pareto_front(points, directions) if i != best]
    if front:
        others = [points[i] for i in front]
        try:
            nxt = front[select(others, rule, directions, weights=weights, primary=primary)]
            challenger = _register(client, name, runs[nxt], points[nxt], rule, sweep)
        except NoFeasiblePointError:
            challenger = None
    client.set_registered_model_alias(name, CHAMPION, champion.version)
    if challenger is not None:
        client.set_registered_model_alias(name, CHALLENGER, challenger.version)
    selection = Selection(name, champion.version, runs[best].info.run_id, rule, points[best],
                          challenger.version if challenger else None)
    if verify:
        try:
            selection.verified = verify_champion(name, runs[best], tracker.tracking_uri, tolerance)
        except Exception:
            _restore_aliases(client, name, previous)
            client.set_model_version_tag(name, champion.version, "qshield.verification", "failed")
            raise
        client.set_model_version_tag(name, champion.version, "qshield.verification", "passed")
    return selection


def _register(client: Any, name: str, run: Any, objectives: dict[str, float], rule: str, sweep: str) -> Any:
    tags = {f"objective.{k}": f"{v:.6g}" for k, v in objectives.items()}
    tags.update({"qshield.sweep": sweep, "qshield.rule": rule, "qshield.trial_id": run.data.tags.get("qshield.trial_id", "")})
    return client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id, tags=tags)


def _aliases(client: Any, name: str) -> dict[str, str]:
    model = client.get_registered_model(name)
    return dict(getattr(model, "aliases", {}) or {})


def _restore_aliases(client: Any, name: str, previous: dict[str, str]) -> None:
    for alias in (CHAMPION, CHALLENGER):
        if alias in previous:
            client.set_registered_model_alias(name, alias, previous[alias])
        else:
            try:
                client.delete_registered_model_alias(name, alias)
            except MlflowException:
                pass


def load_registered(model_uri: str, tracking_uri: str | None = None) -> tuple[Any, dict[str, Any], Path]:
    """Download ``models:/<name>@<alias>`` (or any model URI) and load it safely; returns (model, params, dir)."""
    import mlflow

    from qshield.models import load_model

    from .trial import MODEL_FILE

    # ``models:/`` URIs resolve against the *registry* URI. MLflow's own resolution of them
    # (ModelsArtifactRepository) reads the global default registry (the cwd's sqlite:///mlflow.db, which it creates)
    # even when ``registry_uri`` is passed, so the version is looked up here, in the sweep's registry.
    registry_uri = os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri
    try:
        artifact_uri = _version_download_uri(model_uri, tracking_uri, registry_uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, tracking_uri=tracking_uri,
                                                         registry_uri=registry_uri))
    except MlflowException as exc:
        raise SelectionError(f"cannot load {model_uri}: {exc.message if hasattr(exc, 'message') else exc}") from exc
    if not (local / MODEL_FILE).exists():
        raise SelectionError(f"{model_uri} holds no {MODEL_FILE}; it was not logged by a qshield sweep")
    model, _ = load_model(local / MODEL_FILE)
    params = json.loads((local / "params.json").read_text()) if (local / "params.json").exists() else {}
    return model, params, local


def _version_download_uri(model_uri: str, tracking_uri: str | None, registry_uri: str | None) -> str:
    """``models:/<name>@<alias>[/path]`` or ``models:/<name>/<version>[/path]`` -> where that version's files are.

    Other URIs are returned unchanged. Raises :class:`SelectionError` naming the registry and what exists there
    when the model, alias or version is missing.
    """
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        return model_uri
    head, _, rest = model_uri[len("models:/"):].partition("/")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    name, at, alias = head.partition("@")
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        raise SelectionError(
            f"cannot load {model_uri}: no registered model {name!r} in the registry at {registry_uri}; "
            f"allowed values: {', '.join(map(repr, names)) or 'none (register one with `qshield select`)'}"
        ) from None
    if at:
        aliases = dict(getattr(model, "aliases", {}) or {})
        if alias not in aliases:
            raise SelectionError(
                f"cannot load {model_uri}: registered model {name!r} has no alias {alias!r}; allowed values: "
                f"{', '.join(map(repr, sorted(aliases))) or 'none (set one with `qshield select`)'}"
            )
        version, path = str(aliases[alias]), rest
    else:
        version, _, path = rest.partition("/")
        try:
            client.get_model_version(name, version)
        except MlflowException:
            versions = sorted((str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int)
            raise SelectionError(
                f"cannot load {model_uri}: registered model {name!r} has no version {version!r}; allowed values: "
                f"{', '.join(versions) or 'none'}"
            ) from None
    location = client.get_model_version_download_uri(name, version)
    return f"{location.rstrip('/')}/{path}" if path else location


def verify_champion(name: str, run: Any, tracking_uri: str, tolerance: float) -> dict[str, tuple[float, float]]:
    """Reload ``models:/<name>@champion``, re-evaluate it on the test set, compare with the run's metrics."""
    from .space import parse_space
    from .trial import evaluate_trained

    model, params, local = load_registered(f"models:/{name}@{CHAMPION}", tracking_uri)
    space = parse_space(json.loads((local / "space.json").read_text()), source=str(local / "space.json"))
    fresh = evaluate_trained(model, space)
    checked = {}
    bad = []
    for key in VERIFY_KEYS:
        logged = run.data.metrics.get(key)
        if logged is None:
            continue
        now = float(fresh[key])
        checked[key] = (float(logged), now)
        if not math.isclose(logged, now, abs_tol=tolerance):
            bad.append(f"{key}: logged {logged:.6f}, re-evaluated {now:.6f}")
    if bad:
        raise SelectionError(f"models:/{name}@{CHAMPION} does not reproduce its logged metrics: " + "; ".join(bad))
    return checked
