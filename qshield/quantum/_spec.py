"""The circuit specification every simulator backend follows exactly.

See ``docs/circuits.md`` for the prose version. In short, for ``n`` qubits and input angles ``x[B, 3n]``:

1. encoding ``angle``: per qubit ``q``: RX(x[3q]) then RY(x[3q+1]) then RZ(x[3q+2]);
2. ``depth`` layers, each: (if trainable) per qubit RX(w[l,q,0]) RY(w[l,q,1]) RZ(w[l,q,2]); then the CNOTs of
   the entanglement topology (control, target) in order; then the noise channels on every qubit;
3. measurement ``probs`` (``[B, 2**n]``) or ``expval`` (``<Z_q>``, ``[B, n]``), after an optional symmetric
   readout bit-flip of probability ``readout_error`` on every measured qubit.

Wire 0 is the most significant bit of a basis-state index (PennyLane's convention).
Rotations follow the usual convention ``RX(t) = exp(-i t X / 2)``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

MIN_QUBITS = 2
MAX_QUBITS = 16
#: Default memory budget for one sample's simulated state (bytes). A density matrix of 13 qubits in
#: complex128 needs 1 GiB; 14 qubits need 4 GiB and are refused by default.
DEFAULT_MAX_STATE_BYTES = 2 * 1024**3


class _Choice(str, enum.Enum):
    """A string enum whose lookup error lists the allowed values and names the field."""

    @classmethod
    def parse(cls, value: object, field: str) -> "_Choice":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"{field}={value!r} is not supported; allowed values: {allowed}") from None


class Encoding(_Choice):
    ANGLE = "angle"


class Entanglement(_Choice):
    NONE = "none"
    LINEAR = "linear"
    RING = "ring"
    FULL = "full"
    STAR = "star"
    BRICK = "brick"


class Noise(_Choice):
    NONE = "none"
    DEPOLARIZING = "depolarizing"
    AMPLITUDE_DAMPING = "amplitude_damping"
    PHASE_DAMPING = "phase_damping"
    MIXED = "mixed"


class Measurement(_Choice):
    PROBS = "probs"
    EXPVAL = "expval"


#: Single-qubit channel kinds used by the noise models (PennyLane's Kraus definitions).
CHANNELS = ("depolarizing", "amplitude_damping", "phase_damping")


def cnot_pairs(n_qubits: int, entanglement: Entanglement | str) -> tuple[tuple[int, int], ...]:
    """The (control, target) CNOT pairs of one entangling layer, in application order."""
    ent = Entanglement.parse(entanglement, "entanglement")
    n = n_qubits
    if ent is Entanglement.NONE:
        return ()
    if ent is Entanglement.LINEAR:
        return tuple((i, i + 1) for i in range(n - 1))
    if ent is Entanglement.RING:
        return tuple((i, i + 1) for i in range(n - 1)) + ((n - 1, 0),)
    if ent is Entanglement.FULL:
        return tuple((i, j) for i in range(n) for j in range(i + 1, n))
    if ent is Entanglement.STAR:
        return tuple((0, j) for j in range(1, n))
    if ent is Entanglement.BRICK:
        even = tuple((i, i + 1) for i in range(0, n - 1, 2))
        odd = tuple((i, i + 1) for i in range(1, n - 1, 2))
        return even + odd
    raise AssertionError(f"unhandled entanglement {ent}")  # pragma: no cover - enum is exhaustive


def noise_channels(noise: Noise | str, strength: float) -> tuple[tuple[str, float], ...]:
    """The single-qubit channels (kind, probability) applied, in order, to every qubit after each layer."""
    kind = Noise.parse(noise, "noise")
    p = float(strength)
    if kind is Noise.NONE:
        return ()
    if kind is Noise.MIXED:
        return (("depolarizing", 0.4 * p), ("amplitude_damping", 0.3 * p), ("phase_damping", 0.3 * p))
    return ((kind.value, p),)


def kraus_operators(kind: str, p: float) -> list[list[list[complex]]]:
    """Kraus operators of a single-qubit channel as nested lists (PennyLane's definitions).

    * ``depolarizing(p)``: sqrt(1-p) I, sqrt(p/3) X, sqrt(p/3) Y, sqrt(p/3) Z
    * ``amplitude_damping(g)``: [[1, 0], [0, sqrt(1-g)]], [[0, sqrt(g)], [0, 0]]
    * ``phase_damping(g)``: [[1, 0], [0, sqrt(1-g)]], [[0, 0], [0, sqrt(g)]]
    """
    if kind == "depolarizing":
        a, b = math.sqrt(1.0 - p), math.sqrt(p / 3.0)
        return [
            [[a, 0], [0, a]],
            [[0, b], [b, 0]],
            [[0, -1j * b], [1j * b, 0]],
            [[b, 0], [0, -b]],
        ]
    if kind == "amplitude_damping":
        return [[[1, 0], [0, math.sqrt(1.0 - p)]], [[0, math.sqrt(p)], [0, 0]]]
    if kind == "phase_damping":
        return [[[1, 0], [0, math.sqrt(1.0 - p)]], [[0, 0], [0, math.sqrt(p)]]]
    raise ValueError(f"channel kind={kind!r} is not supported; allowed values: {', '.join(map(repr, CHANNELS))}")


def _check_probability(value: object, field: str) -> float:
    try:
        p = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r} must be a number in [0, 1]") from None
    if not (0.0 <= p <= 1.0) or math.isnan(p):
        raise ValueError(f"{field}={value!r} must be in [0, 1]")
    return p


@dataclass(frozen=True)
class CircuitSpec:
    """A validated, immutable description of the circuit (see the module docstring).

    Build it with :meth:`create` (or the :class:`~qshield.quantum.QuantumLayer` constructor), which turns
    strings into enums and raises ``ValueError`` naming the field and the allowed values.
    """

    n_qubits: int
    depth: int
    entanglement: Entanglement = Entanglement.LINEAR
    noise: Noise = Noise.NONE
    noise_strength: float = 0.0
    readout_error: float = 0.0
    measurement: Measurement = Measurement.PROBS
    trainable: bool = True
    encoding: Encoding = Encoding.ANGLE

    @classmethod
    def create(
        cls,
        n_qubits: int,
        depth: int,
        entanglement: str | Entanglement = "linear",
        noise: str | Noise = "none",
        noise_strength: float = 0.0,
        readout_error: float = 0.0,
        measurement: str | Measurement = "probs",
        trainable: bool = True,
        encoding: str | Encoding = "angle",
        max_state_bytes: int | None = DEFAULT_MAX_STATE_BYTES,
        bytes_per_amplitude: int = 16,
    ) -> "CircuitSpec":
        if isinstance(n_qubits, bool) or not isinstance(n_qubits, int):
            raise ValueError(f"n_qubits={n_qubits!r} must be an integer in [{MIN_QUBITS}, {MAX_QUBITS}]")
        if not MIN_QUBITS <= n_qubits <= MAX_QUBITS:
            raise ValueError(f"n_qubits={n_qubits} is out of range; allowed values: {MIN_QUBITS}..{MAX_QUBITS}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth={depth!r} must be an integer >= 1")
        spec = cls(
            n_qubits=n_qubits,
            depth=depth,
            entanglement=Entanglement.parse(entanglement, "entanglement"),  # type: ignore[arg-type]
            noise=Noise.parse(noise, "noise"),  # type: ignore[arg-type]
            noise_strength=_check_probability(noise_strength, "noise_strength"),
            readout_error=_check_probability(readout_error, "readout_error"),
            measurement=Measurement.parse(measurement, "measurement"),  # type: ignore[arg-type]
            trainable=bool(trainable),
            encoding=Encoding.parse(encoding, "encoding"),  # type: ignore[arg-type]
        )
        if max_state_bytes is not None:
            need = spec.state_bytes(bytes_per_amplitude)
            if need > max_state_bytes:
                kind = "density matrix" if spec.is_noisy else "statevector"
                raise ValueError(
                    f"n_qubits={n_qubits} with noise={spec.noise.value!r} needs a {kind} of "
                    f"{_fmt_bytes(need)} per sample, over the memory budget max_state_bytes="
                    f"{_fmt_bytes(max_state_bytes)}; use fewer qubits, noise='none', or raise max_state_bytes"
                )
        return spec

    @property
    def is_noisy(self) -> bool:
        """True when a density-matrix simulation is needed (channel noise)."""
        return self.noise is not Noise.NONE and self.noise_strength > 0.0

    @property
    def n_inputs(self) -> int:
        """Number of input angles per sample (3 per qubit)."""
        return 3 * self.n_qubits

    @property
    def output_dim(self) -> int:
        return 2**self.n_qubits if self.measurement is Measurement.PROBS else self.n_qubits

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        return (self.depth, self.n_qubits, 3)

    def cnot_pairs(self) -> tuple[tuple[int, int], ...]:
        return cnot_pairs(self.n_qubits, self.entanglement)

    def noise_channels(self) -> tuple[tuple[str, float], ...]:
        return noise_channels(self.noise, self.noise_strength) if self.is_noisy else ()

    def state_bytes(self, bytes_per_amplitude: int = 16) -> int:
        """Bytes of one sample's simulated state (statevector or density matrix)."""
        dim = 2**self.n_qubits
        return bytes_per_amplitude * (dim * dim if self.is_noisy else dim)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
