"""Result containers: one attack's numbers, an ASR-vs-ε curve, and a model's full evaluation report."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from qshield.attacks import AttackConfig

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ._masking import MaskingDiagnostics

__all__ = ["AsrCurve", "AttackResult", "EvaluationReport"]


@dataclass(frozen=True)
class AttackResult:
    """One attack on one model.

    Attributes:
        attack: attack name (``pgd``, ``square``, ...).
        eps: the Linf budget used ([0, 1] pixel scale), None for attacks without one (``cw``, ``deepfool``,
            ``onepixel``).
        odr: clean accuracy over all ``n_total`` images.
        asr: misclassified adversarials / ``n_attacked`` (NaN when ``n_attacked`` is 0).
        robust_accuracy: images correct clean and after the attack / ``n_total``.
        n_total: test images.
        n_attacked: images attacked (the correctly classified ones).
        seconds_per_example: wall-clock attack-generation seconds / ``n_attacked``.
        forward_per_example: model forward passes (per example) / ``n_attacked``, counted.
        backward_per_example: backward passes through the model output (per example) / ``n_attacked``, counted.
        n_fooled: attacked images misclassified after the attack.
        config: the resolved configuration (every parameter filled in).
    """

    attack: str
    eps: float | None
    odr: float
    asr: float
    robust_accuracy: float
    n_total: int
    n_attacked: int
    seconds_per_example: float
    forward_per_example: float
    backward_per_example: float
    n_fooled: int = 0
    config: AttackConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        """Flat dict (config as its ``to_dict``)."""
        out = asdict(self)
        out["config"] = self.config.to_dict() if self.config is not None else None
        return out


class AsrCurve(NamedTuple):
    """ASR of one attack as a function of ε (the data behind an ASR-vs-ε plot).

    Attributes:
        label: legend text (usually the model name).
        attack: attack name.
        eps: the budgets, increasing ([0, 1] pixel scale).
        asr: ASR at each budget (fractions in [0, 1]).
        n_attacked: images attacked at each budget (the correctly classified ones).
    """

    label: str
    attack: str
    eps: tuple[float, ...]
    asr: tuple[float, ...]
    n_attacked: int


@dataclass(frozen=True)
class EvaluationReport:
    """A model's clean accuracy, one :class:`AttackResult` per attack, and its gradient-masking diagnostics.

    Attributes:
        model: name shown in tables.
        dataset: dataset name (or None).
        odr: clean accuracy over ``n_total`` images.
        n_total: test images.
        results: per-attack results, in the order requested.
        diagnostics: the masking diagnostics, or None when they were not run.
    """

    model: str
    dataset: str | None
    odr: float
    n_total: int
    results: tuple[AttackResult, ...]
    diagnostics: MaskingDiagnostics | None = None

    @property
    def trustworthy(self) -> bool:
        """True only when the diagnostics ran and every check passed."""
        return self.diagnostics is not None and self.diagnostics.passed

    @property
    def flag(self) -> str:
        """``"ok"``, ``"unchecked"`` (diagnostics not run) or ``"MASKING: <failed checks>"``."""
        if self.diagnostics is None:
            return "unchecked"
        if self.diagnostics.passed:
            return "ok"
        return "MASKING: " + ", ".join(self.diagnostics.failed)

    def result(self, attack: str) -> AttackResult:
        """The result of ``attack`` (the first one of that name); ``KeyError`` listing the attacks run."""
        for r in self.results:
            if r.attack == attack:
                return r
        raise KeyError(f"attack {attack!r} was not run; attacks in this report: {[r.attack for r in self.results]}")

    def to_frame(self) -> pd.DataFrame:
        """The results table of this report (see :func:`qshield.evaluation.results_table`)."""
        from ._report import results_table

        return results_table([self])

    def to_markdown(self) -> str:
        """The Markdown results table, with numbers of an untrustworthy model flagged."""
        from ._report import render_markdown

        return render_markdown([self])
