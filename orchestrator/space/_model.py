"""The validated sweep description: :class:`SweepSpace` and its parts (pydantic v2, frozen, ``extra="forbid"``).

Every model rejects unknown keys with the list of allowed keys, every choice is an enum, every number has a
range. Errors carry the key path so :func:`orchestrator.space.load_space` can report
``parameters.entanglement.choice[1]`` together with the value and what is allowed. The schema is documented in
``docs/search-spaces.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from qshield.attacks import ATTACKS, PAPER_ATTACKS
from qshield.attacks import DEFAULT_EPS as _ATTACK_DEFAULT_EPS
from qshield.quantum import CircuitSpec, Measurement, Noise

from qshield.data import DATASETS
from qshield.models import default_n_qubits
from qshield.schema import Choice as SchemaChoice  # the string enum (not the domain `Choice` of _domains)
from qshield.schema import config_error, registry_choice, validate_field
from qshield.schema import Eps as _EpsRule

from ._domains import (
    PARAMETERS,
    Arch,
    Domain,
    Fixed,
    domain_max,
    domain_values,
    fail,
    parse_domain,
    parse_number,
)
from ..scoring import DEFAULT_ACCURACY_FLOOR, Direction, Rule

__all__ = [
    "Dataset",
    "AttackName",
    "Objective",
    "SearchAlgorithm",
    "SchedulerName",
    "DEFAULT_EPS",
    "EPS_ATTACKS",
    "VAL_METRIC",
    "Parameters",
    "AttackSettings",
    "AttacksConfig",
    "Constraints",
    "SelectionConfig",
    "Resources",
    "SearchConfig",
    "EarlyStopping",
    "SweepSpace",
]


#: Datasets a sweep can use: the names of ``qshield.data.DATASETS`` (registering a dataset there adds it here).
Dataset = registry_choice("Dataset", list(DATASETS), "Datasets a sweep can use (qshield.data.DATASETS).")

#: Attacks evaluated after training: the names of ``qshield.attacks.ATTACKS`` (settings in ``docs/attacks.md``).
AttackName = registry_choice("AttackName", list(ATTACKS), "Attacks a sweep can evaluate (qshield.attacks.ATTACKS).")


class Objective(SchemaChoice):
    """Metrics a trial reports at its end (the keys of its final Tune result; ``orchestrator.trial``).

    * ``accuracy``: clean test accuracy (the paper's ODR), a fraction in [0, 1].
    * ``robust_accuracy``: per-example worst case over the attack suite (RobustBench/AutoAttack): images
      classified correctly clean and after every attack / images, in [0, 1].
    * ``asr``: worst-case attack success rate: attacked images fooled by at least one attack / attacked images
      (only correctly classified images are attacked), in [0, 1].
    * ``adversary_cost``: median smallest L∞ ε that flips an attacked image (bisection with PGD, censored at
      ``attacks.min_eps.eps_max``), in [0, 1] — measures the model, not the attack's configuration.
    """

    ACCURACY = "accuracy"
    ASR = "asr"
    ROBUST_ACCURACY = "robust_accuracy"
    ADVERSARY_COST = "adversary_cost"


class SearchAlgorithm(SchemaChoice):
    """Optuna sampler behind Ray Tune's ``OptunaSearch``: multi-objective TPE or NSGA-II."""

    TPE = "tpe"
    NSGA2 = "nsga2"


class SchedulerName(SchemaChoice):
    """Trial scheduler for early stopping."""

    ASHA = "asha"


#: Default ε per dataset (L∞, images in [0, 1]) — ``qshield.attacks.DEFAULT_EPS``, the QShield reference's
#: documented values: MNIST 32/255, OrganAMNIST 8/255, CIFAR-10 2/255 (mnist5k/digits as MNIST, CINIC-10 as
#: CIFAR-10). Keyed by dataset name.
DEFAULT_EPS: Mapping[str, float] = _ATTACK_DEFAULT_EPS

#: Attacks with an L∞ ε budget (the presets with ``uses_eps``; C&W-L2, DeepFool and OnePixel have none).
EPS_ATTACKS: frozenset[AttackName] = frozenset(AttackName(n) for n, p in ATTACKS.items() if p.uses_eps)

#: Metric the trainable reports after every epoch when early stopping is on (validation accuracy, in [0, 1]).
VAL_METRIC = "val_accuracy"


# ----------------------------------------------------------------------------------------------------------
# base model and field types


class _Strict(BaseModel):
    """Frozen, no unknown keys; a miss lists the allowed keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        allowed = ", ".join(cls.model_fields)
        if isinstance(data, BaseModel):
            return data
        if not isinstance(data, Mapping):
            fail(f"expected a mapping with keys from: {allowed}", data)
        for key in data:
            if key not in cls.model_fields:
                fail(f"unknown key {key!r}; allowed keys: {allowed}", key, (str(key),))
        return data


def _eps_at(value: Any, subpath: tuple[str | int, ...] = ()) -> float:
    """ε as a float in [0, 1] by the library's one ε rule (``qshield.schema.Eps``); accepts ``"8/255"``."""
    try:
        return float(_EPS.validate_python(value))
    except ValueError as exc:
        fail(config_error(exc) if isinstance(exc, ValidationError) else str(exc), value, subpath)


def _eps(value: Any) -> Any:
    return _eps_at(value)


_EPS = TypeAdapter(_EpsRule)
Eps = Annotated[float, BeforeValidator(_eps)]
PosInt = Annotated[int, Field(strict=True, ge=1)]
NonNegInt = Annotated[int, Field(strict=True, ge=0)]
StrictBool = Annotated[bool, Field(strict=True)]


# ----------------------------------------------------------------------------------------------------------
# parameters


class _ParametersBase(_Strict):
    """The hyper-parameters of a trial, each fixed or searched; one field per entry of
    :data:`~orchestrator.space.PARAMETERS` (the searchable fields of the library's configs), its default the
    config field's default.

    Quantum and fusion parameters only matter for ``arch: hybrid``; ``backbone`` only for the hybrid model;
    ``w_q`` only for ``fusion: fixed`` (w_c = 1 − w_q); ``pgd_steps`` only for ``method: pgd_at``.
    """

    @field_validator("*", mode="plain")
    @classmethod
    def _parse(cls, value: Any, info: ValidationInfo) -> Domain:
        assert info.field_name is not None
        return parse_domain(info.field_name, value)

    def domains(self) -> dict[str, Domain]:
        """``{name: domain}`` for every parameter, in table order."""
        return {name: getattr(self, name) for name in PARAMETERS}

    def searched(self) -> list[str]:
        """Names of the searched (non-fixed) parameters."""
        return [name for name, d in self.domains().items() if d.searched]

    def to_dict(self) -> dict[str, Any]:
        """The YAML form: scalars for fixed parameters, ``{form: ...}`` for searched ones."""
        return {name: d.to_yaml() for name, d in self.domains().items()}


Parameters = create_model(  # type: ignore[call-overload]
    "Parameters",
    __base__=_ParametersBase,
    __module__=__name__,
    **{name: (Domain, Fixed(spec.validate(spec.default))) for name, spec in PARAMETERS.items()},
)
Parameters.__doc__ = _ParametersBase.__doc__


# ----------------------------------------------------------------------------------------------------------
# attacks

# Per-attack overrides are checked against qshield.attacks' presets (the one list of what each attack accepts:
# ``ATTACKS[name].params``, torchattacks' argument names, plus ``eps`` for the L∞ attacks).


def _attack_params(name: str, value: Any) -> dict[str, Any] | None:
    """Validate the overrides of attack ``name`` against its preset; fractions like ``"2/255"`` are accepted."""
    if value is None:
        return None
    preset = ATTACKS[name]
    allowed = (("eps",) if preset.uses_eps else ()) + preset.param_names
    if not isinstance(value, Mapping):
        fail(f"settings of {name} must be a mapping with keys from: {', '.join(allowed)}", value)
    out: dict[str, Any] = {}
    for key, raw in value.items():
        if key not in allowed:
            fail(f"unknown key {key!r} for {name}; allowed keys: {', '.join(allowed)}", key, (str(key),))
        if key == "eps":
            out[key] = _eps_at(raw, (key,))
            continue
        param = preset.param(key)
        converted = raw
        if param.kind is float and isinstance(raw, str) and (number := parse_number(raw)) is not None:
            converted = number
        try:
            out[key] = param.validate(name, converted)
        except ValueError as exc:
            fail(str(exc), raw, (key,))
    return out


class _AttackSettingsBase(_Strict):
    """Per-attack overrides, keyed by attack name; an attack left out runs with its preset (the reference's
    settings, ``docs/attacks.md``). One key per attack of ``qshield.attacks.ATTACKS``; its keys are that preset's
    ``param_names`` (e.g. pgd: alpha, steps, random_start, eot_iter) and ``eps`` for the L∞ attacks."""

    @field_validator("*", mode="plain")
    @classmethod
    def _check(cls, value: Any, info: ValidationInfo) -> dict[str, Any] | None:
        assert info.field_name is not None
        return _attack_params(info.field_name, value)

    def given(self) -> dict[Any, dict[str, Any]]:
        """``{attack: overrides}`` for the attacks that have an entry."""
        return {AttackName(k): v for k in type(self).model_fields if (v := getattr(self, k)) is not None}


AttackSettings = create_model(  # type: ignore[call-overload]
    "AttackSettings",
    __base__=_AttackSettingsBase,
    __module__=__name__,
    **{name: (dict[str, Any] | None, None) for name in ATTACKS},
)
AttackSettings.__doc__ = _AttackSettingsBase.__doc__


#: The masking checks' settings in a sweep when a space gives none (``true``): 32 images, to keep a trial's
#: evaluation short; the rest are ``qshield.evaluation.MaskingConfig``'s defaults.
_DEFAULT_DIAGNOSTICS: Mapping[str, Any] = MappingProxyType({"n_examples": 32})


def _library_overrides(
    config: Any, value: Any, what: str, *, skip: tuple[str, ...] = (), defaults: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """Overrides of a library config (a :class:`qshield.schema.Config`) given in a space: unknown keys and bad
    values refused by the config's own rules, with its message; null skips the measurement."""
    if value is None:
        return None
    allowed = [name for name in config.model_fields if name not in skip]
    if not isinstance(value, Mapping):
        fail(f"{what} must be a mapping with keys from: {', '.join(allowed)} (or null to skip it)", value)
    out = dict(defaults or {})
    for key, raw in value.items():
        if key not in allowed:
            fail(f"unknown key {key!r}; allowed keys: {', '.join(allowed)}", key, (str(key),))
        try:
            out[key] = _plain_json(validate_field(config, key, raw))
        except ValueError as exc:
            fail(str(exc), raw, (str(key),))
    try:
        config(**out)
    except ValueError as exc:
        fail(str(exc), value)
    return out


def _plain_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class AttacksConfig(_Strict):
    """What the trial evaluates after training.

    Attributes:
        names: attacks to run (default: the paper's eight).
        eps: global L∞ ε for the ε-bounded attacks; None → :data:`DEFAULT_EPS` of the dataset.
        n_eval: test examples evaluated (the first ``n_eval`` of the test split; only the correctly
            classified ones are attacked).
        batch_size: evaluation batch size.
        diagnostics: settings of the gradient-masking checks (``qshield.evaluation.MaskingConfig`` keys, e.g.
            ``n_examples``, ``steps``, ``eps_schedule``, ``square_queries``; ``true`` = the sweep's defaults,
            ``{n_examples: 32}``; ``false``/null skips them). ``n_examples`` is capped at ``n_eval``; ε, seed and
            batch size are the sweep's.
        settings: per-attack overrides (:class:`AttackSettings`).
        min_eps: settings of the smallest-flipping-ε measurement behind ``adversary_cost``
            (``qshield.evaluation.MinEpsConfig`` keys: ``eps_max``, ``rounds``, ``steps``, ``step_ratio``;
            ``{}`` = its defaults), or null to skip it.
    """

    names: tuple[AttackName, ...] = tuple(AttackName(n) for n in PAPER_ATTACKS)
    eps: Eps | None = None
    n_eval: PosInt = 256
    batch_size: PosInt = 128
    diagnostics: dict[str, Any] | None = Field(default_factory=lambda: dict(_DEFAULT_DIAGNOSTICS))
    settings: AttackSettings = AttackSettings()
    min_eps: dict[str, Any] | None = Field(default_factory=dict)

    @field_validator("min_eps", mode="before")
    @classmethod
    def _min_eps(cls, value: Any) -> Any:
        from qshield.evaluation import MinEpsConfig

        return _library_overrides(MinEpsConfig, value, "min_eps", skip=("params",))

    @field_validator("diagnostics", mode="before")
    @classmethod
    def _diagnostics(cls, value: Any) -> Any:
        from qshield.evaluation import MaskingConfig

        if value is True:
            return dict(_DEFAULT_DIAGNOSTICS)
        if value is False:
            return None
        return _library_overrides(MaskingConfig, value, "diagnostics", skip=("eps", "seed", "batch_size"),
                                  defaults=_DEFAULT_DIAGNOSTICS)

    @field_validator("names", mode="after")
    @classmethod
    def _names(cls, names: tuple[AttackName, ...]) -> tuple[AttackName, ...]:
        if not names:
            fail(f"names needs at least one attack; allowed values: {_values(AttackName)}", list(names))
        for i, name in enumerate(names):
            if name in names[:i]:
                fail("duplicate attack (each attack once)", name.value, (i,))
        return names

    @model_validator(mode="after")
    def _settings_for_evaluated(self) -> AttacksConfig:
        for name in self.settings.given():
            if name not in self.names:
                fail(
                    f"settings given for an attack that is not evaluated; evaluated: {_values(self.names)}",
                    name.value,
                    ("settings", name.value),
                )
        return self


# ----------------------------------------------------------------------------------------------------------
# objectives, constraints, resources, search, early stopping

#: Objectives when a space names none: clean accuracy up, worst-case robust accuracy up.
_DEFAULT_OBJECTIVES: Mapping[Objective, Direction] = MappingProxyType(
    {Objective.ACCURACY: Direction.MAX, Objective.ROBUST_ACCURACY: Direction.MAX}
)

_Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Constraints(_Strict):
    """Feasibility bounds on trial metrics, used when selecting a champion (``orchestrator.scoring``).

    ``min_<metric>``: the metric must be >= the bound; ``max_<metric>``: <= the bound. Every metric is in [0, 1]
    (``adversary_cost`` is an ε on the [0, 1] pixel scale). A trial without a value for a constrained metric
    does not satisfy it.
    """

    min_accuracy: _Fraction | None = None
    max_accuracy: _Fraction | None = None
    min_asr: _Fraction | None = None
    max_asr: _Fraction | None = None
    min_robust_accuracy: _Fraction | None = None
    max_robust_accuracy: _Fraction | None = None
    min_adversary_cost: _Fraction | None = None
    max_adversary_cost: _Fraction | None = None

    @model_validator(mode="after")
    def _not_inverted(self) -> Constraints:
        for metric in Objective:
            lo, hi = getattr(self, f"min_{metric.value}"), getattr(self, f"max_{metric.value}")
            if lo is not None and hi is not None and lo > hi:
                fail(f"empty range: min_{metric.value}={lo} > max_{metric.value}={hi}", hi, (f"max_{metric.value}",))
        return self

    def as_dict(self) -> dict[str, float]:
        """The bounds that are set, as ``{"min_accuracy": 0.9, ...}`` (the form ``scoring`` takes)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class SelectionConfig(_Strict):
    """How the champion is chosen (``orchestrator.scoring.choose``): ``rule`` (default ``robust_floor``: the best
    worst-case robust accuracy among trials whose clean accuracy is within ``accuracy_floor`` of the best) and the
    floor. ``qshield select`` and ``--select`` use these unless told otherwise."""

    rule: Rule = Rule.ROBUST_FLOOR
    accuracy_floor: _Fraction = DEFAULT_ACCURACY_FLOOR

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule.value, "accuracy_floor": self.accuracy_floor}


class Resources(_Strict):
    """Resources per trial (Ray placement): CPUs > 0; GPUs >= 0, fractional below 1 (trials share a GPU)."""

    cpus: Annotated[float, Field(gt=0.0)] = 1.0
    gpus: Annotated[float, Field(ge=0.0)] = 0.0

    @field_validator("gpus", mode="after")
    @classmethod
    def _whole_above_one(cls, gpus: float) -> float:
        if gpus > 1 and not float(gpus).is_integer():
            fail("gpus above 1 must be a whole number (Ray shares a GPU only in fractions below 1)", gpus)
        return gpus

    def to_tune(self) -> dict[str, float]:
        """The form ``tune.with_resources`` takes: ``{"cpu": cpus, "gpu": gpus}``."""
        return {"cpu": self.cpus, "gpu": self.gpus}


class SearchConfig(_Strict):
    """The Optuna sampler: ``tpe`` (``TPESampler``, option ``n_startup_trials``) or ``nsga2``
    (``NSGAIISampler``, option ``population_size``); both seeded with the sweep's ``seed``.

    ``points_to_evaluate``: configurations tried first (Optuna's ``enqueue_trial``), each giving a value for every
    searched parameter, e.g. a classical control next to the hybrid; checked against the parameters' domains.
    """

    algorithm: SearchAlgorithm = SearchAlgorithm.TPE
    n_startup_trials: NonNegInt | None = None
    population_size: Annotated[int, Field(strict=True, ge=2)] | None = None
    points_to_evaluate: tuple[dict[str, Any], ...] = ()

    @model_validator(mode="after")
    def _options_match(self) -> SearchConfig:
        if self.algorithm is SearchAlgorithm.TPE and self.population_size is not None:
            fail(
                "population_size is an nsga2 option; for tpe use n_startup_trials",
                self.population_size,
                ("population_size",),
            )
        if self.algorithm is SearchAlgorithm.NSGA2 and self.n_startup_trials is not None:
            fail(
                "n_startup_trials is a tpe option; for nsga2 use population_size",
                self.n_startup_trials,
                ("n_startup_trials",),
            )
        return self


class EarlyStopping(_Strict):
    """ASHA on :data:`VAL_METRIC` (validation accuracy, maximised) during training only.

    ``time_attr`` is Tune's ``training_iteration`` (one report per epoch); ``max_t`` is the largest number of
    epochs the space allows; a trial stopped early is never attacked.
    """

    scheduler: SchedulerName = SchedulerName.ASHA
    grace_period: PosInt = 1
    reduction_factor: Annotated[float, Field(gt=1.0)] = 2.0


# ----------------------------------------------------------------------------------------------------------
# the sweep


class SweepSpace(_Strict):
    """A multi-objective sweep: data, parameters, attacks, objectives and how Ray Tune runs it.

    Data: ``dataset`` from ``qshield.data`` read under ``data_root`` (None: ``$QSHIELD_DATA``, else ``./data``),
    optionally subsampled to ``limit_train``/``limit_test`` images (seeded, stratified) and class-balanced by
    subsampling every class to the smallest (``balance``, as the paper does). ``seed`` seeds the Optuna sampler
    and the trials' training.

    Load with :func:`orchestrator.space.load_space`; convert with :func:`orchestrator.space.to_tune_param_space`
    and :func:`orchestrator.space.make_search_alg`. See ``docs/search-spaces.md``.
    """

    NAME_PATTERN: ClassVar[str] = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=100)]
    description: str = ""
    dataset: Dataset
    data_root: str | None = None
    limit_train: PosInt | None = None
    limit_test: PosInt | None = None
    balance: StrictBool = False
    seed: NonNegInt = 0
    parameters: Parameters = Parameters()
    attacks: AttacksConfig = AttacksConfig()
    objectives: dict[Objective, Direction] = Field(default_factory=lambda: dict(_DEFAULT_OBJECTIVES))
    constraints: Constraints = Constraints()
    selection: SelectionConfig = SelectionConfig()
    resources: Resources = Resources()
    num_samples: PosInt = 10
    max_concurrent: PosInt | None = None
    search: SearchConfig = SearchConfig()
    early_stopping: EarlyStopping | None = None
    storage_path: str | None = None
    max_failures: NonNegInt = 0

    @field_validator("objectives", mode="after")
    @classmethod
    def _some_objective(cls, objectives: dict[Objective, Direction]) -> dict[Objective, Direction]:
        if not objectives:
            fail(f"objectives needs at least one metric; allowed keys: {_values(Objective)}", objectives)
        return objectives

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpace:
        params = self.parameters
        if not params.searched():
            fail(
                "no parameter is searched; give at least one parameter a {choice: ...}, {uniform: ...}, "
                "{loguniform: ...} or {int: ...} form (Optuna needs a search space)",
                "all fixed",
                ("parameters",),
            )
        if self.limit_test is not None and self.attacks.n_eval > self.limit_test:
            fail(
                f"n_eval exceeds limit_test={self.limit_test}; allowed: 1..{self.limit_test}",
                self.attacks.n_eval,
                ("attacks", "n_eval"),
            )
        if self.early_stopping is not None:
            max_epochs = int(domain_max(params.epochs))
            if self.early_stopping.grace_period > max_epochs:
                fail(
                    f"grace_period exceeds the largest epochs value; allowed: 1..{max_epochs}",
                    self.early_stopping.grace_period,
                    ("early_stopping", "grace_period"),
                )
        self._check_circuit_memory()
        self._check_attacks_resolve()
        self._check_points_to_evaluate()
        if self.selection.rule in (Rule.WEIGHTED,):
            fail("rule 'weighted' needs weights: choose it with `qshield select --rule weighted --weights ...`; "
                 f"allowed here: {', '.join(repr(r.value) for r in Rule if r is not Rule.WEIGHTED)}",
                 self.selection.rule.value, ("selection", "rule"))
        cost_bounds = [k for k in self.constraints.as_dict() if k.endswith(Objective.ADVERSARY_COST.value)]
        if (Objective.ADVERSARY_COST in self.objectives or cost_bounds) and self.attacks.min_eps is None:
            used = "objective adversary_cost" if Objective.ADVERSARY_COST in self.objectives else \
                f"constraint {cost_bounds[0]}"
            fail(f"{used} needs attacks.min_eps (the smallest-flipping-ε measurement); "
                 "allowed: a mapping ({} for its defaults)", None, ("attacks", "min_eps"))
        return self

    def _check_points_to_evaluate(self) -> None:
        """Every point names each searched parameter once, with a value its domain allows."""
        searched = self.parameters.searched()
        domains = self.parameters.domains()
        for i, point in enumerate(self.search.points_to_evaluate):
            where = ("search", "points_to_evaluate", i)
            for key in point:
                if key not in searched:
                    fail(f"{key!r} is not a searched parameter; allowed keys: {', '.join(searched)}", key, where)
            missing = [k for k in searched if k not in point]
            if missing:
                fail(f"a point must give every searched parameter; missing: {', '.join(missing)}", dict(point), where)
            for key, raw in point.items():
                value = parse_domain(key, raw)  # a fixed value, checked against the parameter's rules
                if not _in_domain(value.value, domains[key]):
                    fail(f"{key}={raw!r} is outside its searched domain {domains[key].to_yaml()}", raw, (*where, key))

    def _check_attacks_resolve(self) -> None:
        """Each attack exactly as a trial will build it (``qshield.attacks.AttackConfig.resolve``): e.g. an explicit
        ``alpha`` whose ``alpha * steps`` cannot reach ε is refused here, before Ray starts."""
        from qshield.attacks import AttackConfig

        for name in self.attacks.names:
            try:
                AttackConfig(name.value, self.eps_for(name), self.attack_overrides(name)).resolve(self.dataset.value)
            except ValueError as exc:
                given = self.attacks.settings.given().get(name) or {}
                fail(str(exc), given.get("alpha", given), ("attacks", "settings", name.value))

    def _check_circuit_memory(self) -> None:
        """Refuse, before Ray starts, a qubit count whose simulated state exceeds qshield's memory budget."""
        archs = domain_values(self.parameters.arch) or ()
        if Arch.HYBRID not in archs and Arch.REFERENCE_HYBRID not in archs:
            return
        n_min, n_max = self.n_qubits_range()
        noises = domain_values(self.parameters.noise) or ()
        noisy = any(n is not Noise.NONE for n in noises) and domain_max(self.parameters.noise_strength) > 0
        try:
            CircuitSpec.create(
                n_max, 1, noise="depolarizing" if noisy else "none", noise_strength=0.5 if noisy else 0.0
            )
        except ValueError as exc:
            fail(str(exc), n_max, ("parameters", "n_qubits"))
        # the model's own rule on the smallest qubit count a hybrid can draw (probs: 2**n basis states >= classes)
        measurements = [Measurement.parse(m, "measurement") for m in domain_values(self.parameters.measurement) or ()]
        if Measurement.PROBS in measurements:
            from qshield.models import ModelConfig

            try:
                ModelConfig(arch="hybrid", num_classes=self._num_classes(), n_qubits=n_min, measurement="probs")
            except ValueError as exc:
                fail(f"{exc} (dataset {self.dataset.value!r})", n_min, ("parameters", "n_qubits"))

    def _num_classes(self) -> int:
        from qshield.data import dataset_spec

        return dataset_spec(self.dataset.value).num_classes

    def resolved_domains(self) -> dict[str, Domain]:
        """``{name: domain}`` of every parameter with ``n_qubits: null`` resolved to the model's rule for the
        dataset's classes (what trials get and MLflow logs)."""
        domains = self.parameters.domains()
        if domains["n_qubits"] == Fixed(None):
            domains["n_qubits"] = Fixed(default_n_qubits(self._num_classes()))
        return domains

    def n_qubits_range(self) -> tuple[int, int]:
        """The smallest and largest qubit count a trial can get (null: the model's rule for the dataset's
        classes, ``qshield.models.default_n_qubits``)."""
        domain = self.parameters.n_qubits
        values = domain_values(domain)
        if values is None:
            return int(getattr(domain, "lo")), int(getattr(domain, "hi"))
        resolved = [default_n_qubits(self._num_classes()) if v is None else int(v) for v in values]
        return min(resolved), max(resolved)

    # ---- convenience for the trainable and the runner ----

    @property
    def max_epochs(self) -> int:
        """The largest ``epochs`` value a trial can get (ASHA's ``max_t``)."""
        return int(domain_max(self.parameters.epochs))

    def eps_for(self, attack: AttackName | str) -> float | None:
        """ε for ``attack``: its own setting, else the global ``attacks.eps``, else the dataset's default;
        None for attacks without an ε (cw, deepfool, onepixel)."""
        name = _attack(attack)
        if name not in EPS_ATTACKS:
            return None
        own = (self.attacks.settings.given().get(name) or {}).get("eps")
        if own is not None:
            return float(own)
        if self.attacks.eps is not None:
            return float(self.attacks.eps)
        return float(DEFAULT_EPS[self.dataset.value])

    def threat_eps(self) -> float:
        """The sweep's L∞ threat model: ``attacks.eps``, else the dataset's default (PGD adversarial training
        trains at it)."""
        return float(self.attacks.eps) if self.attacks.eps is not None else float(DEFAULT_EPS[self.dataset.value])

    def masking_config(self) -> Any:
        """``qshield.evaluation.MaskingConfig`` of ``attacks.diagnostics`` (None when they are skipped), its
        ``n_examples`` capped at ``attacks.n_eval`` and seeded with the sweep's seed."""
        from qshield.evaluation import MaskingConfig

        settings = self.attacks.diagnostics
        if settings is None:
            return None
        n_examples = min(int(settings.get("n_examples", MaskingConfig().n_examples)), self.attacks.n_eval)
        return MaskingConfig(**{**settings, "n_examples": n_examples, "seed": self.seed,
                                "batch_size": self.attacks.batch_size})

    def min_eps_config(self) -> Any:
        """``qshield.evaluation.MinEpsConfig`` of ``attacks.min_eps`` (None when it is skipped)."""
        from qshield.evaluation import MinEpsConfig

        return None if self.attacks.min_eps is None else MinEpsConfig(**self.attacks.min_eps)

    def attack_overrides(self, attack: AttackName | str) -> dict[str, Any]:
        """The non-ε overrides given for ``attack`` (keys of its ``qshield.attacks`` preset), validated."""
        name = _attack(attack)
        settings = self.attacks.settings.given().get(name) or {}
        return {k: v for k, v in settings.items() if k != "eps"}

    def directions(self) -> dict[str, str]:
        """``{metric: "max"|"min"}`` in objective order (the form ``orchestrator.scoring`` takes)."""
        return {k.value: d.value for k, d in self.objectives.items()}

    def resolved_storage_path(self) -> str:
        """``storage_path`` for Ray: a URI unchanged, a local path absolute (``~`` expanded, relative to the
        current directory); default ``~/ray_results`` (Ray's own default)."""
        path = self.storage_path or "~/ray_results"
        if "://" in path:
            return path
        return os.path.abspath(os.path.expanduser(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-able dict that :func:`orchestrator.space.parse_space` reads back to an equal space."""
        data = self.model_dump(mode="json", exclude={"parameters", "objectives"})
        data["parameters"] = self.parameters.to_dict()
        data["objectives"] = self.directions()
        data["attacks"]["settings"] = {k: v for k, v in data["attacks"]["settings"].items() if v is not None}
        return data


def _in_domain(value: Any, domain: Domain) -> bool:
    """Whether ``value`` (already parsed) is one a searched domain can produce."""
    values = domain_values(domain)
    if values is not None:
        return value in values
    lo, hi = getattr(domain, "lo"), getattr(domain, "hi")
    return lo <= value <= hi


def _attack(attack: AttackName | str) -> AttackName:
    try:
        return AttackName(str(attack).lower())
    except ValueError:
        raise ValueError(f"attack={attack!r} is not known; allowed values: {_values(AttackName)}") from None


def _values(items: Any) -> str:
    return ", ".join(repr(m.value) for m in items)
