"""Honest robustness evaluation: the QShield paper's metrics, counted adversary cost, masking diagnostics.

* Metrics (:func:`odr`, :func:`asr`, :func:`robust_accuracy`): ODR = clean accuracy; only correctly classified
  images are attacked; ASR = misclassified adversarials / attacked. Every rate carries a 95% Wilson interval
  (:func:`wilson_interval`).
* The field's robust accuracy is the per-example worst case over the attack suite (:class:`WorstCase`, in every
  :class:`EvaluationReport`); the adversary cost that measures the model is the smallest ε that flips each
  image (:func:`minimal_eps`). A model near chance level is never trustworthy.
* :func:`evaluate_attack` runs one attack and returns an :class:`AttackResult` with seconds and counted
  forward/backward passes per example; :func:`evaluate` runs a list of attacks plus
  :func:`check_gradient_masking` and returns an :class:`EvaluationReport` whose ``trustworthy`` flag is False
  when a check fails or a row lacks the adaptive treatment the model needs. Models that declare hidden parts
  (:class:`qshield.attacks.HiddenParts`) are attacked adaptively by default (BPDA, EOT, transfer); every result
  says which mode produced it (``AttackResult.adaptive``). The diagnostics decide every threshold from
  confidence intervals.
* Reports: :func:`results_table`, :func:`render_markdown`, :func:`write_results` (CSV + Markdown),
  :func:`asr_vs_eps` + :func:`plot_asr_vs_eps`, :func:`compare_with_paper`.
* :func:`isolated_rng`: the seeded, restored global generators every attack here runs under (for callers that
  run an attack themselves, e.g. the web page).

See ``docs/attacks.md``.
"""

from __future__ import annotations

from ._core import isolated_rng
from ._evaluate import asr_vs_eps, evaluate, evaluate_attack, worst_case
from ._masking import (
    CHECK_NAMES,
    CheckResult,
    MaskingConfig,
    MaskingDiagnostics,
    check_gradient_masking,
    judge_attack_checks,
    judge_eot_convergence,
    judge_gradient_sources,
)
from ._metrics import CONFIDENCE, asr, difference_interval, odr, robust_accuracy, wilson_interval
from ._min_eps import MinEpsConfig, minimal_eps
from ._report import (
    TABLE_COLUMNS,
    WORST_CASE,
    compare_with_paper,
    comparison_markdown,
    curves_table,
    diagnostics_table,
    evaluation_table,
    plot_asr_vs_eps,
    render_markdown,
    results_table,
    write_evaluation,
    write_results,
)
from ._results import CHANCE_MARGIN, AsrCurve, AttackResult, EvaluationReport, MinimalEps, WorstCase

__all__ = [
    "CHANCE_MARGIN",
    "CHECK_NAMES",
    "CONFIDENCE",
    "MinEpsConfig",
    "MinimalEps",
    "WorstCase",
    "difference_interval",
    "minimal_eps",
    "wilson_interval",
    "worst_case",
    "TABLE_COLUMNS",
    "WORST_CASE",
    "AsrCurve",
    "AttackResult",
    "CheckResult",
    "EvaluationReport",
    "MaskingConfig",
    "MaskingDiagnostics",
    "asr",
    "asr_vs_eps",
    "check_gradient_masking",
    "compare_with_paper",
    "comparison_markdown",
    "curves_table",
    "diagnostics_table",
    "evaluation_table",
    "evaluate",
    "evaluate_attack",
    "isolated_rng",
    "judge_attack_checks",
    "judge_eot_convergence",
    "judge_gradient_sources",
    "odr",
    "plot_asr_vs_eps",
    "render_markdown",
    "results_table",
    "robust_accuracy",
    "write_evaluation",
    "write_results",
]
