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
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

from pydantic_core import PydanticCustomError

from qshield.quantum import MAX_QUBITS, MIN_QUBITS, Entanglement, Measurement, Noise

__all__ = [
    "Arch",
    "Backbone",
    "Fusion",
    "QuantumBackend",
    "TrainMethod",
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


class _StrChoice(str, enum.Enum):
    """A string enum that prints as its value (``str(Arch.CNN) == "cnn"``)."""

    def __str__(self) -> str:
        return str(self.value)


class Arch(_StrChoice):
    """Model architecture (paper: the DNN and CNN baselines, and the hybrid quantum-classical network; plus
    ``reference_hybrid``, the QShield reference code's hybrid reproduced with its flaws, attacked adaptively)."""

    DNN = "dnn"
    CNN = "cnn"
    RESNET18 = "resnet18"
    HYBRID = "hybrid"
    REFERENCE_HYBRID = "reference_hybrid"


class Backbone(_StrChoice):
    """Classical backbone of the hybrid model (the paper uses ResNet-18)."""

    CNN = "cnn"
    RESNET18 = "resnet18"


class Fusion(_StrChoice):
    """How the classical and quantum class scores are combined (see docs/models.md)."""

    FIXED = "fixed"
    LEARNED = "learned"
    GATED = "gated"


class QuantumBackend(_StrChoice):
    """Simulator backend of the quantum layer (mirrors ``qshield.quantum.backends.BACKENDS``)."""

    TORCH = "torch"
    QULACS = "qulacs"
    PENNYLANE = "pennylane"


class TrainMethod(_StrChoice):
    """Training method: plain, PGD adversarial training, or Quantum Patches augmentation (arXiv 2604.08827)."""

    STANDARD = "standard"
    PGD_AT = "pgd_at"
    QUANTUM_PATCHES = "quantum_patches"


# ----------------------------------------------------------------------------------------------------------
# errors


def fail(detail: str, value: Any, subpath: tuple[str | int, ...] = ()) -> NoReturn:
    """Raise a validation error for ``value`` at ``subpath`` below the field being validated.

    The loader turns it into a line of :class:`~orchestrator.space.SpaceError` that reads
    ``<key path>: <detail>; got <value>``.
    """
    raise PydanticCustomError("qshield_space", "{detail}", {"detail": detail, "value": value, "subpath": subpath})


# ----------------------------------------------------------------------------------------------------------
# numbers

_FRACTION = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def parse_number(value: Any) -> float | None:
    """``value`` as a float, or None when it is not a number.

    Accepts ints and floats (not bools), numeric strings (YAML reads ``1e-3`` without a dot as a string) and
    fractions written as strings (``"8/255"``), which is how ε is usually quoted.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if match:
            den = float(match.group(2))
            return float(match.group(1)) / den if den != 0 else None
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


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
class ParamSpec:
    """What one parameter accepts.

    Attributes:
        kind: ``"enum"``, ``"int"`` or ``"float"``.
        default: value used when the YAML does not mention the parameter.
        doc: one line for the docs and error messages.
        choices: the enum class (kind ``"enum"``).
        lo, hi: inclusive bounds (None: unbounded); ``lo_open`` makes the lower bound exclusive.
    """

    kind: str
    default: Any
    doc: str
    choices: type[enum.Enum] | None = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    @property
    def forms(self) -> tuple[str, ...]:
        """The search forms this parameter accepts besides a fixed scalar."""
        if self.kind == "enum":
            return ("choice",)
        if self.kind == "int":
            return ("choice", "int")
        return ("choice", "uniform", "loguniform")

    def allowed(self) -> str:
        """The allowed values or range, as written in error messages."""
        if self.kind == "enum":
            assert self.choices is not None
            return "allowed values: " + ", ".join(repr(m.value) for m in self.choices)
        kind = "an integer" if self.kind == "int" else "a number"
        if self.kind == "int" and self.lo is not None and self.hi is not None:
            return f"allowed: {kind} in {int(self.lo)}..{int(self.hi)}"
        if self.lo is not None and self.hi is not None:
            return f"allowed: {kind} in {'(' if self.lo_open else '['}{_g(self.lo)}, {_g(self.hi)}]"
        if self.lo is not None:
            return f"allowed: {kind} {'>' if self.lo_open else '>='} {_g(self.lo)}"
        return f"allowed: {kind}"


def _g(x: float) -> str:
    return f"{x:g}"


#: The parameters a sweep may fix or search, with their rules and defaults (paper defaults where it has one:
#: Adam lr 1e-3, weight decay 1e-4, 10 epochs, batch 128, depth 1, n_qubits = max(2, ceil(log2 C)) = 4 for
#: the 10/11-class datasets here). Parameters that only concern the hybrid model are ignored by dnn/cnn/resnet18.
PARAMETERS: Mapping[str, ParamSpec] = MappingProxyType(
    {
        "arch": ParamSpec("enum", Arch.HYBRID, "model architecture", Arch),
        "backbone": ParamSpec("enum", Backbone.CNN, "classical backbone of the hybrid model", Backbone),
        "n_qubits": ParamSpec("int", 4, "qubits of the quantum layer", lo=MIN_QUBITS, hi=MAX_QUBITS),
        "depth": ParamSpec("int", 1, "entangling layers of the circuit", lo=1),
        "entanglement": ParamSpec("enum", Entanglement.LINEAR, "CNOT topology per layer", Entanglement),
        "noise": ParamSpec("enum", Noise.NONE, "noise channel after each layer", Noise),
        "noise_strength": ParamSpec("float", 0.0, "noise channel probability p", lo=0.0, hi=1.0),
        "readout_error": ParamSpec("float", 0.0, "symmetric readout bit-flip probability", lo=0.0, hi=1.0),
        "measurement": ParamSpec("enum", Measurement.PROBS, "circuit readout", Measurement),
        "fusion": ParamSpec("enum", Fusion.GATED, "classical/quantum fusion mode", Fusion),
        "w_q": ParamSpec("float", 0.5, "quantum fusion weight w_q (w_c = 1 - w_q)", lo=0.0, hi=1.0),
        "backend": ParamSpec("enum", QuantumBackend.TORCH, "quantum simulator backend", QuantumBackend),
        "lr": ParamSpec("float", 1e-3, "Adam learning rate", lo=0.0, hi=1.0, lo_open=True),
        "weight_decay": ParamSpec("float", 1e-4, "Adam weight decay", lo=0.0, hi=1.0),
        "epochs": ParamSpec("int", 10, "training epochs", lo=1),
        "batch_size": ParamSpec("int", 128, "training batch size", lo=1),
        "method": ParamSpec("enum", TrainMethod.STANDARD, "training method", TrainMethod),
        "pgd_steps": ParamSpec("int", 7, "PGD steps per batch of method pgd_at (step 2.5·ε/steps, ε of the space)",
                               lo=1),
    }
)


def _parse_scalar(name: str, spec: ParamSpec, value: Any, subpath: tuple[str | int, ...]) -> Any:
    """One value of parameter ``name``, checked against its spec."""
    if spec.kind == "enum":
        assert spec.choices is not None
        if isinstance(value, str):
            try:
                return spec.choices(value.strip().lower())
            except ValueError:
                pass
        fail(f"unknown {name}; {spec.allowed()}", value, subpath)
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"{name} must be an integer; {spec.allowed()}", value, subpath)
        number: float = value
    else:
        parsed = parse_number(value)
        if parsed is None or not math.isfinite(parsed):
            fail(f"{name} must be a finite number; {spec.allowed()}", value, subpath)
        number = parsed
    too_low = spec.lo is not None and (number <= spec.lo if spec.lo_open else number < spec.lo)
    too_high = spec.hi is not None and number > spec.hi
    if too_low or too_high:
        fail(f"{name} is out of range; {spec.allowed()}", value, subpath)
    return value if spec.kind == "int" else number


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
    if raw is None:
        fail(f"{name} needs a value; {spec.allowed()}", raw)
    return Fixed(_parse_scalar(name, spec, raw, ()))
