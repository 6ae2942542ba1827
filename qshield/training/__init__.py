"""Training: Adam + NLL loop with a per-epoch callback, PGD adversarial training and Quantum Patches.

See ``docs/models.md`` (section "Training") for the options and the Quantum Patches augmentation.
"""

from __future__ import annotations

from ._config import TrainConfig, TrainMethod
from ._errors import NonFiniteLossError
from ._history import TrainHistory
from ._loop import METHODS, evaluate_dataset, get_method, log_probs, train
from ._method import TrainingMethod
from ._pgd_at import PGDAdversarialTraining
from ._quantum_patches import PATCH_QUBITS, QuantumPatches, QuantumPatchesTraining, random_rotations
from ._standard import StandardTraining

__all__ = [
    "TrainConfig",
    "TrainMethod",
    "TrainHistory",
    "NonFiniteLossError",
    "train",
    "evaluate_dataset",
    "log_probs",
    "TrainingMethod",
    "StandardTraining",
    "PGDAdversarialTraining",
    "QuantumPatchesTraining",
    "METHODS",
    "get_method",
    "QuantumPatches",
    "random_rotations",
    "PATCH_QUBITS",
]
