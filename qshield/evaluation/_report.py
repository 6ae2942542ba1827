"""Results tables (CSV, Markdown), ASR-vs-ε plots and a side-by-side comparison with published numbers.

Every function works from data: tables are pandas DataFrames built from :class:`EvaluationReport` objects,
and plot functions return the data they drew (``STYLE.md``: plot from data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ._results import AsrCurve, EvaluationReport

__all__ = [
    "TABLE_COLUMNS",
    "WORST_CASE",
    "compare_with_paper",
    "comparison_markdown",
    "curves_table",
    "diagnostics_table",
    "evaluation_table",
    "write_evaluation",
    "plot_asr_vs_eps",
    "render_markdown",
    "results_table",
    "write_results",
]

#: Name of the per-example worst-case row of :func:`results_table` (robust only if no attack fools the image).
WORST_CASE = "worst-case"

#: Columns of :func:`results_table`, one row per model × attack, plus one ``worst-case`` row per model.
TABLE_COLUMNS = (
    "model",
    "dataset",
    "attack",
    "eps",
    "odr",
    "odr_ci_low",
    "odr_ci_high",
    "asr",
    "asr_ci_low",
    "asr_ci_high",
    "robust_accuracy",
    "robust_accuracy_ci_low",
    "robust_accuracy_ci_high",
    "reaches_eps",
    "adaptive",
    "seconds_per_example",
    "forward_per_example",
    "backward_per_example",
    "n_total",
    "n_attacked",
    "trustworthy",
    "masking",
)

_FLAG = "⚠"
_WEAK = "†"


def _reports(reports: EvaluationReport | Sequence[EvaluationReport]) -> list[EvaluationReport]:
    if isinstance(reports, EvaluationReport):
        return [reports]
    out = list(reports)
    bad = [type(r).__name__ for r in out if not isinstance(r, EvaluationReport)]
    if bad:
        raise ValueError(f"reports must be EvaluationReport objects; got {', '.join(bad)}")
    return out


def results_table(reports: EvaluationReport | Sequence[EvaluationReport]) -> pd.DataFrame:
    """One row per model × attack with the columns of :data:`TABLE_COLUMNS`, then one :data:`WORST_CASE` row
    per model (the per-example worst case over its suite; its cost columns are the suite's totals).

    Rates are fractions in [0, 1], each with its 95% Wilson interval (``<rate>_ci_low`` / ``_ci_high``); ``eps``
    is on the [0, 1] pixel scale (NaN for attacks without ε); ``reaches_eps`` is False for a row whose
    ``alpha * steps`` cannot reach its ε (opted in); ``trustworthy`` is the report's verdict and ``masking`` its
    flag (``ok``, ``unchecked``, ``NEAR CHANCE`` or the failed checks).
    """
    rows = []
    for rep in _reports(reports):
        for r in rep.results:
            row = {
                "model": rep.model,
                "dataset": rep.dataset,
                "attack": r.attack,
                "eps": math.nan if r.eps is None else r.eps,
                "reaches_eps": r.reaches_eps,
                "adaptive": r.adaptive,
                "seconds_per_example": r.seconds_per_example,
                "forward_per_example": r.forward_per_example,
                "backward_per_example": r.backward_per_example,
                "n_total": r.n_total,
                "n_attacked": r.n_attacked,
                "trustworthy": rep.row_trustworthy(r),
                "masking": rep.row_flag(r),
            }
            for rate in ("odr", "asr", "robust_accuracy"):
                row[rate] = getattr(r, rate)
                row[f"{rate}_ci_low"], row[f"{rate}_ci_high"] = getattr(r, f"{rate}_ci")
            rows.append(row)
        wc = rep.worst_case
        if wc is not None and rep.results:
            epsilons = {r.eps for r in rep.results if r.eps is not None}
            row = {
                "model": rep.model,
                "dataset": rep.dataset,
                "attack": WORST_CASE,
                "eps": epsilons.pop() if len(epsilons) == 1 else math.nan,
                "odr": rep.odr,
                "asr": wc.asr,
                "robust_accuracy": wc.robust_accuracy,
                "reaches_eps": all(r.reaches_eps for r in rep.results),
                "adaptive": "/".join(dict.fromkeys(r.adaptive for r in rep.results)),
                "seconds_per_example": sum(r.seconds_per_example for r in rep.results),
                "forward_per_example": sum(r.forward_per_example for r in rep.results),
                "backward_per_example": sum(r.backward_per_example for r in rep.results),
                "n_total": wc.n_total,
                "n_attacked": wc.n_attacked,
                "trustworthy": rep.trustworthy,
                "masking": rep.flag,
            }
            row["odr_ci_low"], row["odr_ci_high"] = rep.odr_ci
            row["asr_ci_low"], row["asr_ci_high"] = wc.asr_ci
            row["robust_accuracy_ci_low"], row["robust_accuracy_ci_high"] = wc.robust_accuracy_ci
            rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _eps_text(eps: float) -> str:
    if eps is None or (isinstance(eps, float) and math.isnan(eps)):
        return "–"
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def _pct(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def _pct_ci(x: float, low: float, high: float) -> str:
    """``62.3 [55.1, 69.0]``: a rate in % with its 95% interval."""
    if x is None or math.isnan(x):
        return "nan"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{100 * x:.1f}"
    return f"{100 * x:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _num(x: float, digits: int = 3) -> str:
    return "nan" if x is None or math.isnan(x) else f"{x:.{digits}g}"


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(table: pd.DataFrame | EvaluationReport | Sequence[EvaluationReport]) -> str:
    """The results table as Markdown (rates in % with their 95% Wilson intervals, the adaptive mode of each row),
    flagging untrustworthy numbers (the model failed or skipped the gradient-masking diagnostics, is near chance, or
    the row lacks the adaptive treatment the model needs) with ``⚠``, and rows whose attack cannot reach its ε with
    ``†``, each with a footnote."""
    df = table if isinstance(table, pd.DataFrame) else results_table(table)
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"table is missing columns {missing}; build it with results_table()")
    headers = [
        "model",
        "attack",
        "ε",
        "adaptive",
        "ODR % [95% CI]",
        "ASR % [95% CI]",
        "robust acc % [95% CI]",
        "s / example",
        "fwd / example",
        "bwd / example",
        "masking",
    ]
    rows = []
    flagged = weak = False
    for _, r in df.iterrows():
        mark = "" if bool(r["trustworthy"]) else f" {_FLAG}"
        flagged = flagged or bool(mark)
        dagger = "" if bool(r["reaches_eps"]) else f" {_WEAK}"
        weak = weak or bool(dagger)
        attack = f"**{r['attack']}**" if r["attack"] == WORST_CASE else str(r["attack"])
        rows.append(
            [
                str(r["model"]),
                attack + dagger,
                _eps_text(r["eps"]),
                str(r["adaptive"]),
                _pct_ci(r["odr"], r["odr_ci_low"], r["odr_ci_high"]) + mark,
                _pct_ci(r["asr"], r["asr_ci_low"], r["asr_ci_high"]) + mark,
                _pct_ci(r["robust_accuracy"], r["robust_accuracy_ci_low"], r["robust_accuracy_ci_high"]) + mark,
                _num(r["seconds_per_example"]),
                _num(r["forward_per_example"], 4),
                _num(r["backward_per_example"], 4),
                str(r["masking"]),
            ]
        )
    text = _markdown(headers, rows)
    if flagged:
        text += (
            f"\n\n{_FLAG} Not trustworthy: the model failed (or did not run) the gradient-masking diagnostics, its "
            "clean accuracy is near chance, no attack could reach its ε, or the row was attacked without the adaptive "
            "treatment the model needs (EOT for a randomised model, BPDA/transfer for a declared non-differentiable "
            "part); its ASR may understate what an adaptive attacker achieves, and its robust accuracy may "
            "overstate robustness."
        )
    if weak:
        text += (
            f"\n\n{_WEAK} The attack's step size × steps cannot reach its ε (run on purpose to reproduce a paper's "
            "setting): its ASR understates the threat model."
        )
    if (df["attack"] == WORST_CASE).any():
        text += (
            f"\n\n**{WORST_CASE}**: per-example worst case over the model's attacks (RobustBench/AutoAttack): an "
            "image is robust only if no attack fools it. Intervals: 95% Wilson."
        )
    return text + "\n"


def write_results(
    reports: EvaluationReport | Sequence[EvaluationReport] | pd.DataFrame,
    directory: str | Path,
    stem: str = "results",
) -> tuple[Path, Path]:
    """Write ``<directory>/<stem>.csv`` (the :func:`results_table`) and ``<stem>.md`` (:func:`render_markdown`).

    Returns:
        ``(csv_path, markdown_path)``.
    """
    df = reports if isinstance(reports, pd.DataFrame) else results_table(reports)
    if not isinstance(stem, str) or not stem or "/" in stem or "\\" in stem:
        raise ValueError(f"stem={stem!r} is invalid; allowed values: a non-empty file name without separators")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{stem}.csv", out / f"{stem}.md"
    df.to_csv(csv_path, index=False)
    md_path.write_text(render_markdown(df), encoding="utf-8")
    return csv_path, md_path


def plot_asr_vs_eps(
    curves: AsrCurve | Sequence[AsrCurve],
    path: str | Path,
    *,
    title: str | None = None,
    eps_in_255: bool = True,
) -> tuple[AsrCurve, ...]:
    """Draw ASR (%) against ε for each curve to a PNG at ``path`` (matplotlib, Agg, no global pyplot state).

    Args:
        curves: one or more :class:`AsrCurve` (e.g. from :func:`asr_vs_eps` or a diagnostics' ``asr_curve``).
        path: output file (``.png``).
        title: figure title.
        eps_in_255: label the x axis in units of 1/255 (else the [0, 1] scale).

    Returns:
        The curves drawn, in order (the plotted data).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = (curves,) if isinstance(curves, AsrCurve) else tuple(curves)
    if not data or not all(isinstance(c, AsrCurve) for c in data):
        raise ValueError("curves must be one AsrCurve or a non-empty sequence of AsrCurve")
    for c in data:
        if len(c.eps) != len(c.asr):
            raise ValueError(f"curve {c.label!r} has {len(c.eps)} eps values but {len(c.asr)} ASR values")
    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    scale = 255.0 if eps_in_255 else 1.0
    for c in data:
        ax.plot([e * scale for e in c.eps], [100 * a for a in c.asr], marker="o", label=c.label or c.attack)
    ax.set_xlabel("ε (×1/255)" if eps_in_255 else "ε")
    ax.set_ylabel("ASR (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if any(c.label for c in data):
        ax.legend()
    fig.tight_layout()
    fig.savefig(Path(path), format="png")
    return data


def compare_with_paper(
    ours: pd.DataFrame | EvaluationReport | Sequence[EvaluationReport],
    paper_asr: Mapping[str, Mapping[str, float]],
) -> pd.DataFrame:
    """Our ASR next to published ASR values supplied by the caller (not stored in the library).

    Args:
        ours: a :func:`results_table` or reports.
        paper_asr: ``{model: {attack: ASR in percent}}`` as printed in the paper (e.g. ``{"CNN": {"fgsm":
            47.29}}``); model and attack names must match ours.

    Returns:
        DataFrame with columns ``model, attack, asr_ours_pct, asr_paper_pct, delta_pct, trustworthy``; one row
        per row of ours, ``asr_paper_pct`` NaN where the paper has no value.
    """
    if not isinstance(paper_asr, Mapping) or not all(isinstance(v, Mapping) for v in paper_asr.values()):
        raise ValueError("paper_asr must be a mapping {model: {attack: ASR in percent}}")
    df = ours if isinstance(ours, pd.DataFrame) else results_table(ours)
    rows = []
    for _, r in df.iterrows():
        paper = paper_asr.get(str(r["model"]), {}).get(str(r["attack"]), math.nan)
        ours_pct = 100 * float(r["asr"])
        rows.append(
            {
                "model": r["model"],
                "attack": r["attack"],
                "asr_ours_pct": ours_pct,
                "asr_paper_pct": float(paper),
                "delta_pct": ours_pct - float(paper),
                "trustworthy": bool(r["trustworthy"]),
            }
        )
    return pd.DataFrame(rows, columns=["model", "attack", "asr_ours_pct", "asr_paper_pct", "delta_pct", "trustworthy"])


def comparison_markdown(comparison: pd.DataFrame) -> str:
    """Markdown of :func:`compare_with_paper`'s table (untrustworthy rows flagged with ``⚠``)."""
    rows = []
    for _, r in comparison.iterrows():
        mark = "" if bool(r["trustworthy"]) else f" {_FLAG}"
        rows.append(
            [
                str(r["model"]),
                str(r["attack"]),
                _num(r["asr_ours_pct"], 4) + mark,
                _num(r["asr_paper_pct"], 4),
                _num(r["delta_pct"], 3),
            ]
        )
    return _markdown(["model", "attack", "ASR % (ours)", "ASR % (paper)", "Δ (pp)"], rows) + "\n"


def evaluation_table(reports: Sequence[EvaluationReport]) -> pd.DataFrame:
    """:func:`results_table` plus ``attack_seconds`` (total wall seconds of the attack) and
    ``queries_per_example`` (counted forward + backward passes per attacked example)."""
    df = results_table(list(reports))
    df["attack_seconds"] = df["seconds_per_example"] * df["n_attacked"]
    df["queries_per_example"] = df["forward_per_example"] + df["backward_per_example"]
    return df


def diagnostics_table(reports: Sequence[EvaluationReport]) -> pd.DataFrame:
    """One row per model × masking check: ``model, check, passed, detail`` (``not run`` rows when absent)."""
    rows = []
    for rep in reports:
        if rep.diagnostics is None:
            rows.append({"model": rep.model, "check": "all", "passed": False, "detail": "diagnostics not run"})
            continue
        for check in rep.diagnostics.checks:
            rows.append({"model": rep.model, "check": check.name, "passed": check.passed, "detail": check.detail})
    return pd.DataFrame(rows, columns=["model", "check", "passed", "detail"])


def curves_table(curves: Sequence[AsrCurve]) -> pd.DataFrame:
    """The plotted ASR-vs-ε data, one row per model × ε: ``model, attack, eps, eps_255, asr, n_attacked``."""
    rows = [
        {"model": c.label, "attack": c.attack, "eps": e, "eps_255": e * 255, "asr": a, "n_attacked": c.n_attacked}
        for c in curves
        for e, a in zip(c.eps, c.asr)
    ]
    return pd.DataFrame(rows, columns=["model", "attack", "eps", "eps_255", "asr", "n_attacked"])


def write_evaluation(
    reports: Sequence[EvaluationReport], out: str | Path, plot_title: str | None = None
) -> dict[str, Path]:
    """Write the results, diagnostics and ASR-vs-ε files of ``reports`` to directory ``out``.

    Returns:
        ``{"results_csv", "results_md", "diagnostics_csv", "diagnostics_md", "curves_csv", "plot"}`` -> path.
        The plot is skipped (key absent) when no model has a PGD sweep (e.g. no image classified correctly).
    """
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = write_results(evaluation_table(reports), directory, "results")
    diag = diagnostics_table(reports)
    diag_csv, diag_md = directory / "diagnostics.csv", directory / "diagnostics.md"
    diag.to_csv(diag_csv, index=False)
    lines = ["| model | check | result | detail |", "|---|---|---|---|"]
    lines += [
        f"| {r.model} | {r.check} | {'PASS' if r.passed else 'FAIL'} | {str(r.detail).replace('|', '/')} |"
        for r in diag.itertuples()
    ]
    diag_md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    curves = [rep.diagnostics.asr_curve(rep.model) for rep in reports if rep.diagnostics is not None]
    curves = [c for c in curves if c.eps]
    curves_csv = directory / "asr_vs_eps.csv"
    curves_table(curves).to_csv(curves_csv, index=False)
    paths = {"results_csv": csv_path, "results_md": md_path, "diagnostics_csv": diag_csv, "diagnostics_md": diag_md,
             "curves_csv": curves_csv}
    if curves:
        plot = directory / "asr_vs_eps.png"
        plot_asr_vs_eps(curves, plot, title=plot_title or "PGD ASR vs ε (masking diagnostics sweep)")
        paths["plot"] = plot
    return paths
