"""Ray Tune callback that mirrors every trial into MLflow (runs on the driver, one writer, resume-safe)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from .tracking import SweepTracker

log = logging.getLogger(__name__)

#: result keys Tune adds itself; not worth logging as metrics
_TUNE_KEYS = {
    "timestamp", "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "done", "should_checkpoint", "date", "trial_id",
    "experiment_tag", "config",
}


class MLflowTrialCallback(tune.Callback):
    """Logs params when a trial starts, per-epoch metrics as results arrive, and on completion the final
    metrics, per-attack table, masking diagnostics and the model (weights + config) from the trial's
    checkpoint. Trials stopped early by the scheduler end as ``KILLED`` with ``qshield.stopped_early=true``;
    failed trials end as ``FAILED`` with the error in tag ``qshield.error``.
    """

    def __init__(self, tracker: SweepTracker) -> None:
        self.tracker = tracker
        self._runs: dict[str, str] = {}

    def setup(self, **info: Any) -> None:
        self.tracker.parent_run_id()

    def _run(self, trial: Any) -> str:
        if trial.trial_id not in self._runs:
            self._runs[trial.trial_id] = self.tracker.trial_run_id(trial.trial_id, params=trial.config)
        return self._runs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._run(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        metrics = {k: v for k, v in result.items() if k not in _TUNE_KEYS and not isinstance(v, (list, dict))}
        self.tracker.log_metrics(self._run(trial), metrics, step=int(result.get("epoch", 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run(trial)
        result = trial.last_result or {}
        if not result.get("final"):
            self.tracker.set_tags(run_id, {"qshield.stopped_early": "true"})
            self.tracker.finish(run_id, "KILLED")
            return
        # the final metrics were logged by on_trial_result when the final report arrived
        self.tracker.set_tags(
            run_id,
            {"qshield.trustworthy": str(bool(result.get("trustworthy"))).lower(), "qshield.final": "true"},
        )
        if result.get("attack_table"):
            self.tracker.log_table(run_id, result["attack_table"], "attacks.json")
        if result.get("diagnostics"):
            self.tracker.log_json(run_id, result["diagnostics"], "masking_diagnostics.json")
        checkpoint = trial.checkpoint
        if checkpoint is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(checkpoint.to_directory(tmp))
                model_dir = path / "model"
                if model_dir.is_dir():
                    self.tracker.log_artifacts(run_id, model_dir, "model")
        self.tracker.finish(run_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run(trial)
        message = _trial_error_message(trial)
        self.tracker.set_tags(run_id, {"qshield.error": message})
        self.tracker.finish(run_id, "FAILED")


def _trial_error_message(trial: Any) -> str:
    """``ExceptionType: message`` of the trial's own exception (Ray wraps it; its ``cause`` is the original), from
    the error Tune stored; the last line of Tune's text trace only when the exception could not be read back."""
    from .sweep import _error_text

    try:
        error = trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - an unreadable pickled error falls back to the text trace below
        error = None
    if error is not None:
        return _error_text(error)
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).exists():
        lines = Path(error_file).read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1][:2000]
    return "unknown error"
