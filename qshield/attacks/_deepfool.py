"""DeepFool (Moosavi-Dezfooli et al. 2016, arXiv:1511.04599): minimal-L2 linearised steps to the nearest
decision boundary. Unbounded (no ε).

Reference settings (QShield, torchattacks): 50 steps, overshoot 0.05. torchattacks computes the full Jacobian
one class at a time, so each step costs 1 forward and C backwards (C = number of classes) per example still
correctly classified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from ._imports import construct, import_torchattacks
from ._preset import EOT_PARAM, AttackPreset, EotMode, Norm, Param

if TYPE_CHECKING:  # pragma: no cover
    import torchattacks

__all__ = ["DEEPFOOL_PRESET"]


def _build(model: nn.Module, eps: float | None, params: Mapping[str, Any]) -> torchattacks.Attack:
    ta = import_torchattacks()
    return construct(ta.DeepFool, model, steps=params["steps"], overshoot=params["overshoot"])


DEEPFOOL_PRESET = AttackPreset(
    name="deepfool",
    title="DeepFool",
    norm=Norm.L2,
    uses_eps=False,
    white_box=True,
    params=(
        Param("steps", 50, int, minimum=1, doc="maximum linearisation steps"),
        Param("overshoot", 0.05, float, minimum=0.0, doc="relative overshoot past the boundary"),
        EOT_PARAM,
    ),
    factory=_build,
    eot=EotMode.WRAP,
    reference="Moosavi-Dezfooli et al. 2016, arXiv:1511.04599",
)
