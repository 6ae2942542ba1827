"""One-pixel attack (Su, Vargas, Sakurai 2019, arXiv:1710.08864): differential evolution over the position and
value of ``pixels`` pixels; black-box (reads softmax scores only). Unbounded in value (L0 threat model, no ε).

Reference settings (QShield, torchattacks): 1 pixel, 10 steps (generations), population 10. torchattacks
draws from numpy's global RNG; :func:`qshield.evaluation.evaluate_attack` seeds and restores it around the
call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from ._imports import construct, import_torchattacks
from ._preset import EOT_PARAM, AttackPreset, EotMode, Norm, Param

if TYPE_CHECKING:  # pragma: no cover
    import torchattacks

__all__ = ["ONEPIXEL_PRESET"]


def _build(model: nn.Module, eps: float | None, params: Mapping[str, Any]) -> torchattacks.Attack:
    ta = import_torchattacks()
    return construct(
        ta.OnePixel,
        model,
        pixels=params["pixels"],
        steps=params["steps"],
        popsize=params["popsize"],
        inf_batch=params["inf_batch"],
    )


ONEPIXEL_PRESET = AttackPreset(
    name="onepixel",
    title="OnePixel",
    norm=Norm.L0,
    uses_eps=False,
    white_box=False,
    params=(
        Param("pixels", 1, int, minimum=1, doc="pixels changed"),
        Param("steps", 10, int, minimum=1, doc="differential-evolution generations"),
        Param("popsize", 10, int, minimum=1, doc="population size (multiplier of the search dimension)"),
        Param("inf_batch", 128, int, minimum=1, doc="candidates scored per forward pass (speed only)"),
        EOT_PARAM,
    ),
    factory=_build,
    eot=EotMode.WRAP,
    reference="Su et al. 2019, arXiv:1710.08864",
)
