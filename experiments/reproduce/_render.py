"""The document of a reproduction run: ``docs/reproduction.md`` (+ the ASR-vs-ε plot and the results CSV) rendered
from a :class:`~._run.Reproduction`, and the side-by-side ASR table (:func:`asr_comparison`).

The document's text is in two templates next to this module: ``reproduction.md.tmpl`` (the page: headings,
protocol, explanatory paragraphs, the discussion of the differences from the paper) and
``reproduction_claims.md.tmpl`` (the section on the paper's claims, present when the run has the reference hybrid
and the CNN). This module computes what goes into them: the tables, the numbers, the verdicts and the findings
(every sentence that states a result is computed from the run's numbers, so the document stays true when the run is
regenerated), and picks the few passages that depend on the run (:data:`REFERENCE_MODEL`, :data:`FLAGGED_NOTE` or
:data:`UNFLAGGED_NOTE`, the CSV and plot links, the caption of the ε sweep, the training-length phrase).

The templates are :class:`string.Template` (``${name}`` placeholders), from the standard library: the templates hold
words only (no conditions, loops or calls; every decision about what the page says is in this module, where the
tests reach it), and no dependency is added. Jinja2 (pinned in the lock through MLflow) would let the conditional
passages sit in the template too, at the price of logic in the template and of relying on a package qshield does
not declare. :func:`_fill` refuses a template whose placeholders and the values given differ, so a renamed or
forgotten placeholder fails instead of printing ``${...}``. Lists of lines are substituted with a newline after
each line (:func:`_lines`), and an optional block ends with its blank line, so an absent block leaves no gap.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from string import Template
from typing import Any

import pandas as pd

from qshield.attacks import ATTACKS
from qshield.evaluation import (
    CHECK_NAMES,
    EvaluationReport,
    difference_interval,
    plot_asr_vs_eps,
    render_markdown,
    wilson_interval,
)

from ._paper import PAPER_MNIST_ASR, PAPER_MNIST_ODR, PAPER_MNIST_TTC
from ._run import _ENTANGLEMENT, REFERENCE_NAME, REFERENCE_PAPER_ROW, Reproduction

__all__ = ["asr_comparison", "render_reproduction", "write_reproduction"]

_HERE = Path(__file__).resolve().parent
#: The page (every heading and paragraph of ``docs/reproduction.md``).
DOCUMENT_TEMPLATE = _HERE / "reproduction.md.tmpl"
#: The section on the paper's claims measured on the reference hybrid.
CLAIMS_TEMPLATE = _HERE / "reproduction_claims.md.tmpl"

# The passages that depend on the run (one sentence or line each).
#: After the protocol's models, when the run has the reference hybrid.
REFERENCE_MODEL = Template(
    " `${reference}` = the reference code's own hybrid, flaws included, on the same CNN (see the section on the "
    "paper's claims below)."
)
#: Under the ASR table when a model's numbers are flagged.
FLAGGED_NOTE = (
    "⚠ marks the numbers of models that failed a gradient-masking check (or, for the reference hybrid, were attacked "
    "without the BPDA / EOT it needs): they may understate an adaptive attacker's success; the reference hybrid's "
    "paper column is the paper's Full."
)
#: Under the ASR table when no model's numbers are flagged.
UNFLAGGED_NOTE = "Every model passed the gradient-masking diagnostics, so no number here is flagged."
#: Under the results table when a CSV is written.
CSV_LINK = Template("Machine-readable: [`${csv}`](${csv}).")
#: Under the diagnostics' tables when a plot is written.
PLOT_LINK = Template("![PGD ASR vs ε per model](${plot})")
#: Above the table of the diagnostics' ε sweep (when a model ran the diagnostics).
CURVES_CAPTION = Template(
    "PGD ASR (%) by ε (the diagnostics' sweep), and the white-box vs black-box comparison at ε = ${eps}:"
)
#: The training length in the discussion, fewer epochs than the paper's 10 or as many.
FEWER_EPOCHS = Template("we train ${epochs} epochs (the paper: 10)")
PAPER_EPOCHS = Template("we train ${epochs} epochs as the paper")


def _fill(template: Template | Path, **values: object) -> str:
    """``template`` (or the template file) with ``values`` substituted; ``ValueError`` when a placeholder has no
    value or a value no placeholder."""
    if isinstance(template, Path):
        template = Template(template.read_text(encoding="utf-8"))
    names = {m.group("named") or m.group("braced") for m in template.pattern.finditer(template.template)} - {None}
    if names != set(values):
        raise ValueError(
            f"template placeholders and values differ: without a value {sorted(names - set(values))}, "
            f"without a placeholder {sorted(set(values) - names)}"
        )
    return template.substitute(values)


def _lines(lines: Iterable[str]) -> str:
    """``lines`` with a newline after each (empty for none)."""
    return "".join(f"{line}\n" for line in lines)


def asr_comparison(rep: Reproduction) -> pd.DataFrame:
    """ASR (%) ours and the paper's, one row per model, two columns per attack (``<attack>_ours``,
    ``<attack>_paper``; NaN where the paper has no number)."""
    rows = []
    for report in rep.reports:
        row: dict[str, Any] = {"model": report.model}
        for r in report.results:
            row[f"{r.attack}_ours"] = 100 * r.asr
            row[f"{r.attack}_paper"] = PAPER_MNIST_ASR.get(_paper_name(report.model), {}).get(r.attack, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _paper_name(model: str) -> str:
    """The paper's row a model of ours is compared with (the reference hybrid: the paper's ``Full``)."""
    return REFERENCE_PAPER_ROW if model == REFERENCE_NAME else model


def _f(x: float, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _md(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(out)


def _eps255(eps: float) -> str:
    if eps == 1.0:
        return "1"
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def _summary_rows(rep: Reproduction) -> list[list[str]]:
    rows = []
    for t, report in zip(rep.trained, rep.reports):
        diag = report.diagnostics
        verdict = "–" if diag is None else ("pass" if diag.passed else "FAIL: " + ", ".join(diag.failed))
        rows.append([
            t.name,
            f"{sum(p.numel() for p in t.model.parameters()):,}",
            _f(100 * t.test_accuracy),
            _f(PAPER_MNIST_ODR.get(_paper_name(t.name), math.nan)),
            _f(t.train_seconds, 1),
            _f(PAPER_MNIST_TTC.get(_paper_name(t.name), math.nan), 2),
            _f(t.eval_seconds, 1),
            verdict,
        ])
    return rows


def _asr_rows(rep: Reproduction) -> list[list[str]]:
    rows = []
    for report in rep.reports:
        mark = "" if report.trustworthy else " ⚠"
        cells = [report.model]
        for r in report.results:
            paper = PAPER_MNIST_ASR.get(_paper_name(report.model), {}).get(r.attack, math.nan)
            cells.append(f"{_f(100 * r.asr, 1)}{mark} / {_f(paper, 1)}")
        rows.append(cells)
    return rows


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else math.nan


def _flag_reason(report: EvaluationReport) -> str:
    """Why a report is not trustworthy, briefly (failed checks, unadapted rows, near chance)."""
    parts = []
    if report.diagnostics is None:
        parts.append("diagnostics not run")
    elif not report.diagnostics.passed:
        parts.append("failed: " + ", ".join(report.diagnostics.failed))
    if any(report.row_flags(r) for r in report.results):
        parts.append("rows attacked without the BPDA / EOT it needs")
    if report.near_chance:
        parts.append("near chance")
    return "; ".join(parts)


def _findings(rep: Reproduction) -> list[str]:
    """Sentences computed from this run's numbers (so they stay true when the run is regenerated)."""
    out = []
    reports = {r.model: r for r in rep.reports}
    names = [r.model for r in rep.reports]
    white = [a for a in rep.config.attacks if ATTACKS[a].white_box]
    hybrids = [n for n in names if n in _ENTANGLEMENT]
    failed = [n for n in names if not reports[n].trustworthy]
    out.append(
        "Masking diagnostics (every threshold a 95% confidence interval): "
        + ("every model passes every check." if not failed else "; ".join(
            f"{n} is flagged ({_flag_reason(reports[n])})" for n in failed) + "; every other model passes every check.")
    )
    trained = {t.name: t for t in rep.trained}
    if "CNN" in trained and hybrids:
        hyb_odr = _mean([100 * trained[h].test_accuracy for h in hybrids])
        out.append(
            f"Clean accuracy (ODR): CNN {100 * trained['CNN'].test_accuracy:.1f}%, hybrids {hyb_odr:.1f}% on average "
            f"(range {min(100 * trained[h].test_accuracy for h in hybrids):.1f}-"
            f"{max(100 * trained[h].test_accuracy for h in hybrids):.1f}%); the paper: CNN "
            f"{PAPER_MNIST_ODR['CNN']:.2f}%, hybrids {_mean([PAPER_MNIST_ODR[h] for h in hybrids]):.2f}%."
        )
    if "CNN" in reports and hybrids and white:
        cnn_w = _mean([100 * reports["CNN"].result(a).asr for a in white])
        hyb_w = _mean([100 * reports[h].result(a).asr for h in hybrids for a in white])
        paper_cnn = _mean([PAPER_MNIST_ASR["CNN"][a] for a in white])
        paper_hyb = _mean([PAPER_MNIST_ASR[h][a] for h in hybrids for a in white])
        out.append(
            f"Mean white-box ASR ({', '.join(white)}): CNN {cnn_w:.1f}%, hybrids {hyb_w:.1f}% in our run "
            f"(difference {hyb_w - cnn_w:+.1f} pp); the paper: CNN {paper_cnn:.1f}%, hybrids {paper_hyb:.1f}% "
            f"({paper_hyb - paper_cnn:+.1f} pp)."
        )
    for attack in ("square", "cw"):
        if "CNN" in reports and hybrids and attack in rep.config.attacks:
            ours_c = 100 * reports["CNN"].result(attack).asr
            ours_h = _mean([100 * reports[h].result(attack).asr for h in hybrids])
            paper_c = PAPER_MNIST_ASR["CNN"][attack]
            paper_h = _mean([PAPER_MNIST_ASR[h][attack] for h in hybrids])
            out.append(
                f"{ATTACKS[attack].title} ASR: CNN {ours_c:.1f}% vs hybrids (mean) {ours_h:.1f}% in our run; the "
                f"paper: {paper_c:.1f}% vs {paper_h:.1f}%."
            )
    if "pgd" in rep.config.attacks and "fgsm" in rep.config.attacks:
        weaker = [n for n in names if reports[n].result("pgd").asr < reports[n].result("fgsm").asr]
        if weaker:
            out.append(
                f"The reference's PGD (α = 2/255, 10 steps) is weaker than one-step FGSM on {', '.join(weaker)}: "
                f"10 steps of 2/255 reach at most 20/255 of the {_eps255(rep.config.resolved_eps)} ball. The "
                "diagnostics' PGD (step 2.5·ε/steps, 20 steps) does not have this limit."
            )
    return out


def _ci_pct(k: int, n: int) -> str:
    """``62.3 [55.1, 69.0]``: a rate in % with its 95% Wilson interval."""
    if n == 0:
        return "–"
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _direction(low: float, high: float) -> str:
    """Words for a difference interval: significantly lower / higher, or no significant difference."""
    if high < 0:
        return "significantly lower"
    if low > 0:
        return "significantly higher"
    return "no significant difference"


def _claim_rows(rep: Reproduction) -> list[tuple[str, list[str], str]]:
    """Per attack of the adaptive evaluation: (attack, table cells, verdict sentence). Differences are ours
    (Ref-Full - CNN, pp, 95% Newcombe interval) naive and adaptive, next to the paper's (Full - CNN)."""
    cnn, ref = rep.report("CNN"), rep.report(REFERENCE_NAME)
    adaptive = rep.adaptive_reports[0]
    out = []
    for r_ad in adaptive.results:
        attack = r_ad.attack
        r_cnn, r_ref = cnn.result(attack), ref.result(attack)
        paper_c = PAPER_MNIST_ASR["CNN"].get(attack, math.nan)
        paper_f = PAPER_MNIST_ASR[REFERENCE_PAPER_ROW].get(attack, math.nan)
        d_n, lo_n, hi_n = difference_interval(r_ref.n_fooled, r_ref.n_attacked, r_cnn.n_fooled, r_cnn.n_attacked)
        d_a, lo_a, hi_a = difference_interval(r_ad.n_fooled, r_ad.n_attacked, r_cnn.n_fooled, r_cnn.n_attacked)
        paper_delta = paper_f - paper_c
        naive = f"naive {100 * d_n:+.1f} pp [{100 * lo_n:+.1f}, {100 * hi_n:+.1f}] ({_direction(lo_n, hi_n)})"
        adapt = (f"adaptive ({r_ad.adaptive}) {100 * d_a:+.1f} pp [{100 * lo_a:+.1f}, {100 * hi_a:+.1f}] "
                 f"({_direction(lo_a, hi_a)})")
        numbers = f"paper {paper_delta:+.1f} pp; ours {naive}, {adapt}"
        if ref.near_chance or cnn.near_chance:
            verdict = f"not measurable in this run: a model is near chance (its ASR means nothing); {numbers}"
        elif not paper_delta < 0:
            verdict = f"the paper reports no reduction here; {numbers}"
        else:
            naive_lower, adaptive_lower = hi_n < 0, hi_a < 0
            if naive_lower and adaptive_lower:
                head = "a reduction that survives the adaptive attacker"
            elif naive_lower:
                head = ("a reduction only the naive attacker sees; against the adaptive attacker it is no longer "
                        "significant")
            elif adaptive_lower:
                head = "no reduction against the naive attacker, a significant one against the adaptive attacker"
            else:
                head = "the paper's reduction is not reproduced: neither attacker sees a significant reduction"
            if paper_delta / 100 < lo_n:
                head += (f"; the paper's {paper_delta:+.1f} pp is a larger drop than our naive interval allows")
            verdict = f"{head} ({numbers})"
        cells = [
            ATTACKS[attack].title,
            f"{_f(paper_c, 1)} → {_f(paper_f, 1)} ({paper_f - paper_c:+.1f})",
            _ci_pct(r_cnn.n_fooled, r_cnn.n_attacked),
            _ci_pct(r_ref.n_fooled, r_ref.n_attacked),
            _ci_pct(r_ad.n_fooled, r_ad.n_attacked),
            r_ad.adaptive,
            f"{100 * d_n:+.1f} [{100 * lo_n:+.1f}, {100 * hi_n:+.1f}]: {_direction(lo_n, hi_n)}",
            f"{100 * d_a:+.1f} [{100 * lo_a:+.1f}, {100 * hi_a:+.1f}]: {_direction(lo_a, hi_a)}",
        ]
        if not adaptive.row_trustworthy(r_ad) and not (ref.near_chance or cnn.near_chance):
            verdict += f"; caveat: the adaptive row itself is flagged ({adaptive.row_flag(r_ad)})"
        out.append((attack, cells, verdict))
    return out


def _claims_section(rep: Reproduction) -> str:
    """The section on the paper's claims (the reference hybrid's naive vs adaptive evaluation, its diagnostics and
    the verdict per claim), ending with a blank line; empty when the run has no reference hybrid or no CNN."""
    if not rep.adaptive_reports or REFERENCE_NAME not in [r.model for r in rep.reports] or "CNN" not in [
        r.model for r in rep.reports
    ]:
        return ""
    cfg = rep.config
    ref, adaptive = rep.report(REFERENCE_NAME), rep.adaptive_reports[0]
    trained = {t.name: t for t in rep.trained}
    rows = _claim_rows(rep)
    diag_rows = []
    for label, report in (("naive", ref), ("adaptive", adaptive)):
        d = report.diagnostics
        if d is not None:
            diag_rows.append([label, d.adaptive, *[("PASS" if c.passed else "FAIL") for c in d.checks]])
    details = []
    for label, report in (("naive", ref), ("adaptive", adaptive)):
        d = report.diagnostics
        if d is None:
            continue
        verdict = "every check passes" if d.passed else "FAIL: " + ", ".join(d.failed)
        shown = [c for c in d.checks if c.name in ("gradients_match_finite_differences", "deterministic_or_eot",
                                                    "surrogate_vs_direct") or not c.passed]
        details += [f"* **{label}** ({report.flag}): {verdict}."]
        details += [f"  - `{c.name}`: {c.detail}" for c in shown]
    verdicts = [f"* **{ATTACKS[attack].title}**: {verdict}." for attack, _, verdict in rows]
    t_ref, t_cnn = trained[REFERENCE_NAME], trained["CNN"]
    k_ref, k_cnn = round(t_ref.test_accuracy * t_ref.n_test), round(t_cnn.test_accuracy * t_cnn.n_test)
    d, lo, hi = difference_interval(k_ref, t_ref.n_test, k_cnn, t_cnn.n_test)
    verdicts.append(
        f"* **Clean accuracy** (the paper: Full {PAPER_MNIST_ODR[REFERENCE_PAPER_ROW]:.2f}% vs CNN "
        f"{PAPER_MNIST_ODR['CNN']:.2f}%, {PAPER_MNIST_ODR[REFERENCE_PAPER_ROW] - PAPER_MNIST_ODR['CNN']:+.2f} pp): "
        f"{REFERENCE_NAME} {100 * t_ref.test_accuracy:.1f}% vs CNN {100 * t_cnn.test_accuracy:.1f}%, "
        f"{100 * d:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}] on {t_ref.n_test} test images: {_direction(lo, hi)}."
    )
    return _fill(
        CLAIMS_TEMPLATE,
        reference=REFERENCE_NAME,
        modes=", ".join(f"`{m}`" for m in sorted({r.adaptive for r in adaptive.results})),
        eot_iter=adaptive.results[0].eot_iter,
        attack_sizes=", ".join(f"{r.attack} {r.n_total}" for r in adaptive.results),
        masking_examples=cfg.adaptive_masking.n_examples,
        masking_steps=cfg.adaptive_masking.steps,
        masking_queries=cfg.adaptive_masking.square_queries,
        seconds=f"{rep.adaptive_seconds:.0f}",
        reference_odr=f"{100 * trained[REFERENCE_NAME].test_accuracy:.2f}",
        paper_full_odr=f"{PAPER_MNIST_ODR[REFERENCE_PAPER_ROW]:.2f}",
        cnn_odr=f"{100 * trained['CNN'].test_accuracy:.2f}",
        paper_cnn_odr=f"{PAPER_MNIST_ODR['CNN']:.2f}",
        claims_table=_md(["attack", "paper: CNN → Full (Δ)", "CNN (ours)", "Ref-Full naive", "Ref-Full adaptive",
                          "adaptive mode", "Δ naive", "Δ adaptive"], [cells for _, cells, _ in rows]),
        diagnostics_table=_md(["evaluation", "mode", *CHECK_NAMES], diag_rows),
        diagnostics_details=_lines(details),
        verdicts=_lines(verdicts),
    ) + "\n"


def render_reproduction(rep: Reproduction, *, command: str, plot_name: str | None, csv_name: str | None) -> str:
    """The Markdown of ``docs/reproduction.md`` for ``rep``; ``command`` is the line that regenerates it."""
    cfg = rep.config
    env = rep.environment
    eps = _eps255(cfg.resolved_eps)
    n_main = rep.reports[0].n_total if rep.reports else 0
    sizes = ", ".join(
        f"{a} {r.n_total}" for a, r in zip(cfg.attacks, rep.reports[0].results)
    ) if rep.reports else ""
    diag_rows = []
    for report in [*rep.reports, *rep.adaptive_reports]:
        if report.diagnostics is None:
            diag_rows.append([report.model, "–", *["not run"] * len(CHECK_NAMES)])
            continue
        diag_rows.append([report.model, report.diagnostics.adaptive,
                          *[("PASS" if c.passed else "FAIL") for c in report.diagnostics.checks]])
    curve_rows = []
    for report in [*rep.reports, *rep.adaptive_reports]:
        d = report.diagnostics
        if d is None:
            continue
        curve_rows.append([
            report.model, str(d.n_examples), *[_f(100 * a, 1) for a in d.pgd_asr],
            _f(100 * d.pgd_asr_at_eps, 1), _f(100 * d.square_asr_at_eps, 1), _f(d.zero_grad_fraction, 3),
        ])
    curves = ""
    if curve_rows:
        curves = _fill(CURVES_CAPTION, eps=eps) + "\n\n" + _md(
            ["model", "images", *[f"PGD ε={_eps255(e)}" for e in cfg.masking.eps_schedule], f"PGD @ {eps}",
             f"Square @ {eps}", "zero-gradient fraction"], curve_rows) + "\n\n"
    check_details = []
    for report in [*rep.reports, *rep.adaptive_reports]:
        if report.diagnostics is not None:
            check_details += [f"[{report.model}]", report.diagnostics.summary()]
    attacked = sorted({cfg.examples_for(a) for a in cfg.attacks})
    fewest, most = attacked[0], attacked[-1]
    return _fill(
        DOCUMENT_TEMPLATE,
        command=command,
        **{key: env[key] for key in ("date", "machine", "device", "torch_threads", "load_average", "python",
                                     "torch", "torchattacks")},
        minutes=f"{rep.seconds / 60:.1f}",
        dataset=cfg.dataset,
        balance="on" if cfg.balance else "off",
        n_train=rep.n_train,
        n_test=rep.trained[0].n_test if rep.trained else 0,
        reference_model=_fill(REFERENCE_MODEL, reference=REFERENCE_NAME) if cfg.reference else "",
        lr=f"{cfg.lr:g}",
        weight_decay=f"{cfg.weight_decay:g}",
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        seed=cfg.seed,
        eps=eps,
        attack_sizes=sizes,
        masking_examples=cfg.masking.n_examples,
        n_main=n_main,
        masking_steps=cfg.masking.steps,
        masking_eps=", ".join(_eps255(e) for e in cfg.masking.eps_schedule),
        masking_queries=cfg.masking.square_queries,
        summary_table=_md(["model", "parameters", "ODR % (ours)", "ODR % (paper)", "train s (ours)",
                           "train+test s (paper)", "attack+diagnostics s (ours)", "masking diagnostics"],
                          _summary_rows(rep)),
        asr_table=_md(["model", *[ATTACKS[a].title for a in cfg.attacks]], _asr_rows(rep)),
        flag_note=FLAGGED_NOTE if not all(r.trustworthy for r in rep.reports) else UNFLAGGED_NOTE,
        results_table=render_markdown(rep.table()).rstrip(),
        csv_link=_fill(CSV_LINK, csv=csv_name) + "\n\n" if csv_name else "",
        diagnostics_table=_md(["model", "mode", *CHECK_NAMES], diag_rows),
        curves=curves,
        plot=_fill(PLOT_LINK, plot=plot_name) + "\n\n" if plot_name else "",
        check_details=_lines(check_details),
        claims=_claims_section(rep),
        findings=_lines(f"* {s}" for s in _findings(rep)),
        reference=REFERENCE_NAME,
        n_train_thousands=f"{rep.n_train:,}",
        training_length=_fill(FEWER_EPOCHS if cfg.epochs < 10 else PAPER_EPOCHS, epochs=cfg.epochs),
        fewest=fewest,
        most=most,
        se_fewest=f"{100 * math.sqrt(0.25 / fewest):.1f}",
        se_most=f"{100 * math.sqrt(0.25 / most):.1f}",
    )


def write_reproduction(
    rep: Reproduction,
    doc: str | os.PathLike[str],
    *,
    command: str,
    plot: str | os.PathLike[str] | None = None,
    csv: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Write the document (and the ASR-vs-ε plot and the results CSV when paths are given); returns the paths.

    The plot and CSV are referenced from the document by their path relative to the document's folder.
    """
    doc_path = Path(doc)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    paths = {"doc": doc_path}
    plot_name = csv_name = None
    if plot is not None:
        curves = [r.diagnostics.asr_curve(r.model) for r in rep.reports if r.diagnostics is not None]
        curves = [c for c in curves if c.eps]
        if curves:
            plot_asr_vs_eps(curves, plot, title=f"PGD ASR vs ε ({rep.config.dataset}, diagnostics sweep)")
            paths["plot"] = Path(plot)
            plot_name = os.path.relpath(plot, doc_path.parent)
    if csv is not None:
        rep.table().to_csv(csv, index=False)
        paths["csv"] = Path(csv)
        csv_name = os.path.relpath(csv, doc_path.parent)
    doc_path.write_text(render_reproduction(rep, command=command, plot_name=plot_name, csv_name=csv_name),
                        encoding="utf-8")
    return paths
