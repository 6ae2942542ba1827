"""The circuit specification every simulator backend follows exactly.

See ``docs/circuits.md`` for the prose version. In short, for ``n`` qubits and input angles ``x[B, 3n]``:

1. encoding ``angle``: per qubit ``q``: RX(x[3q]) then RY(x[3q+1]) then RZ(x[3q+2]);
2. ``depth`` layers, each: (if trainable) per qubit RX(w[l,q,0]) RY(w[l,q,1]) RZ(w[l,q,2]); then the CNOTs of
   the entanglement topology (control, target) in order; then the noise channels on every qubit;
3. measurement ``probs`` (``[B, 2**n]``) or ``expval`` (``<Z_q>``, ``[B, n]``), after an optional symmetric
   readout bit-flip of probability ``readout_error`` on every measured qubit.

Channel noise is simulated exactly (``simulation="density_matrix"``) or by quantum trajectories
(``simulation="trajectories"``: an unbiased Monte-Carlo estimate from ``n_trajectories`` statevectors per sample,
see ``docs/circuits.md``); ``"auto"`` takes trajectories above ``AUTO_TRAJECTORIES_ABOVE`` qubits or when the
density matrix would exceed the memory budget.

Wire 0 is the most significant bit of a basis-state index (PennyLane's convention).
Rotations follow the usual convention ``RX(t) = exp(-i t X / 2)``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from qshield.schema import Choice, Config, Flag, Probability, choice, integer

MIN_QUBITS = 2
MAX_QUBITS = 16
#: Default memory budget for one sample's simulated state (bytes). A density matrix of 13 qubits in
#: complex128 needs 1 GiB; 14 qubits need 4 GiB and are refused by default.
DEFAULT_MAX_STATE_BYTES = 2 * 1024**3
#: ``simulation="auto"``: noisy circuits of more qubits than this are simulated by trajectories (a density matrix
#: of 10 qubits takes tens of ms per sample forward+backward, of 12 qubits seconds: docs/benchmarks.md).
AUTO_TRAJECTORIES_ABOVE = 10
#: Default number of sampled trajectories per sample (besides the no-jump trajectory, always computed exactly):
#: at the released noise level (mixed, p = 0.005, depth 2) a standard error of about 1e-2 or less on the outputs a
#: model uses, from 12 to 16 qubits (docs/benchmarks.md: 6 trajectories at 12 qubits, 5-43 at 16).
DEFAULT_TRAJECTORIES = 32
#: Largest accepted ``n_trajectories``.
MAX_TRAJECTORIES = 2**16


class Encoding(Choice):
    ANGLE = "angle"


class Entanglement(Choice):
    NONE = "none"
    LINEAR = "linear"
    RING = "ring"
    FULL = "full"
    STAR = "star"
    BRICK = "brick"


class Noise(Choice):
    NONE = "none"
    DEPOLARIZING = "depolarizing"
    AMPLITUDE_DAMPING = "amplitude_damping"
    PHASE_DAMPING = "phase_damping"
    MIXED = "mixed"


class Measurement(Choice):
    PROBS = "probs"
    EXPVAL = "expval"


class Simulation(Choice):
    """How channel noise is simulated (a noiseless circuit is always an exact statevector)."""

    AUTO = "auto"
    DENSITY_MATRIX = "density_matrix"
    TRAJECTORIES = "trajectories"


#: The rules of the circuit's fields, declared once: :class:`CircuitConfig` and ``qshield.models.ModelConfig`` (and
#: through it the sweep space) use these types.
NQubits = integer(MIN_QUBITS, MAX_QUBITS)
Depth = integer(1)
EntanglementField = choice(Entanglement)
NoiseField = choice(Noise)
MeasurementField = choice(Measurement)
EncodingField = choice(Encoding)
SimulationField = choice(Simulation)
Trajectories = integer(1, MAX_TRAJECTORIES)


class CircuitConfig(Config):
    """The circuit's parameters, each validated by its rule (:mod:`qshield.schema`); what
    :meth:`CircuitSpec.create` checks before resolving the simulation and the memory budget."""

    n_qubits: NQubits
    depth: Depth = 1
    entanglement: EntanglementField = Entanglement.LINEAR
    noise: NoiseField = Noise.NONE
    noise_strength: Probability = 0.0
    readout_error: Probability = 0.0
    measurement: MeasurementField = Measurement.PROBS
    trainable: Flag = True
    encoding: EncodingField = Encoding.ANGLE
    simulation: SimulationField = Simulation.AUTO
    n_trajectories: Trajectories = DEFAULT_TRAJECTORIES


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
    #: resolved by :meth:`create`: ``density_matrix`` or ``trajectories`` (never ``auto``)
    simulation: Simulation = Simulation.DENSITY_MATRIX
    n_trajectories: int = DEFAULT_TRAJECTORIES

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
        simulation: str | Simulation = "auto",
        n_trajectories: int = DEFAULT_TRAJECTORIES,
    ) -> "CircuitSpec":
        """Validate and build a spec (``ValueError`` naming the field and the allowed values, before any compute).

        ``simulation``: ``"density_matrix"`` (exact), ``"trajectories"`` (Monte-Carlo statevectors, stochastic) or
        ``"auto"`` (default): trajectories for a noisy circuit of more than ``AUTO_TRAJECTORIES_ABOVE`` qubits or
        whose density matrix exceeds ``max_state_bytes``, else the density matrix. The spec stores the resolved
        choice. ``n_trajectories``: sampled trajectories per sample, 1..``MAX_TRAJECTORIES`` (default
        ``DEFAULT_TRAJECTORIES``); only used by trajectories. ``max_state_bytes`` (None: no limit) bounds
        :meth:`state_bytes` of the resolved simulation.
        """
        config = CircuitConfig(
            n_qubits=n_qubits, depth=depth, entanglement=entanglement, noise=noise, noise_strength=noise_strength,
            readout_error=readout_error, measurement=measurement, trainable=trainable, encoding=encoding,
            simulation=simulation, n_trajectories=n_trajectories,
        )
        spec = cls(**config.model_dump())
        spec = dataclasses.replace(spec, simulation=spec._resolve(max_state_bytes, bytes_per_amplitude))
        if max_state_bytes is not None:
            need = spec.state_bytes(bytes_per_amplitude)
            if need > max_state_bytes:
                kind = "statevector"
                hint = "use fewer qubits, noise='none', or raise max_state_bytes"
                if spec.is_stochastic:
                    kind = f"batch of {spec.n_trajectories + 1} trajectory statevectors"
                    hint = "use fewer qubits or n_trajectories, or raise max_state_bytes"
                elif spec.is_noisy:
                    kind = "density matrix"
                    hint = "use fewer qubits, noise='none', simulation='trajectories', or raise max_state_bytes"
                raise ValueError(
                    f"n_qubits={n_qubits} with noise={spec.noise.value!r} needs a {kind} of "
                    f"{_fmt_bytes(need)} per sample, over the memory budget max_state_bytes="
                    f"{_fmt_bytes(max_state_bytes)}; {hint}"
                )
        return spec

    def _resolve(self, max_state_bytes: int | None, bytes_per_amplitude: int) -> Simulation:
        """The concrete simulation for ``self.simulation`` (``auto``: see :meth:`create`)."""
        if self.simulation is not Simulation.AUTO:
            return self.simulation
        if not self.is_noisy:
            return Simulation.DENSITY_MATRIX  # unused: a noiseless circuit is an exact statevector
        if self.n_qubits > AUTO_TRAJECTORIES_ABOVE:
            return Simulation.TRAJECTORIES
        dm = dataclasses.replace(self, simulation=Simulation.DENSITY_MATRIX)
        if max_state_bytes is not None and dm.state_bytes(bytes_per_amplitude) > max_state_bytes:
            return Simulation.TRAJECTORIES
        return Simulation.DENSITY_MATRIX

    @property
    def is_noisy(self) -> bool:
        """True when the circuit has channel noise (simulated by a density matrix or by trajectories)."""
        return self.noise is not Noise.NONE and self.noise_strength > 0.0

    @property
    def is_stochastic(self) -> bool:
        """True when the outputs are a Monte-Carlo estimate (noisy and ``simulation == "trajectories"``).

        Such a circuit is a randomised function of its inputs: two identical calls differ (each draws fresh
        trajectories), so attacks on a model containing it need expectation over transformation (EOT).
        """
        return self.is_noisy and self.simulation is Simulation.TRAJECTORIES

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
        """Bytes of one sample's simulated state: a statevector, a density matrix, or ``n_trajectories + 1``
        trajectory statevectors."""
        dim = 2**self.n_qubits
        if self.is_stochastic:
            return bytes_per_amplitude * dim * (self.n_trajectories + 1)
        return bytes_per_amplitude * (dim * dim if self.is_noisy else dim)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
