"""``standard`` training: the clean batch as it is."""

from __future__ import annotations

from typing import ClassVar

import torch

from ._method import TrainingMethod


class StandardTraining(TrainingMethod):
    """Empirical risk minimisation on clean data (the paper's training)."""

    name: ClassVar[str] = "standard"

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y
