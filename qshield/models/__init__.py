"""Models: the paper's baselines (DNN, CNN, ResNet-18), the hybrid quantum-classical classifier, and the QShield
reference code's hybrid reproduced with its flaws (``ReferenceHybrid``, to measure the paper's claims).

See ``docs/models.md`` for the architectures, fusion formulas and what each model returns.
"""

from __future__ import annotations

from ._base import Classifier
from ._build import build_model
from ._cnn import SmallCNN
from ._config import Arch, Backbone, BackendName, FusionMode, ModelConfig, default_n_qubits
from ._dnn import DNN, dnn_hidden_widths
from ._hybrid import CLASS_MAP_EPS, HybridModel, HybridOutputs, QuantumClassHead
from ._io import UnsafeCheckpointError, load_model, save_model
from ._reference import ReferenceGate, ReferenceHybrid, reference_statistics
from ._resnet import ResNet18, resnet18
from .fusion import FUSIONS, FixedFusion, Fusion, FusionOutput, GatedFusion, LearnedFusion, get_fusion

__all__ = [
    "Classifier",
    "DNN",
    "dnn_hidden_widths",
    "SmallCNN",
    "ResNet18",
    "resnet18",
    "HybridModel",
    "HybridOutputs",
    "QuantumClassHead",
    "ReferenceHybrid",
    "ReferenceGate",
    "reference_statistics",
    "CLASS_MAP_EPS",
    "Fusion",
    "FusionOutput",
    "FixedFusion",
    "LearnedFusion",
    "GatedFusion",
    "FUSIONS",
    "get_fusion",
    "ModelConfig",
    "Arch",
    "Backbone",
    "FusionMode",
    "BackendName",
    "default_n_qubits",
    "build_model",
    "save_model",
    "load_model",
    "UnsafeCheckpointError",
]
