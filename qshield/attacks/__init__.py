"""Adversarial attacks with the QShield reference's hyper-parameters, on torchattacks 3.5.1.

Nine presets, looked up by name in :data:`ATTACKS`: the paper's ``fgsm``, ``pgd``, ``apgd``, ``vmifgsm`` (Linf,
white box), ``cw``, ``deepfool`` (L2, white box, unbounded), ``onepixel`` (L0, black box), ``square`` (Linf, black
box), and ``autoattack`` (the standard AutoAttack ensemble, Linf). :func:`build_attack` returns a ready
``torchattacks.Attack``; ε comes from the call, an :class:`AttackConfig`, or the dataset (:data:`DEFAULT_EPS`),
and is never guessed. :class:`QueryCounter` counts what an attack asks of the model; :class:`EOTWrapper`
averages a stochastic model over passes. Models that declare hidden parts (:class:`HiddenParts`) are attacked
adaptively (BPDA, EOT, transfer; :func:`resolve_adaptive`). See ``docs/attacks.md``.
"""

from __future__ import annotations

from ._adaptive import (
    AUTO_EOT_ITER,
    NOTHING_HIDDEN,
    Adaptive,
    AdaptiveMode,
    BPDAWrapper,
    DeclaredModel,
    GradientSource,
    HiddenParts,
    classical_twin_of,
    declare_hidden,
    hidden_parts,
    resolve_adaptive,
    surrogate_of,
)
from ._build import build_attack, make_attack
from ._config import AttackConfig
from ._cost import AdversaryCost, QueryCounter
from ._eot import EOTWrapper
from ._imports import import_torchattacks, model_device
from ._preset import ALLOW_UNREACHABLE_PARAM, EOT_PARAM, AttackPreset, EotMode, Norm, Param
from ._registry import (
    ATTACKS,
    DEFAULT_EPS,
    PAPER_ATTACKS,
    available_attacks,
    check_dataset,
    check_eps,
    get_preset,
    resolve_eps,
)

__all__ = [
    "ALLOW_UNREACHABLE_PARAM",
    "AUTO_EOT_ITER",
    "NOTHING_HIDDEN",
    "PAPER_ATTACKS",
    "Adaptive",
    "AdaptiveMode",
    "BPDAWrapper",
    "DeclaredModel",
    "GradientSource",
    "HiddenParts",
    "classical_twin_of",
    "declare_hidden",
    "hidden_parts",
    "resolve_adaptive",
    "surrogate_of",
    "ATTACKS",
    "DEFAULT_EPS",
    "EOT_PARAM",
    "AdversaryCost",
    "AttackConfig",
    "AttackPreset",
    "EOTWrapper",
    "EotMode",
    "Norm",
    "Param",
    "QueryCounter",
    "available_attacks",
    "build_attack",
    "check_dataset",
    "check_eps",
    "get_preset",
    "import_torchattacks",
    "model_device",
    "make_attack",
    "resolve_eps",
]
