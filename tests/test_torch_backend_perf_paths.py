"""The torch backend's evaluation paths (``method`` = schrodinger / heisenberg / auto) and their building blocks.

* every forced path agrees with the independent NumPy simulator (tests/_qref.py) and with the other paths to
  1e-10 in float64, over noise kinds x measurements x topologies x depth x trainable;
* gradcheck (and gradgradcheck) of each path w.r.t. the inputs and the weights;
* the building blocks against independent dense computations: the Pauli-basis CNOT map (dense conjugation), the
  rotation PTMs (``Tr(P_i U P_j U^dagger) / 2`` from the 2x2 unitaries), the grouped Kronecker application
  (``torch.kron`` of everything), the permutation autograd function (gradcheck, gradgradcheck);
* the ``method`` option: validation errors name the allowed values; ``auto`` takes the path the documented cost
  model prices lower.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from qshield.quantum import CircuitSpec, QuantumLayer
from qshield.quantum.backends._torch import (
    MAX_HEISENBERG_ENTRIES,
    Method,
    TorchBackend,
    _Permute,
    apply_blocks,
    bloch_rotations,
    cnot_pauli_map,
    encoded_amplitudes,
    encoded_bloch_vectors,
    euler_unitaries,
    kron_blocks,
    rotated_positions,
    wire_groups,
)
from tests import _qref

PATHS = ["schrodinger", "heisenberg"]


def _inputs(n: int, depth: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3 * n, generator=g, dtype=torch.float64) * 4 * math.pi - 2 * math.pi
    w = torch.rand(depth, n, 3, generator=g, dtype=torch.float64) * 2 * math.pi
    return x, w


def _reference(x: torch.Tensor, w: torch.Tensor | None, spec: CircuitSpec) -> np.ndarray:
    weights = w.numpy() if w is not None else np.zeros(spec.weight_shape)
    return np.stack(
        [
            _qref.simulate(
                xi.numpy(),
                weights,
                n=spec.n_qubits,
                depth=spec.depth,
                ent=spec.entanglement.value,
                noise=spec.noise.value,
                p=spec.noise_strength,
                readout=0.0,
                measurement=spec.measurement.value,
                trainable=spec.trainable,
            )
            for xi in x
        ]
    )


CONFIGS = [
    {
        "n_qubits": n,
        "depth": depth,
        "entanglement": ent,
        "noise": noise,
        "noise_strength": 0.09,
        "measurement": meas,
        "trainable": trainable,
    }
    for (n, depth, ent), noise, meas, trainable in itertools.product(
        [(2, 1, "linear"), (3, 3, "ring"), (4, 2, "full"), (4, 1, "none"), (5, 2, "brick")],
        ["none", "mixed", "amplitude_damping"],
        ["probs", "expval"],
        [True, False],
    )
]


def _id(cfg: dict) -> str:
    return "{n_qubits}q-d{depth}-{entanglement}-{noise}-{measurement}-{trainable}".format(**cfg)


@pytest.mark.parametrize("seed", range(len(CONFIGS)), ids=[_id(c) for c in CONFIGS])
def test_every_path_matches_reference_and_each_other(seed):
    spec = CircuitSpec.create(**CONFIGS[seed])
    x, w = _inputs(spec.n_qubits, spec.depth, batch=4, seed=seed)
    weights = w if spec.trainable else None
    expected = _reference(x, weights, spec)
    outs = {}
    for method in PATHS + ["auto"]:
        out = TorchBackend(spec, method=method).run(x, weights)
        assert out.dtype == torch.float64 and out.shape == (4, spec.output_dim)
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-10, rtol=0, err_msg=f"{method} vs reference")
        outs[method] = out
    for a, b in itertools.combinations(outs, 2):
        torch.testing.assert_close(outs[a], outs[b], atol=1e-10, rtol=0, msg=f"{a} vs {b}")


@pytest.mark.parametrize("method", PATHS)
@pytest.mark.parametrize("group_size", [1, 3, 8])
def test_grouping_does_not_change_any_path(method, group_size):
    for noise in ["none", "depolarizing"]:
        spec = CircuitSpec.create(5, 3, "ring", noise, 0.1, measurement="probs")
        x, w = _inputs(5, 3, batch=3, seed=group_size)
        ref = TorchBackend(spec, method="schrodinger").run(x, w)
        out = TorchBackend(spec, group_size=group_size, method=method).run(x, w)
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", PATHS)
@pytest.mark.parametrize(
    "config",
    [
        {"n_qubits": 2, "depth": 3, "entanglement": "ring", "noise": "none", "measurement": "probs"},
        {"n_qubits": 3, "depth": 2, "entanglement": "full", "noise": "none", "measurement": "expval"},
        {
            "n_qubits": 2,
            "depth": 2,
            "entanglement": "linear",
            "noise": "mixed",
            "noise_strength": 0.1,
            "measurement": "probs",
        },
        {
            "n_qubits": 3,
            "depth": 2,
            "entanglement": "star",
            "noise": "amplitude_damping",
            "noise_strength": 0.2,
            "measurement": "expval",
        },
    ],
    ids=["sv-probs", "sv-expval", "dm-probs", "dm-expval"],
)
def test_gradcheck_each_path(method, config):
    backend = TorchBackend(CircuitSpec.create(**config), method=method)
    x, w = _inputs(config["n_qubits"], config["depth"], batch=2, seed=13)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(backend.run, (x, w), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", PATHS)
@pytest.mark.parametrize("noise", ["none", "depolarizing"])
def test_gradgradcheck_each_path(method, noise):
    backend = TorchBackend(CircuitSpec.create(2, 2, "ring", noise, 0.1), method=method)
    x, w = _inputs(2, 2, batch=2, seed=17)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradgradcheck(backend.run, (x, w), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("method", PATHS)
def test_float32_close_to_float64_each_path(method):
    for noise in ["none", "mixed"]:
        backend = TorchBackend(CircuitSpec.create(4, 3, "full", noise, 0.05), method=method)
        x, w = _inputs(4, 3, batch=5, seed=3)
        out64 = backend.run(x, w)
        out32 = backend.run(x.float(), w.float())
        assert out32.dtype == torch.float32
        torch.testing.assert_close(out32.double(), out64, atol=2e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# building blocks against dense, independent computations
# ---------------------------------------------------------------------------------------------------------

_P = [_qref.I2, _qref.X, _qref.Y, _qref.Z]


def _pauli_string(s: int, n: int) -> np.ndarray:
    out = np.array([[1.0 + 0j]])
    for q in range(n):
        out = np.kron(out, _P[(s // 4 ** (n - 1 - q)) % 4])
    return out


@pytest.mark.parametrize("entanglement", ["linear", "ring", "full", "star", "brick"])
def test_cnot_pauli_map_matches_dense_conjugation(entanglement):
    n = 3
    pairs = CircuitSpec.create(n, 1, entanglement).cnot_pairs()
    dense = np.eye(2**n, dtype=complex)
    for c, t in pairs:
        dense = _qref.cnot(c, t, n) @ dense
    idx, sign = cnot_pauli_map(n, pairs)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2**n, 2**n)) + 1j * rng.normal(size=(2**n, 2**n))
    rho = a @ a.conj().T
    rho /= np.trace(rho)
    coeffs = np.array([np.trace(_pauli_string(s, n) @ rho).real for s in range(4**n)])
    after = dense @ rho @ dense.conj().T
    expected = np.array([np.trace(_pauli_string(s, n) @ after).real for s in range(4**n)])
    np.testing.assert_allclose(sign.numpy() * coeffs[idx.numpy()], expected, atol=1e-12)


def test_rotation_ptms_and_encodings_match_the_unitaries():
    angles = _inputs(1, 1, batch=7, seed=5)[0].reshape(7, 3)
    u = euler_unitaries(angles).numpy()  # [7, 2, 2]
    for k in range(7):
        expected_u = (
            _qref.rot("z", angles[k, 2].item())
            @ _qref.rot("y", angles[k, 1].item())
            @ _qref.rot("x", angles[k, 0].item())
        )
        np.testing.assert_allclose(u[k], expected_u, atol=1e-12)
        ptm = np.array([[np.trace(_P[i] @ u[k] @ _P[j] @ u[k].conj().T).real / 2 for j in range(4)] for i in range(4)])
        np.testing.assert_allclose(bloch_rotations(angles[k]).numpy(), ptm[1:, 1:], atol=1e-12)
        np.testing.assert_allclose(ptm[0], [1, 0, 0, 0], atol=1e-12)
        psi = expected_u[:, 0]
        np.testing.assert_allclose(encoded_amplitudes(angles[k]).numpy(), psi, atol=1e-12)
        bloch = [np.vdot(psi, p @ psi).real for p in _P[1:]]
        np.testing.assert_allclose(encoded_bloch_vectors(angles[k]).numpy(), bloch, atol=1e-12)


@pytest.mark.parametrize("widths", [(1, 1, 1, 1), (2, 2), (3, 1), (4,)])
@pytest.mark.parametrize("shape", [(2, 2), (4, 4), (2, 4)], ids=["sv", "dm", "measure"])
def test_apply_blocks_matches_dense_kron(widths, shape):
    g = torch.Generator().manual_seed(len(widths))
    d_out, d_in = shape
    n = sum(widths)
    mats = torch.randn(n, d_out, d_in, generator=g, dtype=torch.float64)
    state = torch.randn(3, d_in**n, generator=g, dtype=torch.float64)
    dense = mats[0]
    for q in range(1, n):
        dense = torch.kron(dense, mats[q])
    blocks = kron_blocks(mats, widths)
    out = apply_blocks(state, blocks, widths)
    torch.testing.assert_close(out, state @ dense.T, atol=1e-12, rtol=0)
    if d_in == d_out:
        rotated = apply_blocks(state, blocks, widths, restore=False)
        pos = rotated_positions(n, d_out, widths[0])
        torch.testing.assert_close(rotated[:, pos], out, atol=0, rtol=0)


def test_wire_groups_are_balanced_and_cover_all_wires():
    for n, w in itertools.product(range(1, 17), range(1, 9)):
        groups = wire_groups(n, w)
        assert sum(groups) == n and max(groups) <= w and max(groups) - min(groups) <= 1
        assert len(groups) == -(-n // w)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_permute_function_gradients(dtype):
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(8, generator=g)
    inv = torch.argsort(idx)
    x = torch.randn(3, 8, generator=g, dtype=dtype, requires_grad=True)
    torch.testing.assert_close(_Permute.apply(x, idx, inv), x[:, idx], atol=0, rtol=0)
    assert torch.autograd.gradcheck(lambda t: _Permute.apply(t, idx, inv), (x,))
    assert torch.autograd.gradgradcheck(lambda t: _Permute.apply(t, idx, inv), (x,))


# ---------------------------------------------------------------------------------------------------------
# the method option and the cost model
# ---------------------------------------------------------------------------------------------------------


def test_method_is_validated_with_the_allowed_values():
    spec = CircuitSpec.create(3, 1)
    with pytest.raises(ValueError, match=r"method='fast'.*'auto', 'schrodinger', 'heisenberg'"):
        TorchBackend(spec, method="fast")
    with pytest.raises(ValueError, match=r"method=3"):
        QuantumLayer(3, 1, backend_options={"method": 3})
    assert TorchBackend(spec, method="Heisenberg").method is Method.HEISENBERG
    assert TorchBackend(spec, method=Method.SCHRODINGER).method is Method.SCHRODINGER
    assert TorchBackend(spec).method is Method.AUTO


def test_forced_heisenberg_too_large_is_refused_before_any_compute():
    spec = CircuitSpec.create(16, 1)  # a 2^16 x 2^16 unitary table
    assert 4**16 > MAX_HEISENBERG_ENTRIES
    with pytest.raises(ValueError, match=r"method='heisenberg'.*'auto', 'schrodinger'"):
        TorchBackend(spec, method="heisenberg")
    backend = TorchBackend(spec)  # auto: never the oversized path
    assert backend.choose_method(10**9) is Method.SCHRODINGER


@pytest.mark.parametrize(
    "config",
    [
        {"n_qubits": 4, "depth": 1, "entanglement": "full", "noise": "mixed", "noise_strength": 0.005},
        {
            "n_qubits": 4,
            "depth": 3,
            "entanglement": "ring",
            "noise": "depolarizing",
            "noise_strength": 0.01,
            "measurement": "expval",
        },
        {"n_qubits": 10, "depth": 4, "entanglement": "ring"},
        {"n_qubits": 3, "depth": 2, "entanglement": "linear", "trainable": False},
    ],
)
def test_auto_takes_the_cheaper_estimate(config):
    backend = TorchBackend(CircuitSpec.create(**config))
    for batch in [1, 16, 128, 1024, 10**6]:
        cost = backend.estimated_cost(batch)
        cheaper = min(PATHS, key=lambda m: (cost[m], m != "schrodinger"))
        assert backend.choose_method(batch).value == cheaper
    # the Heisenberg path's batch-independent part is shared: its cost per extra sample is the contraction only
    c1, c2 = backend.estimated_cost(1000), backend.estimated_cost(2000)
    d = backend.local_dim**backend.spec.n_qubits
    assert c2["heisenberg"] - c1["heisenberg"] == 1000 * (d + d * backend.heisenberg_rows)


def test_auto_switches_paths_with_the_batch_for_a_small_noisy_circuit():
    backend = TorchBackend(CircuitSpec.create(4, 3, "full", "mixed", 0.01))
    assert backend.choose_method(1) is Method.SCHRODINGER
    assert backend.choose_method(4096) is Method.HEISENBERG
    x, w = _inputs(4, 3, batch=40, seed=2)
    both = torch.cat([backend.run(x[:1], w), backend.run(x, w)[1:]])  # B=1 and B=40 take different paths
    expected = TorchBackend(backend.spec, method="schrodinger").run(x, w)
    torch.testing.assert_close(both, expected, atol=1e-10, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
@pytest.mark.parametrize("method", PATHS)
@pytest.mark.parametrize("noise", ["none", "mixed"])
def test_each_path_on_cuda_matches_cpu(method, noise):
    backend = TorchBackend(CircuitSpec.create(4, 3, "full", noise, 0.05), method=method)
    x, w = _inputs(4, 3, batch=6, seed=4)
    cpu = backend.run(x, w)
    xg, wg = x.cuda().requires_grad_(True), w.cuda().requires_grad_(True)
    gpu = backend.run(xg, wg)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-10, rtol=0)
    gpu.sum().backward()
    assert torch.isfinite(xg.grad).all() and torch.isfinite(wg.grad).all()
