"""Ray Tune callbacks: :class:`MLflowTrialCallback` mirrors every trial into MLflow (runs on the driver, one writer,
resume-safe); :func:`tensorboard_logger` is Tune's own TensorBoard logger, given each result without its lists.

Why the TensorBoard logger is wrapped (a few lines rather than none): Tune's ``TBXLoggerCallback`` plots every
number of a result as a scalar and every list as a histogram, and warns (once, printing the whole value) about a
list it cannot plot. A trial's final report also carries structured parts for the MLflow callback (the per-attack
table, the masking diagnostics with their ε schedule, the worst case's attack names), so Tune's logger printed
"You are trying to log an invalid value (ray/tune/attack_table=[...])" and drew histograms of ε schedules. It now
gets each result without its lists; the scalars in TensorBoard are the same. (A sweep started before this keeps
Tune's own logger when resumed: Tune restores the callbacks it was started with.)
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.logger import TBXLoggerCallback

from ..lease import check_lease
from ..tracking import SweepTracker

log = logging.getLogger(__name__)

#: result keys Tune adds itself; not worth logging as metrics
_TUNE_KEYS = {
    "timestamp", "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "done", "should_checkpoint", "date", "trial_id",
    "experiment_tag", "config", "training_iteration",
}


class MLflowTrialCallback(tune.Callback):
    """Logs params when a trial starts, per-epoch metrics as results arrive (an epoch run again after a restart
    from an earlier checkpoint is logged again, so that its latest point is the one Tune keeps), and on completion
    the final metrics, per-attack table, masking diagnostics and the trial's model as an MLflow Model
    (:func:`orchestrator.tracking.log_trial_model`: a pyfunc LoggedModel linked to the run).
    Run names carry the searched values (``trial 3f2a: arch=hybrid method=pgd_at``). Trials stopped early by the
    scheduler end as ``KILLED`` with ``qshield.stopped_early=true``; failed trials end as ``FAILED`` with the
    error in tag ``qshield.error``.

    Args:
        tracker: the sweep's tracker.
        searched: names of the searched parameters (they go into run names).
    """

    def __init__(self, tracker: SweepTracker, searched: list[str] | tuple[str, ...] = ()) -> None:
        self.tracker = tracker
        self.searched = tuple(searched)
        self._runs: dict[str, str] = {}
        self._last_step: dict[str, int] = {}

    def setup(self, **info: Any) -> None:
        self.tracker.parent_run_id()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        check_lease(self.tracker.sweep)  # issue 15: a driver that lost its sweep's lease stops its Tune loop

    def _run(self, trial: Any) -> str:
        if trial.trial_id not in self._runs:
            config = trial.config or {}
            label = " ".join(f"{k}={_short(config[k])}" for k in self.searched if k in config)
            name = f"trial {trial.trial_id}" + (f": {label}" if label else "")
            self._runs[trial.trial_id] = self.tracker.open_trial_run(trial.trial_id, params=config, run_name=name)[0]
        return self._runs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run(trial)
        # A trial (re)starts from its latest checkpoint (Tune restores it right after this call), so every epoch it
        # reports from now on is new work. An epoch an earlier attempt had already logged (it ran past that
        # checkpoint before a node loss or a driver restart) is logged again: the abandoned point stays in the
        # history (MLflow cannot delete one) and the latest point is the one Tune keeps.
        self._last_step[trial.trial_id] = checkpoint_epoch(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self._run(trial)
        metrics = {k: v for k, v in result.items() if k not in _TUNE_KEYS and not isinstance(v, (list, dict))}
        step = metrics_step(result)
        if result.get("final"):
            # the objectives: one value each (logged at the last epoch's step); the per-epoch series stay as they are
            metrics.pop("epoch", None)
            self.tracker.log_metrics(run_id, metrics, step=step)
            return
        if step <= self._last_step.get(trial.trial_id, -1):
            return  # at or before the checkpoint this attempt started from: not run again, logged before
        self._last_step[trial.trial_id] = step
        self.tracker.log_metrics(run_id, metrics, step=step)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run(trial)
        result = trial.last_result or {}
        if not result.get("final"):
            self.tracker.set_tags(run_id, {"qshield.stopped_early": "true"})
            self.tracker.finish(run_id, "KILLED")
            return
        # the final metrics were logged by on_trial_result when the final report arrived
        tags = {"qshield.trustworthy": str(bool(result.get("trustworthy"))).lower(),
                "qshield.flag": str(result.get("flag", ""))}
        if result.get("strongest_attack"):
            tags["qshield.strongest_attack"] = str(result["strongest_attack"])
        if result.get("device"):
            tags["qshield.device"] = str(result["device"])
        if result.get("attack_table"):
            self.tracker.log_table(run_id, result["attack_table"], "attacks.json")
        if result.get("diagnostics"):
            self.tracker.log_json(run_id, result["diagnostics"], "masking_diagnostics.json")
        for key in ("worst_case", "min_eps"):
            if result.get(key):
                self.tracker.log_json(run_id, result[key], f"{key}.json")
        checkpoint = trial.checkpoint
        if checkpoint is not None:
            with tempfile.TemporaryDirectory() as tmp:
                model_dir = Path(checkpoint.to_directory(tmp)) / "model"
                if model_dir.is_dir():  # the final metrics go with the model
                    tags["qshield.model_id"] = self.tracker.log_model(run_id, model_dir, step=metrics_step(result))
        # last, in one batch with the other tags: selection reads only trials marked final, so a crash above never
        # leaves a half-logged "final" run
        self.tracker.set_tags(run_id, {**tags, "qshield.final": "true"})
        self.tracker.finish(run_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run(trial)
        message = _trial_error_message(trial)
        self.tracker.set_tags(run_id, {"qshield.error": message})
        self.tracker.finish(run_id, "FAILED")


def metrics_step(result: dict) -> int:
    """The MLflow step a trial's result is logged at: its epoch (the final metrics: the last epoch's)."""
    return int(result.get("epoch", 0))


def checkpoint_epoch(trial: Any) -> int:
    """The epoch of the checkpoint a trial (re)starts from (0: none, it starts from scratch), from the result Tune
    recorded with that checkpoint."""
    result = getattr(trial, "latest_checkpoint_result", None)
    metrics = getattr(result, "metrics", None) or {}
    return int(metrics.get("epoch", 0) or 0)


def _short(value: Any) -> str:
    """A searched value as it reads in a run name (floats to 3 significant digits)."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _trial_error_message(trial: Any) -> str:
    """``ExceptionType: message`` of the trial's own exception (Ray wraps it; its ``cause`` is the original), from
    the error Tune stored; the last line of Tune's text trace only when the exception could not be read back."""
    try:
        error = trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - an unreadable pickled error falls back to the text trace below
        error = None
    if error is not None:
        return error_text(error)
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).exists():
        lines = Path(error_file).read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1][:2000]
    return "unknown error"


def error_text(error: BaseException) -> str:
    """``"Type: message"`` of the exception that ended a trial: the trainable's own exception, which Ray wraps in
    a ``RayTaskError`` (as ``cause``) whose text starts with the worker's traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    return f"{type(error).__name__}: {error}"[:2000]


class _NumbersTBXLoggerCallback(TBXLoggerCallback):
    """Tune's TensorBoard logger on each result without its lists (see the module docstring)."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        super().log_trial_result(iteration, trial, without_lists(result))


def without_lists(result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` with every list or tuple value removed, at any depth of nested mappings."""
    return {key: without_lists(value) if isinstance(value, Mapping) else value
            for key, value in result.items() if not isinstance(value, (list, tuple))}


def tensorboard_logger() -> list[tune.Callback]:
    """The sweep's TensorBoard logger, in a list for ``RunConfig(callbacks=...)``; empty where Tune would add none
    (``$TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``, or tensorboardX not installed: Tune then warns as usual)."""
    if os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0") == "1":
        return []
    try:
        return [_NumbersTBXLoggerCallback()]
    except ImportError:
        return []
