"""The end of a sweep: Pareto front, the champion by the space's selection rule and why, the quantum gain
against the classical control, the Pareto plot, the trials table and the terminal / Markdown summary.

Pure functions over :class:`TrialRecord` objects (no Ray); :func:`summarise` also logs the results to the sweep's
parent run when given a tracker.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..scoring import NoFeasiblePointError, NoTrustworthyPointError, choose, knee_point, pareto_front, selection_metrics
from ..space import Arch
from ..tracking import TRIAL, SweepTracker

log = logging.getLogger(__name__)


@dataclass
class TrialRecord:
    """One trial of a finished (or interrupted) sweep as the driver saw it."""

    trial_id: str
    status: str  # "finished", "stopped_early" or "error"
    config: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None = None
    node_ip: str | None = None


@dataclass
class SweepResult:
    name: str
    storage_path: str
    tracking_uri: str
    parent_run_id: str
    directions: dict[str, str]
    trials: list[TrialRecord] = field(default_factory=list)
    front: list[int] = field(default_factory=list)  # indices into finished()
    knee: int | None = None  # index into finished()
    selection: dict[str, Any] = field(default_factory=lambda: {"rule": "robust_floor", "accuracy_floor": 0.02})
    constraints: dict[str, float] = field(default_factory=dict)
    champion: int | None = None  # index into finished(): what `select` with the space's rule registers
    champion_reason: str = ""  # why it won; why there is none when `select` would refuse (champion None)
    quantum_gain: dict[str, Any] | None = None

    def finished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.status == "finished"]



class ParetoPlotData(NamedTuple):
    """What the Pareto plot draws: one entry per finished trial (plot from data; tests assert on this)."""

    trial_ids: tuple[str, ...]
    accuracy: tuple[float, ...]
    accuracy_ci: tuple[tuple[float, float], ...]
    robust_accuracy: tuple[float, ...]
    robust_accuracy_ci: tuple[tuple[float, float], ...]
    arch: tuple[str, ...]
    on_front: tuple[bool, ...]
    champion: int | None


def _metric(t: TrialRecord, key: str) -> float:
    value = t.metrics.get(key)
    return float(value) if _finite(value) else float("nan")


def _ci(t: TrialRecord, key: str) -> tuple[float, float]:
    return (_metric(t, f"{key}_ci_low"), _metric(t, f"{key}_ci_high"))


def pareto_plot_data(result: SweepResult) -> ParetoPlotData:
    done = result.finished()
    front = set(result.front)
    return ParetoPlotData(
        tuple(t.trial_id for t in done),
        tuple(_metric(t, "accuracy") for t in done),
        tuple(_ci(t, "accuracy") for t in done),
        tuple(_metric(t, "robust_accuracy") for t in done),
        tuple(_ci(t, "robust_accuracy") for t in done),
        tuple(str(t.config.get("arch", "")) for t in done),
        tuple(i in front for i in range(len(done))),
        result.champion,
    )


def plot_pareto(data: ParetoPlotData, path: str | os.PathLike) -> ParetoPlotData:
    """Clean accuracy vs worst-case robust accuracy with 95% intervals, one marker per architecture; the Pareto
    front ringed, the champion starred. Returns ``data``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    markers = {"hybrid": "o", "cnn": "s", "dnn": "^", "resnet18": "D"}
    for arch in sorted(set(data.arch)):
        idx = [i for i, a in enumerate(data.arch) if a == arch]
        x = [data.robust_accuracy[i] for i in idx]
        y = [data.accuracy[i] for i in idx]
        xerr = [[max(0.0, x[j] - data.robust_accuracy_ci[i][0]) for j, i in enumerate(idx)],
                [max(0.0, data.robust_accuracy_ci[i][1] - x[j]) for j, i in enumerate(idx)]]
        yerr = [[max(0.0, y[j] - data.accuracy_ci[i][0]) for j, i in enumerate(idx)],
                [max(0.0, data.accuracy_ci[i][1] - y[j]) for j, i in enumerate(idx)]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=markers.get(arch, "P"), ms=7, capsize=2, alpha=0.85,
                    label=arch or "trial", zorder=2)
    front = [i for i, f in enumerate(data.on_front) if f]
    if front:
        ax.scatter([data.robust_accuracy[i] for i in front], [data.accuracy[i] for i in front], facecolors="none",
                   edgecolors="red", s=170, linewidths=1.5, label="Pareto front", zorder=3)
    if data.champion is not None:
        ax.scatter([data.robust_accuracy[data.champion]], [data.accuracy[data.champion]], marker="*", c="gold",
                   edgecolors="black", s=300, label="champion", zorder=4)
    for i, tid in enumerate(data.trial_ids):
        ax.annotate(tid[-5:], (data.robust_accuracy[i], data.accuracy[i]), fontsize=7, xytext=(5, -10),
                    textcoords="offset points")
    ax.set_xlabel("worst-case robust accuracy (all attacks) ↑")
    ax.set_ylabel("clean accuracy ↑")
    ax.set_title("Sweep trials (bars: 95% Wilson intervals)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return data


#: Architectures without a quantum part: a sweep's classical controls.
CLASSICAL_ARCHS = frozenset({Arch.DNN.value, Arch.CNN.value, Arch.RESNET18.value})


def is_classical(t: TrialRecord) -> bool:
    """The trial's model has no quantum part (a classical control)."""
    return str(t.config.get("arch", "")) in CLASSICAL_ARCHS


def _count(t: TrialRecord, rate: str, n: str) -> tuple[int, int]:
    total = int(t.metrics.get(n) or 0)
    return round(_metric(t, rate) * total), total


def quantum_gain(result: SweepResult, ranked: list[int]) -> dict[str, Any]:
    """Best hybrid vs best classical control of the sweep: the gains in worst-case robust accuracy and in clean
    accuracy, with Newcombe 95% intervals.

    The best hybrid is the pick of the sweep's selection rule among the hybrids; the control it is compared with
    is the pick of the same rule among the classical controls **trained with the same method** (a PGD-trained
    hybrid against a plainly trained CNN would credit the circuit with what adversarial training did); only when
    the sweep has no such control, the best control of any method, and the message says so.

    Returns ``{"available": False, "message": ...}`` when the sweep has no classical control or no hybrid.
    """
    from qshield.evaluation import difference_interval

    done = result.finished()
    hybrids = [i for i in ranked if not is_classical(done[i])]
    controls = [i for i in ranked if is_classical(done[i])]
    if not controls:
        return {"available": False, "message": "no classical control in this sweep"}
    if not hybrids:
        return {"available": False, "message": "no hybrid in this sweep (classical models only)"}
    best_h = _pick(result, hybrids)[0]
    method = done[best_h].config.get("method")
    matched = [i for i in controls if done[i].config.get("method") == method]
    best_c = _pick(result, matched or controls)[0]
    h, c = done[best_h], done[best_c]
    out: dict[str, Any] = {"available": True, "hybrid_trial": h.trial_id, "control_trial": c.trial_id,
                           "hybrid_arch": str(h.config.get("arch")), "control_arch": str(c.config.get("arch")),
                           "method": method, "same_method": bool(matched)}
    for rate, n in (("robust_accuracy", "n_eval"), ("accuracy", "n_test")):
        (kh, nh), (kc, nc) = _count(h, rate, n), _count(c, rate, n)
        d, lo, hi = difference_interval(kh, nh, kc, nc)
        out[rate] = {"hybrid": _metric(h, rate), "control": _metric(c, rate), "gain": d, "ci_low": lo, "ci_high": hi}
    g = out["robust_accuracy"]
    verdict = ("significant" if g["ci_low"] > 0 else "significantly negative" if g["ci_high"] < 0
               else "not significant (the interval contains 0)")
    training = (f"both trained with {method}" if matched else
                f"no classical control trained with {method}: compared with one trained with "
                f"{c.config.get('method')}, so the gain mixes the circuit with the training method")
    out["message"] = (
        f"best hybrid (trial {h.trial_id}) vs best classical control (trial {c.trial_id}, {out['control_arch']}; "
        f"{training}): worst-case robust accuracy {g['gain']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] "
        f"({verdict}); clean accuracy {out['accuracy']['gain']:+.3f} "
        f"[{out['accuracy']['ci_low']:+.3f}, {out['accuracy']['ci_high']:+.3f}]"
    )
    return out


def _pick(result: SweepResult, candidates: list[int]) -> tuple[int | None, str]:
    """The trial the sweep's selection rule picks among ``candidates`` (indices into finished()) and why, as
    ``select`` would (flagged trials set aside, constraints applied); ``(None, why not)`` when ``select`` would
    refuse: every trial flagged, or none feasible."""
    done = result.finished()
    keys = selection_metrics(result.directions, result.constraints)
    points = [{k: _metric(done[i], k) for k in keys} | {  # NaN: no value (fails a constraint on it)
        k + s: float(done[i].metrics[k + s]) for k in keys for s in ("_ci_low", "_ci_high")
        if _finite(done[i].metrics.get(k + s))} for i in candidates]
    flags = [None if done[i].metrics.get("trustworthy") else str(done[i].metrics.get("flag") or "unchecked")
             for i in candidates]
    try:
        j, reason = choose(points, result.selection.get("rule", "robust_floor"), result.directions,
                           constraints=result.constraints, ids=[done[i].trial_id for i in candidates],
                           accuracy_floor=float(result.selection.get("accuracy_floor", 0.02)), flags=flags)
    except (NoFeasiblePointError, NoTrustworthyPointError) as exc:
        return None, str(exc)
    return candidates[j], reason


def summarise(result: SweepResult, tracker: SweepTracker | None = None) -> None:
    """Pareto front, knee and the champion by the sweep's rule over the finished trials, the quantum gain; log the
    plot, the trials table (with run ids) and a summary to the parent run.

    A finished trial with an undefined objective (e.g. ``asr`` is NaN when none of the ``n_eval`` test images was
    classified correctly, so there was nothing to attack) stays in the table but cannot be ranked: it is left
    out of the front, the knee and the choice, with a warning (no Pareto plot when no trial can be ranked).
    """
    done = result.finished()
    ranked = [i for i, t in enumerate(done) if all(_finite(t.metrics.get(k)) for k in result.directions)]
    if len(ranked) < len(done):
        log.warning("sweep %s: trial(s) %s finished with a non-finite objective (of %s); not ranked", result.name,
                    ", ".join(done[i].trial_id for i in range(len(done)) if i not in ranked),
                    ", ".join(result.directions))
    points = [{k: float(done[i].metrics[k]) for k in result.directions} for i in ranked]
    if points:
        result.front = [ranked[j] for j in pareto_front(points, result.directions)]
        result.knee = ranked[knee_point(points, result.directions)]
        # robust_floor also reads accuracy and robust_accuracy, objectives or not
        extra = ("accuracy", "robust_accuracy") if result.selection.get("rule", "robust_floor") == "robust_floor" else ()
        choosable = [i for i in ranked if all(_finite(done[i].metrics.get(k)) for k in extra)]
        if choosable:
            result.champion, result.champion_reason = _pick(result, choosable)
            result.quantum_gain = quantum_gain(result, choosable)
    if tracker is None:
        return
    trial_runs = tracker.trial_runs()
    close_abandoned(tracker, trial_runs, {t.trial_id for t in result.trials})
    runs = {r.data.tags.get(TRIAL): r.info.run_id for r in trial_runs}
    rows = [trial_row(t, i in result.front, i == result.champion, runs.get(t.trial_id)) for i, t in enumerate(done)]
    rows += [trial_row(t, False, False, runs.get(t.trial_id)) for t in result.trials if t.status != "finished"]
    if rows:
        tracker.log_table(result.parent_run_id, rows, "trials.json")
    if result.front:
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "pareto.png"
            plot_pareto(pareto_plot_data(result), png)
            tracker.log_artifacts(result.parent_run_id, tmp)
    tracker.log_json(result.parent_run_id, result.quantum_gain or {"available": False, "message": "no ranked trial"},
                     "quantum_gain.json")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "summary.md").write_text(format_summary(result, markdown=True), encoding="utf-8")
        tracker.log_artifacts(result.parent_run_id, tmp)
    tracker.log_metrics(
        result.parent_run_id,
        {"trials_finished": len(done), "trials_failed": sum(t.status == "error" for t in result.trials),
         "trials_stopped_early": sum(t.status == "stopped_early" for t in result.trials),
         "pareto_front_size": len(result.front)},
    )
    tracker.finish(result.parent_run_id, "FINISHED")


#: tag of a trial run whose trial Tune's restored experiment does not know (see :func:`close_abandoned`)
ABANDONED = "qshield.abandoned"


def close_abandoned(tracker: SweepTracker, trial_runs: list[Any], known: set[str]) -> list[str]:
    """End as ``KILLED``, tagged :data:`ABANDONED`, the sweep's trial runs still ``RUNNING`` whose trial the sweep's
    Tune experiment does not hold; returns their trial ids.

    Such a run is left by a driver killed between starting a trial and Tune's next snapshot of its state: the
    restored experiment has no record of that trial, so its searcher suggests a fresh one (a new trial id) and
    nothing would ever end the old run. It keeps what it logged; selection reads only finished runs.
    """
    abandoned = [r for r in trial_runs if r.info.status == "RUNNING" and r.data.tags.get(TRIAL) not in known]
    for run in abandoned:
        tracker.set_tags(run.info.run_id, {ABANDONED: "true: its driver was killed before Tune recorded the trial; "
                                                      "the resumed sweep ran a fresh trial instead"})
        tracker.finish(run.info.run_id, "KILLED")
    if abandoned:
        log.warning("sweep %s: %d trial run(s) of a killed driver that Tune never recorded ended as KILLED (%s): %s",
                    tracker.sweep, len(abandoned), ABANDONED,
                    ", ".join(str(r.data.tags.get(TRIAL)) for r in abandoned))
    return [str(r.data.tags.get(TRIAL)) for r in abandoned]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: Columns of the trials table (parent-run artifact ``trials.json``) besides the searched parameters.
TRIAL_COLUMNS = (
    "accuracy", "accuracy_ci_low", "accuracy_ci_high", "robust_accuracy", "robust_accuracy_ci_low",
    "robust_accuracy_ci_high", "asr", "asr_ci_low", "asr_ci_high", "strongest_attack", "adversary_cost",
    "trustworthy", "flag",
)


def trial_row(t: TrialRecord, on_front: bool, champion: bool, run_id: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"trial_id": t.trial_id, "run_id": run_id, "status": t.status}
    for key in TRIAL_COLUMNS:
        row[key] = t.metrics.get(key)
    row.update({"pareto": on_front, "champion": champion})
    for key in ("arch", "method", "entanglement", "noise", "noise_strength", "fusion", "w_q", "n_qubits", "depth",
                "measurement", "lr", "epochs"):
        if key in t.config:
            row[key] = t.config[key]
    if t.error:
        row["error"] = t.error
    return row


def _pm(t: TrialRecord, key: str) -> str:
    value = _metric(t, key)
    lo, hi = _ci(t, key)
    if math.isnan(value):
        return "  n/a"
    if math.isnan(lo) or math.isnan(hi):
        return f"{value:.3f}"
    return f"{value:.3f} [{lo:.2f},{hi:.2f}]"


def format_summary(result: SweepResult, markdown: bool = False) -> str:
    """The trials with their numbers and intervals, the Pareto front and champion marked, why the champion won,
    and the quantum gain (plain text for the terminal, or Markdown for the parent run's ``summary.md``)."""
    done = result.finished()
    head = (f"Sweep {result.name!r}: {len(done)} finished, "
            f"{sum(t.status == 'stopped_early' for t in result.trials)} stopped early, "
            f"{sum(t.status == 'error' for t in result.trials)} failed")
    columns = ["", "trial", "arch", "method", "circuit", "clean acc [95% CI]", "robust acc [95% CI]",
               "strongest", "min ε", "flags"]
    rows = []
    for i, t in enumerate(done):
        mark = "★" if i == result.champion else ("•" if i in result.front else "")
        c, m = t.config, t.metrics
        circuit = "-" if is_classical(t) else (
            f"{c.get('entanglement', '')}/{c.get('noise', '')}" + (f"({c.get('noise_strength', 0):g})"
                                                                   if c.get("noise") not in (None, "none") else ""))
        cost = _metric(t, "adversary_cost")
        rows.append([mark, t.trial_id[-13:], str(c.get("arch", "")), str(c.get("method", "")), circuit,
                     _pm(t, "accuracy"), _pm(t, "robust_accuracy"), str(m.get("strongest_attack") or "-"),
                     "n/a" if math.isnan(cost) else f"{cost * 255:.1f}/255",
                     str(m.get("flag") or ("ok" if m.get("trustworthy") else "unchecked"))])
    failed = [f"FAILED {t.trial_id}: {t.error}" for t in result.trials if t.status == "error"]
    legend = ("★ champion (rule " + str(result.selection.get("rule")) + ")   • Pareto front ("
              + ", ".join(f"{k} {'↑' if d == 'max' else '↓'}" for k, d in result.directions.items()) + ")   "
              "robust acc: per-example worst case over all attacks; min ε: median smallest flipping ε")
    lines = [head]
    if markdown:
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in rows]
        lines += [""] + [f"* {f}" for f in failed] + ["", legend]
    else:
        widths = [max(len(columns[k]), *(len(r[k]) for r in rows)) if rows else len(columns[k])
                  for k in range(len(columns))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines += [fmt.format(*columns), "-" * (sum(widths) + 2 * len(widths))]
        lines += [fmt.format(*r) for r in rows] + failed + [legend]
    if result.champion is not None:
        lines.append(("" if not markdown else "\n") + f"Champion: trial {done[result.champion].trial_id} — "
                     f"{result.champion_reason}.")
    elif result.champion_reason:
        lines.append(("" if not markdown else "\n") + f"No champion: {result.champion_reason}.")
    if result.quantum_gain is not None:
        lines.append(f"Quantum gain: {result.quantum_gain['message']}.")
    return "\n".join(lines)
