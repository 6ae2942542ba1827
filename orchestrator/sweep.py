"""Run a sweep: validate, attach to (or start) Ray, restore-or-start the Tuner, fit, score, log the summary.

Everything that can be checked is checked before Ray starts: the space (already validated on load), the storage
path (writable, enough free space), and the MLflow tracking store (the parent run is created or found first).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .scoring import knee_point, pareto_front
from .space import SweepSpace, make_tune_config, to_tune_param_space
from .tracking import SweepTracker, TrackingError

log = logging.getLogger(__name__)

#: refuse to start a local sweep with less free space than this on the storage path (bytes)
MIN_FREE_BYTES = 200 * 1024**2


class SweepSetupError(RuntimeError):
    """The sweep cannot start (storage, tracking or cluster problem); raised before any trial runs."""


@dataclass
class TrialRecord:
    """One trial of a finished (or interrupted) sweep as the driver saw it."""

    trial_id: str
    status: str  # "finished", "stopped_early" or "error"
    config: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None = None
    node_ip: str | None = None


@dataclass
class SweepResult:
    name: str
    storage_path: str
    tracking_uri: str
    parent_run_id: str
    directions: dict[str, str]
    trials: list[TrialRecord] = field(default_factory=list)
    front: list[int] = field(default_factory=list)  # indices into finished()
    knee: int | None = None  # index into finished()

    def finished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == "finished"]


def check_storage(storage_path: str) -> None:
    """A local storage path must be creatable, writable, and have at least :data:`MIN_FREE_BYTES` free."""
    if "://" in storage_path:
        return  # remote storage: checked by pyarrow when Tune opens it
    path = Path(storage_path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".qshield-write-test-"):
            pass
    except OSError as exc:
        raise SweepSetupError(f"storage_path={storage_path!r} is not writable: {exc}") from exc
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise SweepSetupError(
            f"storage_path={storage_path!r} has only {free / 1024**2:.0f} MiB free; at least "
            f"{MIN_FREE_BYTES / 1024**2:.0f} MiB are needed for checkpoints"
        )


def init_ray(num_cpus: int | None = None) -> None:
    """Attach to the cluster in ``$RAY_ADDRESS`` when set, else start a local Ray (no dashboard).

    ``address="local"``: a bare ``ray.init()`` would instead attach to the last cluster ``ray start`` recorded in
    ``/tmp/ray/ray_current_cluster`` (and then refuse ``num_cpus``, or hang on a stale record).
    """
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)


def run_sweep(
    space: SweepSpace,
    *,
    name: str | None = None,
    storage_path: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = "qshield",
    num_cpus: int | None = None,
    verbose: int = 1,
) -> SweepResult:
    """Run (or resume) the sweep ``space`` and return its trials, Pareto front and knee point.

    Restore-or-start: when ``<storage_path>/<name>`` holds a Tune experiment, it is restored (finished trials
    kept, unfinished ones resumed from their last checkpoint, errored ones retried); otherwise a new one starts.
    MLflow runs are found again by tags, so a resumed sweep never duplicates them.
    """
    from ray import tune

    from .callbacks import MLflowTrialCallback
    from .trainable import qshield_trainable

    name = name or space.name
    storage = storage_path or space.resolved_storage_path()
    if "://" not in storage:
        storage = os.path.abspath(os.path.expanduser(storage))
    check_storage(storage)
    tracker = SweepTracker(name, experiment, tracking_uri)
    parent = tracker.parent_run_id(params={"space": space.to_dict()})
    tracker.set_tags(
        parent,
        {
            "qshield.objectives": json.dumps(space.directions()),
            "qshield.constraints": json.dumps(space.constraints.as_dict()),
            "qshield.dataset": space.dataset.value,
            "qshield.storage_path": storage,
        },
    )
    # Per-epoch reports carry training metrics only; the objectives arrive with the final report, which is all
    # the searcher reads (on trial completion). Tune's strict check would demand them in every report.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    init_ray(num_cpus)

    resources = {"cpu": space.resources.cpus, "gpu": space.resources.gpus}
    trainable = tune.with_resources(tune.with_parameters(qshield_trainable, space_dict=space.to_dict()), resources)
    exp_path = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(exp_path):
        log.info("resuming sweep %s from %s", name, exp_path)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=to_tune_param_space(space),
            tune_config=make_tune_config(space),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                callbacks=[MLflowTrialCallback(tracker)],
                failure_config=tune.FailureConfig(max_failures=space.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                verbose=verbose,
            ),
        )
    try:
        grid = tuner.fit()
    except Exception as exc:  # Tune wraps a callback's exception in a TuneError holding the traceback as text
        lost = _tracking_error(exc)
        if lost is None:
            raise
        raise TrackingError(
            f"{lost}; the sweep stopped rather than run on untracked, and its state is kept in {exp_path}: run it "
            f"again with the same name to resume once the tracking server answers"
        ) from exc

    result = SweepResult(name, storage, tracker.tracking_uri, parent, space.directions())
    for r in grid:
        metrics = dict(r.metrics or {})
        trial_id = str(metrics.get("trial_id") or Path(r.path).name)
        if r.error is not None:
            status = "error"
        elif metrics.get("final"):
            status = "finished"
        else:
            status = "stopped_early"
        result.trials.append(
            TrialRecord(
                trial_id=trial_id,
                status=status,
                config=dict(r.config or {}),
                metrics=metrics,
                error=None if r.error is None else _error_text(r.error),
                node_ip=metrics.get("node_ip"),
            )
        )
    summarise(result, tracker)
    return result


def _tracking_error(exc: BaseException) -> TrackingError | None:
    """The :class:`TrackingError` in ``exc``'s chain of causes and contexts, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TrackingError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _error_text(error: BaseException) -> str:
    """``"Type: message"`` of the exception that ended a trial: the trainable's own exception, which Ray wraps in
    a ``RayTaskError`` (as ``cause``) whose text starts with the worker's traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    return f"{type(error).__name__}: {error}"[:2000]


class ParetoPlotData(NamedTuple):
    """What the Pareto plot draws: one entry per finished trial (plot from data; tests assert on this)."""

    trial_ids: tuple[str, ...]
    accuracy: tuple[float, ...]
    asr: tuple[float, ...]
    adversary_cost: tuple[float, ...]
    on_front: tuple[bool, ...]
    knee: int | None


def pareto_plot_data(result: SweepResult) -> ParetoPlotData:
    done = result.finished()
    front = set(result.front)
    return ParetoPlotData(
        tuple(t.trial_id for t in done),
        tuple(float(t.metrics.get("accuracy", float("nan"))) for t in done),
        tuple(float(t.metrics.get("asr", float("nan"))) for t in done),
        tuple(float(t.metrics.get("adversary_cost", float("nan"))) for t in done),
        tuple(i in front for i in range(len(done))),
        result.knee,
    )


def plot_pareto(data: ParetoPlotData, path: str | os.PathLike) -> ParetoPlotData:
    """Clean accuracy vs ASR (colour: adversary cost); front marked, knee starred. Returns ``data``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    sc = ax.scatter(data.asr, data.accuracy, c=data.adversary_cost, cmap="viridis", s=40, zorder=2)
    fig.colorbar(sc, ax=ax, label="adversary cost (queries / example)")
    front = [i for i, f in enumerate(data.on_front) if f]
    if front:
        ax.scatter([data.asr[i] for i in front], [data.accuracy[i] for i in front], facecolors="none",
                   edgecolors="red", s=140, linewidths=1.5, label="Pareto front", zorder=3)
    if data.knee is not None:
        ax.scatter([data.asr[data.knee]], [data.accuracy[data.knee]], marker="*", c="gold", edgecolors="black",
                   s=260, label="knee", zorder=4)
    for i, tid in enumerate(data.trial_ids):
        ax.annotate(tid[-5:], (data.asr[i], data.accuracy[i]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("attack success rate (mean over attacks) ↓")
    ax.set_ylabel("clean accuracy ↑")
    ax.set_title("Sweep trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return data


def summarise(result: SweepResult, tracker: SweepTracker | None = None) -> None:
    """Pareto front + knee over the finished trials; log the plot and trials table to the parent run.

    A finished trial with an undefined objective (``asr`` is NaN when none of the ``n_eval`` test images was
    classified correctly, so there was nothing to attack) stays in the table but cannot be ranked: it is left
    out of the front and the knee, with a warning (no Pareto plot when no trial can be ranked).
    """
    done = result.finished()
    ranked = [i for i, t in enumerate(done) if all(_finite(t.metrics.get(k)) for k in result.directions)]
    if len(ranked) < len(done):
        log.warning("sweep %s: trial(s) %s finished with a non-finite objective (of %s); not ranked", result.name,
                    ", ".join(done[i].trial_id for i in range(len(done)) if i not in ranked),
                    ", ".join(result.directions))
    points = [{k: float(done[i].metrics[k]) for k in result.directions} for i in ranked]
    if points:
        result.front = [ranked[j] for j in pareto_front(points, result.directions)]
        result.knee = ranked[knee_point(points, result.directions)]
    if tracker is None:
        return
    rows = [trial_row(t, i in result.front, i == result.knee) for i, t in enumerate(done)]
    rows += [trial_row(t, False, False) for t in result.trials if t.status != "finished"]
    if rows:
        tracker.log_table(result.parent_run_id, rows, "trials.json")
    if result.front:
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "pareto.png"
            plot_pareto(pareto_plot_data(result), png)
            tracker._call("log pareto plot", lambda: tracker.client.log_artifact(result.parent_run_id, str(png)))
    tracker.log_metrics(
        result.parent_run_id,
        {"trials_finished": len(done), "trials_failed": sum(t.status == "error" for t in result.trials),
         "trials_stopped_early": sum(t.status == "stopped_early" for t in result.trials),
         "pareto_front_size": len(result.front)},
    )
    tracker.finish(result.parent_run_id, "FINISHED")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_row(t: TrialRecord, on_front: bool, knee: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"trial_id": t.trial_id, "status": t.status}
    for key in ("accuracy", "asr", "robust_accuracy", "adversary_cost", "trustworthy"):
        row[key] = t.metrics.get(key)
    row.update({"pareto": on_front, "knee": knee})
    for key in ("arch", "entanglement", "noise", "noise_strength", "fusion", "w_q", "n_qubits", "depth", "lr"):
        if key in t.config:
            row[key] = t.config[key]
    if t.error:
        row["error"] = t.error
    return row


def format_summary(result: SweepResult) -> str:
    """A plain-text table of the trials with the Pareto front and knee marked (for the terminal)."""
    done = result.finished()
    lines = [f"Sweep {result.name!r}: {len(done)} finished, "
             f"{sum(t.status == 'stopped_early' for t in result.trials)} stopped early, "
             f"{sum(t.status == 'error' for t in result.trials)} failed"]
    header = f"{'':2}{'trial':<14}{'arch':<8}{'entangle':<9}{'noise':<18}{'fusion':<8}{'acc':>7}{'asr':>7}{'cost':>9}  flags"
    lines += [header, "-" * len(header)]
    for i, t in enumerate(done):
        mark = "★ " if i == result.knee else ("• " if i in result.front else "  ")
        c, m = t.config, t.metrics
        noise = f"{c.get('noise', '')}({c.get('noise_strength', 0):g})" if c.get("noise") not in (None, "none") else "none"
        lines.append(
            f"{mark}{t.trial_id[-13:]:<14}{str(c.get('arch', '')):<8}{str(c.get('entanglement', '')):<9}{noise:<18}"
            f"{str(c.get('fusion', '')):<8}{m.get('accuracy', float('nan')):>7.3f}{m.get('asr', float('nan')):>7.3f}"
            f"{m.get('adversary_cost', float('nan')):>9.1f}  {'ok' if m.get('trustworthy') else 'MASKING?'}"
        )
    for t in result.trials:
        if t.status == "error":
            lines.append(f"  {t.trial_id[-13:]:<14}FAILED: {t.error}")
    lines.append("★ knee point   • Pareto front (accuracy ↑, ASR ↓, adversary cost ↑)")
    return "\n".join(lines)
