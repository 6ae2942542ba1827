"""Expectation over Transformation for models with stochastic parts (Athalye, Carlini, Wagner 2018,
arXiv:1802.00420)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EOTWrapper"]


class EOTWrapper(nn.Module):
    """Average a stochastic model's outputs over ``eot_iter`` forward passes.

    ``forward(x [B, ...]) -> mean_k model(x) [B, C]``. Because the mean is taken inside the graph, the gradient
    any attack reads through this module is the average of the ``eot_iter`` Jacobians of the model, each pass
    drawing its own randomness (shot noise, random projections, dropout left on, ...). For a deterministic
    model the wrapper only multiplies the cost by ``eot_iter``.

    The outputs averaged are whatever the model returns (logits or log-probabilities); cross-entropy on the
    averaged log-probabilities renormalises them, so both work with every attack.

    The wrapper copies the wrapped model's train/eval mode at construction so that torchattacks' "restore
    the mode the model was in" logic sees the model's own mode.

    Args:
        model: the classifier.
        eot_iter: passes per call, >= 1.
    """

    def __init__(self, model: nn.Module, eot_iter: int) -> None:
        super().__init__()
        if isinstance(eot_iter, bool) or not isinstance(eot_iter, int) or eot_iter < 1:
            raise ValueError(f"eot_iter={eot_iter!r} is invalid; allowed values: an integer >= 1")
        self.model = model
        self.eot_iter = eot_iter
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.model(x)
        for _ in range(self.eot_iter - 1):
            total = total + self.model(x)
        return total / self.eot_iter

    def extra_repr(self) -> str:
        return f"eot_iter={self.eot_iter}"
