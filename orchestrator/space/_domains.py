"""Parameter domains of a sweep: fixed values and the four search forms, with the per-parameter rules.

A parameter in a search-space YAML is either a scalar (fixed) or a one-key mapping that names a search form::

    lr: 1.0e-3                      # Fixed(0.001)
    entanglement: {choice: [none, linear, star, full]}
    w_q: {uniform: [0.1, 0.9]}      # continuous, lo < hi, both inclusive
    lr: {loguniform: [1.0e-4, 1.0e-2]}
    n_qubits: {int: [2, 6]}         # integers lo..hi, both inclusive

:data:`PARAMETERS` is the one table of what each parameter accepts (kind, allowed values or range, default).
Parsing errors are raised as ``pydantic_core.PydanticCustomError`` carrying the key path below the parameter
(``subpath``) and the offending value, so the loader can report ``parameters.entanglement.choice[1]``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

from pydantic_core import PydanticCustomError

from pydantic import Field

from qshield.models import Arch, Backbone, BackendName, FusionMode, ModelConfig
from qshield.schema import Config, FieldRule, Probability, parse_number, searchable, searchable_fields, validate_field
from qshield.training import TrainConfig, TrainMethod

__all__ = [
    "Arch",
    "Backbone",
    "FusionMode",
    "BackendName",
    "TrainMethod",
    "SweepOnly",
    "Fixed",
    "Choice",
    "Uniform",
    "LogUniform",
    "IntRange",
    "Domain",
    "ParamSpec",
    "PARAMETERS",
    "parse_domain",
    "plain_value",
    "parse_number",
    "fail",
]


class SweepOnly(Config):
    """Parameters that belong to the sweep rather than to a library config (the library takes them in another
    form): ``w_q`` is the fixed fusion's quantum weight, given to the model as ``fusion_weights=(1 - w_q, w_q)``."""

    w_q: Probability = Field(0.5, json_schema_extra=searchable("quantum weight of `fusion: fixed` (w_c = 1 − w_q)"))


# ----------------------------------------------------------------------------------------------------------
# errors


def fail(detail: str, value: Any, subpath: tuple[str | int, ...] = ()) -> NoReturn:
    """Raise a validation error for ``value`` at ``subpath`` below the field being validated.

    The loader turns it into a line of :class:`~orchestrator.space.SpaceError` that reads
    ``<key path>: <detail>; got <value>``.
    """
    raise PydanticCustomError("qshield_space", "{detail}", {"detail": detail, "value": value, "subpath": subpath})


# ----------------------------------------------------------------------------------------------------------
# domains


@dataclass(frozen=True)
class Fixed:
    """A parameter held at one value."""

    value: Any
    searched = False

    def to_yaml(self) -> Any:
        return plain_value(self.value)


@dataclass(frozen=True)
class Choice:
    """A categorical search over ``values`` (``tune.choice``; Optuna ``CategoricalDistribution``)."""

    values: tuple[Any, ...]
    searched = True

    def to_yaml(self) -> Any:
        return {"choice": [plain_value(v) for v in self.values]}


@dataclass(frozen=True)
class Uniform:
    """A continuous search, uniform in ``[lo, hi]`` (``tune.uniform``)."""

    lo: float
    hi: float
    searched = True

    def to_yaml(self) -> Any:
        return {"uniform": [self.lo, self.hi]}


@dataclass(frozen=True)
class LogUniform:
    """A continuous search, uniform in ``log`` over ``[lo, hi]`` with ``0 < lo`` (``tune.loguniform``)."""

    lo: float
    hi: float
    searched = True

    def to_yaml(self) -> Any:
        return {"loguniform": [self.lo, self.hi]}


@dataclass(frozen=True)
class IntRange:
    """An integer search over ``lo..hi``, both inclusive (``tune.randint(lo, hi + 1)``)."""

    lo: int
    hi: int
    searched = True

    def to_yaml(self) -> Any:
        return {"int": [self.lo, self.hi]}


Domain = Fixed | Choice | Uniform | LogUniform | IntRange


def plain_value(value: Any) -> Any:
    """An enum as its value (what Tune configs and YAML hold); anything else unchanged."""
    return value.value if isinstance(value, enum.Enum) else value


def domain_values(domain: Domain) -> tuple[Any, ...] | None:
    """All values a fixed or categorical domain can take; None for ranges."""
    if isinstance(domain, Fixed):
        return (domain.value,)
    if isinstance(domain, Choice):
        return domain.values
    return None


def domain_max(domain: Domain) -> float:
    """The largest value a numeric domain can take."""
    if isinstance(domain, (Uniform, LogUniform, IntRange)):
        return domain.hi
    values = domain_values(domain) or ()
    return max(float(v) for v in values)


# ----------------------------------------------------------------------------------------------------------
# the parameter table


@dataclass(frozen=True)
class ParamSpec(FieldRule):
    """What one sweep parameter accepts: the :class:`~qshield.schema.FieldRule` of the config field it sets
    (``owner``), plus the search forms its kind allows."""

    owner: type[Config] | None = None
    name: str = ""

    @property
    def forms(self) -> tuple[str, ...]:
        """The search forms this parameter accepts besides a fixed scalar."""
        if self.kind in ("enum", "bool"):
            return ("choice",)
        if self.kind == "int":
            return ("choice", "int")
        return ("choice", "uniform", "loguniform")

    def validate(self, value: Any) -> Any:
        """``value`` checked and converted by the owning field's own rule (``ValueError`` naming the field)."""
        assert self.owner is not None
        return validate_field(self.owner, self.name, value)


def _table() -> dict[str, ParamSpec]:
    """The searchable fields of the model, the sweep (``w_q``, after ``fusion``) and training, in that order."""
    out: dict[str, ParamSpec] = {}
    sources: list[tuple[type[Config], Mapping[str, FieldRule]]] = [
        (ModelConfig, searchable_fields(ModelConfig)),
        (SweepOnly, searchable_fields(SweepOnly)),
        (TrainConfig, searchable_fields(TrainConfig)),
    ]
    for owner, rules in sources:
        for name, rule in rules.items():
            out[name] = ParamSpec(**vars(rule), owner=owner, name=name)
    # w_q reads best next to the fusion it weights (parameter order is also the Optuna order of a space)
    order = [n for n in out if n != "w_q"]
    order.insert(order.index("fusion") + 1, "w_q")
    return {n: out[n] for n in order}


#: The parameters a sweep may fix or search — derived from the library's configs (the fields marked
#: ``searchable`` in ``qshield.models.ModelConfig`` and ``qshield.training.TrainConfig``) plus ``w_q``: their
#: rules, defaults and docs are the library's own (paper defaults: Adam lr 1e-3, weight decay 1e-4, 10 epochs,
#: batch 128, depth 1, n_qubits null = max(2, ceil(log2 C))). Parameters that only concern the hybrid model are
#: ignored by dnn/cnn/resnet18.
PARAMETERS: Mapping[str, ParamSpec] = MappingProxyType(_table())


def _parse_scalar(name: str, spec: ParamSpec, value: Any, subpath: tuple[str | int, ...]) -> Any:
    """One value of parameter ``name``, checked by its config field's rule."""
    try:
        return spec.validate(value)
    except ValueError as exc:
        fail(str(exc), value, subpath)


def parse_domain(name: str, raw: Any) -> Domain:
    """Parse the YAML value of parameter ``name`` into a :data:`Domain`.

    Raises:
        PydanticCustomError: unknown form, malformed list, value outside the parameter's allowed values or range,
            empty/inverted range, empty choice or duplicate choice value; ``subpath`` locates it
            (e.g. ``("choice", 1)``).
    """
    spec = PARAMETERS[name]
    if isinstance(raw, (Fixed, Choice, Uniform, LogUniform, IntRange)):
        raw = raw.to_yaml()  # re-validate a domain object through its YAML form
    forms_text = ", ".join(f"{{{f}: ...}}" for f in spec.forms)
    if isinstance(raw, Mapping):
        if len(raw) != 1:
            fail(f"a searched parameter is a mapping with exactly one key; allowed for {name}: {forms_text}", raw)
        ((form, arg),) = raw.items()
        if form not in spec.forms:
            fail(f"unknown search form for {name} ({spec.kind}); allowed: {', '.join(spec.forms)}", form, (form,))
        if form == "choice":
            if not isinstance(arg, list) or not arg:
                fail(f"choice needs a non-empty list of values; {spec.allowed()}", arg, (form,))
            values = tuple(_parse_scalar(name, spec, v, (form, i)) for i, v in enumerate(arg))
            for i, v in enumerate(values):
                if v in values[:i]:
                    fail("duplicate value in choice (each value once)", arg[i], (form, i))
            return Choice(values)
        if not isinstance(arg, list) or len(arg) != 2:
            fail(f"{form} needs a list of two bounds [lo, hi]; {spec.allowed()}", arg, (form,))
        lo = _parse_scalar(name, spec, arg[0], (form, 0))
        hi = _parse_scalar(name, spec, arg[1], (form, 1))
        if form == "loguniform" and lo <= 0:
            fail("loguniform needs lo > 0", arg[0], (form, 0))
        if not lo < hi:
            fail(
                f"empty or inverted range: {form} needs lo < hi (write a fixed value for a single value)", arg, (form,)
            )
        if form == "int":
            return IntRange(int(lo), int(hi))
        return Uniform(lo, hi) if form == "uniform" else LogUniform(lo, hi)
    if isinstance(raw, list):
        fail(f"a list is ambiguous; write {{choice: [...]}} to search or a scalar to fix {name}", raw)
    if raw is None and not spec.nullable:
        fail(f"{name} needs a value; {spec.allowed()}", raw)
    return Fixed(_parse_scalar(name, spec, raw, ()))
