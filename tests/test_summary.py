"""The sweep summary without Ray: the champion by the space's rule and why, the quantum gain against the classical
control with intervals, the trials table and the Pareto plot data (trial records built by hand)."""

from __future__ import annotations

import math

import pytest

from orchestrator.runtime import (
    SweepResult,
    TrialRecord,
    format_summary,
    pareto_plot_data,
    plot_pareto,
    summarise,
    trial_row,
)
from qshield.evaluation import difference_interval, wilson_interval

N_TEST, N_EVAL = 1000, 200


def _trial(tid: str, arch: str, method: str, correct: int, robust: int) -> TrialRecord:
    acc, rob = correct / N_TEST, robust / N_EVAL
    metrics = {
        "final": True, "n_test": N_TEST, "n_eval": N_EVAL,
        "accuracy": acc, "robust_accuracy": rob, "asr": 1 - rob / acc if acc else math.nan,
        "strongest_attack": "pgd", "adversary_cost": 0.1, "trustworthy": True, "flag": "ok",
    }
    metrics["accuracy_ci_low"], metrics["accuracy_ci_high"] = wilson_interval(correct, N_TEST)
    metrics["robust_accuracy_ci_low"], metrics["robust_accuracy_ci_high"] = wilson_interval(robust, N_EVAL)
    return TrialRecord(tid, "finished", {"arch": arch, "method": method, "entanglement": "ring", "noise": "mixed",
                                         "noise_strength": 0.02}, metrics)


def _result(trials: list[TrialRecord]) -> SweepResult:
    result = SweepResult("demo", "/tmp/x", "sqlite:///x.db", "parent", {"accuracy": "max", "robust_accuracy": "max"})
    result.trials = trials
    summarise(result)
    return result


def test_summary_names_the_champion_and_the_quantum_gain_with_intervals():
    trials = [
        _trial("cnn_std", "cnn", "standard", 962, 0),
        _trial("hyb_std", "hybrid", "standard", 958, 2),
        _trial("cnn_at", "cnn", "pgd_at", 957, 170),
        _trial("hyb_at", "hybrid", "pgd_at", 955, 176),
        _trial("hyb_low", "hybrid", "pgd_at", 900, 190),  # most robust, but 6 points below the best: not eligible
    ]
    result = _result(trials)
    done = result.finished()
    # robust_floor: within 0.02 of 0.962 -> cnn_std, hyb_std, cnn_at, hyb_at; most robust of those: hyb_at
    assert done[result.champion].trial_id == "hyb_at"
    assert "highest worst-case robust accuracy 0.880" in result.champion_reason
    # best hybrid (hyb_at) vs best classical control (cnn_at), each by the same rule among its kind
    gain = result.quantum_gain
    assert gain["available"] and (gain["hybrid_trial"], gain["control_trial"]) == ("hyb_at", "cnn_at")
    expected = difference_interval(176, N_EVAL, 170, N_EVAL)
    got = gain["robust_accuracy"]
    assert (got["gain"], got["ci_low"], got["ci_high"]) == pytest.approx(expected)
    assert gain["accuracy"]["gain"] == pytest.approx(955 / N_TEST - 957 / N_TEST)
    assert "not significant" in gain["message"]  # +0.03 with 200 images each: the interval contains 0
    text = format_summary(result)
    assert "Champion: trial hyb_at" in text and "Quantum gain: best hybrid (trial hyb_at)" in text
    assert "0.880 [0.83,0.92]" in text  # the champion's robust accuracy with its Wilson interval
    markdown = format_summary(result, markdown=True)
    assert "| ★ | hyb_at |" in markdown


def test_the_quantum_gain_compares_models_trained_the_same_way():
    """The demo's situation: the most accurate control is a plainly trained CNN (no robustness), the best hybrid
    is PGD-trained. Crediting the circuit with +0.95 robust accuracy would be adversarial training's gain; the
    comparison is with the PGD-trained CNN, although its clean accuracy is lower."""
    trials = [
        _trial("cnn_std", "cnn", "standard", 971, 0),
        _trial("cnn_at", "cnn", "pgd_at", 943, 186),
        _trial("hyb_at", "hybrid", "pgd_at", 955, 190),
    ]
    gain = _result(trials).quantum_gain
    assert (gain["hybrid_trial"], gain["control_trial"], gain["same_method"]) == ("hyb_at", "cnn_at", True)
    assert gain["robust_accuracy"]["gain"] == pytest.approx((190 - 186) / N_EVAL)
    assert "both trained with pgd_at" in gain["message"]
    # without a PGD-trained control the comparison is made, and labelled for what it is
    lone = _result([_trial("cnn_std", "cnn", "standard", 971, 0), _trial("hyb_at", "hybrid", "pgd_at", 955, 190)])
    assert not lone.quantum_gain["same_method"]
    assert "no classical control trained with pgd_at" in lone.quantum_gain["message"]


def test_a_sweep_without_classical_control_says_so():
    result = _result([_trial("a", "hybrid", "standard", 950, 10), _trial("b", "hybrid", "pgd_at", 940, 150)])
    assert result.quantum_gain == {"available": False, "message": "no classical control in this sweep"}
    assert "Quantum gain: no classical control in this sweep." in format_summary(result)


def test_a_significant_gain_is_called_significant():
    result = _result([_trial("c", "cnn", "pgd_at", 950, 100), _trial("h", "hybrid", "pgd_at", 951, 170)])
    gain = result.quantum_gain
    assert gain["robust_accuracy"]["ci_low"] > 0 and "(significant)" in gain["message"]


def test_trials_table_rows_link_runs_and_the_plot_data_carries_intervals(tmp_path):
    trials = [_trial("cnn_at", "cnn", "pgd_at", 957, 170), _trial("hyb_at", "hybrid", "pgd_at", 955, 176)]
    result = _result(trials)
    row = trial_row(result.finished()[0], True, False, "run-123")
    assert row["run_id"] == "run-123" and row["robust_accuracy_ci_low"] == trials[0].metrics["robust_accuracy_ci_low"]
    data = pareto_plot_data(result)
    assert data.arch == ("cnn", "hybrid") and data.champion == result.champion
    assert data.robust_accuracy_ci[1] == pytest.approx(wilson_interval(176, N_EVAL))
    png = tmp_path / "pareto.png"
    assert plot_pareto(data, png) is data and png.read_bytes()[:4] == b"\x89PNG"


def test_a_trial_without_a_finite_objective_is_kept_but_not_ranked():
    broken = _trial("nan", "hybrid", "standard", 0, 0)
    broken.metrics["robust_accuracy"] = math.nan
    result = _result([broken, _trial("ok", "cnn", "standard", 950, 10)])
    assert [result.finished()[i].trial_id for i in result.front] == ["ok"]
    assert result.finished()[result.champion].trial_id == "ok"


def test_the_summary_ends_the_runs_of_trials_the_restored_experiment_does_not_know(tmp_path):
    """A real sqlite MLflow store: the sweep's trial runs ``a`` and ``b`` are Tune's (one finished, one failed and
    still to be ended by the callback's own path), ``c`` was started by a killed driver after Tune's last snapshot
    and ``d`` is an older run that already ended. Summarising ends ``c`` only: KILLED, tagged abandoned; the others
    keep their status."""
    from mlflow import MlflowClient

    from orchestrator.runtime._summary import ABANDONED
    from orchestrator.tracking import TRIAL, SweepTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker("demo", "qshield-test", uri, retries=0)
    parent = tracker.parent_run_id()
    ids = {tid: tracker.trial_run_id(tid) for tid in "abcd"}
    tracker.finish(ids["a"], "FINISHED")
    tracker.finish(ids["d"], "FAILED")
    result = SweepResult("demo", str(tmp_path), uri, parent, {"accuracy": "max", "robust_accuracy": "max"})
    result.trials = [_trial("a", "cnn", "standard", 900, 100),
                     TrialRecord("b", "error", {"arch": "cnn"}, {}, error="boom")]
    summarise(result, tracker)
    client = MlflowClient(uri)
    runs = {r.data.tags[TRIAL]: r for r in tracker.trial_runs()}
    status = {tid: client.get_run(ids[tid]).info.status for tid in "abcd"}
    assert status == {"a": "FINISHED", "b": "RUNNING", "c": "KILLED", "d": "FAILED"}
    assert [tid for tid, r in runs.items() if ABANDONED in r.data.tags] == ["c"]
    assert client.get_run(parent).info.status == "FINISHED"
