"""Qulacs simulator backend: the circuit of :mod:`qshield.quantum._spec` on a Qulacs ``ParametricQuantumCircuit``.

The circuit is built once per backend instance; :meth:`QulacsBackend.run` loops over the batch in Python and
only changes gate parameters per sample.

Conventions translated here (checked by ``tests/test_backend_qulacs.py`` against the torch backend):

* Qulacs rotations are ``RX(t) = exp(+i t X / 2)`` -- the opposite sign of the spec's ``exp(-i t X / 2)`` -- so
  every angle is negated on the way in and every gradient on the way out;
* Qulacs qubit 0 is the least significant bit of a basis index, the spec's wire 0 the most significant, so wire
  ``w`` is Qulacs qubit ``n - 1 - w``. With that mapping the basis indices of both conventions coincide and the
  output needs no permutation.

Simulation and gradients:

* noiseless: a statevector (``QuantumState``, or ``QuantumStateGpu`` for CUDA tensors when the installed Qulacs
  was built with ``USE_GPU=Yes``; see ``docs/qulacs-gpu.md``). The vector-Jacobian product of the measured
  probabilities ``sum_k g_k p_k = <psi| diag(g) |psi>`` is obtained from Qulacs's adjoint differentiation
  ``ParametricQuantumCircuit.backprop_inner_product(b)``, which returns ``Re <b| d psi / d theta>`` for every
  parameter: with ``b = 2 g * psi`` that is exactly the gradient (for ``expval``, ``g`` is first mapped to the
  diagonal ``sum_q g_q Z_q``). Qulacs's backprop runs on the CPU, also after a GPU forward pass;
* noisy: a ``DensityMatrix``; each channel of ``spec.noise_channels()`` is a Qulacs ``CPTP`` gate built from the
  spec's Kraus operators, which Qulacs applies to a density matrix exactly as ``sum_K K rho K^dagger`` (it only
  samples one Kraus operator on a statevector, which this backend never does). Gradients use the
  parameter-shift rule ``df/dt = [f(t + pi/2) - f(t - pi/2)] / 2``, exact for these rotations since every angle
  enters exactly one gate; the shifts are evaluated at each gate during one backward sweep (the observable is
  carried back in the Heisenberg picture) instead of ``2P`` full re-simulations. Qulacs has no GPU density matrix:
  noisy circuits on CUDA tensors are simulated on the CPU and the result is returned on the tensor's device.

All simulation is in complex128; outputs and gradients are returned in the dtype of ``angles``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .._spec import CircuitSpec, Measurement, kraus_operators
from ._base import Backend

try:
    import qulacs
    from qulacs import gate as qgate
except ImportError as exc:  # pragma: no cover - exercised only where qulacs is missing
    raise ImportError(
        "backend='qulacs' needs the qulacs package: `pip install qulacs` (CPU wheel, tested with 0.6.14), or a "
        "GPU build from source as described in docs/qulacs-gpu.md"
    ) from exc

__all__ = ["HAS_QULACS_GPU", "QulacsBackend"]

#: True when the installed Qulacs was built with GPU support (``USE_GPU=Yes``), i.e. provides ``QuantumStateGpu``.
#: PyPI's ``qulacs`` wheel is CPU-only.
HAS_QULACS_GPU: bool = hasattr(qulacs, "QuantumStateGpu")

_FLOAT_DTYPES = (torch.float32, torch.float64)
_HALF_PI = math.pi / 2


@dataclass(frozen=True)
class _Op:
    """One gate of the circuit, as used by the noisy backward sweep.

    ``kind`` is ``"param"`` (``gate`` is a Qulacs parametric rotation for circuit parameter ``index``;
    ``shifts`` are the spec rotations by ``+pi/2`` and ``-pi/2`` about the same axis), ``"cnot"``, or
    ``"channel"`` (``gate`` is the CPTP map, ``adjoint`` its Heisenberg-picture adjoint, ``starts_block`` marks
    the first channel of a layer's noise block).
    """

    kind: str
    gate: Any
    index: int = -1
    shifts: tuple[Any, Any] | None = None
    adjoint: Any = None
    starts_block: bool = False


class QulacsBackend(Backend):
    """Simulates a :class:`~qshield.quantum.CircuitSpec` with Qulacs (see the module docstring).

    Options:
        progress: show a ``tqdm`` progress bar over the samples of each forward and backward pass (default
            False; useful for large noisy circuits, whose density-matrix backward sweep costs a few simulations
            per sample).

    Circuit parameters, in Qulacs order: the ``3n`` encoding angles ``x[3q + j]`` (``j`` = RX, RY, RZ) followed,
    when the spec is trainable, by the ``3n * depth`` weights ``w[l, q, j]`` in C order.

    Not re-entrant across threads on one instance by design of Qulacs's mutable circuit parameters; an
    instance lock serialises concurrent :meth:`run` / backward calls.
    """

    name: ClassVar[str] = "qulacs"
    supports_cuda: ClassVar[bool] = HAS_QULACS_GPU
    applies_readout: ClassVar[bool] = False

    def __init__(self, spec: CircuitSpec, progress: bool = False) -> None:
        super().__init__(spec)
        if not isinstance(progress, bool):
            # project convention: every bad option or input is a ValueError naming the field and the allowed values
            raise ValueError(f"progress={progress!r} must be a bool; allowed values: True, False")  # noqa: TRY004
        self.progress = progress
        n = spec.n_qubits
        self.n_encoding = 3 * n
        self.n_params = 3 * n * (1 + spec.depth) if spec.trainable else 3 * n
        self._lock = threading.Lock()
        self.circuit = self._build_circuit()
        bits = (np.arange(2**n)[:, None] >> np.arange(n - 1, -1, -1)[None, :]) & 1
        #: ``[2^n, n]``: column q = eigenvalue of Z on wire q for each basis state (wire 0 = MSB)
        self._zsign = (1 - 2 * bits).astype(np.float64)

    # ------------------------------------------------------------------ circuit
    def _build_circuit(self) -> Any:
        """The spec's circuit on ``ParametricQuantumCircuit`` with all rotation angles as (negated) parameters.

        Also records, in :attr:`_ops`, a gate-by-gate copy of the circuit for the noisy backward sweep.
        """
        spec = self.spec
        n = spec.n_qubits
        circuit = qulacs.ParametricQuantumCircuit(n)
        ops: list[_Op] = []
        parametric = (qgate.ParametricRX, qgate.ParametricRY, qgate.ParametricRZ)
        rot = (qgate.RotX, qgate.RotY, qgate.RotZ)  # exp(-i t P / 2): the spec's sign

        def add_rotations(q: int) -> None:
            for axis in range(3):
                qubit = n - 1 - q
                circuit.add_parametric_gate(parametric[axis](qubit, 0.0))
                k = circuit.get_parameter_count() - 1
                shifts = (rot[axis](qubit, _HALF_PI), rot[axis](qubit, -_HALF_PI))
                ops.append(_Op("param", parametric[axis](qubit, 0.0), index=k, shifts=shifts))

        channels = [
            [np.asarray(k, dtype=np.complex128) for k in kraus_operators(kind, p)] for kind, p in spec.noise_channels()
        ]
        for q in range(n):  # encoding: RX(x[3q]) RY(x[3q+1]) RZ(x[3q+2]) on wire q
            add_rotations(q)
        for _ in range(spec.depth):
            if spec.trainable:
                for q in range(n):
                    add_rotations(q)
            for control, target in spec.cnot_pairs():
                circuit.add_CNOT_gate(n - 1 - control, n - 1 - target)
                ops.append(_Op("cnot", qgate.CNOT(n - 1 - control, n - 1 - target)))
            first = True
            for q in range(n):
                for kraus in channels:
                    channel = qgate.CPTP([qgate.DenseMatrix(n - 1 - q, k) for k in kraus])
                    # Heisenberg-picture adjoint O -> sum_K K^dagger O K (completely positive, not trace preserving)
                    adjoint = qgate.CP([qgate.DenseMatrix(n - 1 - q, k.conj().T) for k in kraus], False, False, False)
                    circuit.add_gate(channel)
                    ops.append(_Op("channel", channel, adjoint=adjoint, starts_block=first))
                    first = False
        if circuit.get_parameter_count() != self.n_params:  # pragma: no cover - internal consistency
            raise RuntimeError(f"built {circuit.get_parameter_count()} parameters, expected {self.n_params}")
        self._ops = ops
        return circuit

    def _set_parameters(self, theta: np.ndarray, start: int = 0) -> None:
        """Set Qulacs parameters ``start..`` to ``-theta`` (spec angles -> Qulacs's ``exp(+i t P / 2)``)."""
        set_parameter = self.circuit.set_parameter
        for i, t in enumerate(theta.tolist(), start):
            set_parameter(i, -t)

    # ------------------------------------------------------------------ validation
    def _check_inputs(self, angles: torch.Tensor, weights: torch.Tensor | None) -> None:
        spec = self.spec
        if not isinstance(angles, torch.Tensor):
            raise ValueError(f"angles must be a torch.Tensor, got {type(angles).__name__}")  # noqa: TRY004
        if angles.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f"angles.dtype={angles.dtype} is not supported; allowed values: torch.float32, torch.float64"
            )
        if angles.ndim != 2 or angles.shape[1] != spec.n_inputs:
            raise ValueError(
                f"angles.shape={tuple(angles.shape)} is not supported; expected [B, {spec.n_inputs}] "
                f"(3 angles per qubit for n_qubits={spec.n_qubits})"
            )
        if angles.device.type not in ("cpu", "cuda"):
            raise ValueError(f"angles.device={angles.device} is not supported; allowed values: cpu, cuda")
        if angles.device.type == "cuda" and not HAS_QULACS_GPU:
            raise ValueError(
                f"angles.device={angles.device} needs a GPU build of Qulacs (qulacs.QuantumStateGpu), but the "
                f"installed qulacs {getattr(qulacs, '__version__', '?')} is CPU-only; move the tensors to the CPU, "
                "use backend='torch', or build Qulacs with USE_GPU=Yes (docs/qulacs-gpu.md)"
            )
        if spec.trainable:
            if weights is None:
                raise ValueError(
                    f"weights=None but the spec is trainable; expected a tensor of shape {spec.weight_shape}"
                )
            if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != spec.weight_shape:
                shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
                raise ValueError(f"weights.shape={shape} is not supported; expected {spec.weight_shape}")
            if weights.dtype not in _FLOAT_DTYPES:
                raise ValueError(
                    f"weights.dtype={weights.dtype} is not supported; allowed values: torch.float32, torch.float64"
                )
            if weights.device != angles.device:
                raise ValueError(f"weights.device={weights.device} differs from angles.device={angles.device}")
        elif weights is not None:
            raise ValueError("weights must be None when the spec is not trainable (trainable=False)")

    # ------------------------------------------------------------------ public API
    def run(self, angles: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """Simulate the circuit (see :meth:`Backend.run`).

        Args:
            angles: ``[B, 3n]`` encoding angles (radians), float32 or float64, on the CPU (or CUDA with a GPU
                build of Qulacs).
            weights: ``[depth, n, 3]`` trainable angles (radians) or None when the spec is not trainable.

        Returns:
            ``[B, 2**n]`` probabilities or ``[B, n]`` ``<Z_q>``, dtype and device of ``angles``; differentiable
            w.r.t. ``angles`` and ``weights`` (first order).

        Raises:
            ValueError: wrong shape, dtype or device (before any simulation).
        """
        self._check_inputs(angles, weights)
        if weights is None:
            weights = angles.new_zeros(0)
        return _QulacsFunction.apply(angles, weights, self)

    # ------------------------------------------------------------------ numerics (numpy, complex128)
    def _diag_from_output_grad(self, grad_out: np.ndarray) -> np.ndarray:
        """``g [B, out]`` -> the diagonal ``d [B, 2^n]`` with ``sum_out g * out = sum_k d_k p_k``."""
        if self.spec.measurement is Measurement.EXPVAL:
            return grad_out @ self._zsign.T
        return grad_out

    def _measure(self, probs: np.ndarray) -> np.ndarray:
        if self.spec.measurement is Measurement.EXPVAL:
            return probs @ self._zsign
        return probs

    def _new_state(self, device: torch.device) -> Any:
        n = self.spec.n_qubits
        if self.spec.is_noisy:
            return qulacs.DensityMatrix(n)
        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            return qulacs.QuantumStateGpu(n, index)
        return qulacs.QuantumState(n)

    def _simulate(self, state: Any) -> np.ndarray:
        """Run the circuit (current parameters) from ``|0...0>``.

        Returns the final statevector ``[2^n]`` (complex) or, for a density matrix, its diagonal ``[2^n]`` (real).
        """
        state.set_zero_state()
        self.circuit.update_quantum_state(state)
        if self.spec.is_noisy:
            return np.real(np.diagonal(state.get_matrix()))
        return state.get_vector()

    def _progress(self, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def _forward_numpy(self, theta: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray | None]:
        """``theta [B, P]`` spec angles -> (outputs ``[B, out]``, final statevectors ``[B, 2^n]`` or None)."""
        b = theta.shape[0]
        n_enc = self.n_encoding
        noiseless = not self.spec.is_noisy
        state = self._new_state(device)
        probs = np.empty((b, 2**self.spec.n_qubits))
        psis = np.empty((b, 2**self.spec.n_qubits), dtype=np.complex128) if noiseless else None
        if b:
            self._set_parameters(theta[0, n_enc:], start=n_enc)  # weights: shared by the batch
        with self._progress(b, "qulacs forward") as bar:
            for i in range(b):
                self._set_parameters(theta[i, :n_enc])
                result = self._simulate(state)
                if psis is not None:
                    psis[i] = result
                    probs[i] = result.real**2 + result.imag**2
                else:
                    probs[i] = result
                bar.update()
        return self._measure(probs), psis

    def _vjp_adjoint(self, theta: np.ndarray, psis: np.ndarray, diag: np.ndarray) -> np.ndarray:
        """Noiseless VJP by Qulacs's adjoint backprop: ``[B, P]`` gradients w.r.t. the spec angles."""
        b = theta.shape[0]
        grads = np.empty((b, self.n_params))
        bistate = qulacs.QuantumState(self.spec.n_qubits)
        with self._progress(b, "qulacs backward (adjoint)") as bar:
            for i in range(b):
                self._set_parameters(theta[i])
                bistate.load(2.0 * diag[i] * psis[i])  # backprop_inner_product overwrites its argument
                grads[i] = self.circuit.backprop_inner_product(bistate)
                bar.update()
        return -grads  # Qulacs angles are the negated spec angles

    def _vjp_parameter_shift(self, theta: np.ndarray, diag: np.ndarray, which: np.ndarray) -> np.ndarray:
        """Noisy VJP by the parameter-shift rule, for the parameters flagged in ``which [P]`` (others stay 0).

        For one sample, ``f(theta) = Tr(D rho_out)`` with ``D = diag(d)``. Each angle ``t`` enters one gate
        ``U(t) = exp(-i t P / 2)``, so ``df/dt = [f(t + pi/2) - f(t - pi/2)] / 2`` where the shifted values are
        ``Tr(D_j U(+-pi/2) rho_j U(+-pi/2)^dagger)``: ``rho_j`` is the state right after that gate and ``D_j``
        the observable carried back to that point in the Heisenberg picture (adjoint channels
        ``sum_K K^dagger D K`` and ``U^dagger D U``). One sweep backwards through the circuit gives all the
        shifts, instead of ``2P`` full simulations. The states before the noise blocks are checkpointed on the
        way forward (channels are not invertible); unitary gates are undone with their inverses.
        """
        b = theta.shape[0]
        n = self.spec.n_qubits
        grads = np.zeros((b, self.n_params))
        ops = self._ops
        needed = [j for j, op in enumerate(ops) if op.kind == "param" and which[op.index]]
        if not needed:
            return grads
        first_needed, last_needed = needed[0], needed[-1]
        with self._progress(b, "qulacs backward (parameter shift)") as bar:
            for i in range(b):
                for op in ops:
                    if op.kind == "param":
                        op.gate.set_parameter_value(-float(theta[i, op.index]))
                rho = qulacs.DensityMatrix(n)
                rho.set_zero_state()
                checkpoints: dict[int, Any] = {}
                for j in range(last_needed + 1):
                    if ops[j].starts_block:
                        checkpoints[j] = rho.copy()
                    ops[j].gate.update_quantum_state(rho)
                obs = qulacs.DensityMatrix(n)
                obs.load(np.diag(diag[i]).astype(np.complex128))
                for j in range(len(ops) - 1, first_needed - 1, -1):
                    op = ops[j]
                    if op.kind == "channel":
                        op.adjoint.update_quantum_state(obs)
                        if op.starts_block and j <= last_needed:
                            rho = checkpoints.pop(j)  # the state before this noise block
                        continue
                    inverse = op.gate.get_inverse()
                    if j <= last_needed:  # rho is the state right after gate j
                        if op.kind == "param" and which[op.index]:
                            obs_matrix = obs.get_matrix()
                            values = []
                            for shift in op.shifts:
                                shifted = rho.copy()
                                shift.update_quantum_state(shifted)
                                values.append(np.vdot(obs_matrix, shifted.get_matrix()).real)  # Tr(D rho), D = D^+
                            grads[i, op.index] = 0.5 * (values[0] - values[1])
                        inverse.update_quantum_state(rho)
                    inverse.update_quantum_state(obs)
                bar.update()
        return grads


class _QulacsFunction(torch.autograd.Function):
    """Autograd bridge: forward and backward in NumPy/Qulacs (complex128), tensors in the dtype of ``angles``."""

    @staticmethod
    def forward(ctx: Any, angles: torch.Tensor, weights: torch.Tensor, backend: QulacsBackend) -> torch.Tensor:
        # Inside autograd.Function.forward the graph is recorded by the Function itself; leaving torch here is the
        # point of this bridge (backward below supplies the exact gradients).
        b = angles.shape[0]
        x = angles.detach().to(device="cpu", dtype=torch.float64).numpy()
        w = weights.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(1, -1)
        theta = np.concatenate([x, np.broadcast_to(w, (b, w.shape[1]))], axis=1)
        with backend._lock:
            out, psis = backend._forward_numpy(theta, angles.device)
        ctx.backend = backend
        ctx.theta = theta
        ctx.psis = psis
        ctx.weights_meta = (weights.shape, weights.dtype)
        return torch.from_numpy(out).to(device=angles.device, dtype=angles.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        backend: QulacsBackend = ctx.backend
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_w):
            return None, None, None
        g = grad_out.detach().to(device="cpu", dtype=torch.float64).numpy()
        diag = backend._diag_from_output_grad(g)
        n_enc = backend.n_encoding
        with backend._lock:
            if ctx.psis is not None:
                grads = backend._vjp_adjoint(ctx.theta, ctx.psis, diag)
            else:
                which = np.zeros(backend.n_params, dtype=bool)
                which[:n_enc] = need_x
                which[n_enc:] = need_w
                grads = backend._vjp_parameter_shift(ctx.theta, diag, which)
        device, dtype = grad_out.device, grad_out.dtype
        grad_x = grad_w = None
        if need_x:
            grad_x = torch.from_numpy(np.ascontiguousarray(grads[:, :n_enc])).to(device=device, dtype=dtype)
        if need_w:
            w_shape, w_dtype = ctx.weights_meta
            grad_w = torch.from_numpy(grads[:, n_enc:].sum(axis=0)).reshape(w_shape).to(device=device, dtype=w_dtype)
        return grad_x, grad_w, None
