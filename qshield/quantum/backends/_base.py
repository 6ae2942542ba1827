"""The simulator backend interface: one required method, optional features as yes/no queries."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from .._spec import CircuitSpec


class Backend(ABC):
    """Simulates a :class:`~qshield.quantum.CircuitSpec` differentiably through torch autograd.

    Subclasses implement :meth:`run`. The readout error of the spec is applied by the caller
    (:class:`~qshield.quantum.QuantumLayer`) unless :attr:`applies_readout` is True. A backend with
    :attr:`supports_trajectories` also simulates specs with ``simulation="trajectories"``; its ``run`` then takes
    a keyword ``generator`` (a seeded CPU ``torch.Generator``, the only source of randomness).
    """

    #: Name used by :func:`~qshield.quantum.get_backend` and the ``backend=`` option.
    name: ClassVar[str]
    #: Whether tensors on a CUDA device are simulated on that device.
    supports_cuda: ClassVar[bool] = False
    #: Whether :meth:`run` already applies ``spec.readout_error``.
    applies_readout: ClassVar[bool] = False
    #: Whether specs with ``simulation="trajectories"`` (a stochastic, Monte-Carlo simulation) are supported.
    supports_trajectories: ClassVar[bool] = False

    def __init__(self, spec: CircuitSpec, **options: object) -> None:
        if options:
            raise TypeError(f"backend {self.name!r} takes no options, got {sorted(options)}")
        if spec.is_stochastic and not self.supports_trajectories:
            raise ValueError(
                f"simulation='trajectories' is not supported by backend={self.name!r}; allowed values for this "
                "backend: 'density_matrix', 'auto' (the torch backend simulates trajectories)"
            )
        self.spec = spec

    @abstractmethod
    def run(self, angles: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """Simulate the circuit.

        Args:
            angles: encoding angles ``[B, 3n]`` (radians), real float32 or float64.
            weights: trainable rotation angles ``[depth, n, 3]`` or None when the spec is not trainable.

        Returns:
            ``[B, 2**n]`` basis-state probabilities (wire 0 = most significant bit) or ``[B, n]`` ``<Z_q>``,
            in the dtype of ``angles``, differentiable w.r.t. ``angles`` and ``weights``.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec})"
