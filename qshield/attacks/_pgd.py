"""PGD-Linf (Madry et al. 2018, arXiv:1706.06083): ``steps`` signed-gradient steps of size α, projected onto
the ε-ball and [0, 1], from a uniformly random start.

Reference settings (QShield, torchattacks): α = 2/255, 10 steps, random start. With ``eot_iter`` > 1 the
attack is ``torchattacks.EOTPGD``, which sums ``eot_iter`` loss gradients per step.
Cost: ``steps * eot_iter`` forwards and backwards per example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from ._imports import construct, import_torchattacks
from ._preset import ALLOW_UNREACHABLE_PARAM, EOT_PARAM, AttackPreset, EotMode, Norm, Param, step_reach

if TYPE_CHECKING:  # pragma: no cover
    import torchattacks

__all__ = ["PGD_PRESET"]


def _build(model: nn.Module, eps: float | None, params: Mapping[str, Any]) -> torchattacks.Attack:
    ta = import_torchattacks()
    common = {"eps": eps, "alpha": params["alpha"], "steps": params["steps"], "random_start": params["random_start"]}
    if params["eot_iter"] > 1:
        return construct(ta.EOTPGD, model, eot_iter=params["eot_iter"], **common)
    return construct(ta.PGD, model, **common)


PGD_PRESET = AttackPreset(
    name="pgd",
    title="PGD",
    norm=Norm.LINF,
    uses_eps=True,
    white_box=True,
    params=(
        Param("alpha", 2 / 255, float, minimum=0.0, maximum=1.0, doc="step size (input units, [0, 1] scale)"),
        Param("steps", 10, int, minimum=1, doc="number of gradient steps"),
        Param("random_start", True, bool, doc="start from a uniform random point in the ε-ball"),
        EOT_PARAM,
        ALLOW_UNREACHABLE_PARAM,
    ),
    factory=_build,
    reach=step_reach,
    eot=EotMode.NATIVE,
    reference="Madry et al. 2018, arXiv:1706.06083",
)
