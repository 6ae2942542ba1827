"""Fusion modes of the hybrid model, looked up by name: ``fixed``, ``learned``, ``gated``.

Each takes the classical and quantum class log-probabilities ``[B, C]`` and returns the fused
log-probabilities (formulas in ``docs/models.md``).
"""

from __future__ import annotations

from ._base import Fusion, FusionOutput, normalised_weights
from ._fixed import FixedFusion
from ._gated import STATISTICS, GatedFusion, branch_statistics
from ._learned import LearnedFusion

__all__ = [
    "Fusion",
    "FusionOutput",
    "FixedFusion",
    "LearnedFusion",
    "GatedFusion",
    "FUSIONS",
    "get_fusion",
    "branch_statistics",
    "normalised_weights",
    "STATISTICS",
]

#: name -> fusion class
FUSIONS: dict[str, type[Fusion]] = {cls.name: cls for cls in (FixedFusion, LearnedFusion, GatedFusion)}


def get_fusion(name: str) -> type[Fusion]:
    """The fusion class registered under ``name``; ``ValueError`` listing the registered names otherwise."""
    key = str(getattr(name, "value", name)).lower()
    if key not in FUSIONS:
        raise ValueError(f"fusion={name!r} does not exist; allowed values: {', '.join(map(repr, FUSIONS))}")
    return FUSIONS[key]
