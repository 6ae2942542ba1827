"""C&W-L2 (Carlini & Wagner 2017, arXiv:1608.04644): minimal-L2 attack in tanh space. Unbounded (no ε).

The QShield reference ran ART's ``CarliniL2Method`` (confidence 0, learning rate 0.05, max_iter 5,
initial_const 0.01, binary search 10 steps on MNIST / 8 otherwise). torchattacks' ``CW`` has only
``(c, kappa, steps, lr)``; the mapping used here (``docs/attacks.md``):

=====================  ==========================  =================
ART                    this preset                 value
=====================  ==========================  =================
initial_const          ``c``                       0.01
confidence             ``kappa``                   0
max_iter               ``steps``                   5
learning_rate          ``lr``                      0.05
binary_search_steps    ``binary_search_steps``     10 (mnist, mnist5k, digits, no dataset) / 8 (others)
=====================  ==========================  =================

What is not matched: ART takes a plain gradient step with a per-example line search (up to 5 halvings and 5
doublings of the learning rate per iteration, each a forward pass); here the inner optimiser is torchattacks'
Adam with a fixed learning rate and its early stop. The outer search over c is ours
(:class:`~qshield.attacks._cw_binary_search.CWL2BinarySearch`): ART's doubling until the first success, then
bisection between the largest failing and the smallest succeeding c.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from torch import nn

from ._imports import construct, import_torchattacks
from ._preset import EOT_PARAM, AttackPreset, EotMode, Norm, Param

if TYPE_CHECKING:  # pragma: no cover
    import torchattacks

__all__ = ["CW_PRESET"]


def _build(model: nn.Module, eps: float | None, params: Mapping[str, Any]) -> torchattacks.Attack:
    import_torchattacks()  # clear install message before the subclass module imports it
    from ._cw_binary_search import CWL2BinarySearch

    return construct(
        CWL2BinarySearch,
        model,
        c=params["c"],
        kappa=params["kappa"],
        steps=params["steps"],
        lr=params["lr"],
        binary_search_steps=params["binary_search_steps"],
    )


_EIGHT = MappingProxyType({"binary_search_steps": 8})

CW_PRESET = AttackPreset(
    name="cw",
    title="C&W-L2",
    norm=Norm.L2,
    uses_eps=False,
    white_box=True,
    params=(
        Param("c", 0.01, float, minimum=0.0, doc="initial constant c (ART initial_const)"),
        Param("kappa", 0.0, float, minimum=0.0, doc="confidence margin κ (ART confidence)"),
        Param("steps", 5, int, minimum=1, doc="Adam steps per binary-search round (ART max_iter)"),
        Param("lr", 0.05, float, minimum=0.0, doc="Adam learning rate (ART learning_rate)"),
        Param("binary_search_steps", 10, int, minimum=1, doc="rounds of the search over c"),
        EOT_PARAM,
    ),
    factory=_build,
    eot=EotMode.WRAP,
    dataset_defaults=MappingProxyType({"organamnist": _EIGHT, "cifar10": _EIGHT, "cinic10": _EIGHT}),
    reference="Carlini & Wagner 2017, arXiv:1608.04644",
)
