"""A real registry for the card and app tests, built once per test session (a pytest plugin: tests/conftest.py
names it in ``pytest_plugins``, so tests/test_card.py and tests/test_app.py share one build).

A tiny real sweep on local Ray (sqlite MLflow, sklearn digits 8x8): a hybrid (small CNN + 2-qubit circuit, learned
fusion) and its classical control (the same CNN alone), attacked with FGSM and 3-step PGD on 16 images with the
masking diagnostics on; then ``select_champion`` registers the champion (with verification, and its automatic
robustness card) and the challenger. Every model in the registry is a real trial's LoggedModel.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

EXPERIMENT, SWEEP, MODEL_NAME = "qshield-card", "cardtest", "qshield-cardtest"

SPACE: dict[str, Any] = {
    "name": SWEEP,
    "dataset": "digits",
    "limit_train": 300,
    "limit_test": 60,
    "seed": 0,
    "parameters": {
        "arch": {"choice": ["hybrid", "cnn"]},
        "backbone": "cnn",
        "n_qubits": 2,
        "depth": 1,
        "measurement": "expval",
        "entanglement": "linear",
        "fusion": "learned",
        "lr": 1.0e-2,
        "epochs": 3,
        "batch_size": 16,
    },
    "attacks": {
        "names": ["fgsm", "pgd"],
        "n_eval": 16,
        "batch_size": 16,
        "diagnostics": True,
        "settings": {"pgd": {"steps": 3}},
        "min_eps": {"rounds": 3, "steps": 3},
    },
    "objectives": {"accuracy": "max", "robust_accuracy": "max"},
    "resources": {"cpus": 1, "gpus": 0},
    "num_samples": 2,
    "max_concurrent": 2,
    "search": {"algorithm": "tpe", "n_startup_trials": 2,
               "points_to_evaluate": [{"arch": "hybrid"}, {"arch": "cnn"}]},
}


@pytest.fixture(scope="session")
def card_registry() -> Iterator[dict[str, Any]]:
    """``{"tmp", "uri", "selection", "runs": {arch: trial run}, "parent_id"}`` of the sweep described above."""
    pytest.importorskip("ray")
    pytest.importorskip("mlflow")
    import ray
    from mlflow import MlflowClient

    from orchestrator.runtime import run_sweep
    from orchestrator.space import parse_space
    from orchestrator.views import select_and_card

    tmp = Path(tempfile.mkdtemp(prefix="qshield-card-"))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        try:
            result = run_sweep(parse_space(SPACE, source="<card tests>"), storage_path=str(tmp / "ray"),
                               tracking_uri=uri, experiment=EXPERIMENT, num_cpus=2, verbose=0)
        finally:
            if ray.is_initialized():
                ray.shutdown()
        assert [t.status for t in result.trials] == ["finished"] * 2, [t.error for t in result.trials]
        selection = select_and_card(SWEEP, experiment=EXPERIMENT, tracking_uri=uri, model_name=MODEL_NAME)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`qshield.role` = 'trial'")
    by_arch = {r.data.params["arch"]: r for r in runs}
    gain = json.loads(Path(client.download_artifacts(result.parent_run_id, "quantum_gain.json", str(tmp))).read_text())
    try:
        yield {"tmp": tmp, "uri": uri, "selection": selection, "runs": by_arch, "parent_id": result.parent_run_id,
               "quantum_gain": gain}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
