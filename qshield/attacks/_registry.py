"""Attack presets looked up by name, and the per-dataset ε table."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from qshield.schema import Eps, validate_value

from ._apgd import APGD_PRESET
from ._autoattack import AUTOATTACK_PRESET
from ._cw import CW_PRESET
from ._deepfool import DEEPFOOL_PRESET
from ._fgsm import FGSM_PRESET
from ._onepixel import ONEPIXEL_PRESET
from ._pgd import PGD_PRESET
from ._preset import AttackPreset
from ._square import SQUARE_PRESET
from ._vmifgsm import VMIFGSM_PRESET

__all__ = [
    "ATTACKS",
    "DEFAULT_EPS",
    "PAPER_ATTACKS",
    "available_attacks",
    "check_dataset",
    "check_eps",
    "get_preset",
    "resolve_eps",
]

#: name -> preset: the QShield paper's eight in the order of its tables, then AutoAttack (standard version).
ATTACKS: Mapping[str, AttackPreset] = MappingProxyType(
    {
        p.name: p
        for p in (
            FGSM_PRESET,
            PGD_PRESET,
            APGD_PRESET,
            VMIFGSM_PRESET,
            CW_PRESET,
            DEEPFOOL_PRESET,
            ONEPIXEL_PRESET,
            SQUARE_PRESET,
            AUTOATTACK_PRESET,
        )
    }
)

#: The QShield paper's eight attacks, in the order of its tables: the default suite everywhere (AutoAttack is
#: opt-in, it costs far more).
PAPER_ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "apgd", "vmifgsm", "cw", "deepfool", "onepixel", "square")

#: Linf budget per dataset on the [0, 1] pixel scale (QShield reference docs: MNIST 32/255,
#: OrganAMNIST 8/255, CIFAR-10 2/255; MNIST-like sets take MNIST's value, CINIC-10 CIFAR-10's).
DEFAULT_EPS: Mapping[str, float] = MappingProxyType(
    {
        "mnist": 32 / 255,
        "mnist5k": 32 / 255,
        "digits": 32 / 255,
        "organamnist": 8 / 255,
        "cifar10": 2 / 255,
        "cinic10": 2 / 255,
    }
)


def available_attacks() -> tuple[str, ...]:
    """The registered attack names."""
    return tuple(ATTACKS)


def get_preset(name: str) -> AttackPreset:
    """The preset registered as ``name`` (case-insensitive); ``ValueError`` listing the names on a miss."""
    key = str(name).strip().lower() if isinstance(name, str) else None
    if key not in ATTACKS:
        raise ValueError(f"attack={name!r} does not exist; allowed values: {', '.join(map(repr, ATTACKS))}")
    return ATTACKS[key]


def check_eps(eps: object) -> float | None:
    """``None`` or a finite number in [0, 1] (the [0, 1] pixel scale) — the one ε rule, :data:`qshield.schema.Eps`
    (which also reads fractions written as strings, ``"8/255"``); ``ValueError`` naming ``eps`` otherwise."""
    if eps is None:
        return None
    return float(validate_value(Eps, eps, "eps"))


def check_dataset(dataset: object) -> str | None:
    """``None`` or a dataset name of :data:`DEFAULT_EPS` (case-insensitive); ``ValueError`` listing them."""
    if dataset is None:
        return None
    key = str(dataset).strip().lower() if isinstance(dataset, str) else None
    if key not in DEFAULT_EPS:
        raise ValueError(
            f"dataset={dataset!r} has no default ε; allowed values: {', '.join(map(repr, DEFAULT_EPS))} "
            "(or pass eps= explicitly)"
        )
    return key


def resolve_eps(preset: AttackPreset, eps: float | None, dataset: str | None) -> float | None:
    """The ε the attack runs with: explicit ``eps``, else the dataset's default; None for attacks without ε.

    Like RobustBench, never guesses: an ε attack with neither ``eps`` nor a known ``dataset`` is a
    ``ValueError``.
    """
    eps = check_eps(eps)
    dataset = check_dataset(dataset)
    if not preset.uses_eps:
        return None
    if eps is not None:
        return eps
    if dataset is not None:
        return DEFAULT_EPS[dataset]
    raise ValueError(
        f"attack={preset.name!r} needs eps: got eps=None and dataset=None; pass eps= (a number in [0, 1]) or "
        f"dataset= (one of {', '.join(map(repr, DEFAULT_EPS))}); qshield does not guess the threat model"
    )
