"""Running a sweep on Ray Tune: the driver (:func:`run_sweep`), the trainable, the Tune/Optuna conversion of a
space, the MLflow callback, and the summary at the end (Pareto front, champion, quantum gain).

Ray is imported only inside the functions that need it; importing this package does not start or require a
cluster. Its names are imported on first use (PEP 562): a Ray worker that only runs the trainable
(``orchestrator.runtime._trainable``) never imports MLflow, the summary or the driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; at run time see __getattr__
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

#: public name -> the submodule defining it
_WHERE = {
    "MLflowTrialCallback": "_callbacks",
    "error_text": "_callbacks",
    "CLASSICAL_ARCHS": "_summary",
    "TRIAL_COLUMNS": "_summary",
    "ParetoPlotData": "_summary",
    "SweepResult": "_summary",
    "TrialRecord": "_summary",
    "format_summary": "_summary",
    "is_classical": "_summary",
    "pareto_plot_data": "_summary",
    "plot_pareto": "_summary",
    "quantum_gain": "_summary",
    "summarise": "_summary",
    "trial_row": "_summary",
    "MIN_FREE_BYTES": "_sweep",
    "SweepSetupError": "_sweep",
    "check_storage": "_sweep",
    "init_ray": "_sweep",
    "optuna_storage": "_sweep",
    "redact_url": "_sweep",
    "run_sweep": "_sweep",
    "qshield_trainable": "_trainable",
    "make_sampler": "_tune",
    "make_scheduler": "_tune",
    "make_search_alg": "_tune",
    "make_tune_config": "_tune",
    "to_tune_param_space": "_tune",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
