"""The shared test suite every simulator backend must pass (PennyLane's devices/tests idea).

* every backend agrees with an independent naive NumPy simulator (tests/_qref.py) and with every other backend
  to <= 1e-5 in float64, for every topology x noise kind x measurement, n in {2, 3, 4, 5};
* torch.autograd.gradcheck passes on each backend w.r.t. the inputs and the weights;
* closed forms: RX(t) gives <Z> = cos t; a Bell state; amplitude damping of |1>; depolarizing and phase damping;
* probabilities are normalised (trace of rho stays 1).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from qshield.quantum import QuantumLayer, available_backends
from tests import _qref

BACKENDS = available_backends()
TOPOLOGIES = ["none", "linear", "ring", "full", "star", "brick"]
NOISES = ["none", "depolarizing", "amplitude_damping", "phase_damping", "mixed"]
MEASUREMENTS = ["probs", "expval"]


def _layer(backend: str, **kw) -> QuantumLayer:
    return QuantumLayer(backend=backend, **kw).double()


def _random_inputs(n: int, depth: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3 * n, generator=g, dtype=torch.float64) * 4 * math.pi - 2 * math.pi
    w = torch.rand(depth, n, 3, generator=g, dtype=torch.float64) * 2 * math.pi
    return x, w


def test_torch_backend_always_available():
    assert "torch" in BACKENDS


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("entanglement", TOPOLOGIES)
def test_backends_agree_with_reference_and_each_other(n, noise, entanglement):
    depth, p, readout = 2, 0.07, 0.03
    x, w = _random_inputs(n, depth, batch=3, seed=n * 1000 + TOPOLOGIES.index(entanglement) * 10 + NOISES.index(noise))
    for measurement in MEASUREMENTS:
        kw = dict(n_qubits=n, depth=depth, entanglement=entanglement, noise=noise, noise_strength=p,
                  readout_error=readout, measurement=measurement)
        expected = np.stack([
            _qref.simulate(x[i].numpy(), w.numpy(), n=n, depth=depth, ent=entanglement, noise=noise, p=p,
                           readout=readout, measurement=measurement)
            for i in range(x.shape[0])
        ])
        outputs = {}
        for backend in BACKENDS:
            layer = _layer(backend, **kw)
            with torch.no_grad():
                layer.weights.copy_(w)
                out = layer(x)
            assert out.dtype == torch.float64
            assert out.shape == (3, 2**n if measurement == "probs" else n)
            np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=0,
                                       err_msg=f"{backend} vs reference ({measurement})")
            outputs[backend] = out
        for a, b in itertools.combinations(outputs, 2):
            np.testing.assert_allclose(outputs[a].numpy(), outputs[b].numpy(), atol=1e-5, rtol=0,
                                       err_msg=f"{a} vs {b} ({measurement})")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "config",
    [
        dict(n_qubits=2, depth=2, entanglement="ring", noise="none", measurement="probs"),
        dict(n_qubits=3, depth=1, entanglement="full", noise="none", measurement="expval"),
        dict(n_qubits=2, depth=1, entanglement="linear", noise="mixed", noise_strength=0.1, measurement="probs"),
        dict(n_qubits=3, depth=1, entanglement="star", noise="amplitude_damping", noise_strength=0.2,
             readout_error=0.05, measurement="expval"),
    ],
    ids=["ring-probs", "full-expval", "mixed-probs", "ad-readout-expval"],
)
def test_gradcheck_inputs_and_weights(backend, config):
    layer = _layer(backend, **config)
    n, depth = config["n_qubits"], config["depth"]
    x, w = _random_inputs(n, depth, batch=2, seed=7)
    x.requires_grad_(True)
    w.requires_grad_(True)

    def f(inp, weights):
        return layer.backend.run(inp, weights)

    assert torch.autograd.gradcheck(f, (x, w), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_reach_layer_weights_and_inputs(backend):
    layer = _layer(backend, n_qubits=3, depth=2, entanglement="linear", noise="depolarizing", noise_strength=0.05)
    x, _ = _random_inputs(3, 2, batch=4, seed=3)
    x.requires_grad_(True)
    target = torch.arange(4) % 8
    loss = -torch.log(layer(x)[torch.arange(4), target]).sum()
    loss.backward()
    assert layer.weights.grad is not None and torch.isfinite(layer.weights.grad).all()
    assert layer.weights.grad.abs().sum() > 0
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _angles(n: int, values: dict[int, float]) -> torch.Tensor:
    x = torch.zeros(1, 3 * n, dtype=torch.float64)
    for k, v in values.items():
        x[0, k] = v
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("theta", [0.0, 0.3, 1.1, math.pi / 2, 2.5, math.pi])
def test_rx_gives_cos_theta(backend, theta):
    layer = _layer(backend, n_qubits=2, depth=1, entanglement="none", measurement="expval", trainable=False)
    out = layer(_angles(2, {0: theta}))
    assert out[0, 0].item() == pytest.approx(math.cos(theta), abs=1e-9)
    assert out[0, 1].item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bell_state_probabilities(backend):
    # RY(pi/2)|0> = (|0> + |1>)/sqrt 2 on wire 0, then CNOT(0, 1) -> (|00> + |11>)/sqrt 2
    layer = _layer(backend, n_qubits=2, depth=1, entanglement="linear", trainable=False)
    probs = layer(_angles(2, {1: math.pi / 2}))[0]
    np.testing.assert_allclose(probs.numpy(), [0.5, 0.0, 0.0, 0.5], atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.9])
def test_amplitude_damping_of_one(backend, gamma):
    # RX(pi)|0> = -i|1>; each layer's damping keeps |1> with probability 1 - gamma; wire 0 is the MSB
    depth = 2
    layer = _layer(backend, n_qubits=2, depth=depth, entanglement="none", noise="amplitude_damping",
                   noise_strength=gamma, trainable=False)
    probs = layer(_angles(2, {0: math.pi}))[0]
    p1 = (1 - gamma) ** depth
    np.testing.assert_allclose(probs.numpy(), [1 - p1, 0.0, p1, 0.0], atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_depolarizing_and_phase_damping_closed_forms(backend):
    p, theta = 0.3, 0.8
    dep = _layer(backend, n_qubits=2, depth=1, entanglement="none", noise="depolarizing", noise_strength=p,
                 measurement="expval", trainable=False)
    # depolarizing shrinks the Bloch vector by 1 - 4p/3
    assert dep(_angles(2, {0: theta}))[0, 0].item() == pytest.approx((1 - 4 * p / 3) * math.cos(theta), abs=1e-9)
    pd = _layer(backend, n_qubits=2, depth=1, entanglement="none", noise="phase_damping", noise_strength=p,
                measurement="expval", trainable=False)
    # phase damping leaves populations alone
    assert pd(_angles(2, {0: theta}))[0, 0].item() == pytest.approx(math.cos(theta), abs=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_readout_error_on_ground_state(backend):
    r = 0.1
    layer = _layer(backend, n_qubits=2, depth=1, entanglement="none", readout_error=r, trainable=False)
    probs = layer(_angles(2, {}))[0]
    np.testing.assert_allclose(probs.numpy(), [(1 - r) ** 2, (1 - r) * r, r * (1 - r), r**2], atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("noise", NOISES)
def test_probabilities_normalised_and_nonnegative(backend, noise):
    layer = _layer(backend, n_qubits=4, depth=3, entanglement="full", noise=noise, noise_strength=0.2,
                   readout_error=0.02)
    x, _ = _random_inputs(4, 3, batch=5, seed=11)
    probs = layer(x)
    assert torch.allclose(probs.sum(-1), torch.ones(5, dtype=torch.float64), atol=1e-10)
    assert (probs > -1e-12).all()


def test_torch_density_matrix_trace_stays_one():
    from qshield.quantum import CircuitSpec
    from qshield.quantum.backends._torch import TorchBackend

    spec = CircuitSpec.create(n_qubits=3, depth=4, entanglement="ring", noise="mixed", noise_strength=0.4)
    backend = TorchBackend(spec)
    x, w = _random_inputs(3, 4, batch=6, seed=5)
    probs = backend.run(x, w)
    assert torch.allclose(probs.sum(-1), torch.ones(6, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_close_to_float64(backend):
    layer = QuantumLayer(3, 2, "ring", "mixed", 0.05, backend=backend)
    x, _ = _random_inputs(3, 2, batch=4, seed=2)
    out32 = layer(x.float())
    out64 = layer.double()(x)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.detach().numpy(), out64.detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_untrainable_layer_has_no_weights(backend):
    layer = QuantumLayer(2, 1, backend=backend, trainable=False)
    assert layer.weights is None and list(layer.parameters()) == []


@pytest.mark.parametrize("group_size", [1, 2, 3, 8])
def test_torch_block_grouping_does_not_change_results(group_size):
    ref = QuantumLayer(5, 2, "brick", "depolarizing", 0.1).double()
    other = QuantumLayer(5, 2, "brick", "depolarizing", 0.1, backend_options={"group_size": group_size}).double()
    other.load_state_dict(ref.state_dict())
    x, _ = _random_inputs(5, 2, batch=3, seed=9)
    torch.testing.assert_close(other(x), ref(x), atol=1e-12, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
@pytest.mark.parametrize("noise", ["none", "mixed"])
def test_torch_backend_cuda_matches_cpu(noise):
    layer = QuantumLayer(4, 2, "full", noise, 0.05).double()
    x, _ = _random_inputs(4, 2, batch=8, seed=4)
    cpu = layer(x)
    gpu = layer.cuda()(x.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-10, rtol=0)
