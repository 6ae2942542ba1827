"""AutoAttack, standard version (Croce & Hein 2020, arXiv:2003.01690): the parameter-free ensemble APGD-CE,
APGD-T, FAB-T and Square, Linf; an image counts as fooled when any of the four fools it.

Built from torchattacks' own classes (``APGD``, ``APGDT``, ``FAB``, ``Square`` run in sequence by
``MultiAttack``, each on the images the previous ones left robust) with the standard version's parameters, as
``fra31/auto-attack`` sets them (``version='standard'``): APGD-CE 100 iterations, 1 restart, ρ = 0.75; APGD-T 100
iterations, 1 restart, 9 target classes; FAB-T 100 iterations, 1 restart, 9 target classes; Square 5,000 queries,
p_init 0.8, 1 restart, no rescaled schedule. ``torchattacks.AutoAttack`` itself is not used: it leaves its
components at torchattacks' 10-iteration defaults and seeds from the clock when ``seed`` is None, so its numbers
are neither the standard version's nor reproducible.

Cost: by far the most expensive preset. Per still-robust image up to ``steps + 1`` gradients for APGD-CE,
``n_target_classes * (steps + 1)`` for APGD-T, ``n_target_classes * steps`` (each a full Jacobian, C backward
passes) for FAB-T and ``n_queries`` forwards for Square. Images fooled early drop out, so an undefended model
costs about one APGD run; a robust one pays everything. Use it on a few hundred images at most, and on tiny sets
(with ``steps`` / ``n_queries`` lowered) in tests and demos.

The number of classes is read from the model's output on the first batch (one forward pass, counted); the
targeted attacks use ``min(n_target_classes, classes - 1)`` targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from ._imports import construct, import_torchattacks
from ._preset import EOT_PARAM, AttackPreset, EotMode, Norm, Param

if TYPE_CHECKING:  # pragma: no cover
    import torchattacks

__all__ = ["AUTOATTACK_PRESET"]


def _build(model: nn.Module, eps: float | None, params: Mapping[str, Any]) -> torchattacks.Attack:
    import_torchattacks()  # clear install message before the subclass module imports it
    from ._autoattack_ensemble import AutoAttackStandard

    return construct(
        AutoAttackStandard,
        model,
        eps=eps,
        steps=params["steps"],
        n_target_classes=params["n_target_classes"],
        n_queries=params["n_queries"],
        seed=params["seed"],
    )


AUTOATTACK_PRESET = AttackPreset(
    name="autoattack",
    title="AutoAttack",
    norm=Norm.LINF,
    uses_eps=True,
    white_box=True,
    params=(
        Param("steps", 100, int, minimum=1, doc="iterations of APGD-CE, APGD-T (per target) and FAB-T (per target)"),
        Param("n_target_classes", 9, int, minimum=1, doc="target classes of APGD-T and FAB-T"),
        Param("n_queries", 5000, int, minimum=1, doc="query budget of Square"),
        Param("seed", 0, int, minimum=0, doc="seed of every component's random start"),
        EOT_PARAM,
    ),
    factory=_build,
    eot=EotMode.WRAP,
    reference="Croce & Hein 2020, arXiv:2003.01690 (standard version)",
)
