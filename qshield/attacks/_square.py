"""Square attack (Andriushchenko et al. 2020, arXiv:1912.00049): query-efficient random search over square
patches; black-box (reads outputs only), Linf.

Reference settings (QShield, torchattacks): Linf, 500 queries, p_init 0.8, margin loss, 1 restart, seed 0.
torchattacks re-seeds torch's global RNG with ``seed``; :func:`qshield.evaluation.evaluate_attack` runs it in a
forked RNG state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from ._imports import construct, import_torchattacks
from ._preset import EOT_PARAM, AttackPreset, EotMode, Norm, Param

if TYPE_CHECKING:  # pragma: no cover
    import torchattacks

__all__ = ["SQUARE_PRESET"]


def _build(model: nn.Module, eps: float | None, params: Mapping[str, Any]) -> torchattacks.Attack:
    ta = import_torchattacks()
    return construct(
        ta.Square,
        model,
        norm="Linf",
        eps=eps,
        n_queries=params["n_queries"],
        n_restarts=params["n_restarts"],
        p_init=params["p_init"],
        loss=params["loss"],
        resc_schedule=True,
        seed=params["seed"],
        verbose=False,
    )


SQUARE_PRESET = AttackPreset(
    name="square",
    title="Square",
    norm=Norm.LINF,
    uses_eps=True,
    white_box=False,
    params=(
        Param("n_queries", 500, int, minimum=1, doc="query budget per restart"),
        Param("p_init", 0.8, float, minimum=0.0, maximum=1.0, doc="initial fraction of pixels in a square"),
        Param("loss", "margin", str, choices=("margin", "ce"), doc="loss minimised"),
        Param("n_restarts", 1, int, minimum=1, doc="random restarts"),
        Param("seed", 0, int, minimum=0, doc="seed of the random search"),
        EOT_PARAM,
    ),
    factory=_build,
    eot=EotMode.WRAP,
    reference="Andriushchenko et al. 2020, arXiv:1912.00049",
)
