"""FGSM (Goodfellow, Shlens, Szegedy 2015, arXiv:1412.6572): one signed-gradient step of size ε.

Reference settings (QShield, torchattacks): only ε. Cost: 1 forward + 1 backward per example.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from ._imports import construct, import_torchattacks
from ._preset import EOT_PARAM, AttackPreset, EotMode, Norm

if TYPE_CHECKING:  # pragma: no cover
    import torchattacks

__all__ = ["FGSM_PRESET"]


def _build(model: nn.Module, eps: float | None, params: Mapping[str, Any]) -> torchattacks.Attack:
    ta = import_torchattacks()
    return construct(ta.FGSM, model, eps=eps)


FGSM_PRESET = AttackPreset(
    name="fgsm",
    title="FGSM",
    norm=Norm.LINF,
    uses_eps=True,
    white_box=True,
    params=(EOT_PARAM,),
    factory=_build,
    eot=EotMode.WRAP,
    reference="Goodfellow et al. 2015, arXiv:1412.6572",
)
