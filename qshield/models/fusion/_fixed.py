"""``fixed`` fusion: the paper's ``y = w_c y_c + w_q y_q`` with constant weights from the config."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ._base import Fusion, FusionOutput, mix_log_probs


class FixedFusion(Fusion):
    """``p = (w_c p_c + w_q p_q) / (w_c + w_q)`` with ``(w_c, w_q)`` = ``fusion_weights``, not trained.

    The weights are normalised to sum to 1 so ``p`` is a distribution; they are stored as buffers (saved with
    the model, never updated by an optimiser).
    """

    name: ClassVar[str] = "fixed"

    def __init__(self, num_classes: int, weights: tuple[float, float] = (0.5, 0.5)) -> None:
        super().__init__(num_classes, weights)
        w_c, w_q = self.initial_weights
        log_w = [math.log(w) if w > 0 else -math.inf for w in (w_c, w_q)]
        self.register_buffer("log_weights", torch.tensor(log_w))

    def fuse(self, log_p_c: torch.Tensor, log_p_q: torch.Tensor) -> FusionOutput:
        log_w = self.log_weights.to(log_p_c.dtype)
        log_p = mix_log_probs(log_p_c, log_p_q, log_w[0], log_w[1])
        return FusionOutput(log_p, log_w[0].exp().expand(log_p_c.shape[0]))
