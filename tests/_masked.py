"""Tiny victims for the masking and adaptive-attack tests, on sklearn's 8x8 digits (all seeded, seconds to build).

* :func:`train_tiny_hybrid`: qshield's own hybrid (an MLP backbone + 4-qubit circuit, fixed fusion w_q = 0.7, so the
  quantum branch carries most of the decision), gradients through everything;
* :class:`DetachedBranch`: that trained hybrid with its (informative) quantum branch computed without gradients,
  as an independently written, partially masked model would do;
* :class:`DecoyGradient`: a model whose value is a trained classifier's and whose gradient is a random decoy's (a
  straight-through obfuscation);
* :func:`train_reference_hybrid`: the QShield reference's hybrid (``arch="reference_hybrid"``) on a small CNN;
* :class:`Undeclared`: a model with its adaptive-attack declarations stripped (what a reconstruction written
  outside qshield looks like to the evaluation);
* :func:`train_small_cnn`: qshield's ``SmallCNN`` (max-pooling: a plain model whose gradient the finite-difference
  check must accept).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from qshield.models import Classifier, HybridModel, ModelConfig, build_model
from qshield.quantum import QuantumLayer
from qshield.training import TrainConfig, train

N_TRAIN = 1400  # digits[:1400] train every victim; the tests attack digits[1400:]


class TinyMLP(Classifier):
    """64 -> 32 (ReLU) features, Linear(32 -> 10) head, for 8x8 grey digits."""

    def __init__(self) -> None:
        super().__init__(1, 10, image_size=8)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
        self.classifier = nn.Linear(32, 10)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def train_tiny_hybrid(x: torch.Tensor, y: torch.Tensor) -> HybridModel:
    """qshield's hybrid, 150 full-batch Adam steps on ``x[:1400]`` (seeded; the caller's RNG untouched)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = HybridModel(TinyMLP(), QuantumLayer(4, 1, "linear"), "fixed", (0.3, 0.7))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(150):
            opt.zero_grad()
            F.nll_loss(model(x[:N_TRAIN]), y[:N_TRAIN]).backward()
            opt.step()
    return model.eval()


class DetachedBranch(nn.Module):
    """A trained :class:`HybridModel` whose quantum branch is computed under ``torch.no_grad`` (same values)."""

    def __init__(self, hybrid: HybridModel) -> None:
        super().__init__()
        self.hybrid = hybrid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hybrid
        features = h.backbone.forward_features(x)
        log_p_c = torch.log_softmax(h.backbone.classifier(features), dim=1)
        with torch.no_grad():
            log_p_q = h.class_head(h.quantum(h.encode(features)))
        return h.fusion(log_p_c, log_p_q).log_probs


class DecoyGradient(nn.Module):
    """Value of ``model``, gradient of a randomly initialised decoy MLP: ``m(x).detach() + d(x) - d(x).detach()``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        with torch.random.fork_rng():
            torch.manual_seed(1)
            self.decoy = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        decoy = self.decoy(x)
        return self.model(x).detach() + decoy - decoy.detach()


class Undeclared(nn.Module):
    """``model(x)`` with none of the adaptive-attack declarations (``hidden_parts`` / ``surrogate`` / twin)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _train_config_model(config: ModelConfig, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    model = build_model(config, seed=0)
    train(model, TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), TrainConfig(epochs=epochs, lr=3e-3, batch_size=64),
          progress=False)
    return model.eval()


def train_reference_hybrid(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """The reference hybrid (SmallCNN backbone, 4 qubits, mixed noise p = 0.005), 3 epochs on ``x[:1400]``."""
    config = ModelConfig(arch="reference_hybrid", backbone="cnn", in_channels=1, image_size=8, num_classes=10,
                         noise="mixed", noise_strength=0.005)
    return _train_config_model(config, x, y, epochs=3)


def train_small_cnn(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """qshield's SmallCNN, 3 epochs on ``x[:1400]``."""
    config = ModelConfig(arch="cnn", in_channels=1, image_size=8, num_classes=10)
    return _train_config_model(config, x, y, epochs=3)


__all__ = [
    "DecoyGradient",
    "DetachedBranch",
    "N_TRAIN",
    "TinyMLP",
    "Undeclared",
    "train_reference_hybrid",
    "train_small_cnn",
    "train_tiny_hybrid",
]
