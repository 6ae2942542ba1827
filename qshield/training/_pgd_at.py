"""``pgd_at``: PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018), the robustness baseline, with ``torchattacks.PGD``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ._config import TrainConfig
from ._method import TrainingMethod


class PGDAdversarialTraining(TrainingMethod):
    """Every batch is replaced by its L-inf PGD adversarial examples (eps, alpha, steps, random start from the
    config; inputs in [0, 1], the adversarial images are clipped to [0, 1] by torchattacks).

    torchattacks runs the attack with the model in eval mode (BatchNorm running statistics, no dropout) and puts
    it back in train mode; its cross-entropy loss equals the NLL on a hybrid model's log-probabilities. Its random
    start draws from the global torch RNG, which ``train`` seeds.
    """

    name: ClassVar[str] = "pgd_at"
    needs_unit_range: ClassVar[bool] = True

    def __init__(self, config: TrainConfig, model: nn.Module, generator: torch.Generator) -> None:
        super().__init__(config, model, generator)
        import torchattacks  # heavy optional import, only when PGD-AT is used

        self.attack = torchattacks.PGD(
            model,
            eps=config.pgd_eps,
            alpha=config.pgd_alpha,
            steps=config.pgd_steps,
            random_start=config.pgd_random_start,
        )

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attack(x, y), y
