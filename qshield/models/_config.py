"""``ModelConfig``: the frozen, validated description of one classifier, round-tripping through plain dicts.

Plain dicts are what MLflow params and Ray Tune configs hold, so :meth:`ModelConfig.to_dict` writes only
``str``/``int``/``float``/``bool``/``None``/``list`` values and :meth:`ModelConfig.from_dict` accepts them back
(also numbers written as strings, as MLflow returns params). Every field is validated by its rule
(:mod:`qshield.schema`; the circuit's fields by the types :mod:`qshield.quantum` declares); a bad value raises
``ValueError`` naming the field, the value and what is allowed, before any model is built. The fields marked
``searchable`` are the ones a sweep may search (``orchestrator.space`` derives its parameters from them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from qshield.quantum import (
    BACKENDS,
    MAX_QUBITS,
    MIN_QUBITS,
    CircuitSpec,
    Depth,
    Entanglement,
    Measurement,
    Noise,
)
from qshield.schema import Choice, Config, Flag, Probability, choice, integer, parse_number, registry_choice, searchable

from .fusion import FUSIONS

__all__ = ["Arch", "Backbone", "BackendName", "FusionMode", "ModelConfig", "default_n_qubits"]


class Arch(Choice):
    """Model family: the paper's MLP baseline, a CNN alone, ResNet-18 alone, the hybrid (CNN + circuit), or the
    QShield reference code's hybrid (:class:`~qshield.models.ReferenceHybrid`, its flaws included)."""

    DNN = "dnn"
    CNN = "cnn"
    RESNET18 = "resnet18"
    HYBRID = "hybrid"
    REFERENCE_HYBRID = "reference_hybrid"


class Backbone(Choice):
    """Classical backbone of a hybrid model."""

    CNN = "cnn"
    RESNET18 = "resnet18"


#: How the classical and quantum class distributions are combined: the names of the fusion registry
#: (``qshield.models.FUSIONS``; ``docs/models.md``).
FusionMode = registry_choice("FusionMode", list(FUSIONS), "Fusion modes of the hybrid model (qshield.models.FUSIONS).")
#: Simulator backends of the quantum layer: the names of ``qshield.quantum.BACKENDS``.
BackendName = registry_choice("BackendName", list(BACKENDS), "Simulator backends (qshield.quantum.BACKENDS).")


def default_n_qubits(num_classes: int) -> int:
    """The paper's qubit count ``max(2, ceil(log2(num_classes)))`` (4 for 10 or 11 classes)."""
    return max(2, math.ceil(math.log2(num_classes)))


def _weights(value: Any) -> tuple[float, float]:
    """Fusion weights ``(w_c, w_q)``: two finite numbers >= 0, not both 0 (list, tuple or its JSON string)."""
    rule = "must be two finite numbers [w_c, w_q] >= 0, not both 0"
    if isinstance(value, str):
        value = [v for v in value.strip("[]() ").replace(",", " ").split()]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"fusion_weights={value!r} {rule}")
    numbers = [parse_number(v) for v in value]
    if any(n is None or not math.isfinite(n) or n < 0 for n in numbers) or sum(numbers) <= 0:  # type: ignore[operator]
        raise ValueError(f"fusion_weights={list(value)!r} {rule}")
    return (float(numbers[0]), float(numbers[1]))  # type: ignore[arg-type]


def _path(value: Any) -> str | None:
    if value is None or value in ("", "None"):
        return None
    return str(value)


class ModelConfig(Config):
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

    arch: choice(Arch) = Field(Arch.HYBRID, json_schema_extra=searchable("model architecture; the paper's \"CNN\" baseline is `resnet18`; `reference_hybrid` is the paper's own model with its flaws (`docs/models.md`), for comparison only"))
    backbone: choice(Backbone) = Field(
        Backbone.CNN, json_schema_extra=searchable("classical part of the hybrid model")
    )
    in_channels: integer(1) = 1
    image_size: integer(2) = 28
    num_classes: integer(2) = 10
    n_qubits: integer(MIN_QUBITS, MAX_QUBITS, nullable=True) = Field(
        None, json_schema_extra=searchable("qubits of the circuit; null: the paper's max(2, ⌈log2 C⌉) (4 for 10/11 classes); with `measurement: probs` a hybrid needs 2^n ≥ C")
    )
    depth: Depth = Field(1, json_schema_extra=searchable("entangling layers of the circuit"))
    entanglement: choice(Entanglement) = Field(
        Entanglement.LINEAR, json_schema_extra=searchable("CNOT topology of every layer (`docs/circuits.md`)")
    )
    noise: choice(Noise) = Field(Noise.NONE, json_schema_extra=searchable("noise channel after every layer"))
    noise_strength: Probability = Field(0.0, json_schema_extra=searchable("channel probability p (the reference's released setting: 0.005)"))
    readout_error: Probability = Field(
        0.0, json_schema_extra=searchable("symmetric bit-flip probability on the measured qubits")
    )
    measurement: choice(Measurement) = Field(Measurement.PROBS, json_schema_extra=searchable("circuit readout: basis-state probabilities (truncated to the classes) or ⟨Z⟩ per qubit with a linear head"))
    fusion: choice(FusionMode) = Field("gated", json_schema_extra=searchable("how the classical and quantum class scores are combined (`docs/models.md`)"))
    fusion_weights: Annotated[tuple[float, float], BeforeValidator(_weights)] = (0.5, 0.5)
    backend: choice(BackendName) = Field("torch", json_schema_extra=searchable("simulator backend of the quantum layer (`docs/circuits.md`)"))
    quantum_trainable: Flag = True
    pretrained_path: Annotated[str | None, BeforeValidator(_path)] = None
    small_input: Flag = True

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        put = object.__setattr__  # the validator completes the frozen model
        if self.n_qubits is None:
            put(self, "n_qubits", default_n_qubits(self.num_classes))
        if self.arch is Arch.REFERENCE_HYBRID:
            if self.measurement is not Measurement.PROBS:
                raise ValueError(
                    f"measurement={self.measurement.value!r} with arch='reference_hybrid'; allowed values: 'probs' "
                    "(the reference truncates the basis-state probabilities to the classes)"
                )
            put(self, "quantum_trainable", False)
            put(self, "fusion", FusionMode("gated"))
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
        return self

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
