"""``TrainConfig``: the frozen, validated training options (paper defaults: Adam, lr 1e-3, wd 1e-4, 10 epochs,
batch 128; QShield, arXiv 2604.10933, "Training").

Validated by the one schema (:mod:`qshield.schema`); the fields marked ``searchable`` are those a sweep may search
(``orchestrator.space`` derives its parameters from them)."""

from __future__ import annotations

from pydantic import Field, model_validator

from qshield.quantum import Entanglement
from qshield.schema import Choice, Config, Eps, EpsOrNone, Flag, Probability, choice, integer, number, searchable

__all__ = ["TrainConfig", "TrainMethod"]


class TrainMethod(Choice):
    """``standard``: clean data; ``pgd_at``: PGD adversarial training (Madry et al. 2018);
    ``quantum_patches``: random-quantum-circuit pseudo-noise augmentation (Quantum Patches, arXiv 2604.08827)."""

    STANDARD = "standard"
    PGD_AT = "pgd_at"
    QUANTUM_PATCHES = "quantum_patches"


class TrainConfig(Config):
    """Options of :func:`~qshield.training.train`. Strings become enums; every field is validated on entry.

    Attributes:
        lr: Adam learning rate (paper: 1e-3).
        weight_decay: Adam's L2 weight decay (paper: 1e-4).
        epochs: passes over the training set (paper: 10).
        batch_size: samples per step (paper: 128).
        method: ``standard``, ``pgd_at`` or ``quantum_patches``.
        pgd_steps: PGD iterations (default 10).
        seed: seeds the shuffling generator, the global torch RNG inside training (dropout, PGD random start;
            restored afterwards) and the Quantum Patches generator. See ``train`` for the details.
        shuffle: reshuffle the training set every epoch.
        limit_batches: stop each epoch after this many batches (smoke tests); None = the whole set.
        num_workers: DataLoader worker processes (0 = load in the training process).
        pgd_eps: L-inf radius for ``pgd_at`` on inputs in [0, 1]. No default: the threat model must be chosen
            (the reference's docs: 32/255 MNIST, 8/255 OrganAMNIST, 2/255 CIFAR-10); required for ``pgd_at``.
        pgd_alpha: PGD step size (default 2/255, as the reference's PGD).
        pgd_random_start: start from a uniform random point of the eps-ball (default True).
        patches_mix_ratio: fraction of each batch replaced by Quantum-Patches copies, in [0, 1] (default 0.5).
        patches_strength: modulation strength s in [0, 1]: ``x' = x * (1 - s + s * N)`` (default 0.5).
        patches_entanglement: CNOT pattern of the random circuit's layer (default ``linear``).
    """

    lr: number(0.0, lo_open=True) = Field(1e-3, json_schema_extra=searchable("Adam learning rate (paper: 1e-3)"))
    weight_decay: number(0.0) = Field(1e-4, json_schema_extra=searchable("Adam L2 weight decay (paper: 1e-4)"))
    epochs: integer(1) = Field(10, json_schema_extra=searchable("passes over the training set (paper: 10)"))
    batch_size: integer(1) = Field(128, json_schema_extra=searchable("samples per optimisation step (paper: 128)"))
    method: choice(TrainMethod) = Field(
        TrainMethod.STANDARD, json_schema_extra=searchable("plain training, PGD adversarial training (Madry et al.) or Quantum Patches augmentation")
    )
    pgd_steps: integer(1) = Field(10, json_schema_extra=searchable("PGD iterations per batch of `pgd_at`"))
    seed: integer(0) = 0
    shuffle: Flag = True
    limit_batches: integer(1, nullable=True) = None
    num_workers: integer(0) = 0
    pgd_eps: EpsOrNone = None
    pgd_alpha: Eps = 2 / 255
    pgd_random_start: Flag = True
    patches_mix_ratio: Probability = 0.5
    patches_strength: Probability = 0.5
    patches_entanglement: choice(Entanglement) = Entanglement.LINEAR

    @model_validator(mode="after")
    def _threat_model(self) -> TrainConfig:
        if self.method is TrainMethod.PGD_AT and self.pgd_eps is None:
            raise ValueError(
                "pgd_eps=None: method='pgd_at' needs an explicit L-inf radius in [0, 1] "
                "(e.g. the reference's 32/255 MNIST, 8/255 OrganAMNIST, 2/255 CIFAR-10)"
            )
        return self
