"""Quantum trajectories (``simulation="trajectories"``) against the exact density matrix, within statistical error.

* the unravellings reproduce the spec's channels (against the independent Kraus sums of tests/_qref.py);
* unbiased: over every topology x channel (n = 2..8, both measurements, with readout error), the mean of K
  independent estimates of the outputs and of their input gradients is within 5 standard errors of the exact
  density-matrix values; the same for the weight gradients over every channel; the test has the power to see a
  gradient-only bias (the normalised-trajectory mistake: same values, missing score term);
* with state-independent branches (depolarizing, phase damping) a fixed draw is a smooth function: gradcheck;
* the event-correction autograd function against a dense Kronecker computation (gradcheck, gradgradcheck);
* seeded and reproducible; bad inputs refused before compute with the field and the allowed values;
* the ``auto`` selection (qubit threshold, memory budget, backends without trajectories).

Independent estimates come from one call on a batch repeated K times (each copy draws its own trajectories), so
the statistics cost one batched simulation. K (200-400) is large enough for the standard error to be well
estimated (z is then close to normal), so 5 sigma over the ~6,000 element comparisons here has a false-alarm
probability of about 3e-3 (normal tail 5.7e-7 each); the largest z seen is about 4.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import qshield.quantum.backends._trajectories as traj
from qshield.quantum import (
    AUTO_TRAJECTORIES_ABOVE,
    MAX_TRAJECTORIES,
    CircuitSpec,
    QuantumLayer,
    Simulation,
    available_backends,
)
from qshield.quantum.backends._torch import TorchBackend
from tests import _qref

TOPOLOGIES = ["none", "linear", "ring", "full", "star", "brick"]
CHANNELS = ["depolarizing", "amplitude_damping", "phase_damping", "mixed"]
MEASUREMENTS = ["probs", "expval"]
Z_MAX = 5.0


def _pair(**kw) -> tuple[QuantumLayer, QuantumLayer]:
    """(exact density-matrix layer, trajectories layer) with the same weights, float64; the weights are drawn from
    a fixed seed, so the statistical checks see the same circuits whatever ran before them."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        exact = QuantumLayer(**kw, simulation="density_matrix").double()
    stochastic = QuantumLayer(**kw, simulation="trajectories", n_trajectories=8, seed=1).double()
    stochastic.load_state_dict(exact.state_dict())
    return exact, stochastic


def _angles(n: int, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3 * n, generator=g, dtype=torch.float64) * 4 * math.pi - 2 * math.pi


def _z(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|mean - exact| / standard error over the leading (replicate) dimension; a zero spread needs equality."""
    se = samples.std(0) / math.sqrt(samples.shape[0])
    return (samples.mean(0) - exact).abs() / (se + 1e-12)


def _check_values_and_input_gradients(exact: QuantumLayer, stochastic: QuantumLayer, x: torch.Tensor, k: int) -> None:
    g = torch.Generator().manual_seed(99)
    proj = torch.randn(exact.output_dim, generator=g, dtype=torch.float64)  # a generic scalar loss of the outputs
    xe = x.clone().requires_grad_(True)
    out_e = exact(xe)
    (out_e @ proj).sum().backward()
    xr = x.repeat(k, 1).requires_grad_(True)
    out_t = stochastic(xr)
    (out_t @ proj).sum().backward()
    b = x.shape[0]
    z_out = _z(out_t.detach().reshape(k, b, -1), out_e.detach())
    z_grad = _z(xr.grad.reshape(k, b, -1), xe.grad)
    assert z_out.max() <= Z_MAX, f"outputs: max z {z_out.max():.2f}"
    assert z_grad.max() <= Z_MAX, f"input gradients: max z {z_grad.max():.2f}"


CASES = [(ent, ch) for ent in TOPOLOGIES for ch in CHANNELS]


@pytest.mark.parametrize("entanglement, noise", CASES, ids=[f"{e}-{c}" for e, c in CASES])
def test_unbiased_values_and_input_gradients(entanglement, noise):
    i = CASES.index((entanglement, noise))
    n = 2 + i % 7  # every size 2..8 over the cases
    depth = 3 if i % 5 == 0 else 2
    x = _angles(n, batch=2, seed=i)
    k = 200 if n >= 7 else 400
    for measurement in MEASUREMENTS:
        exact, stochastic = _pair(n_qubits=n, depth=depth, entanglement=entanglement, noise=noise,
                                  noise_strength=0.25, readout_error=0.03, measurement=measurement)
        _check_values_and_input_gradients(exact, stochastic, x, k)


def _weight_gradient_z(exact: QuantumLayer, stochastic: QuantumLayer, x: torch.Tensor, groups: int, k: int) -> float:
    proj = torch.randn(exact.output_dim, generator=torch.Generator().manual_seed(98), dtype=torch.float64)
    (exact(x) @ proj).sum().backward()
    grads = []
    for _ in range(groups):  # independent calls: each gives one estimate of the weight gradient
        stochastic.zero_grad()
        (stochastic(x.repeat(k, 1)) @ proj).sum().div(k).backward()
        grads.append(stochastic.weights.grad.clone())
    return float(_z(torch.stack(grads), exact.weights.grad).max())


@pytest.mark.parametrize("noise", CHANNELS)
def test_unbiased_weight_gradients(noise):
    for n, entanglement, measurement in [(3, "ring", "probs"), (4, "full", "expval")]:
        exact, stochastic = _pair(n_qubits=n, depth=3, entanglement=entanglement, noise=noise, noise_strength=0.3,
                                  measurement=measurement)
        z = _weight_gradient_z(exact, stochastic, _angles(n, batch=2, seed=n), groups=64, k=24)
        assert z <= Z_MAX, f"weight gradients: max z {z:.2f}"


def test_the_check_sees_a_gradient_only_bias(monkeypatch):
    """Differentiating through a trajectory's normalisation (the textbook quantum-jump estimator with its score
    term missing) keeps every value but biases the gradient: the statistical check must fail on it."""
    exact, stochastic = _pair(n_qubits=3, depth=2, entanglement="ring", noise="amplitude_damping",
                              noise_strength=0.3, measurement="expval")
    x = _angles(3, batch=2, seed=5)
    measure = traj._measure

    def normalised(ctx, psi):
        norm = (psi.real**2 + psi.imag**2).sum(1, keepdim=True)
        return measure(ctx, psi) / norm * norm.detach()

    monkeypatch.setattr(traj, "_measure", normalised)
    with pytest.raises(AssertionError, match="input gradients"):
        _check_values_and_input_gradients(exact, stochastic, x, k=400)


@pytest.mark.parametrize("noise", ["depolarizing", "phase_damping"])
def test_fixed_draw_is_smooth_for_state_independent_branches(noise):
    spec = CircuitSpec.create(3, 2, "ring", noise, 0.3, measurement="probs", simulation="trajectories",
                              n_trajectories=5)
    backend = TorchBackend(spec)
    x = _angles(3, batch=2, seed=3).requires_grad_(True)
    w = (torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 6).requires_grad_(True)

    def fixed_draw(inp, weights):
        return backend.run(inp, weights, generator=torch.Generator().manual_seed(11))

    assert torch.autograd.gradcheck(fixed_draw, (x, w), eps=1e-6, atol=1e-6)


def test_event_corrections_match_dense_kron_and_differentiate():
    n = 3
    g = torch.Generator().manual_seed(0)
    psi = torch.randn(4, 2**n, generator=g, dtype=torch.complex128, requires_grad=True)
    rows = torch.tensor([0, 0, 2, 3])
    qubits = torch.tensor([0, 2, 1, 1])
    mats = torch.randn(4, 2, 2, generator=g, dtype=torch.complex128)
    out = traj._RowQubitOps.apply(psi, rows, qubits, mats, n)
    expected = psi.detach().clone()
    for r, q, m in zip(rows.tolist(), qubits.tolist(), mats):
        dense = torch.tensor([[1.0 + 0j]], dtype=torch.complex128)
        for wire in range(n):
            dense = torch.kron(dense, m if wire == q else torch.eye(2, dtype=torch.complex128))
        expected[r] = dense @ expected[r]
    torch.testing.assert_close(out.detach(), expected, atol=1e-12, rtol=0)

    def f(p):
        return traj._RowQubitOps.apply(p, rows, qubits, mats, n)

    assert torch.autograd.gradcheck(f, (psi,))
    assert torch.autograd.gradgradcheck(f, (psi,))


@pytest.mark.parametrize("kind", ["depolarizing", "amplitude_damping", "phase_damping"])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_unravellings_reproduce_the_channels(kind, p):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 2)) + 1j * rng.normal(size=(2, 2))
    rho = a @ a.conj().T
    rho /= np.trace(rho)
    expected = sum(k @ rho @ k.conj().T for k in _qref.kraus(kind, p))
    u = traj.unravel(kind, p)
    weights = u.probs if u.probs is not None else (1.0,) * len(u.ops)
    got = sum(q * op @ rho @ op.conj().T for q, op in zip(weights, u.ops))
    np.testing.assert_allclose(got, expected, atol=1e-12)
    if u.probs is not None:  # mixed-unitary: probabilities, unitary branches
        assert sum(u.probs) == pytest.approx(1.0) and min(u.probs) >= 0
        for op in u.ops:
            np.testing.assert_allclose(op @ op.conj().T, np.eye(2), atol=1e-12)


def test_probabilities_nonnegative_and_normalised_without_damping():
    for noise in ["depolarizing", "phase_damping", "mixed"]:
        layer = QuantumLayer(4, 2, "full", noise, 0.3, simulation="trajectories", n_trajectories=6).double()
        probs = layer(_angles(4, batch=5, seed=2))
        assert (probs >= 0).all()
        if noise != "mixed":  # unitary branches: every trajectory keeps norm 1, and the weights sum to 1
            torch.testing.assert_close(probs.sum(1), torch.ones(5, dtype=torch.float64), atol=1e-12, rtol=0)


def test_no_possible_event_gives_the_exact_output():
    # amplitude damping of |0...0> (zero angles, no rotations): no jump can happen, w0 = 1, nothing is sampled
    layer = QuantumLayer(3, 2, "ring", "amplitude_damping", 0.4, trainable=False, simulation="trajectories").double()
    probs = layer(torch.zeros(2, 9, dtype=torch.float64))
    expected = torch.zeros(2, 8, dtype=torch.float64)
    expected[:, 0] = 1
    torch.testing.assert_close(probs, expected, atol=1e-12, rtol=0)


def test_trajectories_that_all_start_in_a_later_layer():
    # |0...0> through the first layer (zero angles and rotations): amplitude damping cannot act there, so every
    # sampled trajectory has its first event in layer 1 and none exists during layer 0
    exact, stochastic = _pair(n_qubits=3, depth=2, entanglement="none", noise="amplitude_damping",
                              noise_strength=0.3, measurement="expval")
    with torch.no_grad():
        for layer in (exact, stochastic):
            layer.weights.zero_()
            layer.weights[1, :, 0] = 2.0  # RX in layer 1 excites every qubit
    _check_values_and_input_gradients(exact, stochastic, torch.zeros(1, 9, dtype=torch.float64), k=400)


def test_float32_runs_and_gradients_reach_weights_and_inputs():
    layer = QuantumLayer(5, 2, "ring", "mixed", 0.1, measurement="expval", simulation="trajectories")
    x = _angles(5, batch=3, seed=1).float().requires_grad_(True)
    out = layer(x)
    assert out.dtype == torch.float32 and out.shape == (3, 5)
    out.sum().backward()
    assert torch.isfinite(layer.weights.grad).all() and layer.weights.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------------------


def _noisy(seed: int) -> QuantumLayer:
    torch.manual_seed(0)  # the same initial weights
    return QuantumLayer(4, 2, "ring", "mixed", 0.2, simulation="trajectories", n_trajectories=4, seed=seed).double()


def test_same_seed_same_outputs_call_by_call_and_different_seeds_differ():
    x = _angles(4, batch=3, seed=0)
    a, b, c = _noisy(7), _noisy(7), _noisy(8)
    first_a, first_b, first_c = a(x), b(x), c(x)
    torch.testing.assert_close(first_a, first_b, atol=0, rtol=0)
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)  # the generators advance in step
    assert not torch.equal(first_a, first_c)
    assert not torch.equal(first_a, a(x))  # fresh trajectories per call: a randomised layer
    a.manual_seed(7)
    torch.testing.assert_close(a(x), first_a, atol=0, rtol=0)
    assert a.is_stochastic and not QuantumLayer(4, 2, "ring", "mixed", 0.2).is_stochastic


# ---------------------------------------------------------------------------------------------------------
# validation and selection
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(simulation="sampled"), r"simulation='sampled'.*allowed values: 'auto', 'density_matrix', 'trajectories'"),
        (dict(n_trajectories=0), rf"n_trajectories=0 is out of range; allowed values: an integer in 1\.\.{MAX_TRAJECTORIES}"),
        (dict(n_trajectories=2.5), r"n_trajectories=2\.5 is invalid; allowed values: an integer"),
        (dict(n_trajectories=True), r"n_trajectories=True is invalid \(a bool\); allowed values: an integer"),
        (dict(n_trajectories=MAX_TRAJECTORIES + 1), r"n_trajectories=65537"),
        (dict(seed="x"), r"seed='x' must be an integer"),
        (dict(simulation="trajectories", backend_options={"method": "heisenberg"}),
         r"method='heisenberg' is not available with simulation='trajectories'.*'auto', 'schrodinger'"),
    ],
)
def test_bad_trajectory_inputs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantumLayer(3, 1, noise="depolarizing", noise_strength=0.1, **kwargs)


def test_run_without_generator_is_refused():
    spec = CircuitSpec.create(3, 1, noise="depolarizing", noise_strength=0.1, simulation="trajectories")
    with pytest.raises(ValueError, match=r"generator=None.*seeded CPU torch.Generator"):
        TorchBackend(spec).run(torch.zeros(1, 9), torch.zeros(1, 3, 3))


@pytest.mark.parametrize("backend", [b for b in available_backends() if b != "torch"])
def test_backends_without_trajectories(backend):
    with pytest.raises(ValueError, match=rf"simulation='trajectories' is not supported by backend='{backend}'"):
        QuantumLayer(3, 1, noise="depolarizing", noise_strength=0.1, backend=backend, simulation="trajectories")
    # auto falls back to the exact density matrix there
    spec = QuantumLayer(AUTO_TRAJECTORIES_ABOVE + 1, 1, noise="depolarizing", noise_strength=0.1, backend=backend).spec
    assert spec.simulation is Simulation.DENSITY_MATRIX and not spec.is_stochastic


def test_auto_selection():
    def spec(n, **kw):
        return CircuitSpec.create(n, 2, "ring", kw.pop("noise", "mixed"), kw.pop("p", 0.005), **kw)

    assert spec(AUTO_TRAJECTORIES_ABOVE).simulation is Simulation.DENSITY_MATRIX
    assert spec(AUTO_TRAJECTORIES_ABOVE + 1).is_stochastic
    assert not spec(16, noise="none").is_stochastic and not spec(16, p=0.0).is_stochastic
    assert spec(6, max_state_bytes=4**6 * 16 - 1).is_stochastic  # the density matrix is over the budget
    assert not spec(12, simulation="density_matrix").is_stochastic
    assert spec(2, simulation="trajectories").is_stochastic
    big = spec(16, n_trajectories=32)
    assert big.state_bytes() == 16 * 2**16 * 33  # 33 statevectors of 16 qubits: 33 MiB, within the budget


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_trajectories_on_cuda_match_cpu_for_the_same_seed():
    layer = QuantumLayer(5, 2, "full", "depolarizing", 0.1, simulation="trajectories", seed=3).double()
    x = _angles(5, batch=4, seed=4)
    cpu = layer(x)
    layer.manual_seed(3)
    gpu = layer.cuda()(x.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-10, rtol=0)
