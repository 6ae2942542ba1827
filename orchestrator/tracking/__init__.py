"""Tracking and registry: the MLflow runs of a sweep (:class:`SweepTracker`), each trial's model as an MLflow
``pyfunc`` LoggedModel, choosing / registering / verifying the champion, and re-running a recorded trial.
"""

from __future__ import annotations

from ._model import (
    MODEL_FILES,
    MODEL_NAME,
    PYFUNC_CODE,
    UntrustedModelError,
    load_checked_pyfunc,
    log_trial_model,
    pip_requirements,
    signature_for,
    use_tracking_uri,
)
from ._registry import (
    CHALLENGER,
    CHAMPION,
    VERIFY_KEYS,
    Selection,
    SelectionError,
    load_registered,
    select_champion,
    verify_version,
)
from ._rerun import RecordedTrial, RerunError, RerunReport, fetch_trial, rerun, rerun_from_run
from ._tracker import (
    DEFAULT_TRACKING_URI,
    EXPERIMENT_KIND,
    MODEL_TRAINING,
    PARENT,
    ROLE,
    SWEEP,
    TRIAL,
    SweepTracker,
    TrackingError,
    default_artifact_location,
    flatten,
    quote,
    resolve_tracking_uri,
    run_environment_tags,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_KIND",
    "MODEL_FILES",
    "MODEL_NAME",
    "MODEL_TRAINING",
    "PARENT",
    "PYFUNC_CODE",
    "ROLE",
    "SWEEP",
    "TRIAL",
    "VERIFY_KEYS",
    "RecordedTrial",
    "RerunError",
    "RerunReport",
    "Selection",
    "SelectionError",
    "SweepTracker",
    "TrackingError",
    "UntrustedModelError",
    "default_artifact_location",
    "fetch_trial",
    "flatten",
    "load_checked_pyfunc",
    "load_registered",
    "log_trial_model",
    "pip_requirements",
    "quote",
    "rerun",
    "rerun_from_run",
    "resolve_tracking_uri",
    "run_environment_tags",
    "select_champion",
    "signature_for",
    "use_tracking_uri",
    "verify_version",
]
