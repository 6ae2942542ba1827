"""``QuantumLayer``: the parameterised quantum circuit as a ``torch.nn.Module``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._readout import apply_readout
from ._spec import DEFAULT_MAX_STATE_BYTES, DEFAULT_TRAJECTORIES, CircuitSpec, Simulation
from .backends import get_backend


class QuantumLayer(nn.Module):
    """Angle-encoded, layered, optionally noisy quantum circuit (spec: ``docs/circuits.md``).

    Args:
        n_qubits: 2..16.
        depth: number of layers (>= 1).
        entanglement: CNOT topology per layer: ``none``, ``linear``, ``ring``, ``full``, ``star``, ``brick``.
        noise: channel after each layer on every qubit: ``none``, ``depolarizing``, ``amplitude_damping``,
            ``phase_damping``, ``mixed`` (depolarizing 0.4p, amplitude damping 0.3p, phase damping 0.3p).
        noise_strength: channel probability p in [0, 1].
        readout_error: symmetric bit-flip probability applied to the measured distribution, in [0, 1].
        measurement: ``probs`` -> ``[B, 2**n]`` or ``expval`` -> ``[B, n]`` (``<Z_q>``).
        trainable: add per-qubit RX/RY/RZ with trainable angles (parameter ``weights [depth, n, 3]``) to each
            layer; when False the layer has no parameters and ``weights`` is None.
        backend: simulator name (``torch``, ``qulacs``, ``pennylane``).
        max_state_bytes: per-sample memory budget for the simulated state; a larger circuit is refused.
        backend_options: extra keyword arguments for the backend.
        simulation: how channel noise is simulated: ``density_matrix`` (exact), ``trajectories`` (Monte-Carlo
            wavefunction, unbiased, stochastic; torch backend only) or ``auto`` (default: trajectories for a noisy
            circuit of more than ``AUTO_TRAJECTORIES_ABOVE`` = 10 qubits or over ``max_state_bytes``, when the
            backend supports them; else the density matrix). See ``docs/circuits.md``.
        n_trajectories: sampled trajectories per sample (default ``DEFAULT_TRAJECTORIES``), besides the no-jump
            trajectory that is computed exactly; the standard error falls as ``1 / sqrt(n_trajectories)``.
        seed: seed of the layer's own ``torch.Generator`` (default 0), the only source of the trajectories'
            randomness: layers built with the same seed give identical outputs call by call.

    ``forward(angles [B, 3n]) -> [B, 2**n] | [B, n]``, differentiable w.r.t. the angles and the weights. With
    trajectories (:attr:`is_stochastic`) each call draws fresh trajectories from the layer's generator: the
    output is an unbiased estimate of the exact one, and so is its gradient; a model containing such a layer is
    randomised, and attacks on it need expectation over transformation (EOT).
    """

    def __init__(
        self,
        n_qubits: int,
        depth: int,
        entanglement: str = "linear",
        noise: str = "none",
        noise_strength: float = 0.0,
        readout_error: float = 0.0,
        measurement: str = "probs",
        trainable: bool = True,
        backend: str = "torch",
        *,
        max_state_bytes: int | None = DEFAULT_MAX_STATE_BYTES,
        backend_options: dict[str, Any] | None = None,
        simulation: str | Simulation = "auto",
        n_trajectories: int = DEFAULT_TRAJECTORIES,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed={seed!r} must be an integer")
        circuit = dict(
            n_qubits=n_qubits,
            depth=depth,
            entanglement=entanglement,
            noise=noise,
            noise_strength=noise_strength,
            readout_error=readout_error,
            measurement=measurement,
            trainable=trainable,
            max_state_bytes=max_state_bytes,
            n_trajectories=n_trajectories,
        )
        self.spec = CircuitSpec.create(**circuit, simulation=simulation)  # validated before any backend is touched
        backend_cls = get_backend(backend)
        auto = Simulation.parse(simulation, "simulation") is Simulation.AUTO
        if auto and self.spec.is_stochastic and not backend_cls.supports_trajectories:
            self.spec = CircuitSpec.create(**circuit, simulation=Simulation.DENSITY_MATRIX)  # auto: the best it has
        self.backend_name = str(backend).lower()
        self.backend = backend_cls(self.spec, **(backend_options or {}))
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed) if self.spec.is_stochastic else None
        if self.spec.trainable:
            self.weights = nn.Parameter(torch.empty(self.spec.weight_shape))
            nn.init.uniform_(self.weights, 0.0, 2 * math.pi)
        else:
            self.register_parameter("weights", None)

    @property
    def output_dim(self) -> int:
        return self.spec.output_dim

    @property
    def is_stochastic(self) -> bool:
        """True when the outputs are a Monte-Carlo estimate (trajectories): a randomised layer, attacks need EOT."""
        return self.spec.is_stochastic

    def manual_seed(self, seed: int) -> "QuantumLayer":
        """Restart the layer's trajectory generator from ``seed`` (no effect on a deterministic layer)."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed={seed!r} must be an integer")
        self.seed = seed
        if self.generator is not None:
            self.generator.manual_seed(seed)
        return self

    def forward(self, angles: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if angles.ndim != 2 or angles.shape[1] != spec.n_inputs:
            raise ValueError(
                f"angles must have shape [B, {spec.n_inputs}] (3 per qubit for n_qubits={spec.n_qubits}), "
                f"got {tuple(angles.shape)}"
            )
        if angles.shape[0] == 0:
            raise ValueError("angles is an empty batch (B=0); pass at least one sample")
        if angles.device.type != "cpu" and not self.backend.supports_cuda:
            raise ValueError(f"backend={self.backend_name!r} runs on the CPU only; got angles on {angles.device}")
        weights = self.weights.to(angles.dtype) if self.weights is not None else None
        if self.generator is not None:
            out = self.backend.run(angles, weights, generator=self.generator)  # type: ignore[call-arg]
        else:
            out = self.backend.run(angles, weights)
        if not self.backend.applies_readout:
            out = apply_readout(out, spec)
        return out

    def extra_repr(self) -> str:
        s = self.spec
        stochastic = f", simulation=trajectories, n_trajectories={s.n_trajectories}, seed={self.seed}"
        return (
            f"n_qubits={s.n_qubits}, depth={s.depth}, entanglement={s.entanglement.value}, noise={s.noise.value}, "
            f"noise_strength={s.noise_strength}, readout_error={s.readout_error}, "
            f"measurement={s.measurement.value}, trainable={s.trainable}, backend={self.backend_name}"
            + (stochastic if s.is_stochastic else "")
        )
