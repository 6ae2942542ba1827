"""A trial's model as a real MLflow Model, with real parts: a sqlite MLflow store and registry,
``mlflow.pyfunc.load_model`` and a real ``mlflow models serve`` answering ``/invocations`` on localhost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient

from orchestrator.tracking import (
    MODEL_FILES,
    PYFUNC_CODE,
    UntrustedModelError,
    load_checked_pyfunc,
    use_tracking_uri,
)
from orchestrator.tracking import SweepTracker
from qshield.data import load_dataset
from qshield.models import ModelConfig, build_model, save_model

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small CNN trained on digits, written as a trial writes its model directory, logged by the tracker as a
    pyfunc LoggedModel, registered and aliased ``champion``."""
    tmp = tmp_path_factory.mktemp("mlflow_model")
    bundle = load_dataset("digits", seed=0, limit_train=300, limit_test=40, progress=False)
    config = ModelConfig.from_dict({"arch": "cnn", "in_channels": 1, "image_size": 8, "num_classes": 10})
    model = build_model(config, seed=0)
    x, y = bundle.train.tensors
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    model_dir = tmp / "model"
    model_dir.mkdir()
    save_model(model, config, model_dir / MODEL_FILES["weights"])
    for name in ("params", "space", "metrics"):
        (model_dir / MODEL_FILES[name]).write_text(json.dumps({"trial": "t0"}))
    test_x = bundle.test.tensors[0]
    np.save(model_dir / MODEL_FILES["input_example"], test_x[:2].numpy(), allow_pickle=False)

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    tracker = SweepTracker("serve", "qshield-serve", uri, retries=0)
    run_id = tracker.trial_run_id("t0")
    model_id = tracker.log_model(run_id, model_dir)
    client = MlflowClient(uri)
    client.create_registered_model("served")
    with use_tracking_uri(uri):
        version = client.create_model_version("served", source=f"models:/{model_id}", run_id=run_id,
                                              model_id=model_id)
    client.set_registered_model_alias("served", "champion", version.version)
    with torch.no_grad():
        expected = torch.softmax(model(test_x), dim=1).numpy()
    return {"tmp": tmp, "uri": uri, "model_id": model_id, "run_id": run_id, "images": test_x.numpy(),
            "expected": expected}


def test_logged_model_is_linked_to_its_run_with_signature_example_and_no_pickle(registered: dict[str, Any]) -> None:
    client = MlflowClient(registered["uri"])
    logged = client.get_logged_model(registered["model_id"])
    assert logged.source_run_id == registered["run_id"]
    run = client.get_run(registered["run_id"])
    assert [o.model_id for o in run.outputs.model_outputs] == [registered["model_id"]]
    with use_tracking_uri(registered["uri"]):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{registered['model_id']}",
                                                         dst_path=str(registered["tmp"] / "dl")))
    meta = yaml.safe_load((local / "MLmodel").read_text())
    pyfunc = meta["flavors"]["python_function"]
    # models from code: MLflow runs the copied pyfunc_classifier.py; nothing is unpickled
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model" and (local / "pyfunc_classifier.py").is_file()
    assert not list(local.rglob("*.pkl")) and not list(local.rglob("*.pickle"))
    assert meta["signature"]["inputs"] and meta["signature"]["outputs"]
    assert json.loads(meta["signature"]["inputs"])[0]["tensor-spec"]["shape"] == [-1, 1, 8, 8]
    assert meta["saved_input_example_info"]["type"] == "ndarray"
    assert {p.name for p in (local / "artifacts").iterdir()} == set(MODEL_FILES.values())


def test_pyfunc_loads_the_champion_alias_and_predicts_class_probabilities(registered: dict[str, Any],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])  # how an MLflow user points at the store
    model = mlflow.pyfunc.load_model("models:/served@champion")
    probs = model.predict(registered["images"])
    assert probs.shape == (len(registered["images"]), 10) and probs.dtype == np.float32
    assert probs == pytest.approx(registered["expected"], abs=1e-5)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(Exception, match=r"shape|\[-1, 1, 8, 8\]"):
        model.predict(np.zeros((2, 3, 8, 8), np.float32))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(registered: dict[str, Any]) -> None:
    port = _free_port()
    # as in an activated virtual environment: MLflow starts the scoring server with `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"], "OMP_NUM_THREADS": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(registered["tmp"] / "serve.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", "models:/served@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=registered["tmp"],
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (registered["tmp"] / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping within 120 s"
            time.sleep(1)
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": registered["images"].tolist()})
        assert status == 200, body
        assert np.asarray(body["predictions"]) == pytest.approx(registered["expected"], abs=1e-5)
        # a wrong shape is refused with a message, not a crash
        status, body = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": [[0.5] * 64]})
        assert status >= 400 and "shape" in json.dumps(body)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_the_registry_runs_only_qshields_own_model_code(registered: dict[str, Any], tmp_path: Path) -> None:
    """A downloaded model whose code file was changed (a tampered artifact store), or that carries a pickled
    python_model instead of code, is refused before MLflow runs anything of it."""
    import shutil

    with use_tracking_uri(registered["uri"]):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{registered['model_id']}", dst_path=str(tmp_path)))
    assert load_checked_pyfunc(local).predict(registered["images"][:1]).shape == (1, 10)
    marker = tmp_path / "ran"
    tampered = tmp_path / "tampered"
    shutil.copytree(local, tampered)
    code = tampered / PYFUNC_CODE.name
    code.write_text(f"open({str(marker)!r}, 'w').close()\n" + code.read_text())
    with pytest.raises(UntrustedModelError, match="differs"):
        load_checked_pyfunc(tampered)
    pickled = tmp_path / "pickled"
    shutil.copytree(local, pickled)
    meta = yaml.safe_load((pickled / "MLmodel").read_text())
    meta["flavors"]["python_function"]["python_model"] = "python_model.pkl"
    (pickled / "MLmodel").write_text(yaml.safe_dump(meta))
    with pytest.raises(UntrustedModelError, match="not a qshield model from code"):
        load_checked_pyfunc(pickled)
    assert not marker.exists()


def test_use_tracking_uri_puts_mlflows_process_state_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'user.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = mlflow.get_tracking_uri()
    with use_tracking_uri(f"sqlite:///{tmp_path / 'sweep.db'}"):
        assert mlflow.get_tracking_uri().endswith("sweep.db") and mlflow.get_registry_uri().endswith("sweep.db")
    assert mlflow.get_tracking_uri() == before == os.environ["MLFLOW_TRACKING_URI"]
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert MlflowClient(f"sqlite:///{tmp_path / 'other.db'}")._registry_uri.endswith("other.db")


def test_select_that_loses_the_race_to_tag_and_alias_the_new_version_retries_and_converges(
    registered: dict[str, Any], tmp_path: Path
) -> None:
    """Selections racing each other (``qshield select`` several times at once, issue 15) tag the same new version
    and set the same alias at the same moment. MLflow's sqlite store reads, then inserts such a row, so a selection
    whose insert comes second fails with ``UNIQUE constraint failed`` (CI: one of three racers exited 1). Here the
    other selection is a second real sqlite connection that writes the same row, committed, just before this
    selection's own insert of its ``qshield.rule`` tag and of its ``champion`` alias: both writes must be done
    again (the tracker's retry) and the selection end as if it had been alone."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from orchestrator.tracking import CHAMPION, select_champion

    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    tracker = SweepTracker("racing", "qshield-race", uri, retries=0)
    parent = tracker.parent_run_id()
    run_id = tracker.trial_run_id("t0")
    model_id = tracker.log_model(run_id, registered["tmp"] / "model")
    tracker.set_tags(run_id, {"qshield.final": "true", "qshield.trustworthy": "true", "qshield.model_id": model_id})
    tracker.log_metrics(run_id, {"accuracy": 0.9, "robust_accuracy": 0.5})
    tracker.finish(run_id)
    tracker.finish(parent)

    targets = {"model_version_tags": "qshield.rule", "registered_model_aliases": CHAMPION}
    injected: list[str] = []

    def other_selection(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        table = next((t for t in targets if statement.startswith(f"INSERT INTO {t} ")), None)
        if (table is None or many or table in injected or conn.engine.url.database != str(database)
                or targets[table] not in parameters):
            return
        injected.append(table)
        with sqlite3.connect(database) as other:  # the racer: the same row, committed first
            other.execute(statement, parameters)

    event.listen(Engine, "before_cursor_execute", other_selection)
    try:
        selection = select_champion("racing", model_name="raced", experiment="qshield-race", tracking_uri=uri,
                                    verify=False)
    finally:
        event.remove(Engine, "before_cursor_execute", other_selection)
    assert sorted(injected) == sorted(targets)  # both races happened
    client = MlflowClient(uri)
    (version,) = client.search_model_versions("name = 'raced'")
    assert (str(selection.version), selection.run_id) == (str(version.version), run_id) == ("1", run_id)
    assert version.tags["qshield.rule"] == "robust_floor" and version.tags["qshield.reason"] == selection.reason
    assert str(client.get_model_version_by_alias("raced", CHAMPION).version) == "1"
    assert client.get_run(parent).data.tags["qshield.champion_model"] == "models:/raced/1"
