"""The training-method interface: what a method does to each batch before the optimiser step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from ._config import TrainConfig


class TrainingMethod(ABC):
    """Turns a clean batch into the batch the model is trained on. One required method, :meth:`batch`.

    Args:
        config: the run's options (each method reads its own fields).
        model: the model being trained (already on its device).
        generator: a seeded CPU ``torch.Generator`` owned by this run, for the method's own randomness.
    """

    name: ClassVar[str]
    #: Whether inputs must lie in [0, 1] (checked per batch by the training loop, with a ValueError).
    needs_unit_range: ClassVar[bool] = False

    def __init__(self, config: TrainConfig, model: nn.Module, generator: torch.Generator) -> None:
        self.config = config
        self.model = model
        self.generator = generator

    @abstractmethod
    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, C, H, W]``, ``y [B]`` -> the inputs and labels to train on (same shapes)."""
