"""PennyLane simulator backend: the circuit of :mod:`qshield.quantum._spec` as a broadcast torch QNode.

One QNode is built per backend instance. The batch is handled by PennyLane's parameter broadcasting: the
encoding gates receive the batch columns ``x[:, k]`` (shape ``[B]``), so there is no per-sample Python loop here.

Devices (option ``device``):

* ``"default"`` (the default): ``default.qubit`` for a noiseless circuit, ``default.mixed`` as soon as a channel
  is in the circuit (noise, or the readout error applied in the circuit, see below), both with
  ``diff_method="backprop"``: the QNode is ordinary torch autograd end to end.
* ``"lightning.qubit"``: PennyLane-Lightning's C++ statevector, ``diff_method="adjoint"``, noiseless specs only
  (it has no channels; a noisy spec is refused with ``ValueError``). Checked for pennylane-lightning 0.45:

  - it does not broadcast natively: its compile pipeline applies ``qml.transforms.broadcast_expand``, i.e.
    PennyLane splits the batch into ``B`` circuits internally (still no loop in this module, but one C++
    simulation per sample; on small circuits this is much slower than ``default.qubit``);
  - its adjoint method differentiates expectation values only (``qml.probs`` is rejected), so on lightning the
    probabilities are measured as the ``2**n`` expectation values of the basis projectors
    ``qml.Projector(bits, wires=range(n))`` (``O(4**n)`` work per sample: fine for a few qubits, prefer
    ``measurement="expval"`` or ``device="default"`` for many) and ``<Z_q> = 2 <Projector([0], [q])> - 1``;
  - ``expval(PauliZ)`` is *not* used there on purpose: lightning returns it as a Python ``float``, which
    PennyLane 0.45's torch interface turns into a float32 tensor (``torch.as_tensor(float)``), losing ~1e-8;
    projector expectations come back as ``numpy.float64`` and keep full precision;
  - the QNode uses ``device_vjp=True``: the backward pass is one adjoint sweep with the cotangent-weighted sum
    of the observables, instead of a full Jacobian with one statevector copy per observable.

Readout error (option ``readout``): PennyLane's ``default.mixed`` has a ``readout_prob`` device option meant to
apply ``qml.BitFlip(readout_prob)`` to every measured wire before measuring, which is exactly the spec's readout
(a bit flip channel before a computational-basis measurement flips the measured bit with probability ``r``; for
``<Z>`` it gives ``(1 - 2r) <Z>``). In PennyLane 0.45.1 that option is broken: ``default.mixed`` passes the raw
float where a list of channel constructors is expected and every execution fails with
``TypeError: 'float' object is not iterable`` (PennyLane issue #9612; fix PR #9893 was withdrawn unmerged). This
backend therefore appends the same channel itself, ``qml.BitFlip(r, wires=q)`` on every wire at the end of the
circuit (on ``default.mixed``), and sets :attr:`PennyLaneBackend.applies_readout`. That is computed by
PennyLane's own channel code, independent of :func:`~qshield.quantum.apply_readout`, so comparing the two is a
real cross-check. ``readout="layer"`` leaves the readout to the caller instead (no density matrix needed for a
noiseless circuit); ``"auto"`` picks ``"circuit"`` on ``device="default"`` when the density matrix fits
:data:`~qshield.quantum.DEFAULT_MAX_STATE_BYTES`, otherwise ``"layer"``.

Precision: all simulation runs in float64 / complex128 and the output is cast to the dtype of ``angles``. On
``default.mixed`` the trainable angles are broadcast over the batch: PennyLane 0.45's ``qml.RZ.compute_eigvals``
(which ``default.mixed`` uses for diagonal gates) builds its ``[-0.5j, 0.5j]`` prefactors with torch's default
complex dtype, so a 0-dim float64 torch angle gives complex64 eigenvalues and ~1e-7 errors in the final
probabilities, whereas a 1-d angle goes through ``outer`` and stays complex128. (Channel probabilities passed as
Python floats are harmless: their Kraus matrices are built in NumPy complex128.) With this, float64 results agree
with the torch backend to ~1e-13; the remaining difference is PennyLane's ``sqrt(p + 1e-14)`` regulariser in the
Kraus operators.

CUDA: :attr:`~PennyLaneBackend.supports_cuda` is False. Whether ``default.qubit`` / ``default.mixed`` keep torch
CUDA tensors on the device for every gate and channel used here (several matrices are built in NumPy and
converted) has not been verified on a GPU, so CUDA inputs are refused rather than silently copied.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from qshield.schema import Choice

from .._spec import DEFAULT_MAX_STATE_BYTES, CircuitSpec, Measurement
from ._base import Backend

try:
    import pennylane as qml
except ImportError as exc:  # pragma: no cover - exercised only where pennylane is missing
    raise ImportError(
        "backend='pennylane' needs the pennylane package: `pip install pennylane==0.45.1` "
        "(pennylane-lightning, for device='lightning.qubit', is installed with it)"
    ) from exc

__all__ = ["PennyLaneBackend", "PennyLaneDevice", "ReadoutMode"]

_FLOAT_DTYPES = (torch.float32, torch.float64)

#: spec channel kind -> PennyLane channel class (same Kraus definitions, see ``kraus_operators``)
_CHANNELS: dict[str, Callable[..., Any]] = {
    "depolarizing": qml.DepolarizingChannel,
    "amplitude_damping": qml.AmplitudeDamping,
    "phase_damping": qml.PhaseDamping,
}


class PennyLaneDevice(Choice):
    """Which PennyLane simulator runs the circuit (option ``device``)."""

    DEFAULT = "default"
    LIGHTNING = "lightning.qubit"


class ReadoutMode(Choice):
    """Where ``spec.readout_error`` is applied (option ``readout``)."""

    AUTO = "auto"
    CIRCUIT = "circuit"
    LAYER = "layer"


class PennyLaneBackend(Backend):
    """Simulates a :class:`~qshield.quantum.CircuitSpec` with a PennyLane QNode (see the module docstring).

    Options:
        device: ``"default"`` (``default.qubit`` / ``default.mixed``, backprop; the default) or
            ``"lightning.qubit"`` (adjoint differentiation, noiseless specs only).
        readout: ``"auto"`` (default), ``"circuit"`` (``qml.BitFlip(r)`` on every wire before measuring, on
            ``default.mixed``; needs ``device="default"``) or ``"layer"`` (left to
            :class:`~qshield.quantum.QuantumLayer`).

    Attributes:
        device_name: the PennyLane device actually used (``default.qubit``, ``default.mixed`` or
            ``lightning.qubit``).
        applies_readout: True when :meth:`run` already includes ``spec.readout_error`` (per instance; the class
            default is False).

    Raises:
        ValueError: unknown ``device`` / ``readout`` value (the message lists the allowed ones), a noisy spec with
            ``device="lightning.qubit"``, or ``readout="circuit"`` where it cannot be done.
        ImportError: the lightning device cannot be loaded.
    """

    name: ClassVar[str] = "pennylane"
    supports_cuda: ClassVar[bool] = False

    def __init__(self, spec: CircuitSpec, device: str = "default", readout: str = "auto") -> None:
        super().__init__(spec)
        dev_choice = PennyLaneDevice.parse(device, "device")
        mode = ReadoutMode.parse(readout, "readout")
        n = spec.n_qubits
        has_readout = spec.readout_error > 0.0

        if dev_choice is PennyLaneDevice.LIGHTNING:
            if spec.is_noisy:
                raise ValueError(
                    f"device={device!r} simulates pure states only and cannot apply noise={spec.noise.value!r} "
                    f"(noise_strength={spec.noise_strength}); allowed for noisy circuits: device='default' "
                    "(default.mixed), or use noise='none'"
                )
            if mode is ReadoutMode.CIRCUIT:
                raise ValueError(
                    f"readout='circuit' needs a density-matrix device, but device={device!r} has no channels; "
                    "allowed with device='lightning.qubit': readout='auto' or 'layer'"
                )
            readout_in_circuit = False
        else:
            dm_bytes = 16 * 4**n  # complex128 density matrix of one sample
            fits = spec.is_noisy or dm_bytes <= DEFAULT_MAX_STATE_BYTES
            if mode is ReadoutMode.CIRCUIT and has_readout and not fits:
                raise ValueError(
                    f"readout='circuit' turns the noiseless n_qubits={n} circuit into a density-matrix simulation "
                    f"of {dm_bytes} bytes per sample, over DEFAULT_MAX_STATE_BYTES={DEFAULT_MAX_STATE_BYTES}; "
                    "use readout='layer' (or 'auto')"
                )
            readout_in_circuit = has_readout and (
                mode is ReadoutMode.CIRCUIT or (mode is ReadoutMode.AUTO and fits)
            )

        self.device_option = dev_choice
        self.readout_mode = mode
        #: per-instance override of the ``Backend.applies_readout`` class default
        self.applies_readout: bool = readout_in_circuit  # type: ignore[misc]
        mixed = spec.is_noisy or readout_in_circuit
        if dev_choice is PennyLaneDevice.LIGHTNING:
            self.device_name = "lightning.qubit"
        else:
            self.device_name = "default.mixed" if mixed else "default.qubit"
        # Broadcast trainable angles over the batch on default.mixed (complex64 RZ eigenvalues otherwise).
        self._broadcast_weights = self.device_name == "default.mixed"

        # seed=None: the analytic simulation never samples; the devices' default seed="global" would draw from
        # (and advance) NumPy's global RNG at construction.
        try:
            dev = qml.device(self.device_name, wires=n, seed=None)
        except qml.exceptions.DeviceError as exc:  # pragma: no cover - lightning ships with pennylane
            raise ImportError(
                f"PennyLane device {self.device_name!r} cannot be loaded: {exc}; "
                "install it with `pip install pennylane-lightning==0.45.0`"
            ) from exc

        if dev_choice is PennyLaneDevice.LIGHTNING:
            self._qnode = qml.QNode(
                self._lightning_circuit, dev, interface="torch", diff_method="adjoint", device_vjp=True
            )
        else:
            self._qnode = qml.QNode(self._circuit, dev, interface="torch", diff_method="backprop")

    # ------------------------------------------------------------------ circuit
    def _gates(self, x: torch.Tensor, w: torch.Tensor | None) -> None:
        """Queue encoding, layers and (if enabled) the readout channel. ``x [B, 3n]``, ``w [depth, n, 3]``."""
        spec = self.spec
        n = spec.n_qubits
        b = x.shape[0]
        for q in range(n):
            qml.RX(x[:, 3 * q], wires=q)
            qml.RY(x[:, 3 * q + 1], wires=q)
            qml.RZ(x[:, 3 * q + 2], wires=q)
        pairs = spec.cnot_pairs()
        channels = spec.noise_channels()
        for layer in range(spec.depth):
            if w is not None:
                for q in range(n):
                    angles = w[layer, q]
                    if self._broadcast_weights:
                        angles = angles[:, None].expand(3, b)
                    qml.RX(angles[0], wires=q)
                    qml.RY(angles[1], wires=q)
                    qml.RZ(angles[2], wires=q)
            for control, target in pairs:
                qml.CNOT(wires=[control, target])
            for q in range(n):
                for kind, p in channels:
                    _CHANNELS[kind](p, wires=q)
        if self.applies_readout:
            for q in range(n):
                qml.BitFlip(spec.readout_error, wires=q)

    def _circuit(self, x: torch.Tensor, w: torch.Tensor | None) -> Any:
        """``default.qubit`` / ``default.mixed``: probs ``[B, 2^n]`` or a tuple of ``n`` ``<Z_q>`` of shape ``[B]``."""
        self._gates(x, w)
        n = self.spec.n_qubits
        if self.spec.measurement is Measurement.EXPVAL:
            return tuple(qml.expval(qml.PauliZ(q)) for q in range(n))
        return qml.probs(wires=range(n))

    def _lightning_circuit(self, x: torch.Tensor, w: torch.Tensor | None) -> Any:
        """``lightning.qubit``: projector expectations (adjoint-differentiable, float64; see module docstring)."""
        self._gates(x, w)
        n = self.spec.n_qubits
        if self.spec.measurement is Measurement.EXPVAL:
            return tuple(qml.expval(qml.Projector([0], wires=[q])) for q in range(n))
        return tuple(
            qml.expval(qml.Projector(list(bits), wires=range(n))) for bits in itertools.product((0, 1), repeat=n)
        )

    # ------------------------------------------------------------------ run
    def _check(self, angles: torch.Tensor, weights: torch.Tensor | None) -> None:
        spec = self.spec
        if not isinstance(angles, torch.Tensor):
            raise ValueError(f"angles must be a torch.Tensor, got {type(angles).__name__}")
        if angles.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f"angles dtype={angles.dtype} is not supported; allowed values: torch.float32, torch.float64"
            )
        if angles.ndim != 2 or angles.shape[1] != spec.n_inputs or angles.shape[0] < 1:
            raise ValueError(
                f"angles shape={tuple(angles.shape)} is not supported; allowed: [B, {spec.n_inputs}] with B >= 1 "
                f"(3 angles per qubit for n_qubits={spec.n_qubits})"
            )
        if angles.device.type != "cpu":
            raise ValueError(f"angles device={angles.device} is not supported by backend 'pennylane'; allowed: cpu")
        if spec.trainable:
            if weights is None:
                raise ValueError(
                    f"weights=None but the spec is trainable; expected a tensor of shape {spec.weight_shape}"
                )
            if tuple(weights.shape) != spec.weight_shape:
                raise ValueError(
                    f"weights shape={tuple(weights.shape)} is not supported; allowed: {spec.weight_shape} "
                    "[depth, n_qubits, 3]"
                )
            if weights.dtype not in _FLOAT_DTYPES:
                raise ValueError(
                    f"weights dtype={weights.dtype} is not supported; allowed values: torch.float32, torch.float64"
                )
            if weights.device.type != "cpu":
                raise ValueError(
                    f"weights device={weights.device} is not supported by backend 'pennylane'; allowed: cpu"
                )
        elif weights is not None:
            raise ValueError("weights must be None for a spec with trainable=False, got a tensor")

    def run(self, angles: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """Simulate the circuit; see :meth:`Backend.run`.

        Args:
            angles: ``[B, 3n]`` encoding angles in radians, float32 or float64, on the CPU, ``B >= 1``.
            weights: ``[depth, n, 3]`` trainable angles, or None when ``spec.trainable`` is False.

        Returns:
            ``[B, 2**n]`` probabilities (wire 0 = most significant bit) or ``[B, n]`` ``<Z_q>``, in the dtype of
            ``angles``; includes the readout error iff :attr:`applies_readout`. Computed in float64 throughout.
        """
        self._check(angles, weights)
        spec = self.spec
        b = angles.shape[0]
        x = angles.to(torch.float64)
        w = weights.to(torch.float64) if weights is not None else None
        out = self._qnode(x, w)
        if isinstance(out, (tuple, list)):
            out = torch.stack(list(out), dim=-1)
        if self.device_option is PennyLaneDevice.LIGHTNING and spec.measurement is Measurement.EXPVAL:
            out = 2.0 * out - 1.0  # <Z_q> = P(0) - P(1) = 2 P(0) - 1
        return out.reshape(b, spec.output_dim).to(angles.dtype)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.spec}, device={self.device_option.value!r}, "
            f"readout={self.readout_mode.value!r}) on {self.device_name}"
        )
