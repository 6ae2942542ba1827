"""``ReferenceHybrid``: the QShield reference code's hybrid, reproduced faithfully, flaws included, to measure the
paper's claims on it (arXiv 2604.10933; facts from the authors' public code, n-azimi/QShield, ``qnn_toolkit.py``;
none of its code is copied). It is a clearly named option (``ModelConfig(arch="reference_hybrid")``), never the
default: qshield's own :class:`~qshield.models.HybridModel` keeps gradients flowing through its circuit.

Forward pass for images ``x [B, C_in, H, W]`` in [0, 1] (``C`` classes, ``n`` qubits):

1. ``z = backbone(x)`` ``[B, C]``, the CNN's logits; the classical output is ``log_softmax(z)`` (the reference's
   CNN ends in ``LogSoftmax``; its feature hook taps the last ``Linear``, i.e. the logits ``z``);
2. quantum input: ``z`` standardised per sample, ``u = (z - mean) / (std + 1e-8)`` (unbiased std), projected by
   ``M = 0.1 * Q``, ``Q`` the orthogonal factor of the reduced QR decomposition of a standard-normal ``[C, 3n]``
   matrix **drawn anew on every call** from torch's global generator (the reference never seeds it), zero-padded
   to ``3n`` columns when ``C < 3n``; angles ``pi * tanh(u M)`` ``[B, 3n]`` (RX, RY, RZ per qubit);
3. the circuit (:class:`~qshield.quantum.QuantumLayer`, no trainable rotations): encoding, then ``depth`` x [CNOT
   layer, noise on every qubit], ``probs`` over ``2^n`` states, truncated to the first ``C``: ``P [B, C]``. It is
   computed **outside the autograd graph** (the reference runs PennyLane on ``.detach().cpu().numpy()``): no
   gradient reaches the circuit, the projection or, through this branch, the input;
4. the gate (:class:`ReferenceGate`, the reference's ``DynamicWeightingModule``) reads 7 statistics of the
   classical log-probabilities and the quantum "logits" ``log P`` (:func:`reference_statistics`) and gives
   ``alpha`` in [0, 1];
5. fusion: ``p_c = softmax(z)``, ``p_q = P / (sum P + 1e-8)``, both floored at ``1e-8``;
   ``amp = alpha sqrt(p_c) + sqrt(clamp(1 - alpha^2, 1e-8, 1)) sqrt(p_q)``, ``p = amp^2 / (sum amp^2 + 1e-8)``
   floored at ``1e-8``; the model returns ``log p`` (trained with NLL, as the reference).

The one deviation: ``log P`` is taken of ``P`` floored at 1e-8 (the reference takes ``log`` of the raw value, which
is ``-inf`` for an exactly-zero probability and turns the gate's statistics into NaN).

What it hides (:meth:`ReferenceHybrid.hidden_parts`): it is randomised (the projection) and partly
non-differentiable (the quantum branch). It exposes a differentiable surrogate of itself
(:meth:`ReferenceHybrid.surrogate`: the same computation with the circuit in the autograd graph, same random
projection per call) for BPDA, and its backbone as the classical twin for transfer attacks
(:mod:`qshield.attacks`, "adaptive attacks").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qshield.attacks import HiddenParts
from qshield.quantum import Measurement, QuantumLayer

from ._base import Classifier

__all__ = [
    "PROJECTION_SCALE",
    "REFERENCE_EPS",
    "ReferenceGate",
    "ReferenceHybrid",
    "reference_statistics",
]

#: Scale of the reference's random orthogonal projection (``mapping_matrix = q * 0.1``).
PROJECTION_SCALE = 0.1
#: The reference's numerical floor (its ``epsilon``), used in the statistics and the fusion.
REFERENCE_EPS = 1e-8


def reference_statistics(classical: torch.Tensor, quantum: torch.Tensor) -> torch.Tensor:
    """The reference gate's 7 inputs ``[B, 7]`` from two ``[B, C]`` score vectors (per sample, over the C classes):
    std (unbiased), max and kurtosis ``mean((v - mean)^4) / (std^4 + 1e-8)`` (not excess) of each, then their
    cross-correlation ``sum(c' q') / (|c'| |q'| + 1e-8)`` of the centred vectors."""

    def stats(v: torch.Tensor) -> list[torch.Tensor]:
        mean = v.mean(dim=1, keepdim=True)
        std = v.std(dim=1, keepdim=True)
        kurt = ((v - mean) ** 4).mean(dim=1, keepdim=True) / (std**4 + REFERENCE_EPS)
        return [std, v.amax(dim=1, keepdim=True), kurt]

    c0 = classical - classical.mean(dim=1, keepdim=True)
    q0 = quantum - quantum.mean(dim=1, keepdim=True)
    corr = (c0 * q0).sum(dim=1, keepdim=True) / (
        c0.norm(dim=1, keepdim=True) * q0.norm(dim=1, keepdim=True) + REFERENCE_EPS
    )
    return torch.cat([*stats(classical), *stats(quantum), corr], dim=1)


class ReferenceGate(nn.Module):
    """The reference's gate MLP: Linear(7, 128) LeakyReLU(0.2), two x [Linear(128, 128) LeakyReLU(0.2)
    BatchNorm1d(128)], Linear(128, 1), sigmoid, clamped to [0, 1]. ``forward(stats [B, 7]) -> alpha [B, 1]``.

    A training batch of one sample (which BatchNorm cannot normalise) uses the running statistics instead of
    failing.
    """

    def __init__(self, n_statistics: int = 7, hidden: int = 128, layers: int = 3) -> None:
        super().__init__()
        self.inp = nn.Linear(n_statistics, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"linear": nn.Linear(hidden, hidden), "norm": nn.BatchNorm1d(hidden)})
            for _ in range(layers - 1)
        )
        self.out = nn.Linear(hidden, 1)

    def forward(self, stats: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.inp(stats), 0.2)
        for block in self.blocks:
            h = F.leaky_relu(block["linear"](h), 0.2)
            norm = block["norm"]
            if norm.training and h.shape[0] == 1:
                h = F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
            else:
                h = norm(h)
        return torch.sigmoid(self.out(h)).clamp(0.0, 1.0)


class ReferenceHybrid(nn.Module):
    """The QShield reference's hybrid (module docstring). ``forward`` returns log-probabilities ``[B, C]``.

    Args:
        backbone: a :class:`~qshield.models.Classifier` (``SmallCNN`` or ``ResNet18``: the reference uses an
            ImageNet ResNet-18) returning logits.
        quantum: the circuit: ``probs`` measurement, no trainable rotations, ``2^n >= C`` states.

    Raises:
        ValueError: a backbone that is not a ``Classifier``, a circuit with trainable rotations or ``expval``
            readout, or fewer basis states than classes.
    """

    def __init__(self, backbone: Classifier, quantum: QuantumLayer) -> None:
        super().__init__()
        if not isinstance(backbone, Classifier):
            raise ValueError(f"backbone must be a qshield.models.Classifier, got {type(backbone).__name__}")
        if not isinstance(quantum, QuantumLayer):
            raise ValueError(f"quantum must be a qshield.quantum.QuantumLayer, got {type(quantum).__name__}")
        spec = quantum.spec
        if spec.measurement is not Measurement.PROBS:
            raise ValueError(f"quantum measurement={spec.measurement.value!r}; allowed values: 'probs' (the reference)")
        if spec.trainable:
            raise ValueError("quantum trainable=True; allowed values: False (the reference's circuit has no trainable "
                             "rotations)")
        if quantum.output_dim < backbone.num_classes:
            raise ValueError(f"the circuit has {quantum.output_dim} basis states < num_classes="
                             f"{backbone.num_classes}; allowed: 2**n_qubits >= num_classes")
        self.num_classes = backbone.num_classes
        self.backbone = backbone
        self.quantum = quantum
        self.gate = ReferenceGate()

    @property
    def in_channels(self) -> int:
        return self.backbone.in_channels

    def projection(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """A fresh random projection ``[C, 3n]``: ``0.1 * Q`` (reduced QR of a standard-normal ``[C, 3n]`` matrix
        from torch's global generator), zero-padded to ``3n`` columns."""
        c, k = self.num_classes, self.quantum.spec.n_inputs
        q, _ = torch.linalg.qr(torch.randn(c, k, device=device, dtype=dtype))
        if q.shape[1] < k:
            q = torch.cat([q, q.new_zeros(c, k - q.shape[1])], dim=1)
        return PROJECTION_SCALE * q

    def angles(self, logits: torch.Tensor) -> torch.Tensor:
        """Encoding angles ``pi * tanh(u M)`` ``[B, 3n]`` of logits ``[B, C]``, with a fresh projection ``M``."""
        u = (logits - logits.mean(dim=1, keepdim=True)) / (logits.std(dim=1, keepdim=True) + REFERENCE_EPS)
        return math.pi * torch.tanh(u @ self.projection(logits.device, logits.dtype))

    def fused(self, x: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
        """The forward pass; ``differentiable=True`` computes the circuit inside the autograd graph (the surrogate)
        instead of outside it (the reference)."""
        self.backbone.check_input(x)
        logits = self.backbone(x)
        log_c = torch.log_softmax(logits, dim=1)
        angles = self.angles(logits)
        if differentiable:
            probs = self.quantum(angles)
        else:
            with torch.no_grad():
                probs = self.quantum(angles.detach())
        p_trunc = probs[:, : self.num_classes]
        alpha = self.gate(reference_statistics(log_c, torch.log(p_trunc.clamp_min(REFERENCE_EPS))))
        p_c = torch.softmax(logits, dim=1).clamp_min(REFERENCE_EPS)
        p_q = (p_trunc / (p_trunc.sum(dim=1, keepdim=True) + REFERENCE_EPS)).clamp_min(REFERENCE_EPS)
        beta = torch.sqrt(torch.clamp(1 - alpha**2, REFERENCE_EPS, 1.0))
        amp = alpha * torch.sqrt(p_c) + beta * torch.sqrt(p_q)
        p = amp**2
        p = (p / (p.sum(dim=1, keepdim=True) + REFERENCE_EPS)).clamp_min(REFERENCE_EPS)
        return torch.log(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fused class log-probabilities ``[B, num_classes]`` (random projection, circuit outside the graph)."""
        return self.fused(x, differentiable=False)

    def hidden_parts(self) -> HiddenParts:
        """Randomised (projection re-drawn per call) and non-differentiable (circuit outside the graph)."""
        return HiddenParts(
            randomized=True,
            non_differentiable=True,
            description="random QR projection of the logits re-drawn on every call; quantum branch computed "
            "outside the autograd graph",
        )

    def surrogate(self) -> nn.Module:
        """A differentiable stand-in: this model with its circuit inside the autograd graph (same parameters, same
        fresh projection per call)."""
        return _DifferentiableReference(self)

    def classical_twin(self) -> nn.Module:
        """The backbone alone (the CNN whose logits feed both branches), for transfer attacks."""
        return self.backbone


class _DifferentiableReference(nn.Module):
    """``ReferenceHybrid.fused(x, differentiable=True)``: still randomised, no longer gradient-masked."""

    def __init__(self, model: ReferenceHybrid) -> None:
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.fused(x, differentiable=True)

    def hidden_parts(self) -> HiddenParts:
        return HiddenParts(randomized=True, description="random projection re-drawn on every call")
