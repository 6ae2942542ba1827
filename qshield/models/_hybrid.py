"""``HybridModel``: a classical backbone fused with a parameterised quantum circuit (QShield, arXiv 2604.10933).

Forward pass for images ``x [B, C_in, H, W]`` in [0, 1]:

1. ``f = backbone.forward_features(x)`` ``[B, F]``; classical log-probabilities
   ``log p_c = log_softmax(backbone.classifier(f))`` ``[B, C]`` (the backbone's own class scores);
2. encoding angles ``theta = pi * tanh(angle_map(f))`` ``[B, 3n]`` (radians, in (-pi, pi)), ``angle_map`` a
   learned ``nn.Linear(F, 3n)``: deterministic, unlike the reference's random projection re-drawn per call;
3. the circuit ``q = QuantumLayer(theta)``: ``probs [B, 2^n]`` or ``expval [B, n]``;
4. quantum class log-probabilities ``log p_q [B, C]`` by :class:`QuantumClassHead`;
5. fusion (``fixed``, ``learned``, ``gated``) -> the returned ``log p [B, C]``.

The model returns **log-probabilities** of the fused distribution: ``nll_loss`` applies directly, and
``cross_entropy`` (torchattacks' loss) gives the same value because ``log_softmax`` of normalised
log-probabilities is the identity. Nothing is detached: gradients reach the circuit weights, the angle map,
the backbone and the input through both branches.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from qshield.attacks import NOTHING_HIDDEN, HiddenParts
from qshield.quantum import Measurement, QuantumLayer

from ._base import Classifier
from .fusion import Fusion, get_fusion

#: Added to the truncated basis-state probabilities before renormalising, so ``log p_q`` is always finite.
CLASS_MAP_EPS = 1e-8


class QuantumClassHead(nn.Module):
    """Maps the circuit's measured output to class log-probabilities ``[B, C]``.

    * ``probs`` (``2^n >= C`` basis states): basis state ``k`` stands for class ``k`` for ``k < C``; the states
      ``k >= C`` are dropped and the rest renormalised, as the reference does:
      ``p_q[c] = (P[c] + eps) / (sum_{k<C} P[k] + C eps)``, ``eps = 1e-8`` (keeps the log finite).
    * ``expval`` (``<Z_q>`` in [-1, 1]): a learned linear head ``n -> C``, then ``log_softmax``.
    """

    def __init__(self, measurement: Measurement | str, output_dim: int, num_classes: int) -> None:
        super().__init__()
        self.measurement = Measurement.parse(measurement, "measurement")
        self.num_classes = num_classes
        if self.measurement is Measurement.PROBS:
            if output_dim < num_classes:
                raise ValueError(
                    f"measurement='probs' gives {output_dim} basis states < num_classes={num_classes}; "
                    "allowed: 2**n_qubits >= num_classes, or measurement='expval'"
                )
            self.linear = None
        else:
            self.linear = nn.Linear(output_dim, num_classes)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if self.linear is not None:
            return torch.log_softmax(self.linear(q), dim=1)
        kept = q[:, : self.num_classes] + CLASS_MAP_EPS
        return torch.log(kept) - torch.log(kept.sum(dim=1, keepdim=True))


class HybridOutputs(NamedTuple):
    """Every intermediate of one hybrid forward pass (for diagnostics, tests and gradient-masking checks).

    Attributes:
        log_probs: ``[B, C]`` fused log-probabilities (what ``forward`` returns).
        log_p_c: ``[B, C]`` classical branch log-probabilities.
        log_p_q: ``[B, C]`` quantum branch log-probabilities.
        angles: ``[B, 3n]`` encoding angles in (-pi, pi).
        quantum: ``[B, 2^n]`` probabilities or ``[B, n]`` expectation values from the circuit.
        weight: ``[B]`` the classical share (fixed/learned ``w_c``; gated ``alpha``).
    """

    log_probs: torch.Tensor
    log_p_c: torch.Tensor
    log_p_q: torch.Tensor
    angles: torch.Tensor
    quantum: torch.Tensor
    weight: torch.Tensor


class HybridModel(nn.Module):
    """Hybrid quantum-classical classifier (see the module docstring). ``forward`` returns log-probabilities.

    Args:
        backbone: a :class:`~qshield.models.Classifier` (``SmallCNN`` or ``ResNet18``); its features feed the
            angle map and its classifier gives the classical branch.
        quantum: the circuit; it takes ``3 * n_qubits`` angles.
        fusion: a fusion module or the name of one (``fixed``, ``learned``, ``gated``).
        fusion_weights: ``(w_c, w_q)`` used when ``fusion`` is a name.
    """

    def __init__(
        self,
        backbone: Classifier,
        quantum: QuantumLayer,
        fusion: Fusion | str = "gated",
        fusion_weights: tuple[float, float] = (0.5, 0.5),
    ) -> None:
        super().__init__()
        if not isinstance(backbone, Classifier):
            raise ValueError(f"backbone must be a qshield.models.Classifier, got {type(backbone).__name__}")
        if not isinstance(quantum, QuantumLayer):
            raise ValueError(f"quantum must be a qshield.quantum.QuantumLayer, got {type(quantum).__name__}")
        self.num_classes = backbone.num_classes
        self.backbone = backbone
        self.angle_map = nn.Linear(backbone.feature_dim, quantum.spec.n_inputs)
        self.quantum = quantum
        self.class_head = QuantumClassHead(quantum.spec.measurement, quantum.output_dim, self.num_classes)
        if isinstance(fusion, Fusion):
            if fusion.num_classes != self.num_classes:
                raise ValueError(f"fusion.num_classes={fusion.num_classes}; allowed: {self.num_classes}")
            self.fusion = fusion
        else:
            self.fusion = get_fusion(fusion)(self.num_classes, fusion_weights)

    @property
    def in_channels(self) -> int:
        return self.backbone.in_channels

    def hidden_parts(self) -> HiddenParts:
        """What an attacker reading the autograd graph cannot see (the adaptive-attack protocol of
        :mod:`qshield.attacks`): nothing, unless the circuit is simulated by quantum trajectories — then every
        forward pass is a fresh Monte-Carlo estimate, a randomised model that attacks must average over (EOT).
        Gradients always flow through the circuit."""
        if self.quantum.is_stochastic:
            return HiddenParts(randomized=True, description="noisy circuit simulated by quantum trajectories")
        return NOTHING_HIDDEN

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """Encoding angles ``pi * tanh(angle_map(features))`` ``[B, 3n]``, radians in (-pi, pi)."""
        return math.pi * torch.tanh(self.angle_map(features))

    def branch_outputs(self, x: torch.Tensor) -> HybridOutputs:
        """Run the model on ``x [B, C_in, H, W]`` and return every intermediate (see :class:`HybridOutputs`)."""
        self.backbone.check_input(x)
        features = self.backbone.forward_features(x)
        log_p_c = torch.log_softmax(self.backbone.classifier(features), dim=1)
        angles = self.encode(features)
        q = self.quantum(angles)
        log_p_q = self.class_head(q)
        fused = self.fusion(log_p_c, log_p_q)
        return HybridOutputs(fused.log_probs, log_p_c, log_p_q, angles, q, fused.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused class log-probabilities ``[B, num_classes]``."""
        return self.branch_outputs(x).log_probs
