"""``ModelConfig``: the frozen, validated description of one classifier, round-tripping through plain dicts.

Plain dicts are what MLflow params and Ray Tune configs hold, so :meth:`ModelConfig.to_dict` writes only
``str``/``int``/``float``/``bool``/``None``/``list`` values and :meth:`ModelConfig.from_dict` accepts them back
(also numbers written as strings, as MLflow returns params). Every bad value raises ``ValueError`` naming the
field, the value and what is allowed, before any model is built.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qshield.quantum import CircuitSpec, Entanglement, Measurement, Noise
from qshield.quantum.backends import BACKENDS


class _Choice(str, enum.Enum):
    """A string enum whose lookup error names the field and lists the allowed values."""

    @classmethod
    def parse(cls, value: object, field_name: str) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"{field_name}={value!r} is not supported; allowed values: {allowed}") from None


class Arch(_Choice):
    """Model family: the paper's MLP baseline, a CNN alone, ResNet-18 alone, the hybrid (CNN + circuit), or the
    QShield reference code's hybrid reproduced with its flaws (``reference_hybrid``; never the default)."""

    DNN = "dnn"
    CNN = "cnn"
    RESNET18 = "resnet18"
    HYBRID = "hybrid"
    REFERENCE_HYBRID = "reference_hybrid"


class Backbone(_Choice):
    """Classical backbone of a hybrid model."""

    CNN = "cnn"
    RESNET18 = "resnet18"


class FusionMode(_Choice):
    """How the classical and quantum class distributions are combined (see ``docs/models.md``)."""

    FIXED = "fixed"
    LEARNED = "learned"
    GATED = "gated"


def default_n_qubits(num_classes: int) -> int:
    """The paper's qubit count ``max(2, ceil(log2(num_classes)))`` (4 for 10 or 11 classes)."""
    return max(2, math.ceil(math.log2(num_classes)))


def _as_int(value: object, field_name: str, minimum: int) -> int:
    """An integer >= minimum; accepts ints, integral floats and their string forms (MLflow params), not bools."""
    if isinstance(value, bool):
        raise ValueError(f"{field_name}={value!r} must be an integer >= {minimum}, not a bool")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{field_name}={value!r} must be an integer >= {minimum}") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{field_name}={value!r} must be an integer >= {minimum}")
        value = int(value)
    if not isinstance(value, int):
        raise ValueError(f"{field_name}={value!r} must be an integer >= {minimum}")
    if value < minimum:
        raise ValueError(f"{field_name}={value!r} must be an integer >= {minimum}")
    return value


def _as_float(value: object, field_name: str, low: float, high: float) -> float:
    """A finite float in [low, high]; accepts numbers and numeric strings, not bools."""
    if isinstance(value, bool):
        raise ValueError(f"{field_name}={value!r} must be a number in [{low}, {high}], not a bool")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{field_name}={value!r} must be a number in [{low}, {high}]") from None
    if math.isnan(number) or not low <= number <= high:
        raise ValueError(f"{field_name}={value!r} must be a number in [{low}, {high}]")
    return number


def _as_bool(value: object, field_name: str) -> bool:
    """A bool; accepts the strings 'true'/'false' (any case), as MLflow params come back."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{field_name}={value!r} must be a bool; allowed values: True, False")


def _as_weights(value: object) -> tuple[float, float]:
    """Fusion weights ``(w_c, w_q)``: two finite numbers >= 0, not both 0 (list, tuple or its JSON string)."""
    if isinstance(value, str):
        try:
            value = json.loads(value.replace("(", "[").replace(")", "]"))
        except json.JSONDecodeError:
            raise ValueError(f"fusion_weights={value!r} must be two numbers [w_c, w_q] >= 0, not both 0") from None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"fusion_weights={value!r} must be two numbers [w_c, w_q] >= 0, not both 0")
    w_c = _as_float(value[0], "fusion_weights[0] (w_c)", 0.0, math.inf)
    w_q = _as_float(value[1], "fusion_weights[1] (w_q)", 0.0, math.inf)
    if math.isinf(w_c) or math.isinf(w_q) or w_c + w_q <= 0.0:
        raise ValueError(f"fusion_weights={value!r} must be two finite numbers [w_c, w_q] >= 0, not both 0")
    return (w_c, w_q)


@dataclass(frozen=True)
class ModelConfig:
    """What :func:`~qshield.models.build_model` builds. Strings become enums on entry; all fields validated.

    Attributes:
        arch: ``dnn`` (paper's MLP), ``cnn`` (:class:`~qshield.models.SmallCNN`), ``resnet18``, ``hybrid``, or
            ``reference_hybrid`` (:class:`~qshield.models.ReferenceHybrid`, the QShield reference code's model with
            its random projection and its circuit outside the autograd graph; for measuring the paper's claims).
            A ``reference_hybrid`` always uses the reference's gate and a circuit without trainable rotations, so
            its config stores ``fusion='gated'``, ``fusion_weights=(0.5, 0.5)`` (unused) and
            ``quantum_trainable=False`` whatever was given; it needs ``measurement='probs'``.
        backbone: classical part of a hybrid: ``cnn`` or ``resnet18`` (ignored by the classical archs).
        in_channels: image channels (1 grey, 3 RGB).
        image_size: image height = width in pixels (e.g. 8 for sklearn digits, 28 MNIST, 32 CIFAR-10).
        num_classes: number of classes C >= 2.
        n_qubits: qubits of the circuit; None -> ``max(2, ceil(log2 C))`` (the paper's rule), resolved on
            construction. With ``measurement='probs'`` it must give ``2**n_qubits >= C``.
        depth, entanglement, noise, noise_strength, readout_error, measurement, backend: passed to
            :class:`~qshield.quantum.QuantumLayer` (defaults: depth 1, linear, no noise, probs, torch).
        quantum_trainable: the circuit has trainable rotations (``weights [depth, n, 3]``); the paper's released
            code had none.
        fusion: ``fixed``, ``learned`` or ``gated`` (see ``docs/models.md``).
        fusion_weights: ``(w_c, w_q)`` >= 0, not both 0: the fixed weights, the initial learned weights, and
            the gate's initial bias (``alpha_0 = w_c / sqrt(w_c**2 + w_q**2)``).
        pretrained_path: local ResNet-18 state-dict file (torchvision layout) to initialise the ResNet from;
            read with ``torch.load(weights_only=True)``. Never downloaded.
        small_input: ResNet-18 small-image stem (3x3 stride-1 conv1, no max-pool), for 28/32-px inputs.
    """

    arch: Arch = Arch.HYBRID
    backbone: Backbone = Backbone.CNN
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    n_qubits: int | None = None
    depth: int = 1
    entanglement: Entanglement = Entanglement.LINEAR
    noise: Noise = Noise.NONE
    noise_strength: float = 0.0
    readout_error: float = 0.0
    measurement: Measurement = Measurement.PROBS
    backend: str = "torch"
    quantum_trainable: bool = True
    fusion: FusionMode = FusionMode.GATED
    fusion_weights: tuple[float, float] = field(default=(0.5, 0.5))
    pretrained_path: str | None = None
    small_input: bool = True

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "arch", Arch.parse(self.arch, "arch"))
        put(self, "backbone", Backbone.parse(self.backbone, "backbone"))
        put(self, "in_channels", _as_int(self.in_channels, "in_channels", 1))
        put(self, "image_size", _as_int(self.image_size, "image_size", 2))
        put(self, "num_classes", _as_int(self.num_classes, "num_classes", 2))
        if self.n_qubits is None or (isinstance(self.n_qubits, str) and self.n_qubits.strip().lower() == "none"):
            put(self, "n_qubits", default_n_qubits(self.num_classes))
        else:
            put(self, "n_qubits", _as_int(self.n_qubits, "n_qubits", 1))
        put(self, "depth", _as_int(self.depth, "depth", 1))
        put(self, "entanglement", Entanglement.parse(self.entanglement, "entanglement"))
        put(self, "noise", Noise.parse(self.noise, "noise"))
        put(self, "noise_strength", _as_float(self.noise_strength, "noise_strength", 0.0, 1.0))
        put(self, "readout_error", _as_float(self.readout_error, "readout_error", 0.0, 1.0))
        put(self, "measurement", Measurement.parse(self.measurement, "measurement"))
        backend = str(self.backend).lower()
        if backend not in BACKENDS:
            allowed = ", ".join(map(repr, BACKENDS))
            raise ValueError(f"backend={self.backend!r} does not exist; allowed values: {allowed}")
        put(self, "backend", backend)
        put(self, "quantum_trainable", _as_bool(self.quantum_trainable, "quantum_trainable"))
        put(self, "fusion", FusionMode.parse(self.fusion, "fusion"))
        put(self, "fusion_weights", _as_weights(self.fusion_weights))
        if self.pretrained_path is not None and not isinstance(self.pretrained_path, str):
            put(self, "pretrained_path", str(self.pretrained_path))
        if self.pretrained_path in ("", "None"):
            put(self, "pretrained_path", None)
        put(self, "small_input", _as_bool(self.small_input, "small_input"))
        if self.arch is Arch.REFERENCE_HYBRID:
            if self.measurement is not Measurement.PROBS:
                raise ValueError(
                    f"measurement={self.measurement.value!r} with arch='reference_hybrid'; allowed values: 'probs' "
                    "(the reference truncates the basis-state probabilities to the classes)"
                )
            put(self, "quantum_trainable", False)
            put(self, "fusion", FusionMode.GATED)
            put(self, "fusion_weights", (0.5, 0.5))
        # The circuit itself (qubit range, memory budget) is validated by the quantum core's own rules.
        CircuitSpec.create(
            n_qubits=self.n_qubits,  # type: ignore[arg-type]
            depth=self.depth,
            entanglement=self.entanglement,
            noise=self.noise,
            noise_strength=self.noise_strength,
            readout_error=self.readout_error,
            measurement=self.measurement,
            trainable=self.quantum_trainable,
        )
        states = 2**self.n_qubits  # type: ignore[operator]
        if self.measurement is Measurement.PROBS and states < self.num_classes:
            raise ValueError(
                f"n_qubits={self.n_qubits} gives {states} basis states < num_classes={self.num_classes} "
                f"with measurement='probs'; allowed: n_qubits >= {default_n_qubits(self.num_classes)} "
                "or measurement='expval' (linear head n -> C)"
            )
        if self.pretrained_path is not None and not self.uses_resnet18:
            raise ValueError(
                f"pretrained_path={self.pretrained_path!r} is only used by ResNet-18; arch={self.arch.value!r}, "
                f"backbone={self.backbone.value!r}; allowed: arch='resnet18', or arch='hybrid' / 'reference_hybrid' "
                "with backbone='resnet18'"
            )

    @property
    def uses_resnet18(self) -> bool:
        """Whether the built model contains a ResNet-18 (alone or as a hybrid's backbone)."""
        return self.arch is Arch.RESNET18 or (self.is_hybrid and self.backbone is Backbone.RESNET18)

    @property
    def is_hybrid(self) -> bool:
        """Whether the model has a quantum circuit (``hybrid`` or ``reference_hybrid``)."""
        return self.arch in (Arch.HYBRID, Arch.REFERENCE_HYBRID)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input image."""
        return (self.in_channels, self.image_size, self.image_size)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return ModelConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (enums as their string values, weights as a list), accepted by :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build from a plain dict; unknown keys raise ``ValueError`` listing the allowed keys."""
        if not isinstance(data, Mapping):
            raise ValueError(f"ModelConfig.from_dict expects a mapping, got {type(data).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; allowed fields: {', '.join(allowed)}")
        return cls(**dict(data))
