"""The fusion interface: combine the classical and quantum class distributions into one, in log space."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import torch
from torch import nn


class FusionOutput(NamedTuple):
    """What a fusion returns.

    Attributes:
        log_probs: ``[B, C]`` log-probabilities of the fused distribution (each row's exp sums to 1).
        weight: ``[B]`` the classical branch's share: ``w_c`` (normalised) for ``fixed``/``learned``, the gate
            ``alpha(x)`` (an amplitude weight) for ``gated``.
    """

    log_probs: torch.Tensor
    weight: torch.Tensor


def normalised_weights(weights: tuple[float, float]) -> tuple[float, float]:
    """``(w_c, w_q) / (w_c + w_q)``; raises ``ValueError`` unless both are finite, >= 0 and not both 0."""
    w_c, w_q = (float(w) for w in weights)
    if not (math.isfinite(w_c) and math.isfinite(w_q)) or w_c < 0 or w_q < 0 or w_c + w_q <= 0:
        raise ValueError(f"fusion_weights={weights!r} must be two finite numbers >= 0, not both 0")
    return (w_c / (w_c + w_q), w_q / (w_c + w_q))


class Fusion(nn.Module, ABC):
    """Base class. Subclasses implement :meth:`fuse`; ``forward`` checks shapes first.

    Args:
        num_classes: C.
        weights: ``(w_c, w_q)`` from :class:`~qshield.models.ModelConfig` ``fusion_weights``; each mode says
            how it uses them.
    """

    name: ClassVar[str]

    def __init__(self, num_classes: int, weights: tuple[float, float] = (0.5, 0.5)) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.initial_weights = normalised_weights(weights)

    @abstractmethod
    def fuse(self, log_p_c: torch.Tensor, log_p_q: torch.Tensor) -> FusionOutput:
        """Fuse ``log p_c [B, C]`` (classical) and ``log p_q [B, C]`` (quantum) log-probabilities."""

    def forward(self, log_p_c: torch.Tensor, log_p_q: torch.Tensor) -> FusionOutput:
        if log_p_c.shape != log_p_q.shape or log_p_c.ndim != 2 or log_p_c.shape[1] != self.num_classes:
            raise ValueError(
                f"fusion inputs must both be [B, {self.num_classes}], got {tuple(log_p_c.shape)} and "
                f"{tuple(log_p_q.shape)}"
            )
        return self.fuse(log_p_c, log_p_q)


def mix_log_probs(
    log_p_c: torch.Tensor, log_p_q: torch.Tensor, log_w_c: torch.Tensor, log_w_q: torch.Tensor
) -> torch.Tensor:
    """``log(w_c p_c + w_q p_q)`` computed with logsumexp (no clamping; a zero weight is ``log_w = -inf``)."""
    return torch.logaddexp(log_w_c + log_p_c, log_w_q + log_p_q)
