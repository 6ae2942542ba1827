"""Search spaces: the YAML schema of a sweep, its validation, and its conversion to Ray Tune + Optuna.

``load_space(path)`` reads and validates a YAML file (``docs/search-spaces.md``) into a frozen
:class:`SweepSpace` before Ray starts; a bad file raises :class:`SpaceError` naming the file, line, key path,
value and what is allowed. ``to_tune_param_space`` / ``make_search_alg`` / ``make_scheduler`` /
``make_tune_config`` turn it into Ray Tune objects (Ray is imported only by those functions).
"""

from __future__ import annotations

from ._space_domains import (
    PARAMETERS,
    Arch,
    Backbone,
    Choice,
    Domain,
    Fixed,
    Fusion,
    IntRange,
    LogUniform,
    ParamSpec,
    QuantumBackend,
    TrainMethod,
    Uniform,
)
from ._space_load import Problem, SpaceError, load_space, parse_space
from ._space_model import (
    DEFAULT_EPS,
    EPS_ATTACKS,
    VAL_METRIC,
    AttackName,
    AttacksConfig,
    AttackSettings,
    Constraints,
    Dataset,
    EarlyStopping,
    Objective,
    Parameters,
    Resources,
    SchedulerName,
    SearchAlgorithm,
    SearchConfig,
    SelectionConfig,
    SweepSpace,
)
from ._space_tune import make_sampler, make_scheduler, make_search_alg, make_tune_config, to_tune_param_space

__all__ = [
    # loading
    "load_space",
    "parse_space",
    "SpaceError",
    "Problem",
    # the model
    "SweepSpace",
    "Parameters",
    "AttacksConfig",
    "AttackSettings",
    "Constraints",
    "Resources",
    "SearchConfig",
    "SelectionConfig",
    "EarlyStopping",
    # domains and the parameter table
    "Domain",
    "Fixed",
    "Choice",
    "Uniform",
    "LogUniform",
    "IntRange",
    "ParamSpec",
    "PARAMETERS",
    # enums and constants
    "Dataset",
    "Arch",
    "Backbone",
    "Fusion",
    "QuantumBackend",
    "TrainMethod",
    "AttackName",
    "Objective",
    "SearchAlgorithm",
    "SchedulerName",
    "DEFAULT_EPS",
    "EPS_ATTACKS",
    "VAL_METRIC",
    # Ray Tune conversion
    "to_tune_param_space",
    "make_search_alg",
    "make_sampler",
    "make_scheduler",
    "make_tune_config",
]
