"""Re-run one recorded sweep trial exactly and compare: ``qshield rerun RUN_ID [--tracking-uri URI]``.

A finished sweep trial records, in the MLflow Model logged by its nested run (folder ``artifacts/`` of the
LoggedModel; written by :func:`orchestrator.trial.run_trial`, logged by
:class:`orchestrator.runtime.MLflowTrialCallback`):

* ``params.json``: the sampled parameters of the trial (the Tune config);
* ``space.json``: the whole validated search space (dataset, limits, seed, attacks, resources, ...);
* ``model.pt``: the trained weights with their config (read with ``torch.load(weights_only=True)``);
* ``metrics.json``: the final metrics.

That is everything :func:`~orchestrator.trial.run_trial` needs: :func:`fetch_trial` downloads it and the run's
logged metric histories, :func:`rerun` trains and attacks the model again from scratch with the same
parameters, space and seed (on the CPU, with the trial's ``resources.cpus`` torch threads, as the Ray trainable
runs it), and compares every recorded value (per-epoch training metrics at every epoch, the final objectives,
per-attack and masking metrics) and every weight tensor with the re-run's. Wall-clock timings (keys containing
``seconds`` or ``time``) are printed but not compared.

Not reproducible this way: a trial that was resumed mid-training from a checkpoint (after a node loss or a
driver restart) restarted its optimiser at the resumed epoch, so a from-scratch re-run differs from it after that
epoch; the comparison then reports the first differing epoch.

The command line is ``qshield rerun RUN_ID`` (:mod:`orchestrator.cli`).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Comparison",
    "RecordedTrial",
    "RerunError",
    "RerunReport",
    "fetch_trial",
    "is_timing_key",
    "rerun",
    "rerun_from_run",
]

#: folder of a trial's logged MLflow model that holds its files (weights, params, space; orchestrator.tracking)
MODEL_ARTIFACT = "artifacts"
_RECORD_FILES = ("params.json", "space.json", "model.pt")


class RerunError(ValueError):
    """The run cannot be re-run: it does not exist, is not a finished sweep trial, or its record is incomplete.

    Raised before any training; the message names the run id, the tracking URI and what is needed.
    """


def is_timing_key(key: str) -> bool:
    """Wall-clock measurements (``attack_seconds``, ``attack/pgd/seconds_per_example``, ``epoch_time_s``)."""
    return "seconds" in key or "time" in key


@dataclass(frozen=True)
class RecordedTrial:
    """What a sweep recorded for one trial (downloaded to ``model_dir``)."""

    run_id: str
    tracking_uri: str
    sweep: str
    trial_id: str
    params: dict[str, Any]
    space: Any  # orchestrator.space.SweepSpace
    model_dir: Path
    final_metrics: dict[str, float]  # metrics.json, numeric entries (bools as 0/1)
    history: dict[str, dict[int, float]]  # MLflow metric key -> {step: value} (the last value logged per step)


@dataclass(frozen=True)
class Comparison:
    """One recorded value against its re-run value (``step``: the epoch for per-epoch metrics, else None)."""

    key: str
    step: int | None
    recorded: float | None
    rerun: float | None
    match: bool


@dataclass
class RerunReport:
    """The outcome of :func:`rerun`: every compared value, the weights check and the re-run's final metrics."""

    trial: RecordedTrial
    comparisons: list[Comparison] = field(default_factory=list)
    weights_match: bool = False
    weights_max_abs_diff: float = float("nan")
    final: dict[str, Any] = field(default_factory=dict)
    tolerance: float = 0.0
    timing_keys: set[str] = field(default_factory=set)  # wall-clock values seen in the re-run, not compared

    @property
    def reproduced(self) -> bool:
        return self.weights_match and all(c.match for c in self.comparisons)

    @property
    def mismatches(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.match]

    def format(self) -> str:
        """A plain-text table: recorded vs re-run for every compared value, then the verdict."""
        t = self.trial
        lines = [
            f"re-ran trial {t.trial_id!r} of sweep {t.sweep!r} (MLflow run {t.run_id} at {t.tracking_uri})",
            f"{'metric':<36}{'epoch':>6}  {'recorded':>20}  {'re-run':>20}  ",
        ]
        for c in self.comparisons:
            step = "" if c.step is None else str(c.step)
            lines.append(f"{c.key:<36}{step:>6}  {_fmt(c.recorded):>20}  {_fmt(c.rerun):>20}  "
                         f"{'ok' if c.match else 'DIFFERS'}")
        weights = "identical" if self.weights_max_abs_diff == 0 else f"max |diff| {self.weights_max_abs_diff:.3g}"
        lines.append(f"{'weights (model.pt)':<36}{'':>6}  {'recorded':>20}  {weights:>20}  "
                     f"{'ok' if self.weights_match else 'DIFFERS'}")
        if self.timing_keys:
            lines.append(f"not compared (wall-clock): {', '.join(sorted(self.timing_keys))}")
        n = len(self.comparisons) + 1
        if self.reproduced:
            lines.append(f"reproduced: all {n} values match (tolerance {self.tolerance:g})")
        else:
            lines.append(f"NOT reproduced: {len(self.mismatches) + (not self.weights_match)} of {n} values differ "
                         f"(tolerance {self.tolerance:g})")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "(not recorded)" if value is None else f"{value:.12g}"


def fetch_trial(run_id: str, dst: str | Path, *, tracking_uri: str | None = None) -> RecordedTrial:
    """Download the record of the finished sweep trial ``run_id`` into ``dst``.

    Raises:
        RerunError: the store or the run does not exist, the run is not a finished sweep trial, or its ``model``
            artifacts lack ``params.json`` / ``space.json`` / ``model.pt``. Nothing is written to the store.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from ..trial import read_trial_record
    from ._model import use_tracking_uri
    from ._tracker import ROLE, SWEEP, TRIAL, resolve_tracking_uri, sqlite_database

    uri = resolve_tracking_uri(tracking_uri)
    allowed = "the run id of a finished sweep trial (tag qshield.role=trial), as shown in the MLflow UI"
    db = sqlite_database(uri)
    if db is not None and not db.is_file():  # MlflowClient would create an empty store there
        raise RerunError(f"--tracking-uri={uri!r}: no MLflow store at {str(db)!r}; allowed values: the tracking URI "
                         f"the sweep logged to (--tracking-uri of `qshield sweep`, or $MLFLOW_TRACKING_URI)")
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise RerunError(f"RUN_ID={run_id!r}: no such MLflow run at {uri} ({exc.error_code}); "
                         f"allowed values: {allowed}") from None
    tags = run.data.tags
    if tags.get(ROLE) != "trial":
        raise RerunError(f"RUN_ID={run_id!r} is not a sweep trial (tag {ROLE}={tags.get(ROLE)!r}); "
                         f"allowed values: {allowed}")
    if run.info.status != "FINISHED" or tags.get("qshield.final") != "true":
        raise RerunError(f"RUN_ID={run_id!r}: trial {tags.get(TRIAL)!r} did not finish (status "
                         f"{run.info.status}); only finished trials record their model directory; "
                         f"allowed values: {allowed}")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    outputs = getattr(getattr(run, "outputs", None), "model_outputs", None) or []
    model_id = tags.get("qshield.model_id") or (outputs[-1].model_id if outputs else None)
    if not model_id:
        raise RerunError(f"RUN_ID={run_id!r}: the run has no logged MLflow model; the trial was not recorded "
                         f"by a qshield sweep")
    try:
        with use_tracking_uri(uri):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_id}", dst_path=str(dst)))
    except (MlflowException, OSError) as exc:
        raise RerunError(f"RUN_ID={run_id!r}: cannot download its model {model_id}: {exc}") from None
    local = local / MODEL_ARTIFACT
    missing = [name for name in _RECORD_FILES if not (local / name).is_file()]
    if missing:
        raise RerunError(f"RUN_ID={run_id!r}: its model's {MODEL_ARTIFACT}/ lack {', '.join(missing)}; "
                         f"the trial was not recorded by a qshield sweep")
    try:
        params, space = read_trial_record(local, source=f"{run_id}:{MODEL_ARTIFACT}")
    except ValueError as exc:
        raise RerunError(f"RUN_ID={run_id!r}: {exc}") from None
    final: dict[str, float] = {}
    if (local / "metrics.json").is_file():
        final = _numeric(json.loads((local / "metrics.json").read_text()))
    history: dict[str, dict[int, float]] = {}
    for key in run.data.metrics:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        history[key] = {int(m.step): float(m.value) for m in points}
    return RecordedTrial(run_id, uri, tags.get(SWEEP, "?"), tags.get(TRIAL, "?"), params, space, local, final,
                         history)


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or (isinstance(v, (int, float)) and math.isfinite(float(v))):
            out[k] = float(v)
    return out


def _same(a: float | None, b: float | None, tolerance: float) -> bool:
    if a is None or b is None:
        return False
    return a == b or abs(a - b) <= tolerance


def rerun(
    trial: RecordedTrial,
    *,
    tolerance: float = 0.0,
    threads: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
) -> RerunReport:
    """Train and attack ``trial`` again from scratch and compare with what was recorded.

    Args:
        trial: from :func:`fetch_trial`.
        tolerance: largest accepted absolute difference per value and per weight (default 0: bit-identical).
        threads: torch CPU threads during the re-run (default: the trial's ``resources.cpus``, as the Ray
            trainable sets them); the previous setting is restored afterwards.
        out: also write the re-run model file (``save_model`` format) here.
        progress: tqdm progress bars.
    """
    import torch

    from qshield.models import load_model

    from ..trial import MODEL_FILE, run_trial

    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance={tolerance!r} is invalid; allowed values: a finite number >= 0")
    epoch_rows: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rerun_model = Path(tmp) / MODEL_FILE

        def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
            if metrics.get("final"):
                if checkpoint_dir is not None:
                    shutil.copy(Path(checkpoint_dir) / "model" / MODEL_FILE, rerun_model)
            else:
                epoch_rows[int(metrics["epoch"])] = _numeric(metrics)

        before = torch.get_num_threads()
        torch.set_num_threads(threads or max(1, int(trial.space.resources.cpus)))
        try:
            final = run_trial(trial.params, trial.space, report, progress=progress)
        finally:
            torch.set_num_threads(before)
        recorded_model, _ = load_model(trial.model_dir / MODEL_FILE)
        new_model, _ = load_model(rerun_model)
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(rerun_model, out)
    report_ = RerunReport(trial, final=final, tolerance=float(tolerance))
    report_.weights_max_abs_diff, report_.weights_match = _compare_weights(recorded_model, new_model, tolerance)

    report_.timing_keys = {k for row in [final, *epoch_rows.values()] for k in row if is_timing_key(k)}
    for epoch in sorted(epoch_rows):
        for key, value in epoch_rows[epoch].items():
            if key == "epoch" or is_timing_key(key):
                continue
            recorded = trial.history.get(key, {}).get(epoch)
            report_.comparisons.append(Comparison(key, epoch, recorded, value, _same(recorded, value, tolerance)))
    for key, value in _numeric(final).items():
        if key == "final" or is_timing_key(key):
            continue
        recorded = trial.final_metrics.get(key)
        logged = trial.history.get(key)
        if logged:  # what MLflow holds (the value the sweep and the registry used) must agree as well
            step = max(logged)
            recorded_logged = logged[step]
            if recorded is not None and not _same(recorded, recorded_logged, 0.0):
                report_.comparisons.append(Comparison(f"{key} (metrics.json vs MLflow)", None, recorded,
                                                      recorded_logged, False))
            recorded = recorded_logged
        report_.comparisons.append(Comparison(key, None, recorded, value, _same(recorded, value, tolerance)))
    return report_


def _compare_weights(a: Any, b: Any, tolerance: float) -> tuple[float, bool]:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return float("inf"), False
    worst = 0.0
    for key in sa:
        x, y = sa[key], sb[key]
        if x.shape != y.shape or x.dtype != y.dtype:
            return float("inf"), False
        if not torch.equal(x, y):
            worst = max(worst, float((x.double() - y.double()).abs().max()))
    return worst, worst <= tolerance


def rerun_from_run(
    run_id: str,
    *,
    tracking_uri: str | None = None,
    tolerance: float = 0.0,
    threads: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
) -> RerunReport:
    """:func:`fetch_trial` into a temporary directory, then :func:`rerun`."""
    with tempfile.TemporaryDirectory(prefix="qshield-rerun-") as tmp:
        trial = fetch_trial(run_id, tmp, tracking_uri=tracking_uri)
        return rerun(trial, tolerance=tolerance, threads=threads, out=out, progress=progress)
