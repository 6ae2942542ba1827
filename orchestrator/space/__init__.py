"""Search spaces: the YAML schema of a sweep, its validation, and its conversion to Ray Tune + Optuna.

``load_space(path)`` reads and validates a YAML file (``docs/search-spaces.md``) into a frozen
:class:`SweepSpace` before Ray starts; a bad file raises :class:`SpaceError` naming the file, line, key path,
value and what is allowed. Turning a space into Ray Tune objects is :mod:`orchestrator.runtime`'s job.
"""

from __future__ import annotations

from ._domains import (
    PARAMETERS,
    Arch,
    Backbone,
    Choice,
    Domain,
    Fixed,
    FusionMode,
    BackendName,
    SweepOnly,
    IntRange,
    LogUniform,
    ParamSpec,
    TrainMethod,
    Uniform,
    plain_value,
)
from ._load import (
    SHIPPED_DIR,
    Problem,
    SpaceError,
    load_space,
    parse_space,
    replace_space,
    resolve_space_path,
    shipped_spaces,
)
from ._model import (
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

__all__ = [
    # loading
    "load_space",
    "parse_space",
    "replace_space",
    "resolve_space_path",
    "shipped_spaces",
    "SHIPPED_DIR",
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
    "FusionMode",
    "BackendName",
    "SweepOnly",
    "TrainMethod",
    "AttackName",
    "Objective",
    "SearchAlgorithm",
    "SchedulerName",
    "DEFAULT_EPS",
    "EPS_ATTACKS",
    "VAL_METRIC",
    "plain_value",
]
