"""``learned`` fusion: ``y = w_c y_c + w_q y_q`` with weights learned by gradient descent (paper's description)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from ._base import Fusion, FusionOutput, mix_log_probs

#: Initial weights are floored at this value so that their log (the initial logits) is finite.
MIN_INITIAL_WEIGHT = 1e-4


class LearnedFusion(Fusion):
    """``p = w_c p_c + w_q p_q`` with ``(w_c, w_q) = softmax(theta)``, ``theta`` a trained parameter ``[2]``.

    ``theta`` starts at ``log`` of the normalised ``fusion_weights`` (each floored at 1e-4), so training starts
    from the configured mix. The weights are the same for every input.
    """

    name: ClassVar[str] = "learned"

    def __init__(self, num_classes: int, weights: tuple[float, float] = (0.5, 0.5)) -> None:
        super().__init__(num_classes, weights)
        init = [math.log(max(w, MIN_INITIAL_WEIGHT)) for w in self.initial_weights]
        self.logits = nn.Parameter(torch.tensor(init))

    def fuse(self, log_p_c: torch.Tensor, log_p_q: torch.Tensor) -> FusionOutput:
        log_w = torch.log_softmax(self.logits.to(log_p_c.dtype), dim=0)
        log_p = mix_log_probs(log_p_c, log_p_q, log_w[0], log_w[1])
        return FusionOutput(log_p, log_w[0].exp().expand(log_p_c.shape[0]))
