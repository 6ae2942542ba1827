"""Quantum core: circuit specification, entanglement topologies, noise, simulator backends, ``QuantumLayer``."""

from __future__ import annotations

from ._layer import QuantumLayer
from ._readout import apply_readout
from ._spec import (
    AUTO_TRAJECTORIES_ABOVE,
    DEFAULT_MAX_STATE_BYTES,
    DEFAULT_TRAJECTORIES,
    MAX_TRAJECTORIES,
    MAX_QUBITS,
    MIN_QUBITS,
    CircuitConfig,
    CircuitSpec,
    Depth,
    Encoding,
    Entanglement,
    Measurement,
    Noise,
    NQubits,
    Simulation,
    Trajectories,
    cnot_pairs,
    kraus_operators,
    noise_channels,
)
from .backends import BACKENDS, Backend, available_backends, get_backend

__all__ = [
    "QuantumLayer",
    "CircuitConfig",
    "CircuitSpec",
    "Depth",
    "NQubits",
    "Trajectories",
    "Encoding",
    "Entanglement",
    "Noise",
    "Measurement",
    "Simulation",
    "cnot_pairs",
    "noise_channels",
    "kraus_operators",
    "apply_readout",
    "Backend",
    "BACKENDS",
    "get_backend",
    "available_backends",
    "MIN_QUBITS",
    "MAX_QUBITS",
    "DEFAULT_MAX_STATE_BYTES",
    "AUTO_TRAJECTORIES_ABOVE",
    "DEFAULT_TRAJECTORIES",
    "MAX_TRAJECTORIES",
]
