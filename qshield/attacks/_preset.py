"""The plug-in type of :mod:`qshield.attacks`: a named bundle of hyper-parameters around a torchattacks class.

An :class:`AttackPreset` says which threat model an attack works in (norm, whether it has an ε budget, whether
it reads gradients), which keyword parameters it accepts with their defaults (the QShield reference's values,
``docs/attacks.md``), and how to build the torchattacks object. Each preset lives in its own private module
(``_pgd.py``, ``_square.py``, ...) and is registered by name in :data:`qshield.attacks.ATTACKS`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torchattacks

__all__ = ["ALLOW_UNREACHABLE_PARAM", "EOT_PARAM", "AttackPreset", "EotMode", "Norm", "Param", "step_reach"]


class Norm(str, enum.Enum):
    """The distance an attack bounds or minimises."""

    LINF = "linf"
    L2 = "l2"
    L0 = "l0"


class EotMode(str, enum.Enum):
    """How ``eot_iter`` (Expectation over Transformation, Athalye et al. 2018) is realised for an attack.

    * ``native``: the torchattacks class averages ``eot_iter`` loss gradients itself (APGD; PGD through
      ``torchattacks.EOTPGD``).
    * ``wrap``: the model is wrapped in :class:`~qshield.attacks.EOTWrapper`, which averages the model's outputs
      over ``eot_iter`` forward passes, so every gradient the attack reads is the average of ``eot_iter``
      Jacobians.
    """

    NATIVE = "native"
    WRAP = "wrap"


_KINDS: dict[type, str] = {int: "an integer", float: "a number", bool: "a boolean", str: "a string"}


@dataclass(frozen=True)
class Param:
    """One keyword parameter of an attack preset.

    Attributes:
        name: the keyword (torchattacks' own name where one exists).
        default: the reference's value (``docs/attacks.md``).
        kind: ``int``, ``float``, ``bool`` or ``str``.
        minimum: smallest allowed value (inclusive) for numbers, or None.
        maximum: largest allowed value (inclusive) for numbers, or None.
        choices: the allowed values for strings (empty: any).
        doc: one line for the docs and error messages.
    """

    name: str
    default: Any
    kind: type
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    def allowed(self) -> str:
        """The allowed values in words, for error messages."""
        if self.choices:
            return ", ".join(repr(c) for c in self.choices)
        text = _KINDS[self.kind]
        if self.minimum is not None and self.maximum is not None:
            return f"{text} in [{self.minimum}, {self.maximum}]"
        if self.minimum is not None:
            return f"{text} >= {self.minimum}"
        if self.maximum is not None:
            return f"{text} <= {self.maximum}"
        return text

    def validate(self, attack: str, value: Any) -> Any:
        """Return ``value`` converted to :attr:`kind`; ``ValueError`` naming attack, field, value and the rule."""
        where = f"{attack}: {self.name}={value!r}"
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{where} is invalid; allowed values: {self.allowed()}")
            return value
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise ValueError(f"{where} is invalid; allowed values: {self.allowed()}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} is invalid; allowed values: {self.allowed()}")
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{where} is invalid; allowed values: {self.allowed()}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{where} is invalid; allowed values: {self.allowed()}")
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise ValueError(f"{where} is out of range; allowed values: {self.allowed()}")
        return value


#: The ``eot_iter`` parameter every preset accepts (1 = no EOT).
EOT_PARAM = Param(
    "eot_iter",
    1,
    int,
    minimum=1,
    doc="forward/backward passes averaged per gradient for models with stochastic parts (EOT; 1 = off)",
)

#: The opt-in every iterative ε attack with a fixed step accepts: run even though ``alpha * steps < eps`` (the
#: attack cannot reach the edge of its own ε-ball, so its ASR understates the threat model). Only for
#: reproducing a paper's setting; every report labels such a row.
ALLOW_UNREACHABLE_PARAM = Param(
    "allow_unreachable",
    False,
    bool,
    doc="run although alpha * steps < eps (reproducing a paper's weak setting; the row is labelled)",
)


def step_reach(params: Mapping[str, Any]) -> float:
    """How far (L∞) an attack of ``steps`` signed steps of size ``alpha`` can move: ``alpha * steps``."""
    return float(params["alpha"]) * int(params["steps"])


#: ``factory(model, eps, params) -> torchattacks.Attack``; ``params`` is complete and validated.
Factory = Callable[[nn.Module, "float | None", Mapping[str, Any]], "torchattacks.Attack"]


@dataclass(frozen=True)
class AttackPreset:
    """A named attack with the reference's hyper-parameters.

    Attributes:
        name: registry key (lower case).
        title: human-readable name.
        norm: the distance bounded (``linf``) or minimised (``l2``, ``l0``).
        uses_eps: True when the attack has an ε budget (then ε is required, explicitly or from the dataset).
        white_box: True when the attack reads input gradients.
        params: the accepted keyword parameters (``eot_iter`` included) with the reference's defaults.
        factory: builds the torchattacks object from ``(model, eps, params)``.
        eot: how ``eot_iter`` > 1 is realised (:class:`EotMode`).
        dataset_defaults: per-dataset overrides of defaults (e.g. C&W's binary-search steps on MNIST).
        reference: the paper the attack comes from.
        reach: for iterative attacks with a fixed step, ``reach(params)`` is the largest L∞ distance the attack
            can move (``alpha * steps``); a config whose reach is below its ε is refused unless it sets
            ``allow_unreachable`` (:meth:`~qshield.attacks.AttackConfig.resolve`). None: the attack always
            reaches its ε (single step of size ε, adaptive steps, or sampling on the ball's vertices).
    """

    name: str
    title: str
    norm: Norm
    uses_eps: bool
    white_box: bool
    params: tuple[Param, ...]
    factory: Factory
    eot: EotMode = EotMode.WRAP
    dataset_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    reference: str = ""
    reach: Callable[[Mapping[str, Any]], float] | None = None

    def reaches(self, eps: float | None, params: Mapping[str, Any]) -> bool:
        """Whether an attack with the complete ``params`` can reach the edge of an ε-ball (1e-9 slack)."""
        if self.reach is None or eps is None:
            return True
        return self.reach(params) + 1e-9 >= eps

    @property
    def param_names(self) -> tuple[str, ...]:
        """The accepted keyword parameters, in declaration order."""
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        """The :class:`Param` called ``name`` (``ValueError`` listing the accepted keys on a miss)."""
        for p in self.params:
            if p.name == name:
                return p
        raise ValueError(f"{self.name}: unknown parameter {name!r}; accepted keys: {', '.join(self.param_names)}")

    def defaults(self, dataset: str | None = None) -> dict[str, Any]:
        """The default parameters, with the dataset's overrides applied when ``dataset`` has any."""
        values = {p.name: p.default for p in self.params}
        if dataset is not None:
            values.update(self.dataset_defaults.get(dataset, {}))
        return values

    def validate_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check keys and values of ``params`` (a subset of :attr:`param_names`); return the converted values."""
        unknown = [k for k in params if k not in self.param_names]
        if unknown:
            raise ValueError(
                f"{self.name}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                f"accepted keys: {', '.join(self.param_names)}"
            )
        return {k: self.param(k).validate(self.name, v) for k, v in params.items()}
