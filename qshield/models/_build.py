"""``build_model``: turn a :class:`~qshield.models.ModelConfig` into a module."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from qshield.quantum import QuantumLayer

from ._base import Classifier
from ._cnn import SmallCNN
from ._config import Arch, Backbone, ModelConfig
from ._dnn import DNN
from ._hybrid import HybridModel
from ._reference import ReferenceHybrid
from ._resnet import resnet18


def _classical(kind: Backbone | Arch, config: ModelConfig) -> Classifier:
    if kind.value == "cnn":
        return SmallCNN(config.in_channels, config.num_classes)
    if kind.value == "resnet18":
        return resnet18(config.in_channels, config.num_classes, config.pretrained_path, config.small_input)
    if kind.value == "dnn":
        return DNN(config.in_channels, config.image_size, config.num_classes)
    raise AssertionError(f"unhandled model kind {kind}")  # pragma: no cover - enums are exhaustive


def _build(config: ModelConfig) -> nn.Module:
    if not config.is_hybrid:
        return _classical(config.arch, config)
    quantum = QuantumLayer(
        n_qubits=config.n_qubits,  # type: ignore[arg-type]
        depth=config.depth,
        entanglement=config.entanglement.value,
        noise=config.noise.value,
        noise_strength=config.noise_strength,
        readout_error=config.readout_error,
        measurement=config.measurement.value,
        trainable=config.quantum_trainable,
        backend=config.backend,
    )
    if config.arch is Arch.REFERENCE_HYBRID:
        return ReferenceHybrid(_classical(config.backbone, config), quantum)
    return HybridModel(_classical(config.backbone, config), quantum, config.fusion.value, config.fusion_weights)


def build_model(config: ModelConfig | dict[str, Any], *, seed: int | None = None) -> nn.Module:
    """Build the model a config describes.

    Args:
        config: a :class:`ModelConfig` or its plain-dict form (validated by :meth:`ModelConfig.from_dict`).
        seed: when given, parameters are initialised from ``torch.manual_seed(seed)`` inside
            ``torch.random.fork_rng`` (the caller's global RNG state is restored afterwards), so the same seed
            gives the same initial weights. None: the current global RNG is used, as plain PyTorch does.

    Returns:
        ``dnn``/``cnn``/``resnet18``: a :class:`~qshield.models.Classifier` returning logits ``[B, C]``;
        ``hybrid``: a :class:`~qshield.models.HybridModel` returning log-probabilities ``[B, C]``;
        ``reference_hybrid``: a :class:`~qshield.models.ReferenceHybrid` (log-probabilities ``[B, C]``; randomised,
        its circuit outside the autograd graph, as the QShield reference code).
        Either way ``log_softmax(model(x))`` is the model's class log-probability.
    """
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a ModelConfig or a dict, got {type(config).__name__}")
    if seed is None:
        return _build(config)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an integer or None")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(config)
