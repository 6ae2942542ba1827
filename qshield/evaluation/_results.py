"""Result containers: one attack's numbers, the per-example worst case over a suite, the smallest ε that flips
each image, an ASR-vs-ε curve, and a model's full evaluation report. Every rate carries its 95% Wilson interval
(computed from the stored counts, so it can never disagree with them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from qshield.attacks import ATTACKS, NOTHING_HIDDEN, AttackConfig, HiddenParts

from ._metrics import wilson_interval

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ._masking import MaskingDiagnostics

__all__ = ["CHANCE_MARGIN", "AsrCurve", "AttackResult", "EvaluationReport", "MinimalEps", "WorstCase"]

#: A model whose clean accuracy's 95% interval reaches within this many points of chance (1 / classes) is
#: "near chance": its robustness numbers mean nothing (an attack cannot fool what never worked), so it is never
#: trustworthy and is flagged in every report.
CHANCE_MARGIN = 0.05

Interval = tuple[float, float]


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
        reaches_eps: False when the attack's step size × steps cannot reach its ε (only when the run opted in
            with ``allow_unreachable``; such a row understates what the threat model allows and is labelled).
        adaptive: how the attack was run (:attr:`qshield.attacks.AdaptiveMode.label`): ``none`` (the model's own
            gradient, no EOT), ``eot(k)``, ``bpda``, ``bpda+eot(k)``, ``transfer``, ``transfer+eot(k)``.

    Intervals (95% Wilson, from the counts): :attr:`odr_ci`, :attr:`asr_ci`, :attr:`robust_accuracy_ci`.
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
    reaches_eps: bool = True
    adaptive: str = "none"

    @property
    def eot_iter(self) -> int:
        """EOT passes the attack averaged (1 = none), from its config."""
        if self.config is None:
            return 1
        return int(self.config.params.get("eot_iter", 1))

    @property
    def gradient_source(self) -> str:
        """``direct``, ``bpda`` or ``transfer``: where a white-box attack read its gradient (from :attr:`adaptive`)."""
        head = self.adaptive.split("+")[0]
        return head if head in ("bpda", "transfer") else "direct"

    @property
    def odr_ci(self) -> Interval:
        """95% Wilson interval of :attr:`odr` (the attacked images are the correctly classified ones)."""
        return wilson_interval(self.n_attacked, self.n_total)

    @property
    def asr_ci(self) -> Interval:
        """95% Wilson interval of :attr:`asr` (``n_fooled`` of ``n_attacked``)."""
        return wilson_interval(self.n_fooled, self.n_attacked)

    @property
    def robust_accuracy_ci(self) -> Interval:
        """95% Wilson interval of :attr:`robust_accuracy` (``n_attacked - n_fooled`` of ``n_total``)."""
        return wilson_interval(self.n_attacked - self.n_fooled, self.n_total)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict (config as its ``to_dict``; intervals as ``<rate>_ci_low`` / ``<rate>_ci_high``)."""
        out = asdict(self)
        out["config"] = self.config.to_dict() if self.config is not None else None
        for rate in ("odr", "asr", "robust_accuracy"):
            out[f"{rate}_ci_low"], out[f"{rate}_ci_high"] = getattr(self, f"{rate}_ci")
        return out


@dataclass(frozen=True)
class WorstCase:
    """Per-example worst case over an attack suite, the field's definition of robust accuracy (RobustBench,
    AutoAttack: Croce & Hein 2020, arXiv:2003.01690): an image counts as robust only if the model classifies it
    correctly clean **and** after every attack of the suite.

    Attributes:
        attacks: the suite, in the order run (names; ``name#i`` when a name repeats).
        n_total: test images.
        n_attacked: images classified correctly clean (the ones attacked).
        n_robust: attacked images that no attack of the suite fooled.
        fooled_by: per attack, the attacked images it fooled (its own ``n_fooled``).
        only_fooled_by: per attack, the images that attack alone fooled (what the suite would lose without it).
        strongest_attack: the attack that fooled the most images (ties: the first in suite order); the attack
            that "produced" the worst-case figure. None when nothing was attacked.

    ``robust_accuracy = n_robust / n_total``; ``asr = (n_attacked - n_robust) / n_attacked`` (images fooled by at
    least one attack); both with 95% Wilson intervals.
    """

    attacks: tuple[str, ...]
    n_total: int
    n_attacked: int
    n_robust: int
    fooled_by: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    only_fooled_by: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    strongest_attack: str | None = None

    @property
    def robust_accuracy(self) -> float:
        """Images robust to the whole suite / all images (NaN for no images)."""
        return self.n_robust / self.n_total if self.n_total else math.nan

    @property
    def robust_accuracy_ci(self) -> Interval:
        return wilson_interval(self.n_robust, self.n_total)

    @property
    def asr(self) -> float:
        """Attacked images fooled by at least one attack / attacked images (NaN when nothing was attacked)."""
        return (self.n_attacked - self.n_robust) / self.n_attacked if self.n_attacked else math.nan

    @property
    def asr_ci(self) -> Interval:
        return wilson_interval(self.n_attacked - self.n_robust, self.n_attacked)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the rates and their intervals."""
        return {
            "attacks": list(self.attacks),
            "n_total": self.n_total,
            "n_attacked": self.n_attacked,
            "n_robust": self.n_robust,
            "robust_accuracy": self.robust_accuracy,
            "robust_accuracy_ci_low": self.robust_accuracy_ci[0],
            "robust_accuracy_ci_high": self.robust_accuracy_ci[1],
            "asr": self.asr,
            "asr_ci_low": self.asr_ci[0],
            "asr_ci_high": self.asr_ci[1],
            "fooled_by": dict(self.fooled_by),
            "only_fooled_by": dict(self.only_fooled_by),
            "strongest_attack": self.strongest_attack,
        }


@dataclass(frozen=True)
class MinimalEps:
    """The smallest L∞ ε at which a gradient attack flips each attacked image, found by bisection
    (see :func:`qshield.evaluation.minimal_eps`): an adversary cost that measures the model, not the attack's
    configuration. Images not flipped even at ``eps_max`` are *censored*: they count as ``eps_max``.

    Attributes:
        attack: the attack used at every ε (``pgd``, with step size scaled to each ε).
        eps_max: the largest ε tried ([0, 1] pixel scale).
        rounds: bisection rounds (resolution ``eps_max / 2**rounds``).
        values: per attacked image, the smallest ε found (``eps_max`` when censored), in the order of the
            attacked images.
        n_censored: images not flipped at ``eps_max``.
    """

    attack: str
    eps_max: float
    rounds: int
    values: tuple[float, ...]
    n_censored: int

    @property
    def resolution(self) -> float:
        """Width of the final bisection bracket."""
        return self.eps_max / 2**self.rounds

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (``q`` in [0, 1]) of :attr:`values`, censored images at ``eps_max``; NaN when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q={q!r} is invalid; allowed values: a number in [0, 1]")
        return float(np.quantile(np.asarray(self.values, dtype=float), q)) if self.values else math.nan

    @property
    def median(self) -> float:
        """Median smallest ε over the attacked images (censored ones at ``eps_max``); NaN when empty."""
        return self.quantile(0.5)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "eps_max": self.eps_max,
            "rounds": self.rounds,
            "resolution": self.resolution,
            "n": len(self.values),
            "n_censored": self.n_censored,
            "median": self.median,
            "q25": self.quantile(0.25),
            "q75": self.quantile(0.75),
        }


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
        num_classes: classes the model outputs (sets the chance level), None when unknown.
        worst_case: the per-example worst case over ``results`` (:class:`WorstCase`), None without attacks.
        min_eps: smallest flipping ε per image (:class:`MinimalEps`), None when not measured.
        hidden: what the model declares it hides (:class:`~qshield.attacks.HiddenParts`; nothing by default).

    A row (one :class:`AttackResult`) is trustworthy when the report is (diagnostics ran and passed, not near
    chance) and the row got the adaptive treatment the model needs (:meth:`row_flags`): a randomised model
    (declared, or found randomised by the diagnostics) attacked without EOT, or a model declaring a
    non-differentiable part attacked with a white-box attack through its own gradient, is flagged.
    """

    model: str
    dataset: str | None
    odr: float
    n_total: int
    results: tuple[AttackResult, ...]
    diagnostics: MaskingDiagnostics | None = None
    num_classes: int | None = None
    worst_case: WorstCase | None = None
    min_eps: MinimalEps | None = None
    hidden: HiddenParts = NOTHING_HIDDEN

    @property
    def randomized(self) -> bool:
        """The model declares randomness or the diagnostics found two identical forward passes to differ."""
        return self.hidden.randomized or (self.diagnostics is not None and self.diagnostics.randomized)

    def row_flags(self, result: AttackResult) -> tuple[str, ...]:
        """Why ``result`` cannot be trusted whatever the diagnostics say (empty when nothing is wrong with it):
        ``no EOT`` on a randomised model, ``no BPDA/transfer`` for a white-box attack on a model declaring a
        non-differentiable part."""
        flags = []
        if self.randomized and result.eot_iter == 1:
            flags.append("no EOT")
        preset = ATTACKS.get(result.attack)
        white_box = preset.white_box if preset is not None else True
        if self.hidden.non_differentiable and white_box and result.gradient_source == "direct":
            flags.append("no BPDA/transfer")
        return tuple(flags)

    def row_trustworthy(self, result: AttackResult) -> bool:
        """The report's checks passed (diagnostics, not near chance, some attack reaching its ε) and ``result`` has
        no :meth:`row_flags`."""
        return self._checked_and_sane and self.reaches_eps and not self.row_flags(result)

    @property
    def n_correct(self) -> int:
        """Images classified correctly clean."""
        return round(self.odr * self.n_total) if self.n_total and not math.isnan(self.odr) else 0

    @property
    def odr_ci(self) -> Interval:
        """95% Wilson interval of the clean accuracy."""
        return wilson_interval(self.n_correct, self.n_total)

    @property
    def chance(self) -> float:
        """Chance-level accuracy ``1 / num_classes`` (NaN when the number of classes is unknown)."""
        return 1.0 / self.num_classes if self.num_classes else math.nan

    @property
    def near_chance(self) -> bool:
        """The clean accuracy's 95% interval reaches within :data:`CHANCE_MARGIN` of chance (or nothing is
        classified correctly): such a model's robustness numbers are meaningless."""
        if self.n_correct == 0:
            return True
        if not self.num_classes:
            return False
        return self.odr_ci[0] <= self.chance + CHANCE_MARGIN

    @property
    def unreachable(self) -> tuple[str, ...]:
        """The attacks whose step size × steps cannot reach their ε (run with ``allow_unreachable``; tables mark
        their rows with †)."""
        return tuple(r.attack for r in self.results if not r.reaches_eps)

    @property
    def reaches_eps(self) -> bool:
        """Some attack of the report can reach its ε (True for a report without attacks). Otherwise the worst case
        holds only what attacks held short of ε found, which understates the threat model."""
        return not self.results or len(self.unreachable) < len(self.results)

    @property
    def _checked_and_sane(self) -> bool:
        return self.diagnostics is not None and self.diagnostics.passed and not self.near_chance

    @property
    def trustworthy(self) -> bool:
        """True only when the diagnostics ran, every check passed, the model is not near chance, no row is flagged
        by :meth:`row_flags`, and some attack can reach its ε (:attr:`reaches_eps`)."""
        return self._checked_and_sane and not any(self.row_flags(r) for r in self.results) and self.reaches_eps

    def row_flag(self, result: AttackResult) -> str:
        """The :attr:`flag` of the report for one row, with that row's own :meth:`row_flags`."""
        return self._flag(self.row_flags(result))

    @property
    def flag(self) -> str:
        """``"ok"`` (``"ok (adaptive; hides ...)"`` for a model declaring hidden parts), ``"unchecked"`` (diagnostics
        not run), ``"NEAR CHANCE"``, ``"MASKING: <checks>"``, ``"NOT ADAPTIVE: <attack> (<why>)"`` and/or ``"NO
        ATTACK REACHES ε: <attacks>"``; when only some attacks cannot reach their ε, ``" († <attacks> cannot reach
        ε)"`` follows (the worst case still holds what the others found)."""
        unadapted = [f"{r.attack} ({', '.join(f)})" for r in self.results if (f := self.row_flags(r))]
        flag = self._flag(("NOT ADAPTIVE: " + ", ".join(unadapted),) if unadapted else (), prefixed=True)
        if self.unreachable and self.reaches_eps:
            flag += f" († {', '.join(self.unreachable)} cannot reach ε)"
        return flag

    def _flag(self, row: tuple[str, ...], prefixed: bool = False) -> str:
        parts = []
        if self.near_chance:
            parts.append(f"NEAR CHANCE (accuracy {self.odr:.3f}, chance {self.chance:.3f})")
        if self.diagnostics is None:
            parts.append("unchecked")
        elif not self.diagnostics.passed:
            parts.append("MASKING: " + ", ".join(self.diagnostics.failed))
        if row:
            parts.append(row[0] if prefixed else "NOT ADAPTIVE: " + ", ".join(row))
        if not self.reaches_eps:
            parts.append("NO ATTACK REACHES ε: " + ", ".join(self.unreachable))
        if parts:
            return "; ".join(parts)
        return f"ok (adaptive; hides {self.hidden.label})" if self.hidden.any else "ok"

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
