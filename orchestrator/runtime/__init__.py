"""Running a sweep on Ray Tune: the driver (:func:`run_sweep`), the trainable, the Tune/Optuna conversion of a
space, the MLflow callback, and the summary at the end (Pareto front, champion, quantum gain).

Ray is imported only inside the functions that need it; importing this package does not start or require a
cluster.
"""

from __future__ import annotations

from ._callbacks import MLflowTrialCallback, error_text
from ._summary import (
    CLASSICAL_ARCHS,
    TRIAL_COLUMNS,
    ParetoPlotData,
    SweepResult,
    TrialRecord,
    format_summary,
    is_classical,
    pareto_plot_data,
    plot_pareto,
    quantum_gain,
    summarise,
    trial_row,
)
from ._sweep import MIN_FREE_BYTES, SweepSetupError, check_storage, init_ray, optuna_storage, redact_url, run_sweep
from ._trainable import qshield_trainable
from ._tune import make_sampler, make_scheduler, make_search_alg, make_tune_config, to_tune_param_space

__all__ = [
    "CLASSICAL_ARCHS",
    "MIN_FREE_BYTES",
    "TRIAL_COLUMNS",
    "MLflowTrialCallback",
    "ParetoPlotData",
    "SweepResult",
    "SweepSetupError",
    "TrialRecord",
    "check_storage",
    "error_text",
    "format_summary",
    "init_ray",
    "is_classical",
    "make_sampler",
    "make_scheduler",
    "make_search_alg",
    "make_tune_config",
    "optuna_storage",
    "pareto_plot_data",
    "plot_pareto",
    "qshield_trainable",
    "quantum_gain",
    "redact_url",
    "run_sweep",
    "summarise",
    "to_tune_param_space",
    "trial_row",
]
