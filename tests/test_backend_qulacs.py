"""Qulacs-specific tests of the ``qulacs`` backend (the shared cross-backend suite is tests/test_quantum_backends.py).

The torch backend is the independent reference; closed forms check the conventions Qulacs differs in (rotation
sign, qubit order) and that noise channels are applied exactly to the density matrix (not sampled).
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("qulacs", reason="qulacs is not installed (pip install qulacs)")

import qulacs

from qshield.quantum import CircuitSpec, QuantumLayer, get_backend
from qshield.quantum.backends._qulacs import HAS_QULACS_GPU, QulacsBackend
from qshield.quantum.backends._torch import TorchBackend

NO_GPU_BUILD = (
    "qulacs.QuantumStateGpu is absent: the installed Qulacs is a CPU-only build (PyPI's wheel); "
    "build it with USE_GPU=Yes as described in docs/qulacs-gpu.md"
)


def _spec(**kw) -> CircuitSpec:
    base = {"n_qubits": 3, "depth": 2, "entanglement": "linear", "noise": "none", "noise_strength": 0.0,
            "measurement": "probs"}
    return CircuitSpec.create(**{**base, **kw})


def _inputs(spec: CircuitSpec, batch: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, spec.n_inputs, generator=g, dtype=torch.float64) * 4 - 2) * math.pi
    w = torch.rand(spec.weight_shape, generator=g, dtype=torch.float64) * 2 * math.pi if spec.trainable else None
    return x.to(dtype), (w.to(dtype) if w is not None else None)


# ----------------------------------------------------------------------------------------------- registry / flags
def test_registered_under_its_name_with_the_expected_flags():
    assert get_backend("qulacs") is QulacsBackend
    assert QulacsBackend.name == "qulacs"
    assert QulacsBackend.applies_readout is False
    assert HAS_QULACS_GPU is hasattr(qulacs, "QuantumStateGpu")
    assert QulacsBackend.supports_cuda is HAS_QULACS_GPU


def test_circuit_is_built_once_with_the_spec_gate_count():
    spec = _spec(n_qubits=4, depth=2, entanglement="ring", noise="mixed", noise_strength=0.1)
    backend = QulacsBackend(spec)
    circuit = backend.circuit
    n, depth = spec.n_qubits, spec.depth
    # encoding rotations + per layer: rotations, CNOTs, one CPTP gate per (qubit, channel)
    expected_gates = 3 * n + depth * (3 * n + len(spec.cnot_pairs()) + n * len(spec.noise_channels()))
    assert circuit.get_gate_count() == expected_gates
    assert circuit.get_parameter_count() == 3 * n * (1 + depth)
    x, w = _inputs(spec, batch=2, seed=0)
    backend.run(x, w)
    backend.run(x, w)
    assert backend.circuit is circuit and circuit.get_gate_count() == expected_gates


# ----------------------------------------------------------------------------------------------- agreement
AGREEMENT_CASES = [
    ("linear", "none", "probs"),
    ("ring", "none", "expval"),
    ("full", "depolarizing", "probs"),
    ("star", "amplitude_damping", "expval"),
    ("brick", "phase_damping", "probs"),
    ("none", "mixed", "expval"),
    ("ring", "mixed", "probs"),
]


@pytest.mark.parametrize("entanglement,noise,measurement", AGREEMENT_CASES)
def test_matches_torch_backend_float64(entanglement, noise, measurement):
    spec = _spec(n_qubits=3, depth=2, entanglement=entanglement, noise=noise, noise_strength=0.15,
                 measurement=measurement)
    x, w = _inputs(spec, batch=3, seed=AGREEMENT_CASES.index((entanglement, noise, measurement)))
    expected = TorchBackend(spec).run(x, w)
    out = QulacsBackend(spec).run(x, w)
    assert out.dtype == torch.float64 and out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("noise", ["none", "mixed"])
@pytest.mark.parametrize("wrt", ["both", "inputs", "weights"])
def test_vector_jacobian_product_matches_torch(noise, wrt):
    spec = _spec(n_qubits=3, depth=2, entanglement="full", noise=noise, noise_strength=0.2, measurement="expval")
    x, w = _inputs(spec, batch=2, seed=11)
    x.requires_grad_(wrt in ("both", "inputs"))
    w.requires_grad_(wrt in ("both", "weights"))
    leaves = [t for t in (x, w) if t.requires_grad]
    cotangent = torch.randn(2, spec.output_dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = torch.autograd.grad((TorchBackend(spec).run(x, w) * cotangent).sum(), leaves)
    got = torch.autograd.grad((QulacsBackend(spec).run(x, w) * cotangent).sum(), leaves)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


# ----------------------------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize(
    "config",
    [
        {"n_qubits": 2, "depth": 2, "entanglement": "ring", "noise": "none", "measurement": "probs"},
        {"n_qubits": 3, "depth": 1, "entanglement": "linear", "noise": "mixed", "noise_strength": 0.1,
         "measurement": "expval"},
        {"n_qubits": 2, "depth": 1, "entanglement": "linear", "noise": "amplitude_damping", "noise_strength": 0.3,
         "measurement": "probs"},
    ],
    ids=["noiseless-probs", "mixed-expval", "amplitude-damping-probs"],
)
def test_gradcheck_inputs_and_weights(config):
    spec = _spec(**config)
    backend = QulacsBackend(spec)
    x, w = _inputs(spec, batch=2, seed=3)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(backend.run, (x, w), eps=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------- conventions
@pytest.mark.parametrize("theta", [0.3, 1.2, 2.9])
def test_wire_zero_is_most_significant_and_rotation_sign(theta):
    """RX(t) on wire 0 only: P(|100>) = sin^2(t/2) at index 4 (wire 0 = MSB), d<Z_0>/dt = -sin t."""
    n = 3
    x = torch.zeros(1, 3 * n, dtype=torch.float64)
    x[0, 0] = theta
    probs = QulacsBackend(_spec(n_qubits=n, depth=1, entanglement="none", trainable=False)).run(x, None)
    expected = torch.zeros(1, 2**n, dtype=torch.float64)
    expected[0, 0], expected[0, 4] = math.cos(theta / 2) ** 2, math.sin(theta / 2) ** 2
    torch.testing.assert_close(probs, expected, atol=1e-12, rtol=0)

    x.requires_grad_(True)
    expval_spec = _spec(n_qubits=n, depth=1, entanglement="none", trainable=False, measurement="expval")
    z = QulacsBackend(expval_spec).run(x, None)
    (grad,) = torch.autograd.grad(z[0, 0], x)
    assert grad[0, 0].item() == pytest.approx(-math.sin(theta), abs=1e-12)
    assert torch.count_nonzero(grad[0, 1:].abs() > 1e-12) == 0


def test_phase_sensitive_rotation_order_and_sign():
    """RX(a) RY(b) RZ(c) then a trainable RX(d) on one wire: <Z> computed by hand with exp(-i t P / 2)."""
    a, b, c, d = 0.7, 1.3, -0.9, 0.4

    def rot(axis: str, t: float) -> torch.Tensor:
        cs, sn = math.cos(t / 2), math.sin(t / 2)
        mats = {
            "x": [[cs, -1j * sn], [-1j * sn, cs]],
            "y": [[cs, -sn], [sn, cs]],
            "z": [[cs - 1j * sn, 0], [0, cs + 1j * sn]],
        }
        return torch.tensor(mats[axis], dtype=torch.complex128)

    psi = rot("x", d) @ rot("z", c) @ rot("y", b) @ rot("x", a) @ torch.tensor([1, 0], dtype=torch.complex128)
    z_expected = (psi.abs() ** 2 @ torch.tensor([1.0, -1.0], dtype=torch.float64)).item()

    spec = _spec(n_qubits=2, depth=1, entanglement="none", measurement="expval")
    x = torch.tensor([[a, b, c, 0.0, 0.0, 0.0]], dtype=torch.float64)
    w = torch.zeros(spec.weight_shape, dtype=torch.float64)
    w[0, 0, 0] = d
    z = QulacsBackend(spec).run(x, w)
    assert z[0, 0].item() == pytest.approx(z_expected, abs=1e-12)
    assert z[0, 1].item() == pytest.approx(1.0, abs=1e-12)
    # the opposite sign convention gives a different value here, so this test detects a missing negation
    psi_wrong = rot("x", -d) @ rot("z", -c) @ rot("y", -b) @ rot("x", -a) @ torch.tensor([1, 0], dtype=torch.complex128)
    assert abs((psi_wrong.abs() ** 2 @ torch.tensor([1.0, -1.0], dtype=torch.float64)).item() - z_expected) > 1e-2


@pytest.mark.parametrize("gamma", [0.1, 0.35, 0.8])
def test_noise_channel_is_applied_exactly_not_sampled(gamma):
    """Amplitude damping of |1> on wire 0: P(wire 0 = 1) = 1 - gamma exactly, identical over repeated runs."""
    n = 2
    spec = _spec(n_qubits=n, depth=1, entanglement="none", noise="amplitude_damping", noise_strength=gamma,
                 trainable=False)
    backend = QulacsBackend(spec)
    x = torch.zeros(4, 3 * n, dtype=torch.float64)
    x[:, 0] = math.pi  # RX(pi)|0> = -i|1>
    probs = backend.run(x, None)
    torch.testing.assert_close(probs[:, 2], torch.full((4,), 1.0 - gamma, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(probs[:, 0], torch.full((4,), gamma, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(backend.run(x, None), probs, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------- options and dtypes
def test_not_trainable_takes_no_weights_and_matches_torch():
    spec = _spec(trainable=False, entanglement="star", noise="depolarizing", noise_strength=0.2)
    x, w = _inputs(spec, batch=2, seed=21)
    assert w is None
    x.requires_grad_(True)
    out = QulacsBackend(spec).run(x, None)
    ref = TorchBackend(spec).run(x, None)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    (g_out,) = torch.autograd.grad(out[:, 1].sum(), x)
    (g_ref,) = torch.autograd.grad(ref[:, 1].sum(), x)
    torch.testing.assert_close(g_out, g_ref, atol=1e-8, rtol=0)
    layer = QuantumLayer(3, 2, trainable=False, backend="qulacs")
    assert layer.weights is None and list(layer.parameters()) == []


@pytest.mark.parametrize("noise", ["none", "phase_damping"])
def test_float32_in_float32_out(noise):
    spec = _spec(noise=noise, noise_strength=0.1, measurement="expval")
    x64, w64 = _inputs(spec, batch=2, seed=8)
    x = x64.float().requires_grad_(True)
    w = w64.float().requires_grad_(True)
    out = QulacsBackend(spec).run(x, w)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), TorchBackend(spec).run(x.double(), w.double()), atol=1e-5, rtol=0)
    out.sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32
    assert torch.isfinite(x.grad).all() and w.grad.abs().sum() > 0


def test_layer_applies_readout_on_top_of_qulacs_output():
    kw = {"n_qubits": 3, "depth": 1, "entanglement": "ring", "noise": "phase_damping", "noise_strength": 0.1,
          "readout_error": 0.05, "measurement": "probs"}
    q_layer, t_layer = QuantumLayer(backend="qulacs", **kw).double(), QuantumLayer(backend="torch", **kw).double()
    with torch.no_grad():
        t_layer.weights.copy_(q_layer.weights)
    x, _ = _inputs(q_layer.spec, batch=2, seed=4)
    out = q_layer(x)
    torch.testing.assert_close(out, t_layer(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_empty_batch():
    spec = _spec(measurement="expval")
    _, w = _inputs(spec, batch=1, seed=0)
    out = QulacsBackend(spec).run(torch.zeros(0, spec.n_inputs, dtype=torch.float64), w)
    assert out.shape == (0, spec.n_qubits)


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_value_error_naming_the_field():
    spec = _spec()
    backend = QulacsBackend(spec)
    x, w = _inputs(spec, batch=2, seed=1)
    with pytest.raises(ValueError, match=r"angles\.shape=\(2, 8\).*expected \[B, 9\]"):
        backend.run(x[:, :8], w)
    with pytest.raises(ValueError, match=r"angles\.dtype=torch\.int64.*allowed values: torch\.float32, torch\.float64"):
        backend.run(torch.zeros(2, 9, dtype=torch.int64), w)
    with pytest.raises(ValueError, match=r"weights=None but the spec is trainable"):
        backend.run(x, None)
    with pytest.raises(ValueError, match=r"weights\.shape=\(1, 3, 3\).*expected \(2, 3, 3\)"):
        backend.run(x, w[:1])
    with pytest.raises(ValueError, match=r"angles\.device=meta.*allowed values: cpu, cuda"):
        backend.run(torch.zeros(2, 9, dtype=torch.float64, device="meta"), w)
    with pytest.raises(ValueError, match=r"weights must be None when the spec is not trainable"):
        QulacsBackend(_spec(trainable=False)).run(x, w)
    with pytest.raises(ValueError, match=r"progress='yes' must be a bool"):
        QulacsBackend(spec, progress="yes")
    with pytest.raises(TypeError):
        QulacsBackend(spec, group_size=2)


@pytest.mark.skipif(HAS_QULACS_GPU or not torch.cuda.is_available(),
                    reason="needs a CUDA device and a CPU-only Qulacs build")
def test_cuda_tensor_without_gpu_build_is_refused():
    spec = _spec()
    x, w = _inputs(spec, batch=2, seed=1)
    with pytest.raises(ValueError, match=r"angles\.device=cuda.*needs a GPU build of Qulacs"):
        QulacsBackend(spec).run(x.cuda(), w.cuda())
    with pytest.raises(ValueError, match=r"runs on the CPU only"):
        QuantumLayer(3, 2, backend="qulacs").cuda()(x.float().cuda())


# ----------------------------------------------------------------------------------------------- GPU build
@pytest.mark.gpu
@pytest.mark.skipif(
    not (HAS_QULACS_GPU and torch.cuda.is_available()),
    reason=NO_GPU_BUILD if not HAS_QULACS_GPU else "no CUDA device",
)
@pytest.mark.parametrize("noise", ["none", "depolarizing"])
def test_gpu_build_matches_cpu(noise):
    spec = _spec(n_qubits=4, depth=2, entanglement="ring", noise=noise, noise_strength=0.1)
    x, w = _inputs(spec, batch=3, seed=2)
    cpu_x, cpu_w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    gpu_x, gpu_w = x.cuda().requires_grad_(True), w.cuda().requires_grad_(True)
    backend = QulacsBackend(spec)
    out_cpu = backend.run(cpu_x, cpu_w)
    out_gpu = backend.run(gpu_x, gpu_w)
    assert out_gpu.device.type == "cuda"
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-10, rtol=0)
    out_cpu[:, 0].sum().backward()
    out_gpu[:, 0].sum().backward()
    assert gpu_x.grad.device.type == "cuda" and gpu_w.grad.device.type == "cuda"
    torch.testing.assert_close(gpu_x.grad.cpu(), cpu_x.grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(gpu_w.grad.cpu(), cpu_w.grad, atol=1e-10, rtol=0)
