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
    "compare_with_paper",
    "comparison_markdown",
    "plot_asr_vs_eps",
    "render_markdown",
    "results_table",
    "write_results",
]

#: Columns of :func:`results_table`, one row per model × attack.
TABLE_COLUMNS = (
    "model",
    "dataset",
    "attack",
    "eps",
    "odr",
    "asr",
    "robust_accuracy",
    "seconds_per_example",
    "forward_per_example",
    "backward_per_example",
    "n_total",
    "n_attacked",
    "trustworthy",
    "masking",
)

_FLAG = "⚠"


def _reports(reports: EvaluationReport | Sequence[EvaluationReport]) -> list[EvaluationReport]:
    if isinstance(reports, EvaluationReport):
        return [reports]
    out = list(reports)
    bad = [type(r).__name__ for r in out if not isinstance(r, EvaluationReport)]
    if bad:
        raise ValueError(f"reports must be EvaluationReport objects; got {', '.join(bad)}")
    return out


def results_table(reports: EvaluationReport | Sequence[EvaluationReport]) -> pd.DataFrame:
    """One row per model × attack with the columns of :data:`TABLE_COLUMNS`.

    Rates are fractions in [0, 1]; ``eps`` is on the [0, 1] pixel scale (NaN for attacks without ε);
    ``trustworthy`` is the report's verdict and ``masking`` its flag (``ok``, ``unchecked`` or the failed
    checks).
    """
    rows = []
    for rep in _reports(reports):
        for r in rep.results:
            rows.append(
                {
                    "model": rep.model,
                    "dataset": rep.dataset,
                    "attack": r.attack,
                    "eps": math.nan if r.eps is None else r.eps,
                    "odr": r.odr,
                    "asr": r.asr,
                    "robust_accuracy": r.robust_accuracy,
                    "seconds_per_example": r.seconds_per_example,
                    "forward_per_example": r.forward_per_example,
                    "backward_per_example": r.backward_per_example,
                    "n_total": r.n_total,
                    "n_attacked": r.n_attacked,
                    "trustworthy": rep.trustworthy,
                    "masking": rep.flag,
                }
            )
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _eps_text(eps: float) -> str:
    if eps is None or (isinstance(eps, float) and math.isnan(eps)):
        return "–"
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def _pct(x: float) -> str:
    return "nan" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def _num(x: float, digits: int = 3) -> str:
    return "nan" if x is None or math.isnan(x) else f"{x:.{digits}g}"


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(table: pd.DataFrame | EvaluationReport | Sequence[EvaluationReport]) -> str:
    """The results table as Markdown (rates in %), flagging numbers of models that failed or skipped the
    gradient-masking diagnostics with ``⚠`` and a footnote."""
    df = table if isinstance(table, pd.DataFrame) else results_table(table)
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"table is missing columns {missing}; build it with results_table()")
    headers = [
        "model",
        "attack",
        "ε",
        "ODR %",
        "ASR %",
        "robust acc %",
        "s / example",
        "fwd / example",
        "bwd / example",
        "masking",
    ]
    rows = []
    flagged = False
    for _, r in df.iterrows():
        mark = "" if bool(r["trustworthy"]) else f" {_FLAG}"
        flagged = flagged or bool(mark)
        rows.append(
            [
                str(r["model"]),
                str(r["attack"]),
                _eps_text(r["eps"]),
                _pct(r["odr"]) + mark,
                _pct(r["asr"]) + mark,
                _pct(r["robust_accuracy"]) + mark,
                _num(r["seconds_per_example"]),
                _num(r["forward_per_example"], 4),
                _num(r["backward_per_example"], 4),
                str(r["masking"]),
            ]
        )
    text = _markdown(headers, rows)
    if flagged:
        text += (
            f"\n\n{_FLAG} The model failed (or did not run) the gradient-masking diagnostics: its ASR may "
            "understate what an adaptive attacker achieves, and its robust accuracy may overstate robustness."
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
