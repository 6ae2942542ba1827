"""``TrainConfig``: the frozen, validated training options (paper defaults: Adam, lr 1e-3, wd 1e-4, 10 epochs,
batch 128; QShield, arXiv 2604.10933, "Training")."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qshield.models._config import _as_bool, _as_float, _as_int, _Choice
from qshield.quantum import Entanglement


class TrainMethod(_Choice):
    """``standard``: clean data; ``pgd_at``: PGD adversarial training (Madry et al. 2018);
    ``quantum_patches``: random-quantum-circuit pseudo-noise augmentation (Quantum Patches, arXiv 2604.08827)."""

    STANDARD = "standard"
    PGD_AT = "pgd_at"
    QUANTUM_PATCHES = "quantum_patches"


@dataclass(frozen=True)
class TrainConfig:
    """Options of :func:`~qshield.training.train`. Strings become enums; every field is validated on entry.

    Attributes:
        epochs: passes over the training set (paper: 10).
        lr: Adam learning rate (paper: 1e-3).
        weight_decay: Adam's L2 weight decay (paper: 1e-4).
        batch_size: samples per step (paper: 128).
        seed: seeds the shuffling generator, the global torch RNG inside training (dropout, PGD random start;
            restored afterwards) and the Quantum Patches generator. See ``train`` for the details.
        method: ``standard``, ``pgd_at`` or ``quantum_patches``.
        shuffle: reshuffle the training set every epoch.
        limit_batches: stop each epoch after this many batches (smoke tests); None = the whole set.
        num_workers: DataLoader worker processes (0 = load in the training process).
        pgd_eps: L-inf radius for ``pgd_at`` on inputs in [0, 1]. No default: the threat model must be chosen
            (the reference's docs: 32/255 MNIST, 8/255 OrganAMNIST, 2/255 CIFAR-10); required for ``pgd_at``.
        pgd_alpha: PGD step size (default 2/255, as the reference's PGD).
        pgd_steps: PGD iterations (default 10).
        pgd_random_start: start from a uniform random point of the eps-ball (default True).
        patches_mix_ratio: fraction of each batch replaced by Quantum-Patches copies, in [0, 1] (default 0.5).
        patches_strength: modulation strength s in [0, 1]: ``x' = x * (1 - s + s * N)`` (default 0.5).
        patches_entanglement: CNOT pattern of the random circuit's layer (default ``linear``).
    """

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    seed: int = 0
    method: TrainMethod = TrainMethod.STANDARD
    shuffle: bool = True
    limit_batches: int | None = None
    num_workers: int = 0
    pgd_eps: float | None = None
    pgd_alpha: float = 2 / 255
    pgd_steps: int = 10
    pgd_random_start: bool = True
    patches_mix_ratio: float = 0.5
    patches_strength: float = 0.5
    patches_entanglement: Entanglement = Entanglement.LINEAR

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "epochs", _as_int(self.epochs, "epochs", 1))
        put(self, "lr", _as_float(self.lr, "lr", 0.0, math.inf))
        if self.lr <= 0 or math.isinf(self.lr):
            raise ValueError(f"lr={self.lr!r} must be a finite number > 0")
        put(self, "weight_decay", _as_float(self.weight_decay, "weight_decay", 0.0, math.inf))
        if math.isinf(self.weight_decay):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be a finite number >= 0")
        put(self, "batch_size", _as_int(self.batch_size, "batch_size", 1))
        put(self, "seed", _as_int(self.seed, "seed", 0))
        put(self, "method", TrainMethod.parse(self.method, "method"))
        put(self, "shuffle", _as_bool(self.shuffle, "shuffle"))
        if self.limit_batches is not None and str(self.limit_batches).strip().lower() != "none":
            put(self, "limit_batches", _as_int(self.limit_batches, "limit_batches", 1))
        else:
            put(self, "limit_batches", None)
        put(self, "num_workers", _as_int(self.num_workers, "num_workers", 0))
        if self.pgd_eps is not None and str(self.pgd_eps).strip().lower() != "none":
            put(self, "pgd_eps", _as_float(self.pgd_eps, "pgd_eps", 0.0, 1.0))
        else:
            put(self, "pgd_eps", None)
        put(self, "pgd_alpha", _as_float(self.pgd_alpha, "pgd_alpha", 0.0, 1.0))
        put(self, "pgd_steps", _as_int(self.pgd_steps, "pgd_steps", 1))
        put(self, "pgd_random_start", _as_bool(self.pgd_random_start, "pgd_random_start"))
        put(self, "patches_mix_ratio", _as_float(self.patches_mix_ratio, "patches_mix_ratio", 0.0, 1.0))
        put(self, "patches_strength", _as_float(self.patches_strength, "patches_strength", 0.0, 1.0))
        put(self, "patches_entanglement", Entanglement.parse(self.patches_entanglement, "patches_entanglement"))
        if self.method is TrainMethod.PGD_AT and self.pgd_eps is None:
            raise ValueError(
                "pgd_eps=None: method='pgd_at' needs an explicit L-inf radius in [0, 1] "
                "(e.g. the reference's 32/255 MNIST, 8/255 OrganAMNIST, 2/255 CIFAR-10)"
            )

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (enums as strings), accepted by :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, enum.Enum) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain dict; unknown keys raise ``ValueError`` listing the allowed keys."""
        if not isinstance(data, Mapping):
            raise ValueError(f"TrainConfig.from_dict expects a mapping, got {type(data).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; allowed fields: {', '.join(allowed)}")
        return cls(**dict(data))
