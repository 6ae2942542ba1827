"""The smallest L∞ ε that flips each image, by bisection: an adversary cost that measures the model.

Counting an attack's queries measures the attack's configuration (PGD with 10 steps costs 10 gradients whatever
the model); the perturbation size a model forces the attacker to use does not. For each correctly classified
image, :func:`minimal_eps` finds the smallest ε at which PGD (``steps`` steps of size ``step_ratio * ε / steps``
from a random start, so every ε is reachable) fools the model, by bisection on ``[0, eps_max]``:

1. PGD at ``eps_max``; images it does not fool are *censored* (they count as ``eps_max``: a lower bound);
2. ``rounds`` times: every remaining image is attacked at the midpoint of its bracket ``[lo, hi]``; success moves
   ``hi`` down, failure moves ``lo`` up. Images sharing a midpoint are attacked together (one batch per
   distinct ε). The result is ``hi``, within ``eps_max / 2**rounds`` of the boundary PGD finds.

This is the minimal-perturbation view of robustness (e.g. DeepFool, Moosavi-Dezfooli et al. 2016; FAB, Croce &
Hein 2020) computed with the same attack machinery as the rest of the evaluation, so a model that declares
hidden parts gets the same adaptive treatment. Bisection assumes success is monotone in ε, which holds for PGD
up to its randomness; the resolution is reported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from pydantic import Field, model_validator
from tqdm.auto import tqdm

from qshield.attacks import Adaptive, AttackConfig
from qshield.schema import Config, integer, number

from ._core import check_batch_size, run_attack
from ._results import MinimalEps

__all__ = ["MinEpsConfig", "minimal_eps"]


class MinEpsConfig(Config):
    """Settings of :func:`minimal_eps`.

    Attributes:
        eps_max: largest ε tried, in (0, 1] (default 1.0: the whole [0, 1] image range, so almost nothing is
            censored on an undefended model).
        rounds: bisection rounds (resolution ``eps_max / 2**rounds``; default 8 → 1/256 of ``eps_max``).
        steps: PGD steps at every ε (default 20).
        step_ratio: PGD step size as ``step_ratio * eps / steps`` (default 2.5, Madry et al.).
        params: further PGD parameters (e.g. ``{"eot_iter": 8}`` for a randomised model).
    """

    eps_max: number(0.0, 1.0, lo_open=True) = 1.0
    rounds: integer(1) = 8
    steps: integer(1) = 20
    #: >= 1 so that ``step_ratio * eps / steps * steps`` reaches ε
    step_ratio: number(1.0) = 2.5
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _attack_accepts(self) -> MinEpsConfig:
        # validated by the attack preset now, so a bad key fails before any compute
        self.attack(self.eps_max)
        return self

    def attack(self, eps: float) -> AttackConfig:
        """The PGD configuration used at ``eps``."""
        alpha = min(1.0, self.step_ratio * eps / self.steps)
        params = {"alpha": alpha, "steps": self.steps, "random_start": True, **self.params}
        return AttackConfig("pgd", eps, params).resolve()


def minimal_eps(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    clean_pred: torch.Tensor,
    config: MinEpsConfig | None = None,
    *,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
    adaptive: Adaptive | str = Adaptive.AUTO,
) -> MinimalEps:
    """Smallest flipping ε of every correctly classified image (module docstring).

    The model must already be in the mode it is evaluated in (eval). ``clean_pred`` are its clean predictions
    ``[N]``; only images with ``clean_pred == labels`` are measured, in index order. ``adaptive`` is the attack
    mode of every PGD run (:func:`~qshield.attacks.resolve_adaptive`; ``auto``: BPDA / EOT for a model that
    declares hidden parts).

    Returns:
        :class:`~qshield.evaluation.MinimalEps` whose ``values`` follow the order of the attacked images.
    """
    config = config or MinEpsConfig()
    if not isinstance(config, MinEpsConfig):
        raise ValueError(f"config must be a MinEpsConfig, got {type(config).__name__}")
    batch_size = check_batch_size(batch_size)
    attacked = (clean_pred == labels).nonzero().flatten()
    x, y = images[attacked], labels[attacked]
    n = len(y)
    lo = torch.zeros(n, dtype=torch.float64)
    hi = torch.full((n,), float(config.eps_max), dtype=torch.float64)
    if n == 0:
        return MinimalEps("pgd", config.eps_max, config.rounds, (), 0)

    def fools(idx: torch.Tensor, eps: float, round_seed: int) -> torch.Tensor:
        sub_y = y[idx]
        _, adv_pred = run_attack(model, x[idx], sub_y, sub_y.clone(), config.attack(eps), batch_size=batch_size,
                                 seed=round_seed, adaptive=adaptive)
        return adv_pred != sub_y

    with tqdm(total=n * (config.rounds + 1), desc="minimal eps", disable=not progress, leave=False) as bar:
        everything = torch.arange(n)
        flipped = fools(everything, config.eps_max, seed)
        bar.update(n)
        active = flipped.clone()
        for r in range(config.rounds):
            mid = (lo + hi) / 2
            for value in torch.unique(mid[active]).tolist():
                idx = (active & (mid == value)).nonzero().flatten()
                success = fools(idx, float(value), seed + r + 1)
                hi[idx[success]] = value
                lo[idx[~success]] = value
            bar.update(n)
    values = tuple(float(v) for v in hi)
    return MinimalEps("pgd", float(config.eps_max), config.rounds, values, int((~flipped).sum()))
