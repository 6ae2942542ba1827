"""VMI-FGSM (Wang & He 2021, arXiv:2103.15571): momentum iterative FGSM with variance tuning.

Reference settings (QShield, torchattacks): α = 2/255, 10 steps, decay 1.0, N = 5 neighbours sampled in a
ball of radius β·ε with β = 1.5. Cost: ``steps * (1 + N)`` forwards and backwards per example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from ._imports import construct, import_torchattacks
from ._preset import ALLOW_UNREACHABLE_PARAM, EOT_PARAM, AttackPreset, EotMode, Norm, Param, step_reach

if TYPE_CHECKING:  # pragma: no cover
    import torchattacks

__all__ = ["VMIFGSM_PRESET"]


def _build(model: nn.Module, eps: float | None, params: Mapping[str, Any]) -> torchattacks.Attack:
    ta = import_torchattacks()
    return construct(
        ta.VMIFGSM,
        model,
        eps=eps,
        alpha=params["alpha"],
        steps=params["steps"],
        decay=params["decay"],
        N=params["N"],
        beta=params["beta"],
    )


VMIFGSM_PRESET = AttackPreset(
    name="vmifgsm",
    title="VMI-FGSM",
    norm=Norm.LINF,
    uses_eps=True,
    white_box=True,
    params=(
        Param("alpha", 2 / 255, float, minimum=0.0, maximum=1.0, doc="step size"),
        Param("steps", 10, int, minimum=1, doc="iterations"),
        Param("decay", 1.0, float, minimum=0.0, doc="momentum decay"),
        Param("N", 5, int, minimum=1, doc="neighbours sampled for the gradient variance"),
        Param("beta", 1.5, float, minimum=0.0, doc="neighbourhood radius as a multiple of ε"),
        EOT_PARAM,
        ALLOW_UNREACHABLE_PARAM,
    ),
    factory=_build,
    reach=step_reach,
    eot=EotMode.WRAP,
    reference="Wang & He 2021, arXiv:2103.15571",
)
