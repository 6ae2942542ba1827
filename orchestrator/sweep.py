"""Run a sweep: validate, attach to (or start) Ray, restore-or-start the Tuner, fit, score, log the summary.

Everything that can be checked is checked before Ray starts: the space (already validated on load), the storage
path (writable, enough free space), the sweep's lease (one live driver per sweep name, :mod:`orchestrator.lease`)
and the MLflow tracking store (the parent run is created or found first).
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

from .lease import SweepLease
from .scoring import NoFeasiblePointError, choose, knee_point, pareto_front
from .space import Arch, SweepSpace, make_tune_config, to_tune_param_space
from .tracking import SweepTracker, TrackingError, resolve_tracking_uri

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
    selection: dict[str, Any] = field(default_factory=lambda: {"rule": "robust_floor", "accuracy_floor": 0.02})
    constraints: dict[str, float] = field(default_factory=dict)
    champion: int | None = None  # index into finished(): what `select` with the space's rule registers
    champion_reason: str = ""
    quantum_gain: dict[str, Any] | None = None

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

    One live driver per sweep name (:mod:`orchestrator.lease`): the sweep's lease is taken after the storage check
    and before the tracking store or Ray is touched (:class:`~orchestrator.lease.LeaseHeldError` when another live
    driver holds it), and given back when this function ends, also on an exception.
    """
    name = name or space.name
    storage = storage_path or space.resolved_storage_path()
    if "://" not in storage:
        storage = os.path.abspath(os.path.expanduser(storage))
    check_storage(storage)
    # issue 15: one live driver per sweep name; released on every exit (a SIGKILLed driver's lease expires)
    with SweepLease.for_sweep(name, storage, tracking_uri=resolve_tracking_uri(tracking_uri)) as lease:
        return _run_leased(space, name, storage, lease, tracking_uri, experiment, num_cpus, verbose)


def _run_leased(space: SweepSpace, name: str, storage: str, lease: SweepLease, tracking_uri: str | None,
                experiment: str, num_cpus: int | None, verbose: int) -> SweepResult:
    """:func:`run_sweep` once the sweep's lease is held."""
    from ray import tune

    from .callbacks import MLflowTrialCallback
    from .trainable import qshield_trainable

    tracker = SweepTracker(name, experiment, tracking_uri)
    lease.check_parent_run(tracker)  # issue 15: refuse a RUNNING parent fed from another storage path
    parent = tracker.parent_run_id(params={"space": space.to_dict()})
    study_storage = optuna_storage(tracker.tracking_uri)
    tracker.set_tags(
        parent,
        {
            "qshield.objectives": json.dumps(space.directions()),
            "qshield.constraints": json.dumps(space.constraints.as_dict()),
            "qshield.selection": json.dumps(space.selection.as_dict()),
            "qshield.dataset": space.dataset.value,
            "qshield.storage_path": storage,
            "qshield.optuna_study": name,
            "qshield.optuna_storage": redact_url(study_storage) if study_storage else "in memory",
            **lease.tags(),  # issue 15: the driver holding the sweep
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
            tune_config=make_tune_config(space, storage=study_storage, study_name=name),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                callbacks=[MLflowTrialCallback(tracker, space.parameters.searched())],
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

    result = SweepResult(name, storage, tracker.tracking_uri, parent, space.directions(),
                         selection=space.selection.as_dict(), constraints=space.constraints.as_dict())
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


def optuna_storage(tracking_uri: str) -> str | None:
    """Where the sweep's Optuna study is persisted: ``$QSHIELD_OPTUNA_STORAGE`` when set (e.g. the tracking
    server's PostgreSQL database on a cluster), else ``optuna.db`` next to a local ``sqlite:///`` tracking store,
    else None (in memory)."""
    env = os.environ.get("QSHIELD_OPTUNA_STORAGE")
    if env:
        return env
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return f"{prefix}{Path(tracking_uri[len(prefix):]).resolve().parent / 'optuna.db'}"
    return None


def redact_url(url: str) -> str:
    """A database URL with its password replaced by ``***`` (safe to log)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy understands: show nothing of it
        return "<unparsable storage URL>"


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
    accuracy_ci: tuple[tuple[float, float], ...]
    robust_accuracy: tuple[float, ...]
    robust_accuracy_ci: tuple[tuple[float, float], ...]
    arch: tuple[str, ...]
    on_front: tuple[bool, ...]
    champion: int | None


def _metric(t: TrialRecord, key: str) -> float:
    value = t.metrics.get(key)
    return float(value) if _finite(value) else float("nan")


def _ci(t: TrialRecord, key: str) -> tuple[float, float]:
    return (_metric(t, f"{key}_ci_low"), _metric(t, f"{key}_ci_high"))


def pareto_plot_data(result: SweepResult) -> ParetoPlotData:
    done = result.finished()
    front = set(result.front)
    return ParetoPlotData(
        tuple(t.trial_id for t in done),
        tuple(_metric(t, "accuracy") for t in done),
        tuple(_ci(t, "accuracy") for t in done),
        tuple(_metric(t, "robust_accuracy") for t in done),
        tuple(_ci(t, "robust_accuracy") for t in done),
        tuple(str(t.config.get("arch", "")) for t in done),
        tuple(i in front for i in range(len(done))),
        result.champion,
    )


def plot_pareto(data: ParetoPlotData, path: str | os.PathLike) -> ParetoPlotData:
    """Clean accuracy vs worst-case robust accuracy with 95% intervals, one marker per architecture; the Pareto
    front ringed, the champion starred. Returns ``data``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    markers = {"hybrid": "o", "cnn": "s", "dnn": "^", "resnet18": "D"}
    for arch in sorted(set(data.arch)):
        idx = [i for i, a in enumerate(data.arch) if a == arch]
        x = [data.robust_accuracy[i] for i in idx]
        y = [data.accuracy[i] for i in idx]
        xerr = [[max(0.0, x[j] - data.robust_accuracy_ci[i][0]) for j, i in enumerate(idx)],
                [max(0.0, data.robust_accuracy_ci[i][1] - x[j]) for j, i in enumerate(idx)]]
        yerr = [[max(0.0, y[j] - data.accuracy_ci[i][0]) for j, i in enumerate(idx)],
                [max(0.0, data.accuracy_ci[i][1] - y[j]) for j, i in enumerate(idx)]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=markers.get(arch, "P"), ms=7, capsize=2, alpha=0.85,
                    label=arch or "trial", zorder=2)
    front = [i for i, f in enumerate(data.on_front) if f]
    if front:
        ax.scatter([data.robust_accuracy[i] for i in front], [data.accuracy[i] for i in front], facecolors="none",
                   edgecolors="red", s=170, linewidths=1.5, label="Pareto front", zorder=3)
    if data.champion is not None:
        ax.scatter([data.robust_accuracy[data.champion]], [data.accuracy[data.champion]], marker="*", c="gold",
                   edgecolors="black", s=300, label="champion", zorder=4)
    for i, tid in enumerate(data.trial_ids):
        ax.annotate(tid[-5:], (data.robust_accuracy[i], data.accuracy[i]), fontsize=7, xytext=(5, -10),
                    textcoords="offset points")
    ax.set_xlabel("worst-case robust accuracy (all attacks) ↑")
    ax.set_ylabel("clean accuracy ↑")
    ax.set_title("Sweep trials (bars: 95% Wilson intervals)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return data


#: Architectures without a quantum part: a sweep's classical controls.
CLASSICAL_ARCHS = frozenset({Arch.DNN.value, Arch.CNN.value, Arch.RESNET18.value})


def is_classical(t: TrialRecord) -> bool:
    """The trial's model has no quantum part (a classical control)."""
    return str(t.config.get("arch", "")) in CLASSICAL_ARCHS


def _count(t: TrialRecord, rate: str, n: str) -> tuple[int, int]:
    total = int(t.metrics.get(n) or 0)
    return round(_metric(t, rate) * total), total


def quantum_gain(result: SweepResult, ranked: list[int]) -> dict[str, Any]:
    """Best hybrid vs best classical control of the sweep (each the pick of the sweep's selection rule among its
    kind): the gains in worst-case robust accuracy and in clean accuracy with Newcombe 95% intervals.

    Returns ``{"available": False, "message": ...}`` when the sweep has no classical control or no hybrid.
    """
    from qshield.evaluation import difference_interval

    done = result.finished()
    hybrids = [i for i in ranked if not is_classical(done[i])]
    controls = [i for i in ranked if is_classical(done[i])]
    if not controls:
        return {"available": False, "message": "no classical control in this sweep"}
    if not hybrids:
        return {"available": False, "message": "no hybrid in this sweep (classical models only)"}
    best_h, best_c = (_pick(result, group)[0] for group in (hybrids, controls))
    h, c = done[best_h], done[best_c]
    out: dict[str, Any] = {"available": True, "hybrid_trial": h.trial_id, "control_trial": c.trial_id,
                           "hybrid_arch": str(h.config.get("arch")), "control_arch": str(c.config.get("arch"))}
    for rate, n in (("robust_accuracy", "n_eval"), ("accuracy", "n_test")):
        (kh, nh), (kc, nc) = _count(h, rate, n), _count(c, rate, n)
        d, lo, hi = difference_interval(kh, nh, kc, nc)
        out[rate] = {"hybrid": _metric(h, rate), "control": _metric(c, rate), "gain": d, "ci_low": lo, "ci_high": hi}
    g = out["robust_accuracy"]
    verdict = ("significant" if g["ci_low"] > 0 else "significantly negative" if g["ci_high"] < 0
               else "not significant (the interval contains 0)")
    out["message"] = (
        f"best hybrid (trial {h.trial_id}) vs best classical control (trial {c.trial_id}, {out['control_arch']}): "
        f"worst-case robust accuracy {g['gain']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] ({verdict}); "
        f"clean accuracy {out['accuracy']['gain']:+.3f} "
        f"[{out['accuracy']['ci_low']:+.3f}, {out['accuracy']['ci_high']:+.3f}]"
    )
    return out


def _pick(result: SweepResult, candidates: list[int]) -> tuple[int, str]:
    """The trial the sweep's selection rule picks among ``candidates`` (indices into finished()), and why."""
    done = result.finished()
    keys = [*result.directions, "accuracy", "robust_accuracy"]
    points = []
    for i in candidates:
        point = {k: float(done[i].metrics[k]) for k in keys if _finite(done[i].metrics.get(k))}
        for k in keys:
            for suffix in ("_ci_low", "_ci_high"):
                if _finite(done[i].metrics.get(k + suffix)):
                    point[k + suffix] = float(done[i].metrics[k + suffix])
        points.append(point)
    rule = result.selection.get("rule", "robust_floor")
    floor = float(result.selection.get("accuracy_floor", 0.02))
    try:
        j, reason = choose(points, rule, result.directions, constraints=result.constraints,
                           ids=[done[i].trial_id for i in candidates], accuracy_floor=floor)
    except NoFeasiblePointError as exc:  # constraints exclude every trial: fall back to no constraints
        j, reason = choose(points, rule, result.directions, ids=[done[i].trial_id for i in candidates],
                           accuracy_floor=floor)
        reason += f" (note: {exc})"
    return candidates[j], reason


def summarise(result: SweepResult, tracker: SweepTracker | None = None) -> None:
    """Pareto front, knee and the champion by the sweep's rule over the finished trials, the quantum gain; log the
    plot, the trials table (with run ids) and a summary to the parent run.

    A finished trial with an undefined objective (e.g. ``asr`` is NaN when none of the ``n_eval`` test images was
    classified correctly, so there was nothing to attack) stays in the table but cannot be ranked: it is left
    out of the front, the knee and the choice, with a warning (no Pareto plot when no trial can be ranked).
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
        # robust_floor also reads accuracy and robust_accuracy, objectives or not
        extra = ("accuracy", "robust_accuracy") if result.selection.get("rule", "robust_floor") == "robust_floor" else ()
        choosable = [i for i in ranked if all(_finite(done[i].metrics.get(k)) for k in extra)]
        if choosable:
            result.champion, result.champion_reason = _pick(result, choosable)
            result.quantum_gain = quantum_gain(result, choosable)
    if tracker is None:
        return
    runs = {r.data.tags.get("qshield.trial_id"): r.info.run_id for r in tracker.trial_runs()}
    rows = [trial_row(t, i in result.front, i == result.champion, runs.get(t.trial_id)) for i, t in enumerate(done)]
    rows += [trial_row(t, False, False, runs.get(t.trial_id)) for t in result.trials if t.status != "finished"]
    if rows:
        tracker.log_table(result.parent_run_id, rows, "trials.json")
    if result.front:
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "pareto.png"
            plot_pareto(pareto_plot_data(result), png)
            tracker.log_artifacts(result.parent_run_id, tmp)
    tracker.log_json(result.parent_run_id, result.quantum_gain or {"available": False, "message": "no ranked trial"},
                     "quantum_gain.json")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "summary.md").write_text(format_summary(result, markdown=True), encoding="utf-8")
        tracker.log_artifacts(result.parent_run_id, tmp)
    tracker.log_metrics(
        result.parent_run_id,
        {"trials_finished": len(done), "trials_failed": sum(t.status == "error" for t in result.trials),
         "trials_stopped_early": sum(t.status == "stopped_early" for t in result.trials),
         "pareto_front_size": len(result.front)},
    )
    tracker.finish(result.parent_run_id, "FINISHED")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: Columns of the trials table (parent-run artifact ``trials.json``) besides the searched parameters.
TRIAL_COLUMNS = (
    "accuracy", "accuracy_ci_low", "accuracy_ci_high", "robust_accuracy", "robust_accuracy_ci_low",
    "robust_accuracy_ci_high", "asr", "asr_ci_low", "asr_ci_high", "strongest_attack", "adversary_cost",
    "trustworthy", "flag",
)


def trial_row(t: TrialRecord, on_front: bool, champion: bool, run_id: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"trial_id": t.trial_id, "run_id": run_id, "status": t.status}
    for key in TRIAL_COLUMNS:
        row[key] = t.metrics.get(key)
    row.update({"pareto": on_front, "champion": champion})
    for key in ("arch", "method", "entanglement", "noise", "noise_strength", "fusion", "w_q", "n_qubits", "depth",
                "measurement", "lr", "epochs"):
        if key in t.config:
            row[key] = t.config[key]
    if t.error:
        row["error"] = t.error
    return row


def _pm(t: TrialRecord, key: str) -> str:
    value = _metric(t, key)
    lo, hi = _ci(t, key)
    if math.isnan(value):
        return "  n/a"
    if math.isnan(lo) or math.isnan(hi):
        return f"{value:.3f}"
    return f"{value:.3f} [{lo:.2f},{hi:.2f}]"


def format_summary(result: SweepResult, markdown: bool = False) -> str:
    """The trials with their numbers and intervals, the Pareto front and champion marked, why the champion won,
    and the quantum gain (plain text for the terminal, or Markdown for the parent run's ``summary.md``)."""
    done = result.finished()
    head = (f"Sweep {result.name!r}: {len(done)} finished, "
            f"{sum(t.status == 'stopped_early' for t in result.trials)} stopped early, "
            f"{sum(t.status == 'error' for t in result.trials)} failed")
    columns = ["", "trial", "arch", "method", "circuit", "clean acc [95% CI]", "robust acc [95% CI]",
               "strongest", "min ε", "flags"]
    rows = []
    for i, t in enumerate(done):
        mark = "★" if i == result.champion else ("•" if i in result.front else "")
        c, m = t.config, t.metrics
        circuit = "-" if is_classical(t) else (
            f"{c.get('entanglement', '')}/{c.get('noise', '')}" + (f"({c.get('noise_strength', 0):g})"
                                                                   if c.get("noise") not in (None, "none") else ""))
        cost = _metric(t, "adversary_cost")
        rows.append([mark, t.trial_id[-13:], str(c.get("arch", "")), str(c.get("method", "")), circuit,
                     _pm(t, "accuracy"), _pm(t, "robust_accuracy"), str(m.get("strongest_attack") or "-"),
                     "n/a" if math.isnan(cost) else f"{cost * 255:.1f}/255",
                     "ok" if m.get("trustworthy") else str(m.get("flag") or "MASKING?")])
    failed = [f"FAILED {t.trial_id}: {t.error}" for t in result.trials if t.status == "error"]
    legend = ("★ champion (rule " + str(result.selection.get("rule")) + ")   • Pareto front ("
              + ", ".join(f"{k} {'↑' if d == 'max' else '↓'}" for k, d in result.directions.items()) + ")   "
              "robust acc: per-example worst case over all attacks; min ε: median smallest flipping ε")
    lines = [head]
    if markdown:
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in rows]
        lines += [""] + [f"* {f}" for f in failed] + ["", legend]
    else:
        widths = [max(len(columns[k]), *(len(r[k]) for r in rows)) if rows else len(columns[k])
                  for k in range(len(columns))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines += [fmt.format(*columns), "-" * (sum(widths) + 2 * len(widths))]
        lines += [fmt.format(*r) for r in rows] + failed + [legend]
    if result.champion is not None:
        lines.append(("" if not markdown else "\n") + f"Champion: trial {done[result.champion].trial_id} — "
                     f"{result.champion_reason}.")
    if result.quantum_gain is not None:
        lines.append(f"Quantum gain: {result.quantum_gain['message']}.")
    return "\n".join(lines)
