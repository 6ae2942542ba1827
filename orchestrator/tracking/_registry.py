"""Choose a sweep's champion, register it in the MLflow Model Registry, and verify it by reloading it.

``select_champion`` reads the finished trial runs of a sweep from MLflow, applies the sweep's constraints, picks
one by a rule (default ``robust_floor``; ``knee``, ``weighted``, ``constrained_best``: :mod:`orchestrator.scoring`)
and registers the trial's logged MLflow Model (a ``pyfunc`` LoggedModel, :mod:`orchestrator.tracking`) as a
version of a registered model, tagged with its objective values, the rule and the one-sentence reason it won.
The runner-up by the same rule is registered too and gets alias ``challenger``.

Before an alias moves, the new version is verified: ``models:/<name>/<version>`` is downloaded, its weights
loaded safely (``torch.load(weights_only=True)``), the model re-evaluated on the test set (the numbers must equal
the logged ones) and MLflow's own ``mlflow.pyfunc.load_model`` must reproduce the model's class probabilities on
the input example. Only then does ``champion`` point at it (one alias call, so readers never see a half-made
champion); a version that does not reproduce is tagged ``qshield.verification=failed`` and never aliased.
The champion's robustness card is made above this layer (:mod:`orchestrator.views`).

Selecting is idempotent: a run already registered under the model name reuses its version (two selections
racing each other converge on the lowest version number; the other is deleted), so re-running ``select`` never
adds a duplicate version; selections racing to create the registered model itself use the one that won. Every
registry call goes through the tracker's retry (:func:`~orchestrator.tracking._tracker.call_mlflow`): racers that
tag the same version or set the same alias at once make one of them fail with a unique-constraint error, which
is retried (then it updates the row the other inserted).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from ._model import MODEL_FILES, load_checked_pyfunc, use_tracking_uri
from ..scoring import (
    DEFAULT_ACCURACY_FLOOR,
    NoFeasiblePointError,
    NoTrustworthyPointError,
    apply_constraints,
    choose,
    pareto_front,
    selection_metrics,
)
from ._tracker import TRIAL, SweepTracker, existing_store, quote

CHAMPION, CHALLENGER = "champion", "challenger"
#: metrics compared after reloading the champion (all deterministic on CPU for a fixed seed)
VERIFY_KEYS = ("accuracy", "robust_accuracy", "asr", "adversary_cost")


class SelectionError(RuntimeError):
    """No champion could be chosen, registered or verified (the message says why)."""


@dataclass
class Selection:
    model_name: str
    version: str
    run_id: str
    rule: str
    objectives: dict[str, float]
    reason: str = ""
    trial_id: str = ""
    challenger_version: str | None = None
    challenger_reason: str = ""
    verified: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (logged, re-evaluated)
    card: str | None = None  # runs:/<run>/card/index.html of the champion's robustness card, None when not made


def _finished_trials(tracker: SweepTracker) -> list[Any]:
    runs = [r for r in tracker.trial_runs() if r.info.status == "FINISHED" and r.data.tags.get("qshield.final") == "true"]
    if not runs:
        raise SelectionError(
            f"sweep {tracker.sweep!r} has no finished trials in experiment {tracker.experiment_name!r} at "
            f"{tracker.tracking_uri}; run `qshield sweep` first (or check --experiment / MLFLOW_TRACKING_URI)"
        )
    return sorted(runs, key=lambda r: r.info.start_time)


def _sweep_settings(tracker: SweepTracker) -> tuple[str, dict[str, str], dict[str, float], dict[str, Any]]:
    parent_id = tracker.find_parent_run_id()  # read only: selecting must not reopen the finished sweep run
    if parent_id is None:
        raise SelectionError(f"sweep {tracker.sweep!r} has no parent run in experiment {tracker.experiment_name!r}")
    parent = tracker.client.get_run(parent_id)
    tags = parent.data.tags
    directions = json.loads(tags.get("qshield.objectives", '{"accuracy": "max", "robust_accuracy": "max"}'))
    constraints = json.loads(tags.get("qshield.constraints", "{}"))
    selection = json.loads(tags.get("qshield.selection", '{"rule": "robust_floor", "accuracy_floor": 0.02}'))
    return parent_id, directions, constraints, selection


def _point(run: Any, directions: dict[str, str], constraints: dict[str, float]) -> dict[str, float]:
    """What choosing reads of a trial run (:func:`orchestrator.scoring.selection_metrics`: the objectives, accuracy,
    robust accuracy and the constrained metrics), with every available 95% interval."""
    metrics = run.data.metrics
    keys = selection_metrics(directions, constraints)
    return {k: float(metrics.get(k, math.nan)) for k in keys} | {  # NaN: not logged (fails a constraint on it)
        k + s: float(metrics[k + s]) for k in keys for s in ("_ci_low", "_ci_high") if k + s in metrics}


def _flag(run: Any) -> str | None:
    """None when the trial's robustness numbers can be trusted (tag ``qshield.trustworthy``), else its flag."""
    tags = run.data.tags
    if tags.get("qshield.trustworthy") == "true":
        return None
    return tags.get("qshield.flag") or "unchecked (the run has no qshield.trustworthy tag)"


def select_champion(
    sweep: str,
    *,
    model_name: str | None = None,
    rule: str | None = None,
    weights: dict[str, float] | None = None,
    primary: str | None = None,
    accuracy_floor: float | None = None,
    experiment: str = "qshield",
    tracking_uri: str | None = None,
    verify: bool = True,
    tolerance: float = 1e-6,
    allow_flagged: bool = False,
) -> Selection:
    """Pick, register, verify and alias the champion of ``sweep`` (see the module docstring).

    A flagged trial (tag ``qshield.trustworthy`` not ``true``: masking, near chance, an attack without EOT/BPDA, no
    attack reaching its ε, diagnostics not run) is never chosen while any trial is unflagged; when every trial is
    flagged, :class:`SelectionError` unless ``allow_flagged`` (then the version is tagged
    ``qshield.trustworthy=false`` and the reason says its numbers are not trustworthy).

    ``rule`` and ``accuracy_floor`` default to the sweep space's ``selection`` (recorded on its parent run),
    else ``robust_floor`` with a floor of :data:`~orchestrator.scoring.DEFAULT_ACCURACY_FLOOR`. The champion's
    robustness card is made by the layer above (:func:`orchestrator.views.select_and_card`, which ``qshield select``,
    ``--select`` and ``qshield demo`` use).
    """
    tracker = SweepTracker(sweep, experiment, existing_store(tracking_uri))  # reading: never creates a store
    if tracker._call("find the experiment", lambda: tracker.client.get_experiment_by_name(experiment)) is None:
        raise SelectionError(f"experiment {experiment!r} does not exist at {tracker.tracking_uri}")
    runs = _finished_trials(tracker)
    parent_id, directions, constraints, recorded = _sweep_settings(tracker)
    rule = rule or str(recorded.get("rule", "robust_floor"))
    if accuracy_floor is None:
        accuracy_floor = float(recorded.get("accuracy_floor", DEFAULT_ACCURACY_FLOOR))
    # a non-finite objective (e.g. asr with no correctly classified image to attack) is not logged: such a trial
    # cannot be ranked (as in the sweep's own summary)
    runs = [r for r in runs if all(k in r.data.metrics for k in directions)]
    if not runs:
        raise SelectionError(f"sweep {sweep!r}: no finished trial has a value for every objective "
                             f"({', '.join(directions)}); nothing can be ranked")
    points = [_point(r, directions, constraints) for r in runs]
    ids = [r.data.tags.get(TRIAL, r.info.run_id) for r in runs]
    flags = [_flag(r) for r in runs]
    options = {"weights": weights, "primary": primary, "accuracy_floor": accuracy_floor, "flags": flags,
               "allow_flagged": allow_flagged}
    try:
        best, reason = choose(points, rule, directions, constraints=constraints, ids=ids, **options)
    except NoFeasiblePointError as exc:
        raise SelectionError(f"sweep {sweep!r}: {exc}") from exc
    except ValueError as exc:
        raise SelectionError(f"sweep {sweep!r}: {exc}") from exc
    runner_up = _challenger(points, directions, constraints, ids, best, rule, options)
    name = model_name or f"qshield-{sweep}"
    with use_tracking_uri(tracker.tracking_uri):
        _ensure_registered_model(tracker, name, sweep)  # issue 15: two selections at once both create it
        champion = _register(tracker, name, runs[best], points[best], rule, reason, sweep)
        selection = Selection(name, champion.version, runs[best].info.run_id, rule,
                              {k: points[best][k] for k in directions}, reason, ids[best])
        if verify:
            try:
                selection.verified = verify_version(name, champion.version, runs[best], tracker.tracking_uri,
                                                    tolerance)
            except Exception:
                _set_version_tag(tracker, name, champion.version, "qshield.verification", "failed")
                raise
            _set_version_tag(tracker, name, champion.version, "qshield.verification", "passed")
        _set_alias(tracker, name, CHAMPION, champion.version)
        if runner_up is not None:
            j, challenger_rule, why = runner_up
            challenger = _register(tracker, name, runs[j], points[j], challenger_rule, why, sweep)
            _set_alias(tracker, name, CHALLENGER, challenger.version)
            selection.challenger_version, selection.challenger_reason = challenger.version, why
    _record_on_parent(tracker, parent_id, selection, runs[best])
    return selection


def _challenger(
    points: list[dict[str, float]], directions: dict[str, str], constraints: dict[str, float], ids: list[str],
    best: int, rule: str, options: dict[str, Any],
) -> tuple[int, str, str] | None:
    """The challenger: ``(index, its rule tag, why)``, or None when no other trial qualifies.

    For ``robust_floor`` it is the most robust *other* trial of the Pareto front of the trials the champion was
    chosen among (unflagged and feasible: the trade-off a reviewer wants beside the champion, often more robust
    and a little less accurate than the floor allows); for the other rules, the runner-up by the same rule. A
    flagged trial is a challenger only beside a flagged champion (``allow_flagged``).
    """
    flags = options.get("flags") or [None] * len(points)
    others = [i for i in range(len(points)) if i != best]
    if not others:
        return None
    if rule == "robust_floor":
        pool = [i for i in apply_constraints(points, constraints) if i != best and (flags[best] or not flags[i])]
        front = [pool[j] for j in pareto_front([points[i] for i in pool], directions)] if pool else []
        if front:
            sign = {k: (1.0 if d == "max" else -1.0) for k, d in directions.items()}
            j = min(front, key=lambda i: (-points[i]["robust_accuracy"],
                                          tuple(-sign[k] * points[i][k] for k in directions), ids[i]))
            p = points[j]
            why = (f"the most robust other trial on the Pareto front: worst-case robust accuracy "
                   f"{_interval(p, 'robust_accuracy')}, clean accuracy {_interval(p, 'accuracy')}")
            return j, "challenger: most robust other Pareto-front trial", why
    rest = {**options, "flags": [flags[i] for i in others], "allow_flagged": bool(flags[best])}
    try:
        j, why = choose([points[i] for i in others], rule, directions, constraints=constraints,
                        ids=[ids[i] for i in others], **rest)
    except (NoFeasiblePointError, NoTrustworthyPointError):
        return None
    return others[j], f"challenger: runner-up by {rule}", f"runner-up by {rule}: {why}"


def _interval(point: dict[str, float], key: str) -> str:
    lo, hi = point.get(f"{key}_ci_low"), point.get(f"{key}_ci_high")
    return f"{point[key]:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def _record_on_parent(tracker: SweepTracker, parent_id: str, sel: Selection, run: Any) -> None:
    """The sweep's parent run carries the champion: its run id, version, reason (tags) and metrics."""
    tracker.set_tags(parent_id, {
        "qshield.champion_run_id": sel.run_id,
        "qshield.champion_trial_id": sel.trial_id,
        "qshield.champion_model": f"models:/{sel.model_name}/{sel.version}",
        "qshield.champion_reason": sel.reason,
    })
    keys = [k for k in run.data.metrics if k.split("_ci_")[0] in VERIFY_KEYS]
    tracker.log_metrics(parent_id, {f"champion_{k}": run.data.metrics[k] for k in keys})


def _ensure_registered_model(tracker: SweepTracker, name: str, sweep: str) -> None:
    """Create registered model ``name`` unless it exists; a selection that loses the race to create it (MLflow
    answers ``RESOURCE_ALREADY_EXISTS``) uses the one the other created."""
    client = tracker.client

    def ensure() -> None:
        try:
            client.get_registered_model(name)
            return
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        try:
            client.create_registered_model(name, tags={"qshield.sweep": sweep},
                                           description=f"Champion of sweep {sweep} (qshield)")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    tracker._call(f"create registered model {name!r}", ensure)


def _set_version_tag(tracker: SweepTracker, name: str, version: str, key: str, value: str) -> None:
    """Tag version ``version`` of ``name``. Selections racing each other tag the same version at the same moment:
    MLflow reads, then inserts the tag, so one of them can fail with a unique-constraint error; the tracker's retry
    (:func:`~orchestrator.tracking._tracker.call_mlflow`) does it again, and then it updates the row."""
    tracker._call(f"tag version {version} of {name!r}",
                  lambda: tracker.client.set_model_version_tag(name, version, key, value))


def _set_alias(tracker: SweepTracker, name: str, alias: str, version: str) -> None:
    """Point alias ``alias`` of ``name`` at ``version`` (racing selections: as :func:`_set_version_tag`)."""
    tracker._call(f"set alias {alias!r} of {name!r}",
                  lambda: tracker.client.set_registered_model_alias(name, alias, version))


def _model_id(run: Any) -> str:
    model_id = run.data.tags.get("qshield.model_id")
    outputs = getattr(getattr(run, "outputs", None), "model_outputs", None) or []
    if not model_id and outputs:
        model_id = outputs[-1].model_id
    if not model_id:
        raise SelectionError(
            f"trial run {run.info.run_id} has no logged MLflow model (runs of qshield before 0.2 logged plain "
            f"files); re-run the trial (`qshield rerun {run.info.run_id}`) or the sweep"
        )
    return str(model_id)


def _register(tracker: SweepTracker, name: str, run: Any, point: dict[str, float], rule: str, reason: str,
              sweep: str) -> Any:
    """The version of ``name`` for ``run``: the existing one if the run is already registered (idempotent),
    else a new one from the run's LoggedModel. Concurrent callers converge on the lowest version number."""
    run_id = run.info.run_id
    client = tracker.client
    existing = _versions_of(tracker, name, run_id)
    if existing:
        version = existing[0]
    else:
        model_id = _model_id(run)
        tags = {f"objective.{k}": f"{v:.6g}" for k, v in point.items() if math.isfinite(v)}
        tags.update({"qshield.sweep": sweep, "qshield.trial_id": run.data.tags.get(TRIAL, ""),
                     "qshield.trustworthy": str(_flag(run) is None).lower(),
                     "qshield.flag": run.data.tags.get("qshield.flag", "")})
        created = tracker._call(f"register run {run_id} as a version of {name!r}", lambda: client.create_model_version(
            name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id))
        versions = _versions_of(tracker, name, run_id)
        version = versions[0]
        if created.version != version.version:  # another selection registered the run first: keep theirs
            tracker._call(f"delete duplicate version {created.version} of {name!r}",
                          lambda: client.delete_model_version(name, created.version))
    _set_version_tag(tracker, name, version.version, "qshield.rule", rule)
    _set_version_tag(tracker, name, version.version, "qshield.reason", reason[:5000])
    return version


def _versions_of(tracker: SweepTracker, name: str, run_id: str) -> list[Any]:
    """Versions of ``name`` registered from ``run_id``, lowest version first."""
    found = tracker._call(f"search the versions of {name!r}", lambda: tracker.client.search_model_versions(
        f"name = '{quote(name)}' and run_id = '{quote(run_id)}'"))
    return sorted(found, key=lambda v: int(v.version))


def load_registered(model_uri: str, tracking_uri: str | None = None) -> tuple[Any, dict[str, Any], Path]:
    """Download ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` and load its weights safely.

    Returns ``(torch model, trial params, directory holding model.pt / params.json / space.json)``.
    ``models:/`` URIs resolve against the registry of ``tracking_uri`` (``$MLFLOW_REGISTRY_URI`` if set).
    """
    import mlflow

    from qshield.models import load_model

    from ._tracker import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(tracking_uri)
    registry_uri = os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri
    with use_tracking_uri(tracking_uri, registry_uri):
        try:
            artifact_uri = _version_download_uri(model_uri, tracking_uri, registry_uri)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri))
        except MlflowException as exc:
            raise SelectionError(f"cannot load {model_uri}: {exc.message if hasattr(exc, 'message') else exc}") from exc
    files = local / "artifacts" if (local / "artifacts" / MODEL_FILES["weights"]).exists() else local
    if not (files / MODEL_FILES["weights"]).exists():
        raise SelectionError(f"{model_uri} holds no {MODEL_FILES['weights']}; it was not logged by a qshield sweep")
    model, _ = load_model(files / MODEL_FILES["weights"])
    params = json.loads((files / "params.json").read_text()) if (files / "params.json").exists() else {}
    return model, params, files


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


def verify_version(
    name: str, version: str, run: Any, tracking_uri: str, tolerance: float
) -> dict[str, tuple[float, float]]:
    """Reload ``models:/<name>/<version>``, re-evaluate it on the test set and compare with the run's metrics;
    check that MLflow's ``pyfunc`` loader gives the model's own class probabilities on the input example."""
    import numpy as np
    import torch

    from ..trial import evaluate_trained, read_trial_record

    uri = f"models:/{name}/{version}"
    model, _, local = load_registered(uri, tracking_uri)
    _, space = read_trial_record(local, source=uri)
    fresh = evaluate_trained(model, space)
    checked = {}
    bad = []
    for key in VERIFY_KEYS:
        logged = run.data.metrics.get(key)
        if logged is None or key not in fresh:
            continue
        now = float(fresh[key])
        checked[key] = (float(logged), now)
        if not math.isclose(logged, now, abs_tol=tolerance):
            bad.append(f"{key}: logged {logged:.6f}, re-evaluated {now:.6f}")
    example = np.load(local / MODEL_FILES["input_example"], allow_pickle=False).astype(np.float32)
    served = load_checked_pyfunc(local.parent).predict(example)
    with torch.no_grad():
        own = torch.softmax(model.eval()(torch.from_numpy(example)), dim=1).numpy()
    if np.asarray(served).shape != own.shape or not np.allclose(served, own, atol=1e-5):
        bad.append("mlflow.pyfunc.load_model(...).predict(input example) differs from the model's probabilities")
    if bad:
        raise SelectionError(f"{uri} does not reproduce its logged metrics: " + "; ".join(bad))
    return checked
