"""Honest robustness evaluation: the QShield paper's metrics, counted adversary cost, masking diagnostics.

* Metrics (:func:`odr`, :func:`asr`, :func:`robust_accuracy`): ODR = clean accuracy; only correctly classified
  images are attacked; ASR = misclassified adversarials / attacked.
* :func:`evaluate_attack` runs one attack and returns an :class:`AttackResult` with seconds and counted
  forward/backward passes per example; :func:`evaluate` runs a list of attacks plus
  :func:`check_gradient_masking` and returns an :class:`EvaluationReport` whose ``trustworthy`` flag is False
  when a check fails.
* Reports: :func:`results_table`, :func:`render_markdown`, :func:`write_results` (CSV + Markdown),
  :func:`asr_vs_eps` + :func:`plot_asr_vs_eps`, :func:`compare_with_paper`.

See ``docs/attacks.md``.
"""

from __future__ import annotations

from ._evaluate import asr_vs_eps, evaluate, evaluate_attack
from ._masking import (
    CHECK_NAMES,
    CheckResult,
    MaskingConfig,
    MaskingDiagnostics,
    check_gradient_masking,
    judge_attack_checks,
)
from ._metrics import asr, odr, robust_accuracy
from ._report import (
    TABLE_COLUMNS,
    compare_with_paper,
    comparison_markdown,
    plot_asr_vs_eps,
    render_markdown,
    results_table,
    write_results,
)
from ._results import AsrCurve, AttackResult, EvaluationReport

__all__ = [
    "CHECK_NAMES",
    "TABLE_COLUMNS",
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
    "evaluate",
    "evaluate_attack",
    "judge_attack_checks",
    "odr",
    "plot_asr_vs_eps",
    "render_markdown",
    "results_table",
    "robust_accuracy",
    "write_results",
]
