"""The AutoAttack standard ensemble as a torchattacks ``Attack``, built on the first call once the number of classes
is known (imported lazily by :mod:`qshield.attacks._autoattack`, as it subclasses a torchattacks class)."""

from __future__ import annotations

import torch
import torchattacks
from torchattacks.attack import Attack

__all__ = ["AutoAttackStandard"]


class AutoAttackStandard(Attack):
    """APGD-CE → APGD-T → FAB-T → Square (``torchattacks.MultiAttack``) with the standard version's parameters.

    Args:
        model: classifier returning logits or log-probabilities ``[B, C]``.
        eps: Linf budget on the [0, 1] scale.
        steps: iterations of APGD-CE, APGD-T and FAB-T (standard: 100).
        n_target_classes: targets of APGD-T and FAB-T (standard: 9; capped at ``C - 1``).
        n_queries: Square's query budget (standard: 5000).
        seed: seed of every component (fixed, so runs are reproducible).

    ``forward(images [B, C, H, W] in [0, 1], labels [B]) -> adversarial images``; the ensemble is built on the
    first call from the model's number of classes (one forward pass on one image).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float,
        steps: int = 100,
        n_target_classes: int = 9,
        n_queries: int = 5000,
        seed: int = 0,
    ) -> None:
        super().__init__("AutoAttackStandard", model)
        self.eps = float(eps)
        self.steps = int(steps)
        self.n_target_classes = int(n_target_classes)
        self.n_queries = int(n_queries)
        self.seed = int(seed)
        self.supported_mode = ["default"]
        self._ensemble: torchattacks.MultiAttack | None = None
        self.n_classes: int | None = None

    def _build(self, n_classes: int) -> torchattacks.MultiAttack:
        # torchattacks' APGDT/FAB attack their ``n_classes - 1`` highest-scoring other classes: pass targets + 1
        as_n_classes = max(1, min(self.n_target_classes, n_classes - 1)) + 1
        common = {"norm": "Linf", "eps": self.eps, "seed": self.seed, "verbose": False}
        parts = [
            torchattacks.APGD(self.model, steps=self.steps, n_restarts=1, loss="ce", rho=0.75, **common),
            torchattacks.APGDT(self.model, steps=self.steps, n_restarts=1, rho=0.75, n_classes=as_n_classes, **common),
            torchattacks.FAB(self.model, steps=self.steps, n_restarts=1, multi_targeted=True, n_classes=as_n_classes,
                             **common),
            torchattacks.Square(self.model, n_queries=self.n_queries, n_restarts=1, p_init=0.8, loss="margin",
                                resc_schedule=False, **common),
        ]
        ensemble = torchattacks.MultiAttack(parts)
        for attack in [*parts, ensemble]:
            attack.set_device(self.device)
        return ensemble

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        if self._ensemble is None:
            with torch.no_grad():
                self.n_classes = int(self.get_logits(images[:1]).shape[1])
            self._ensemble = self._build(self.n_classes)
        return self._ensemble(images, labels)
