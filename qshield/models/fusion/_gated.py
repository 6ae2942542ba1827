"""``gated`` fusion: the QShield reference's input-dependent gate with amplitude-level combination.

A gate MLP reads 7 statistics of the two branch outputs (std, max and kurtosis of each, and their
cross-correlation) and gives ``alpha(x)`` in (0, 1); the distributions are combined at amplitude level
``amp = alpha sqrt(p_c) + sqrt(1 - alpha^2) sqrt(p_q)``, ``p = amp^2 / sum(amp^2)`` (QShield, arXiv 2604.10933,
released code). Everything is differentiable, including the statistics, so a white-box attacker sees the gate.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from ._base import Fusion, FusionOutput

#: ``alpha = ALPHA_MARGIN + (1 - 2 ALPHA_MARGIN) sigmoid(z)``: strictly inside (0, 1) even where the float
#: sigmoid saturates, so ``log(alpha)`` and ``log(sqrt(1 - alpha^2))`` stay finite.
ALPHA_MARGIN = 1e-4
#: Added to variances in the kurtosis and correlation denominators (a uniform branch has variance 0).
STAT_EPS = 1e-12
STATISTICS = ("std_c", "max_c", "kurtosis_c", "std_q", "max_q", "kurtosis_q", "correlation")


def _moments(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    centred = p - p.mean(dim=1, keepdim=True)
    return centred, (centred**2).mean(dim=1)


def branch_statistics(p_c: torch.Tensor, p_q: torch.Tensor) -> torch.Tensor:
    """The gate's 7 inputs ``[B, 7]`` in the order of :data:`STATISTICS`, computed over the C classes per sample.

    std: population standard deviation; max: largest probability; kurtosis: excess (Fisher) kurtosis
    ``m4 / (m2^2 + eps) - 3``; correlation: Pearson ``cov / sqrt(var_c var_q + eps)``.
    """
    cen_c, var_c = _moments(p_c)
    cen_q, var_q = _moments(p_q)
    kurt_c = (cen_c**4).mean(dim=1) / (var_c**2 + STAT_EPS) - 3.0
    kurt_q = (cen_q**4).mean(dim=1) / (var_q**2 + STAT_EPS) - 3.0
    corr = (cen_c * cen_q).mean(dim=1) / torch.sqrt(var_c * var_q + STAT_EPS)
    std_c = torch.sqrt(var_c + STAT_EPS)
    std_q = torch.sqrt(var_q + STAT_EPS)
    return torch.stack(
        [std_c, p_c.amax(dim=1), kurt_c, std_q, p_q.amax(dim=1), kurt_q, corr], dim=1
    )


class GatedFusion(Fusion):
    """Input-dependent amplitude-level fusion (see the module docstring).

    Gate: Linear(7 -> hidden) -> ReLU -> Linear(hidden -> 1) -> ``alpha = m + (1 - 2m) sigmoid``, m = 1e-4.
    The last bias starts where ``alpha`` equals ``alpha_0 = w_c / sqrt(w_c^2 + w_q^2)`` (clipped to
    [0.01, 0.99]), the amplitude weight that the configured ``fusion_weights`` stand for.
    Computed in log space: ``log amp = logaddexp(log alpha + log p_c / 2, log beta + log p_q / 2)``,
    ``beta = sqrt(1 - alpha^2)``, ``log p = 2 log amp - logsumexp(2 log amp)``.

    Args:
        num_classes: C.
        weights: ``(w_c, w_q)``, sets the initial gate bias.
        hidden: width of the gate MLP (default 16).
    """

    name: ClassVar[str] = "gated"

    def __init__(self, num_classes: int, weights: tuple[float, float] = (0.5, 0.5), hidden: int = 16) -> None:
        super().__init__(num_classes, weights)
        self.gate = nn.Sequential(nn.Linear(len(STATISTICS), hidden), nn.ReLU(), nn.Linear(hidden, 1))
        w_c, w_q = self.initial_weights
        alpha0 = min(max(w_c / math.hypot(w_c, w_q), 0.01), 0.99)
        s = (alpha0 - ALPHA_MARGIN) / (1 - 2 * ALPHA_MARGIN)
        with torch.no_grad():
            self.gate[-1].bias.fill_(math.log(s / (1 - s)))

    def alpha(self, p_c: torch.Tensor, p_q: torch.Tensor) -> torch.Tensor:
        """The gate ``alpha(x) [B]`` in ``[1e-4, 1 - 1e-4]`` from the branch probabilities ``[B, C]``."""
        z = self.gate(branch_statistics(p_c, p_q)).squeeze(1)
        return ALPHA_MARGIN + (1 - 2 * ALPHA_MARGIN) * torch.sigmoid(z)

    def fuse(self, log_p_c: torch.Tensor, log_p_q: torch.Tensor) -> FusionOutput:
        alpha = self.alpha(log_p_c.exp(), log_p_q.exp())
        log_alpha = torch.log(alpha)[:, None]
        log_beta = 0.5 * torch.log1p(-(alpha**2))[:, None]
        log_amp = torch.logaddexp(log_alpha + 0.5 * log_p_c, log_beta + 0.5 * log_p_q)
        log_p = 2 * log_amp - torch.logsumexp(2 * log_amp, dim=1, keepdim=True)
        return FusionOutput(log_p, alpha)
