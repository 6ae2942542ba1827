"""One validation system for every frozen configuration in qshield — circuit, model, training, attacks, evaluation —
and for the sweep space that composes them (``orchestrator.space``).

Configs are pydantic v2 models (:class:`Config`: frozen, unknown keys refused). Each rule is stated **once**, on the
field, as an annotated type built here: :func:`integer`, :func:`number`, :data:`Probability`, :data:`Eps`,
:data:`Flag`, and :class:`Choice` enums (or :func:`registry_choice` for the names of a plug-in registry, so that a
new attack, dataset or simulator backend appears everywhere once it is registered). Every rule raises a
``ValueError`` whose text names the field, the value and what is allowed (``entanglement='mesh' is not supported;
allowed values: 'none', 'linear', ...``); pydantic wraps it in a ``ValidationError``, itself a ``ValueError``.

A field a sweep may search says so with ``searchable(...)`` in its ``Field``; :func:`field_rule` reads back what
the field accepts (kind, allowed values or range, default, one line of doc) and :func:`validate_field` checks one
value with the field's own rule. That is how ``orchestrator.space`` derives its parameters, their allowed values
and their defaults from the library instead of restating them.
"""

from __future__ import annotations

import enum
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError, ValidationInfo

__all__ = [
    "Bounds",
    "Choice",
    "Config",
    "Eps",
    "EpsOrNone",
    "FieldRule",
    "Flag",
    "Probability",
    "config_error",
    "field_rule",
    "integer",
    "number",
    "parse_number",
    "registry_choice",
    "searchable",
    "searchable_fields",
    "validate_field",
    "validate_value",
]

C = TypeVar("C", bound="Config")


# ----------------------------------------------------------------------------------------------------------
# enums


class Choice(str, enum.Enum):
    """A string enum that prints as its value, parses any case, and names the field and the allowed values when a
    value is not one of them."""

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls, value: object, field: str) -> Any:
        """``value`` as a member (members pass through; strings in any case); ``ValueError`` otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"{field}={value!r} is not supported; allowed values: {cls.allowed()}") from None

    @classmethod
    def allowed(cls) -> str:
        """The allowed values, quoted and comma-separated (for messages)."""
        return ", ".join(repr(m.value) for m in cls)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


def registry_choice(name: str, names: Sequence[str], doc: str = "", *, module: str | None = None) -> type[Choice]:
    """A :class:`Choice` enum whose members are the keys of a plug-in registry, in registry order: the one list of
    names (a new plug-in registered there appears wherever the enum is used). Assign it to a module-level variable
    called ``name``: the enum belongs to the calling module (``module``), so its members pickle (Ray ships them)."""
    module = module or sys._getframe(1).f_globals["__name__"]
    members = {str(n).upper().replace("-", "_"): str(n) for n in names}
    enum_cls = Choice(name, members, module=module, qualname=name)  # type: ignore[call-overload]
    enum_cls.__doc__ = doc or f"The names registered for {name}."
    return enum_cls


# ----------------------------------------------------------------------------------------------------------
# numbers

_FRACTION = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*$")


def parse_number(value: Any) -> float | None:
    """``value`` as a float, or None when it is not a number: ints and floats (not bools), numeric strings (YAML reads
    ``1e-3`` without a dot as a string; MLflow returns params as strings) and fractions written as strings
    (``"8/255"``, how ε is usually quoted)."""
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


def _g(x: float) -> str:
    return f"{x:g}"


def _range_text(kind: str, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    text = "an integer" if kind == "int" else "a number"
    if kind == "int" and lo is not None and hi is not None:
        return f"{text} in {int(lo)}..{int(hi)}"
    if lo is not None and hi is not None:
        return f"{text} in {'(' if lo_open else '['}{_g(lo)}, {_g(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{text} {'>' if lo_open else '>='} {_g(lo) if kind != 'int' else int(lo)}"
    if hi is not None:
        return f"{text} {'<' if hi_open else '<='} {_g(hi)}"
    return "a finite number" if kind == "float" else text


def _field(info: ValidationInfo | None, default: str = "value") -> str:
    return info.field_name if info is not None and info.field_name else default


def _is_null(value: Any, nullable: bool, name: str, allowed: str) -> bool:
    """Whether ``value`` is None (or ``"none"``/``"null"`` for a nullable field); None where it is not allowed
    raises."""
    if value is None or (nullable and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if nullable:
            return True
        raise ValueError(f"{name}=None is invalid; allowed values: {allowed}")
    return False


def _int_rule(lo: float | None, hi: float | None, nullable: bool) -> Any:
    allowed = _range_text("int", lo, hi, False, False)

    def check(value: Any, info: ValidationInfo) -> Any:
        name = _field(info)
        if _is_null(value, nullable, name, allowed):
            return None
        number: Any = value
        if isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is invalid (a bool); allowed values: {allowed}")
        if isinstance(value, str):
            parsed = parse_number(value)
            number = parsed if parsed is not None else value
        if isinstance(number, float) and number.is_integer():
            number = int(number)
        if not isinstance(number, int):
            raise ValueError(f"{name}={value!r} is invalid; allowed values: {allowed}")
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise ValueError(f"{name}={value!r} is out of range; allowed values: {allowed}")
        return number

    return check


def _float_rule(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool, nullable: bool) -> Any:
    allowed = _range_text("float", lo, hi, lo_open, hi_open)

    def check(value: Any, info: ValidationInfo) -> Any:
        name = _field(info)
        if _is_null(value, nullable, name, allowed):
            return None
        number = parse_number(value)
        if number is None or not math.isfinite(number):
            raise ValueError(f"{name}={value!r} is invalid; allowed values: {allowed}")
        too_low = lo is not None and (number <= lo if lo_open else number < lo)
        too_high = hi is not None and (number >= hi if hi_open else number > hi)
        if too_low or too_high:
            raise ValueError(f"{name}={value!r} is out of range; allowed values: {allowed}")
        return number

    return check


@dataclass(frozen=True)
class Bounds:
    """The range of a numeric field, kept in its annotation for :func:`field_rule` (the check itself is the field's
    validator, which also handles None for nullable fields)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False


def integer(lo: int | None = None, hi: int | None = None, *, nullable: bool = False) -> Any:
    """An integer in ``lo..hi`` (either bound optional); accepts integral floats and numeric strings, not bools.
    ``nullable``: None (or the string ``"none"``) is allowed too."""
    annotation: Any = int | None if nullable else int
    return Annotated[annotation, BeforeValidator(_int_rule(lo, hi, nullable)), Bounds(lo, hi)]  # type: ignore[return-value]


def number(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
    nullable: bool = False,
) -> Any:
    """A finite number in ``[lo, hi]`` (``lo_open``/``hi_open``: exclusive bounds); accepts numeric strings and
    fractions (``"8/255"``), not bools. ``nullable``: None is allowed too."""
    annotation: Any = float | None if nullable else float
    rule = BeforeValidator(_float_rule(lo, hi, lo_open, hi_open, nullable))
    return Annotated[annotation, rule, Bounds(lo, hi, lo_open, hi_open)]  # type: ignore[return-value]


#: A probability in [0, 1].
Probability = number(0.0, 1.0)
#: An L∞ budget on images in [0, 1]: a number in [0, 1]; fractions such as ``"8/255"`` are accepted. The one ε
#: rule: attacks, training, diagnostics and the sweep space all use it (or :data:`EpsOrNone`).
Eps = number(0.0, 1.0)
#: :data:`Eps`, or None (e.g. "the dataset's default").
EpsOrNone = number(0.0, 1.0, nullable=True)


def _flag(value: Any, info: ValidationInfo) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{_field(info)}={value!r} is invalid; allowed values: True, False")


#: A bool; the strings ``"true"``/``"false"`` (any case, as MLflow returns params) are accepted.
Flag = Annotated[bool, BeforeValidator(_flag)]


def _choice_rule(enum_cls: type[Choice], nullable: bool) -> Any:
    def check(value: Any, info: ValidationInfo) -> Any:
        if value is None and nullable:
            return None
        return enum_cls.parse(value, _field(info))

    return check


def choice(enum_cls: type[Choice], *, nullable: bool = False) -> Any:
    """One of ``enum_cls``'s values (any case); the message lists them."""
    annotation: Any = enum_cls | None if nullable else enum_cls
    return Annotated[annotation, BeforeValidator(_choice_rule(enum_cls, nullable))]


# ----------------------------------------------------------------------------------------------------------
# configs


def searchable(doc: str, **extra: Any) -> dict[str, Any]:
    """``Field(json_schema_extra=...)`` marking a field a sweep may fix or search, with one line for the docs and
    messages (its rule, default and allowed values come from the field itself)."""
    return {"searchable": True, "doc": doc, **extra}


class Config(BaseModel):
    """Base of qshield's frozen configs: validated on construction (every field by its own rule, then the model's
    cross-field rules), immutable, unknown keys refused with the list of allowed ones; plain-dict round trip for
    MLflow params, Ray Tune configs and saved model files (:meth:`to_dict` / :meth:`from_dict`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, arbitrary_types_allowed=True)
    #: a name for messages (default: the class name)
    config_name: ClassVar[str] = ""

    def __init__(self, **data: Any) -> None:
        unknown = sorted(k for k in data if k not in type(self).model_fields)
        if unknown:
            raise ValueError(f"unknown {type(self).__name__} field(s) {unknown}; allowed fields: "
                             f"{', '.join(type(self).model_fields)}")
        try:
            super().__init__(**data)
        except ValidationError as exc:  # one plain message per problem, each naming its field and what is allowed
            raise ValueError(config_error(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (enums as their values, tuples as lists), accepted by :meth:`from_dict`."""
        return {k: _plain(v) for k, v in self.model_dump().items()}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from a plain dict; unknown keys raise ``ValueError`` listing the allowed fields."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls.__name__}.from_dict expects a mapping, got {type(data).__name__}")
        return cls(**dict(data))

    def replace(self: C, **changes: Any) -> C:
        """A re-validated copy with some fields changed."""
        return type(self).from_dict({**self.to_dict(), **changes})


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_error(exc: ValidationError) -> str:
    """The messages of a config's ``ValidationError`` without pydantic's decoration (one per line)."""
    out = []
    for err in exc.errors():
        message = str(err.get("msg", ""))
        message = message.removeprefix("Value error, ")
        where = ".".join(str(p) for p in err.get("loc", ()))
        if where and where.split(".")[-1] not in message:
            message = f"{where}: {message}"
        out.append(message)
    return "; ".join(out)


# ----------------------------------------------------------------------------------------------------------
# reading rules back (orchestrator.space derives its parameters from these)


@dataclass(frozen=True)
class FieldRule:
    """What one config field accepts, read back from its declaration.

    Attributes:
        kind: ``"enum"``, ``"int"``, ``"float"`` or ``"bool"``.
        default: the field's default.
        doc: one line (the field's ``searchable`` doc).
        choices: the enum class (kind ``"enum"``).
        lo, hi: bounds (None: unbounded); ``lo_open``/``hi_open``: exclusive.
        nullable: None is allowed.
    """

    kind: str
    default: Any
    doc: str
    choices: type[Choice] | None = None
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    nullable: bool = False

    def allowed(self) -> str:
        """The allowed values or range, as written in messages."""
        if self.kind == "enum":
            assert self.choices is not None
            return "allowed values: " + self.choices.allowed()
        if self.kind == "bool":
            return "allowed values: true, false"
        return "allowed values: " + _range_text(self.kind, self.lo, self.hi, self.lo_open, self.hi_open) + (
            " or null" if self.nullable else "")


def _base(annotation: Any) -> tuple[Any, bool]:
    """(the non-None type of an annotation, whether None is allowed)."""
    args = getattr(annotation, "__args__", None)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


@lru_cache(maxsize=None)
def field_rule(config: type[Config], name: str) -> FieldRule:
    """The :class:`FieldRule` of ``config``'s field ``name`` (``KeyError`` naming the fields on a miss)."""
    if name not in config.model_fields:
        raise KeyError(f"{config.__name__} has no field {name!r}; fields: {', '.join(config.model_fields)}")
    info = config.model_fields[name]
    base, nullable = _base(info.annotation)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, Mapping) else {}
    doc = str(extra.get("doc", info.description or name))
    bounds = next((m for m in info.metadata if isinstance(m, Bounds)), Bounds())
    if isinstance(base, type) and issubclass(base, Choice):
        return FieldRule("enum", info.default, doc, choices=base, nullable=nullable)
    if base is bool:
        return FieldRule("bool", info.default, doc, nullable=nullable)
    kind = "int" if base is int else "float"
    return FieldRule(kind, info.default, doc, lo=bounds.lo, hi=bounds.hi, lo_open=bounds.lo_open,
                     hi_open=bounds.hi_open, nullable=nullable)


@lru_cache(maxsize=None)
def _adapter(rule: Any) -> TypeAdapter[Any]:
    return TypeAdapter(rule)


def validate_value(rule: Any, value: Any, name: str) -> Any:
    """``value`` checked and converted by an annotated rule of this module (e.g. :data:`Eps`), the messages naming
    it ``name``; ``ValueError`` otherwise."""
    try:
        return _adapter(rule).validate_python(value)
    except ValidationError as exc:
        message = config_error(exc)
        raise ValueError(f"{name}={message[len('value='):]}" if message.startswith("value=") else message) from None


def validate_field(config: type[Config], name: str, value: Any) -> Any:
    """``value`` checked and converted by the rule of ``config``'s field ``name`` (``ValueError`` with that rule's
    message, the field named, otherwise)."""
    info = config.model_fields[name]
    return validate_value(Annotated[(info.annotation, *info.metadata)], value, name)  # type: ignore[arg-type]


def searchable_fields(config: type[Config]) -> Mapping[str, FieldRule]:
    """``{name: rule}`` of ``config``'s fields marked :func:`searchable`, in declaration order."""
    out = {}
    for name, info in config.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, Mapping) else {}
        if extra.get("searchable"):
            out[name] = field_rule(config, name)
    return MappingProxyType(out)
