"""Quantum Patches: random-quantum-circuit pseudo-noise augmentation (Tran et al., arXiv 2604.08827).

Design (quanvolution-style, after a public design by a co-author; the paper's exact recipe was not published):

1. every 2x2 patch of every image channel is encoded on 4 qubits, pixel ``k`` (row-major: (0,0), (0,1), (1,0),
   (1,1)) on wire ``k``, as ``RX(pi x_k) RY(pi x_k)``;
2. one layer of random rotations ``RX(a) RY(b) RZ(c)`` per wire, angles uniform in [0, 2pi) from a seeded
   ``torch.Generator`` (one random circuit per call, shared by all patches of the batch), then CNOTs
   (``linear`` (0,1), (1,2), (2,3) by default);
3. ``<Z_k>`` on every wire -> 4 half-resolution channels per image channel (:func:`patch_expvals`);
4. each channel min-max normalised to [0, 1] per image (a constant channel becomes 0) and put back at full
   resolution by placing wire ``k``'s value at pixel ``k`` of its patch (depth-to-space): the noise map ``N``;
5. modulation ``x' = x * (1 - s + s * N)`` with strength ``s`` in [0, 1]: a multiplicative pseudo-noise mask;
   since ``x, N`` are in [0, 1] the factor is in ``[1 - s, 1]`` and ``x'`` stays in [0, 1] (no clipping).

All patches of a batch are simulated at once with qshield's batched torch statevector simulator
(:class:`~qshield.quantum.backends._torch.TorchBackend`): ``B * C * (H/2) * (W/2)`` circuits in one call, no
per-patch Python loop. Odd heights/widths are padded by replicating the last row/column and cropped after.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from qshield.quantum import CircuitSpec, Entanglement
from qshield.quantum.backends import get_backend

from ._config import TrainConfig
from ._method import TrainingMethod

#: Qubits per 2x2 patch.
PATCH_QUBITS = 4


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor [B, C, H, W], got {got}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"images must lie in [0, 1] (angle encoding pi * x), got values in "
            f"[{float(images.min()):.4g}, {float(images.max()):.4g}]"
        )


def random_rotations(
    generator: torch.Generator, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Random layer angles ``[1, 4, 3]`` (RX, RY, RZ per wire), uniform in [0, 2pi), drawn on the CPU from
    ``generator`` (so the same seed gives the same circuit on any device) and moved to ``device``."""
    angles = torch.rand((1, PATCH_QUBITS, 3), generator=generator, dtype=torch.float64) * (2 * math.pi)
    return angles.to(device=device, dtype=dtype)


class QuantumPatches(nn.Module):
    """The augmentation (see the module docstring). No parameters; the circuit's layer is random per call.

    Args:
        strength: modulation strength ``s`` in [0, 1] (default 0.5).
        entanglement: CNOT pattern of the random layer (``linear``, ``ring``, ``full``, ...; default linear).

    ``forward(images [B, C, H, W] in [0, 1], generator) -> [B, C, H, W]`` in [0, 1].
    """

    def __init__(self, strength: float = 0.5, entanglement: str | Entanglement = "linear") -> None:
        super().__init__()
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength={strength!r} must be a number in [0, 1]")
        self.strength = float(strength)
        self.spec = CircuitSpec.create(
            n_qubits=PATCH_QUBITS, depth=1, entanglement=entanglement, measurement="expval", trainable=True
        )
        self.simulator = get_backend("torch")(self.spec)

    def patch_expvals(self, images: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        """``<Z_k>`` of every 2x2 patch: ``[B, C, H, W] -> [B, 4 C, ceil(H/2), ceil(W/2)]`` in [-1, 1].

        Output channel ``4 c + k`` is wire ``k`` (pixel ``k`` of the patch) of input channel ``c``.
        ``rotations``: the layer angles ``[1, 4, 3]`` (see :func:`random_rotations`).
        """
        _check_images(images)
        if rotations.shape != (1, PATCH_QUBITS, 3):
            raise ValueError(f"rotations must have shape (1, 4, 3), got {tuple(rotations.shape)}")
        b, c, h, w = images.shape
        x = F.pad(images, (0, w % 2, 0, h % 2), mode="replicate") if (h % 2 or w % 2) else images
        hh, ww = x.shape[2] // 2, x.shape[3] // 2
        patches = x.reshape(b, c, hh, 2, ww, 2).permute(0, 1, 2, 4, 3, 5).reshape(-1, PATCH_QUBITS)
        theta = math.pi * patches
        angles = torch.stack([theta, theta, torch.zeros_like(theta)], dim=-1).reshape(-1, 3 * PATCH_QUBITS)
        z = self.simulator.run(angles, rotations.to(device=angles.device, dtype=angles.dtype))  # [P, 4]
        return z.reshape(b, c, hh, ww, PATCH_QUBITS).permute(0, 1, 4, 2, 3).reshape(b, c * PATCH_QUBITS, hh, ww)

    def noise_map(self, images: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        """The full-resolution pseudo-noise ``N [B, C, H, W]`` in [0, 1] (steps 1-4 of the module docstring)."""
        b, c, h, w = images.shape
        z = self.patch_expvals(images, rotations)
        hh, ww = z.shape[2], z.shape[3]
        flat = z.reshape(b, c * PATCH_QUBITS, -1)
        low = flat.amin(dim=2, keepdim=True)
        span = flat.amax(dim=2, keepdim=True) - low
        safe_span = span.clamp_min(torch.finfo(flat.dtype).tiny)
        norm = torch.where(span > 0, (flat - low) / safe_span, torch.zeros_like(flat))
        norm = norm.reshape(b, c, 2, 2, hh, ww).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * hh, 2 * ww)
        return norm[:, :, :h, :w]

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augmented copies ``x * (1 - s + s * N)`` of ``images`` with a new random circuit from ``generator``."""
        rotations = random_rotations(generator, device=images.device, dtype=images.dtype)
        noise = self.noise_map(images, rotations)
        return images * (1.0 - self.strength + self.strength * noise)


class QuantumPatchesTraining(TrainingMethod):
    """Each batch: ``round(mix_ratio * B)`` samples (chosen with the run's generator) are replaced by Quantum
    Patches copies (same labels), made with a fresh random circuit from the same generator."""

    name: ClassVar[str] = "quantum_patches"
    needs_unit_range: ClassVar[bool] = True

    def __init__(self, config: TrainConfig, model: nn.Module, generator: torch.Generator) -> None:
        super().__init__(config, model, generator)
        self.augment = QuantumPatches(config.patches_strength, config.patches_entanglement)

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = round(self.config.patches_mix_ratio * x.shape[0])
        if k == 0:
            return x, y
        idx = torch.randperm(x.shape[0], generator=self.generator)[:k].to(x.device)
        with torch.no_grad():
            augmented = self.augment(x[idx], self.generator)
        out = x.clone()
        out[idx] = augmented
        return out, y
