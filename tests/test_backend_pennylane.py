"""PennyLane-specific tests of the ``pennylane`` backend (the shared cross-backend suite is
``tests/test_quantum_backends.py``). Reference: the torch backend plus ``apply_readout``, in float64."""

from __future__ import annotations

import numpy as np
import pennylane as qml
import pytest
import torch

from qshield.quantum import CircuitSpec, QuantumLayer, apply_readout
from qshield.quantum.backends import Backend, get_backend
from qshield.quantum.backends._pennylane import PennyLaneBackend
from qshield.quantum.backends._torch import TorchBackend

F64 = torch.float64


def _inputs(spec: CircuitSpec, batch: int, seed: int, dtype: torch.dtype = F64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, spec.n_inputs, generator=g, dtype=F64) * 2 - 1) * torch.pi
    w = torch.rand(spec.weight_shape, generator=g, dtype=F64) * 2 * torch.pi if spec.trainable else None
    return x.to(dtype), (w.to(dtype) if w is not None else None)


def _reference(spec: CircuitSpec, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Torch backend output with the spec's readout applied (what a QuantumLayer returns)."""
    return apply_readout(TorchBackend(spec).run(x, w), spec)


def _full(backend: PennyLaneBackend, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    out = backend.run(x, w)
    return out if backend.applies_readout else apply_readout(out, backend.spec)


COMBOS = [
    # n, entanglement, noise, strength, readout_error, measurement, trainable
    (2, "linear", "none", 0.0, 0.0, "probs", True),
    (3, "ring", "none", 0.0, 0.07, "expval", True),
    (3, "full", "depolarizing", 0.1, 0.0, "probs", True),
    (3, "star", "amplitude_damping", 0.2, 0.05, "expval", True),
    (3, "brick", "phase_damping", 0.15, 0.1, "probs", True),
    (3, "linear", "mixed", 0.3, 0.12, "probs", False),
    (2, "none", "mixed", 0.25, 0.0, "expval", True),
]


@pytest.mark.parametrize("n, ent, noise, p, r, meas, trainable", COMBOS)
def test_matches_torch_backend_float64(n, ent, noise, p, r, meas, trainable):
    spec = CircuitSpec.create(n, 2, ent, noise, p, r, meas, trainable)
    x, w = _inputs(spec, batch=4, seed=n + int(100 * p) + int(100 * r))
    backend = PennyLaneBackend(spec)
    assert backend.device_name == ("default.mixed" if spec.is_noisy or r > 0 else "default.qubit")
    out = backend.run(x, w)
    assert out.shape == (4, spec.output_dim) and out.dtype == F64
    # float64 agreement to ~1e-12 (PennyLane 0.45's complex64 RZ eigenvalues on default.mixed gave ~1e-7)
    torch.testing.assert_close(_full(backend, x, w), _reference(spec, x, w), rtol=0, atol=1e-12)


@pytest.mark.parametrize("noise, p, meas", [("none", 0.0, "probs"), ("none", 0.0, "expval"), ("mixed", 0.2, "probs")])
def test_readout_in_circuit_is_an_independent_check_of_apply_readout(noise, p, meas):
    spec = CircuitSpec.create(3, 1, "ring", noise, p, readout_error=0.15, measurement=meas)
    x, w = _inputs(spec, batch=3, seed=7)
    in_circuit = PennyLaneBackend(spec)  # auto: qml.BitFlip on default.mixed
    by_layer = PennyLaneBackend(spec, readout="layer")
    assert in_circuit.applies_readout and in_circuit.device_name == "default.mixed"
    assert not by_layer.applies_readout
    assert PennyLaneBackend.applies_readout is False and Backend.applies_readout is False  # class defaults intact
    raw = by_layer.run(x, w)
    with_bitflip = in_circuit.run(x, w)
    assert (with_bitflip - raw).abs().max() > 1e-3  # the readout really changes the output
    torch.testing.assert_close(with_bitflip, apply_readout(raw, spec), rtol=0, atol=1e-12)


def test_readout_zero_is_not_applied_and_layer_skips_double_readout():
    spec = CircuitSpec.create(2, 1, readout_error=0.0)
    assert not PennyLaneBackend(spec, readout="circuit").applies_readout
    layer = QuantumLayer(2, 1, readout_error=0.2, backend="pennylane").double()
    assert layer.backend.applies_readout
    ref = QuantumLayer(2, 1, readout_error=0.2, backend="torch").double()
    ref.load_state_dict(layer.state_dict())
    x, _ = _inputs(layer.spec, batch=3, seed=3)
    torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "n, noise, p, r, meas",
    [(2, "none", 0.0, 0.0, "probs"), (2, "none", 0.0, 0.0, "expval"), (3, "mixed", 0.2, 0.1, "probs"),
     (3, "depolarizing", 0.1, 0.0, "expval")],
)
def test_gradcheck_inputs_and_weights(n, noise, p, r, meas):
    spec = CircuitSpec.create(n, 1, "ring", noise, p, r, meas)
    backend = PennyLaneBackend(spec)
    x, w = _inputs(spec, batch=2, seed=11)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: backend.run(a, b), (x, w), eps=1e-6, atol=1e-6)
    # and the analytic gradients equal the torch backend's
    cot = torch.linspace(-1.0, 1.0, 2 * spec.output_dim, dtype=F64).reshape(2, spec.output_dim)
    g_pl = torch.autograd.grad((_full(backend, x, w) * cot).sum(), (x, w))
    g_ref = torch.autograd.grad((_reference(spec, x, w) * cot).sum(), (x, w))
    for a, b in zip(g_pl, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


@pytest.mark.parametrize("noise, p", [("none", 0.0), ("amplitude_damping", 0.2)])
def test_batch_of_one_and_one_simulation_per_batch(noise, p):
    spec = CircuitSpec.create(3, 2, "linear", noise, p)
    backend = PennyLaneBackend(spec)
    x, w = _inputs(spec, batch=5, seed=5)
    with qml.Tracker(backend._qnode.device) as tracker:
        full = backend.run(x, w)
    assert tracker.totals["simulations"] == 1 and tracker.totals["executions"] == 5  # broadcast, no loop
    one = backend.run(x[2:3], w)
    assert one.shape == (1, spec.output_dim)
    torch.testing.assert_close(one, full[2:3], rtol=0, atol=1e-13)


def test_not_trainable():
    spec = CircuitSpec.create(3, 2, "full", "depolarizing", 0.1, measurement="expval", trainable=False)
    backend = PennyLaneBackend(spec)
    x, _ = _inputs(spec, batch=3, seed=2)
    torch.testing.assert_close(backend.run(x, None), _reference(spec, x, None), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="trainable=False"):
        backend.run(x, torch.zeros(2, 3, 3, dtype=F64))


@pytest.mark.parametrize("noise, p", [("none", 0.0), ("phase_damping", 0.2)])
def test_float32_in_float32_out_with_gradients(noise, p):
    spec = CircuitSpec.create(2, 2, "linear", noise, p, readout_error=0.05)
    backend = PennyLaneBackend(spec)
    x64, w64 = _inputs(spec, batch=3, seed=9)
    x = x64.float().requires_grad_(True)
    w = w64.float().requires_grad_(True)
    out = backend.run(x, w)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), backend.run(x64.float().double(), w64.float().double()), rtol=0, atol=1e-7)
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32 and w.grad is not None and w.grad.abs().sum() > 0


@pytest.mark.parametrize("meas, r", [("probs", 0.0), ("expval", 0.1), ("probs", 0.2)])
def test_lightning_matches_torch_with_gradients(meas, r):
    spec = CircuitSpec.create(2, 2, "ring", readout_error=r, measurement=meas)
    backend = PennyLaneBackend(spec, device="lightning.qubit")
    assert backend.device_name == "lightning.qubit" and not backend.applies_readout  # readout left to the layer
    for batch in (1, 3):
        x, w = _inputs(spec, batch=batch, seed=batch)
        x.requires_grad_(True)
        w.requires_grad_(True)
        out = _full(backend, x, w)
        ref = _reference(spec, x, w)
        assert out.shape == (batch, spec.output_dim) and out.dtype == F64
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)  # float64 kept (no float32 expval round trip)
        cot = torch.cos(torch.arange(out.numel(), dtype=F64)).reshape(out.shape)
        g_pl = torch.autograd.grad((out * cot).sum(), (x, w))
        g_ref = torch.autograd.grad((ref * cot).sum(), (x, w))
        for a, b in zip(g_pl, g_ref):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_lightning_refuses_noise_and_circuit_readout():
    noisy = CircuitSpec.create(2, 1, noise="depolarizing", noise_strength=0.1)
    with pytest.raises(ValueError, match=r"device='lightning.qubit'.*noise='depolarizing'.*device='default'"):
        PennyLaneBackend(noisy, device="lightning.qubit")
    clean = CircuitSpec.create(2, 1, readout_error=0.1)
    with pytest.raises(ValueError, match=r"readout='circuit'.*lightning"):
        PennyLaneBackend(clean, device="lightning.qubit", readout="circuit")


def test_bad_options():
    spec = CircuitSpec.create(2, 1)
    with pytest.raises(ValueError, match=r"device='gpu\.qubit'.*'default', 'lightning\.qubit'"):
        PennyLaneBackend(spec, device="gpu.qubit")
    with pytest.raises(ValueError, match=r"readout='sometimes'.*'auto', 'circuit', 'layer'"):
        PennyLaneBackend(spec, readout="sometimes")
    with pytest.raises(TypeError):
        PennyLaneBackend(spec, shots=100)  # type: ignore[call-arg]


def test_bad_inputs_fail_before_simulating():
    spec = CircuitSpec.create(2, 1)
    backend = PennyLaneBackend(spec)

    def _must_not_run(*args, **kwargs):
        raise AssertionError("simulated despite invalid input")

    backend._qnode = _must_not_run  # type: ignore[assignment]
    x, w = _inputs(spec, batch=2, seed=0)
    cases = [
        ((x[:, :5], w), r"angles shape=\(2, 5\).*\[B, 6\]"),
        ((x[:0], w), r"angles shape=\(0, 6\).*B >= 1"),
        ((x.to(torch.int64), w), r"angles dtype=torch.int64.*torch.float32, torch.float64"),
        ((x, None), r"weights=None.*\(1, 2, 3\)"),
        ((x, w[:, :1]), r"weights shape=\(1, 1, 3\).*\(1, 2, 3\)"),
        ((x, w.to(torch.complex128)), r"weights dtype=torch.complex128"),
    ]
    for args, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            backend.run(*args)


def test_registry_layer_options_and_weight_gradients():
    assert get_backend("pennylane") is PennyLaneBackend
    layer = QuantumLayer(3, 2, "brick", "mixed", 0.1, measurement="expval", backend="pennylane",
                         backend_options={"device": "default"}).double()
    ref = QuantumLayer(3, 2, "brick", "mixed", 0.1, measurement="expval", backend="torch").double()
    ref.load_state_dict(layer.state_dict())
    x, _ = _inputs(layer.spec, batch=2, seed=4)
    layer(x).pow(2).sum().backward()
    ref(x).pow(2).sum().backward()
    assert layer.weights.grad is not None
    torch.testing.assert_close(layer.weights.grad, ref.weights.grad, rtol=0, atol=1e-11)


def test_construction_leaves_numpy_global_rng_alone():
    before = np.random.get_state()
    PennyLaneBackend(CircuitSpec.create(2, 1))
    PennyLaneBackend(CircuitSpec.create(2, 1, noise="depolarizing", noise_strength=0.1))
    PennyLaneBackend(CircuitSpec.create(2, 1), device="lightning.qubit")
    after = np.random.get_state()
    assert before[2] == after[2] and np.array_equal(before[1], after[1])


def test_auto_readout_falls_back_to_layer_when_density_matrix_is_too_big():
    spec = CircuitSpec.create(14, 1, readout_error=0.1)  # statevector fits; a 14-qubit density matrix needs 4 GiB
    auto = PennyLaneBackend(spec)  # nothing is simulated at construction
    assert auto.device_name == "default.qubit" and not auto.applies_readout
    with pytest.raises(ValueError, match=r"readout='circuit'.*n_qubits=14.*readout='layer'"):
        PennyLaneBackend(spec, readout="circuit")
    small = PennyLaneBackend(CircuitSpec.create(13, 1, readout_error=0.1))
    assert small.device_name == "default.mixed" and small.applies_readout
