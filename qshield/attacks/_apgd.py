"""APGD (Croce & Hein 2020, arXiv:2003.01690): step-size-free PGD with momentum and restarts, Linf.

Reference settings (QShield, torchattacks): Linf, CE loss, 10 steps, 1 restart, ρ = 0.75, EOT 1, seed 0.
torchattacks' APGD averages ``eot_iter`` gradients natively. Note: it re-seeds torch's global RNG with
``seed`` on every call; :func:`qshield.evaluation.evaluate_attack` runs attacks inside a forked RNG state so
the caller's stream is left untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from ._imports import construct, import_torchattacks
from ._preset import EOT_PARAM, AttackPreset, EotMode, Norm, Param

if TYPE_CHECKING:  # pragma: no cover
    import torchattacks

__all__ = ["APGD_PRESET"]


def _build(model: nn.Module, eps: float | None, params: Mapping[str, Any]) -> torchattacks.Attack:
    ta = import_torchattacks()
    return construct(
        ta.APGD,
        model,
        norm="Linf",
        eps=eps,
        steps=params["steps"],
        n_restarts=params["n_restarts"],
        seed=params["seed"],
        loss=params["loss"],
        eot_iter=params["eot_iter"],
        rho=params["rho"],
        verbose=False,
    )


APGD_PRESET = AttackPreset(
    name="apgd",
    title="APGD",
    norm=Norm.LINF,
    uses_eps=True,
    white_box=True,
    params=(
        Param("steps", 10, int, minimum=1, doc="iterations per restart"),
        Param("n_restarts", 1, int, minimum=1, doc="random restarts"),
        Param("rho", 0.75, float, minimum=0.0, maximum=1.0, doc="step-size decrease threshold ρ"),
        Param("loss", "ce", str, choices=("ce", "dlr"), doc="loss maximised"),
        Param("seed", 0, int, minimum=0, doc="seed of the random starting point"),
        EOT_PARAM,
    ),
    factory=_build,
    eot=EotMode.NATIVE,
    reference="Croce & Hein 2020, arXiv:2003.01690",
)
