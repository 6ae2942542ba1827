"""C&W-L2 with a per-example binary search over the constant c, built on ``torchattacks.CW``.

Imported lazily by :mod:`qshield.attacks._cw` (it subclasses a torchattacks class).

torchattacks' CW optimises ``||x' - x||_2^2 + c * f(x')`` with Adam in tanh space for a fixed scalar ``c``; the
QShield reference used ART's ``CarliniL2Method``, which searches ``c`` per example. This class keeps
torchattacks' inner optimisation and adds:

* per-example constants: :meth:`f` returns ``c_i * f_i``, and the scalar ``self.c`` is fixed to 1, so
  torchattacks' objective becomes ``sum_i ||x'_i - x_i||^2 + c_i f_i``;
* an outer search of ``binary_search_steps`` rounds: c is doubled while an example has never been fooled
  (ART's growth rule) and bisected between the largest failing and the smallest succeeding c afterwards
  (Carlini & Wagner 2017); the smallest-L2 successful adversarial over all rounds is returned, the clean
  image where none succeeded;
* a correct margin ``f = max(Z_y - max_{j != y} Z_j, -kappa)`` for any sign of the outputs: torchattacks
  multiplies by a one-hot mask, which makes the "other" maximum 0 when all outputs are negative (e.g.
  log-probabilities) and the loss constant;
* ART's tanh smoother (0.999999) in the inverse tanh map, so pixels at exactly 0 or 1 start at a finite
  point and can move (torchattacks maps them to ±inf, where the gradient is 0).

Each round ends with one extra forward pass on the round's result to decide success (counted like any
other query).
"""

from __future__ import annotations

import torch
import torchattacks

__all__ = ["CWL2BinarySearch"]


class CWL2BinarySearch(torchattacks.CW):
    """C&W-L2 with an ART-style binary search over c (see the module docstring).

    Args:
        model: classifier returning logits or log-probabilities ``[B, C]``.
        c: initial constant (ART ``initial_const``).
        kappa: confidence margin (ART ``confidence``).
        steps: Adam steps per binary-search round (ART ``max_iter``).
        lr: Adam learning rate (ART ``learning_rate``, there the initial step of a line search).
        binary_search_steps: rounds of the search over c (ART ``binary_search_steps``).
        tanh_smoother: factor applied before ``atanh`` so that pixels at 0 or 1 stay finite (ART's value).

    ``forward(images [B, C, H, W] in [0, 1], labels [B]) -> adversarial images [B, C, H, W] in [0, 1]``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        c: float = 0.01,
        kappa: float = 0.0,
        steps: int = 5,
        lr: float = 0.05,
        binary_search_steps: int = 10,
        tanh_smoother: float = 0.999999,
    ) -> None:
        super().__init__(model, c=1.0, kappa=kappa, steps=steps, lr=lr)
        self.attack = "CWL2BinarySearch"
        self.initial_const = float(c)
        self.binary_search_steps = int(binary_search_steps)
        self.tanh_smoother = float(tanh_smoother)
        self.supported_mode = ["default"]
        self._const: torch.Tensor | None = None

    def inverse_tanh_space(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atanh(torch.clamp(x * 2 - 1, min=-1, max=1) * self.tanh_smoother)

    def f(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example ``c_i * max(Z_y - max_{j != y} Z_j, -kappa)`` (untargeted), shape ``[B]``."""
        real = outputs.gather(1, labels[:, None]).squeeze(1)
        mask = torch.zeros_like(outputs, dtype=torch.bool).scatter_(1, labels[:, None], True)
        other = outputs.masked_fill(mask, float("-inf")).amax(dim=1)
        margin = torch.clamp(real - other, min=-self.kappa)
        if self._const is None:
            return margin * self.initial_const
        return margin * self._const

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        n = images.shape[0]
        const = torch.full((n,), self.initial_const, dtype=images.dtype, device=images.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, float("inf"))
        best_l2 = torch.full_like(const, float("inf"))
        best_adv = images.clone()
        try:
            for _ in range(self.binary_search_steps):
                self._const = const
                adv = super().forward(images, labels)
                with torch.no_grad():
                    success = self.get_logits(adv).argmax(dim=1) != labels
                    l2 = (adv - images).flatten(1).pow(2).sum(dim=1)
                    improved = success & (l2 < best_l2)
                    best_l2 = torch.where(improved, l2, best_l2)
                    best_adv[improved] = adv[improved]
                    upper = torch.where(success, torch.minimum(upper, const), upper)
                    lower = torch.where(success, lower, torch.maximum(lower, const))
                    bounded = torch.isfinite(upper)
                    const = torch.where(bounded, (lower + upper) / 2, const * 2)
        finally:
            self._const = None
        return best_adv
