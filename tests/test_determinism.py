"""Determinism (issue 6, item 4): the same seed and config give the same metrics on CPU, and a sweep trial
recorded in MLflow is re-run exactly by ``qshield rerun RUN_ID``.

The trial is a real :func:`orchestrator.trial.run_trial` on sklearn digits (200 training / 40 test images, a
hybrid small CNN + 4-qubit noisy circuit, 5 epochs, FGSM and 3-step PGD on 16 images). It is logged into a
sqlite MLflow store by the sweep's own :class:`~orchestrator.runtime.MLflowTrialCallback` (the Tune callback,
driven here by hand with a stand-in for Tune's ``Trial`` that carries the id, config, last result and checkpoint,
so no Ray cluster is started), exactly as a sweep logs it: params, per-epoch and final metrics, and the ``model``
artifact directory. ``qshield rerun`` is run in a fresh Python process, so the re-run shares nothing with the
process that recorded the trial.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from orchestrator.runtime import to_tune_param_space
from orchestrator.space import SweepSpace, parse_space
from orchestrator.trial import MODEL_FILE, run_trial
from qshield.models import load_model
from tests.test_sweep import TrialStub

ROOT = Path(__file__).resolve().parents[1]
SWEEP = "determinism"
EXPERIMENT = "qshield-determinism"

TINY_SPACE: dict[str, Any] = {
    "name": SWEEP,
    "dataset": "digits",
    "limit_train": 200,
    "limit_test": 40,
    "seed": 0,
    "parameters": {
        "arch": "hybrid",
        "backbone": "cnn",
        "n_qubits": 4,
        "depth": 1,
        "entanglement": {"choice": ["none", "linear"]},
        "noise": "depolarizing",
        "noise_strength": 0.05,
        "fusion": "gated",
        "lr": 3.0e-3,
        "epochs": 5,
        "batch_size": 16,
    },
    "attacks": {
        "names": ["fgsm", "pgd"],
        "n_eval": 16,
        "batch_size": 16,
        "diagnostics": False,
        "settings": {"pgd": {"steps": 3, "alpha": "12/255"}},
    },
    "resources": {"cpus": 1, "gpus": 0},
    "num_samples": 1,
}


def tiny(seed: int = 0) -> tuple[dict[str, Any], SweepSpace]:
    """The trial's sampled parameters (the searched entanglement drawn as 'linear') and its space."""
    space = parse_space({**TINY_SPACE, "seed": seed}, source="<test>")
    params = {k: ("linear" if hasattr(v, "sample") else v) for k, v in to_tune_param_space(space).items()}
    return params, space


def is_timing(key: str) -> bool:
    return "seconds" in key or "time" in key



@dataclass
class Run:
    """What one run_trial reported: per-epoch rows, the final metrics, and the final weights."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)


def run_once(seed: int = 0) -> Run:
    params, space = tiny(seed)
    out = Run()

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if metrics.get("final"):
            model, _ = load_model(Path(checkpoint_dir) / "model" / MODEL_FILE)
            out.weights = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            out.epochs.append(dict(metrics))

    out.final = run_trial(params, space, report)
    return out


def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Everything but wall-clock timings (attack_table rows without their seconds too)."""
    out = {k: v for k, v in metrics.items() if not is_timing(k) and k != "attack_table"}
    if "attack_table" in metrics:
        out["attack_table"] = [{k: v for k, v in row.items() if not is_timing(k)} for row in metrics["attack_table"]]
    return out


def test_same_seed_and_config_give_identical_metrics_on_cpu() -> None:
    a, b = run_once(), run_once()
    # a real, non-trivial trial: it learned, and both attacks had correctly classified images to attack
    assert a.final["accuracy"] > 0.5
    assert all(row["n_attacked"] > 0 for row in a.final["attack_table"])
    assert len(a.epochs) == TINY_SPACE["parameters"]["epochs"]
    # every metric identical (exact float equality), at every epoch and at the end, and every weight bit-identical
    assert [comparable(r) for r in a.epochs] == [comparable(r) for r in b.epochs]
    assert comparable(a.final) == comparable(b.final)
    assert a.weights.keys() == b.weights.keys()
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    # the comparison is sensitive: another seed gives other numbers
    c = run_once(seed=1)
    assert [r["train_loss"] for r in c.epochs] != [r["train_loss"] for r in a.epochs]
    assert not all(torch.equal(a.weights[k], c.weights[k]) for k in a.weights)


# ---------------------------------------------------------------------------------------------------------
# qshield rerun


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One trial run and logged to a fresh sqlite store exactly as a sweep's Tune callback logs it."""
    from ray import tune

    from orchestrator.runtime import MLflowTrialCallback
    from orchestrator.tracking import SweepTracker

    tmp = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # MLflow puts a sqlite store's artifacts under ./mlruns
        mp.setenv("QSHIELD_GIT_SHA", "test")
        torch.set_num_threads(1)
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        tracker = SweepTracker(SWEEP, EXPERIMENT, uri, retries=0)
        params, space = tiny()
        callback = MLflowTrialCallback(tracker)
        callback.setup()
        trial = TrialStub("det_00000", params)
        callback.on_trial_start(0, [], trial)
        checkpoints = tmp / "checkpoints"

        def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
            trial.last_result = dict(metrics)
            callback.on_trial_result(0, [], trial, result=dict(metrics))
            if checkpoint_dir is not None:  # Tune persists the reported directory; keep a copy like it does
                suffix = "_final" if metrics.get("final") else ""
                keep = checkpoints / f"checkpoint_{int(metrics.get('epoch', 0)):03d}{suffix}"
                shutil.copytree(checkpoint_dir, keep)
                trial.checkpoint = tune.Checkpoint.from_directory(str(keep))

        final = run_trial(params, space, report)
        callback.on_trial_complete(0, [], trial)
        run_id = callback._runs[trial.trial_id]
        yield {"tmp": tmp, "uri": uri, "run_id": run_id, "parent_id": tracker.find_parent_run_id(), "final": final,
               "model": checkpoints / max(p.name for p in checkpoints.iterdir()) / "model" / MODEL_FILE}


def qshield(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``qshield ...`` in a fresh process (the console script is ``orchestrator.cli:main``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_sweep_records_everything_needed_to_rerun_a_trial(logged: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(logged["uri"])
    run = client.get_run(logged["run_id"])
    import mlflow

    model_id = run.data.tags["qshield.model_id"]
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=str(logged["tmp"] / "dl"),
                                                     tracking_uri=logged["uri"])) / "artifacts"
    assert {p.name for p in local.iterdir()} == {
        "model.pt", "params.json", "space.json", "metrics.json", "input_example.npy"}
    params, space = tiny()
    # the logged params are the sampled parameters, the space artifact is the whole validated space
    assert {k: run.data.params[k] for k in params} == {k: str(v) for k, v in params.items()}
    assert json.loads((local / "params.json").read_text()) == params
    assert parse_space(json.loads((local / "space.json").read_text())) == space
    assert run.data.metrics["accuracy"] == logged["final"]["accuracy"]


def test_rerun_reproduces_the_logged_trial_in_a_fresh_process(logged: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "rerun.pt"
    proc = qshield("rerun", logged["run_id"], "--tracking-uri", logged["uri"], "--no-progress", "--out", str(out),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert any(line.startswith("reproduced: all") for line in lines), proc.stdout
    # the table shows the recorded and re-run values side by side, for the objectives and every epoch's loss
    final = logged["final"]
    for key in ("accuracy", "asr", "robust_accuracy", "adversary_cost", "attack/pgd/asr"):
        (row,) = [line for line in lines if line.split()[:1] == [key]]
        assert row.split()[1:] == [f"{final[key]:.12g}", f"{final[key]:.12g}", "ok"], row
    epochs = TINY_SPACE["parameters"]["epochs"]
    assert sum(line.split()[:1] == ["train_loss"] for line in lines) == epochs
    assert not any("DIFFERS" in line for line in lines)
    # independent check of the weights the fresh process trained
    recorded, _ = load_model(logged["model"])
    rerun, _ = load_model(out)
    assert all(torch.equal(v, rerun.state_dict()[k]) for k, v in recorded.state_dict().items())


def test_rerun_fails_when_the_record_differs(logged: dict[str, Any], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A tampered record (a different accuracy logged later at the final step) is reported, exit status 1."""
    from mlflow import MlflowClient

    from orchestrator.cli import main

    db = tmp_path / "tampered.db"
    shutil.copy(logged["tmp"] / "mlflow.db", db)  # artifacts stay where they are (absolute paths in the store)
    uri = f"sqlite:///{db}"
    epochs = TINY_SPACE["parameters"]["epochs"]
    MlflowClient(uri).log_metric(logged["run_id"], "accuracy", logged["final"]["accuracy"] - 0.25, step=epochs)
    code = main(["rerun", logged["run_id"], "--tracking-uri", uri, "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    tampered, recorded = logged["final"]["accuracy"] - 0.25, logged["final"]["accuracy"]
    differs = [line for line in out.splitlines() if line.endswith("DIFFERS")]
    # the MLflow value no longer agrees with the trial's own metrics.json, nor with the re-run
    assert [line.split()[:4] for line in differs] == [
        ["accuracy", "(metrics.json", "vs", "MLflow)"], ["accuracy", f"{tampered:.12g}", f"{recorded:.12g}", "DIFFERS"]
    ]
    assert "NOT reproduced: 2 of" in out
