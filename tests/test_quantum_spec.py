"""Circuit-spec validation: bad specs are refused before any compute, naming the field and allowed values."""

from __future__ import annotations

import pytest
import torch

from qshield.quantum import CircuitSpec, QuantumLayer, cnot_pairs, get_backend, noise_channels


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(entanglement="mesh"), r"entanglement='mesh'.*allowed values: 'none', 'linear', 'ring', 'full', 'star', 'brick'"),
        (dict(noise="thermal"), r"noise='thermal'.*'depolarizing'.*'mixed'"),
        (dict(measurement="sample"), r"measurement='sample'.*'probs', 'expval'"),
        (dict(n_qubits=1), r"n_qubits=1 is out of range; allowed values: an integer in 2\.\.16"),
        (dict(n_qubits=17), r"n_qubits=17 is out of range"),
        (dict(n_qubits=3.5), r"n_qubits=3\.5 is invalid; allowed values: an integer in 2\.\.16"),
        (dict(depth=0), r"depth=0 is out of range; allowed values: an integer >= 1"),
        (dict(noise="depolarizing", noise_strength=1.5), r"noise_strength=1\.5 is out of range; allowed values: a number in \[0, 1\]"),
        (dict(noise="depolarizing", noise_strength=-0.1), r"noise_strength=-0\.1 is out of range; allowed values: a number in \[0, 1\]"),
        (dict(readout_error=2), r"readout_error=2 is out of range; allowed values: a number in \[0, 1\]"),
        (dict(noise_strength="high"), r"noise_strength='high' is invalid; allowed values: a number in \[0, 1\]"),
        (dict(backend="cirq"), r"backend='cirq' does not exist; allowed values: 'torch', 'qulacs', 'pennylane'"),
    ],
)
def test_invalid_specs_raise_value_error(kwargs, match):
    args = dict(n_qubits=3, depth=1) | kwargs
    with pytest.raises(ValueError, match=match):
        QuantumLayer(**args)


def test_density_matrix_memory_budget_is_enforced_with_the_needed_size():
    # 14 noisy qubits: 4**14 amplitudes * 16 bytes = 4 GiB per sample
    with pytest.raises(
        ValueError,
        match=r"needs a density matrix of 4\.0 GiB per sample.*max_state_bytes=2\.0 GiB.*simulation='trajectories'",
    ):
        QuantumLayer(14, 1, noise="depolarizing", noise_strength=0.01, simulation="density_matrix")
    # the default simulation="auto" takes trajectories there (above AUTO_TRAJECTORIES_ABOVE qubits)
    assert QuantumLayer(14, 1, noise="depolarizing", noise_strength=0.01).is_stochastic
    # the same circuit without noise is a 256 KiB statevector and is fine
    QuantumLayer(14, 1, noise="none")
    # an explicit smaller budget is honoured
    with pytest.raises(ValueError, match="max_state_bytes"):
        QuantumLayer(6, 1, noise="mixed", noise_strength=0.1, max_state_bytes=1024)


def test_zero_strength_noise_is_simulated_as_a_statevector():
    spec = CircuitSpec.create(n_qubits=3, depth=1, noise="mixed", noise_strength=0.0)
    assert not spec.is_noisy and spec.noise_channels() == ()


def test_topologies_follow_the_spec():
    assert cnot_pairs(4, "none") == ()
    assert cnot_pairs(4, "linear") == ((0, 1), (1, 2), (2, 3))
    assert cnot_pairs(4, "ring") == ((0, 1), (1, 2), (2, 3), (3, 0))
    assert cnot_pairs(4, "full") == ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
    assert cnot_pairs(4, "star") == ((0, 1), (0, 2), (0, 3))
    assert cnot_pairs(5, "brick") == ((0, 1), (2, 3), (1, 2), (3, 4))


def test_mixed_noise_composition():
    assert noise_channels("mixed", 0.5) == (("depolarizing", 0.2), ("amplitude_damping", 0.15), ("phase_damping", 0.15))


def test_wrong_input_width_is_refused():
    layer = QuantumLayer(3, 1)
    with pytest.raises(ValueError, match=r"angles must have shape \[B, 9\]"):
        layer(torch.zeros(2, 8))


def test_spec_is_frozen():
    spec = CircuitSpec.create(n_qubits=2, depth=1)
    with pytest.raises(AttributeError):
        spec.n_qubits = 5  # type: ignore[misc]


def test_backend_lookup_lists_names():
    with pytest.raises(ValueError, match="allowed values"):
        get_backend("nope")
    assert get_backend("torch").name == "torch"


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match=r"empty batch"):
        QuantumLayer(2, 1)(torch.zeros(0, 6))
