"""End-to-end sweep tests with real parts: Ray (local, ``ray start`` + ``ray job submit``, a two-node
``ray.cluster_utils.Cluster``), Tune + Optuna, a sqlite MLflow store and its model registry, on sklearn digits.

Every sweep is the tiny one of :func:`tiny_space` (digits 8x8, 200 training / 60 test images, one or two epochs
of a hybrid small CNN + 2-4 qubits, FGSM + 3-step PGD on 16 images); the assertions are on what the real
components recorded, checked against independent computations (dominance by hand, accuracy recomputed from the
logged weights, the attack table against the logged metrics).

Ray processes are ended by process id only (the ``ray start --block`` process and the descendants recorded
before it was stopped), never with ``ray stop``, which would kill every Ray on the machine.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient

from orchestrator.tracking import CHAMPION, SelectionError, select_champion
from orchestrator.space import SweepSpace, parse_space
from orchestrator.runtime import SweepResult, format_summary, run_sweep
from orchestrator.runtime._callbacks import without_lists
from orchestrator.runtime._sweep import SNAPSHOT_WARNING, _snapshot_warning_off
from ray.util.debug import reset_log_once
from orchestrator.tracking import PARENT, ROLE, SWEEP, TRIAL
from qshield.data import load_dataset
from qshield.models import load_model

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENT = "qshield-test"


# ----------------------------------------------------------------------------------------------------------
# the tiny sweep


def tiny_space(name: str, **changes: Any) -> dict[str, Any]:
    """A sweep small enough for a 2-core machine: a few seconds of compute per trial."""
    space: dict[str, Any] = {
        "name": name,
        "dataset": "digits",
        "limit_train": 200,
        "limit_test": 60,
        "seed": 0,
        "parameters": {
            "arch": "hybrid",
            "backbone": "cnn",
            "n_qubits": {"int": [2, 4]},
            "depth": 1,
            "measurement": "expval",  # 2-3 qubits have fewer than 10 basis states: a linear head on <Z>
            "entanglement": {"choice": ["none", "linear"]},
            "lr": {"loguniform": [3.0e-3, 3.0e-2]},
            "epochs": 1,
            "batch_size": 16,
        },
        "attacks": {
            "names": ["fgsm", "pgd"],
            "n_eval": 16,
            "batch_size": 16,
            "diagnostics": False,
            "settings": {"pgd": {"steps": 3, "alpha": "12/255"}},
            "min_eps": {"rounds": 3, "steps": 3},
        },
        "objectives": {"accuracy": "max", "asr": "min", "adversary_cost": "max"},
        "resources": {"cpus": 1, "gpus": 0},
        "num_samples": 2,
        "max_concurrent": 2,
        "search": {"algorithm": "tpe", "n_startup_trials": 3},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(space.get(key), dict):
            space[key] = {**space[key], **value}
        else:
            space[key] = value
    return space


def build(space: dict[str, Any]) -> SweepSpace:
    return parse_space(space, source="<test>")


def write_space(path: Path, space: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A private working directory, sqlite MLflow store and Tune storage; no inherited cluster address; Tune's
    strict metric check on (every report must name the objectives)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", raising=False)
    monkeypatch.delenv(SNAPSHOT_WARNING, raising=False)  # Tune's default threshold, as for a user who set none
    return {"tmp": tmp_path, "uri": uri, "storage": tmp_path / "ray_results"}


@pytest.fixture(autouse=True)
def no_ray_left() -> Iterator[None]:
    """Disconnect from (and stop, if this process started it) any Ray after each test."""
    yield
    if ray.is_initialized():
        ray.shutdown()


# ----------------------------------------------------------------------------------------------------------
# helpers: MLflow, Tune files, processes


def runs_of(uri: str, sweep: str) -> tuple[list[Any], list[Any]]:
    """(parent runs, trial runs) of ``sweep`` in the test experiment, found by tags."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return [], []
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{SWEEP}` = '{sweep}'", max_results=1000)
    return ([r for r in runs if r.data.tags.get(ROLE) == "sweep"], [r for r in runs if r.data.tags.get(ROLE) == "trial"])


def dominates(a: dict[str, float], b: dict[str, float], directions: dict[str, str]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and strictly better on one."""
    better = [(a[k] > b[k]) if d == "max" else (a[k] < b[k]) for k, d in directions.items()]
    worse = [(a[k] < b[k]) if d == "max" else (a[k] > b[k]) for k, d in directions.items()]
    return any(better) and not any(worse)


def hand_front(points: list[dict[str, float]], directions: dict[str, str]) -> set[int]:
    return {i for i, p in enumerate(points) if not any(dominates(q, p, directions) for q in points)}


def tune_trial_states(exp_dir: Path) -> dict[str, str]:
    """``{trial_id: status}`` from the newest experiment-state file the Tune driver has written (empty if none)."""
    states = sorted(exp_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except (OSError, json.JSONDecodeError):  # written while we read: try again next poll
        return {}
    out = {}
    for trial_json, _meta in data["trial_data"]:
        trial = json.loads(trial_json)
        out[trial["trial_id"]] = trial["status"]
    return out


def result_rows(exp_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """``{trial_id: [result rows]}`` from the trials' ``result.json`` files (one JSON object per report)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in exp_dir.glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            rows[lines[0]["trial_id"]] = lines
    return rows


class TrialStub:
    """The parts of ``ray.tune.experiment.Trial`` that MLflowTrialCallback reads (for driving the callback without
    Tune)."""

    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id = trial_id
        self.config = config
        self.last_result: dict[str, Any] = {}
        self.checkpoint: Any = None
        self.error_file = None


def stop_ray_head(head: subprocess.Popen, recorded: dict[int, str], temp_dir: str) -> None:
    """Stop a ``ray start --head --block`` process (SIGTERM: the head drains, then stops the processes it started;
    SIGKILL after 90 s), then every process recorded as its descendant, and remove its temp dir."""
    recorded |= descendants(head.pid)
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(timeout=90)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    kill_recorded(recorded)
    shutil.rmtree(temp_dir, ignore_errors=True)


def check_resumed(exp_dir: Path, uri: str, sweep: str, n: int) -> tuple[dict[str, list[dict[str, Any]]], Any, list[Any]]:
    """After a killed driver's sweep was run again to its end: Tune's ``n`` trials finished, each with one finished
    MLflow run under the one parent run. Besides them there may be one trial the killed driver started after Tune's
    last snapshot of its state (trials run one at a time here): the restored experiment has no record of it (its
    searcher suggested a fresh trial instead), its directory holds no final result, and its MLflow run was ended
    ``KILLED``, tagged ``qshield.abandoned``, by the resumed sweep. Returns (final result rows by trial id, the
    parent run, the finished trial runs)."""
    from orchestrator.runtime._summary import ABANDONED

    rows = result_rows(exp_dir)
    final = {tid: rs for tid, rs in rows.items() if rs[-1].get("final")}
    partial = set(rows) - set(final)
    assert len(final) == n and len(partial) <= 1, {tid: len(rs) for tid, rs in rows.items()}
    # besides the directories of those trials, at most that of a trial the killed driver had only just started
    # (no result yet)
    trial_dirs = [p for p in exp_dir.iterdir() if p.is_dir() and p.name.startswith("qshield_trainable")]
    assert len(trial_dirs) - len(rows) <= 1 - len(partial), [p.name for p in trial_dirs]
    parents, trials = runs_of(uri, sweep)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(r.data.tags[PARENT] == parents[0].info.run_id for r in trials)
    finished = [r for r in trials if r.info.status == "FINISHED"]
    ids = [r.data.tags[TRIAL] for r in finished]
    assert sorted(ids) == sorted(final) and len(set(ids)) == n
    abandoned = [r for r in trials if r.info.status != "FINISHED"]
    assert len(abandoned) <= 1 and partial <= {r.data.tags[TRIAL] for r in abandoned}, \
        [(r.data.tags[TRIAL], r.info.status) for r in trials]
    assert all(r.info.status == "KILLED" and r.data.tags[ABANDONED].startswith("true") for r in abandoned)
    assert not {r.data.tags[TRIAL] for r in abandoned} & set(final)
    return final, parents[0], finished


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_table() -> dict[int, tuple[int, str]]:
    """``{pid: (ppid, start time)}`` from /proc (Linux)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int) -> dict[int, str]:
    """``{pid: start time}`` of every live descendant of ``pid``."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    out, todo = {}, list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out[p] = table[p][1]
        todo.extend(children.get(p, []))
    return out


def kill_recorded(procs: dict[int, str], timeout: float = 30.0) -> None:
    """SIGKILL the recorded processes that are still the same processes (pid and start time); wait for them."""
    deadline = time.monotonic() + timeout
    while True:
        table = _proc_table()
        alive = [p for p, start in procs.items() if p in table and table[p][1] == start]
        if not alive:
            return
        for p in alive:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(f"processes {alive} survived SIGKILL")
        time.sleep(0.2)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(extra)
    return env


# ----------------------------------------------------------------------------------------------------------
# (a) local Ray -> sqlite MLflow -> registry


class _Messages(logging.Handler):
    """The messages a logger emits (Ray's loggers do not propagate to pytest's handler)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def tensorboard_tags(path: Path) -> tuple[set[str], set[str]]:
    """(scalar tags, histogram tags) of a TensorBoard event file, read record by record with tensorboardX's protobuf
    (a TFRecord: 8-byte length, 4-byte CRC, the serialized ``Event``, 4-byte CRC). Read by hand because the
    environment has tensorboardX, a writer, but not tensorboard, whose ``EventFileLoader`` would read it."""
    from tensorboardX.proto import event_pb2

    scalars, histograms = set(), set()
    data, at = path.read_bytes(), 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            (histograms if value.HasField("histo") else scalars).add(value.tag)
    return scalars, histograms


def test_the_tensorboard_logger_gets_results_without_their_lists() -> None:
    result = {"accuracy": 0.5, "flag": "ok", "attack_table": [{"attack": "fgsm"}], "config": {"lr": 0.1},
              "diagnostics": {"checks": [{"passed": True}], "eps_schedule": (0.1, 0.2), "n": 3, "deep": {"l": [1]}}}
    assert without_lists(result) == {"accuracy": 0.5, "flag": "ok", "config": {"lr": 0.1},
                                     "diagnostics": {"n": 3, "deep": {}}}


def test_the_snapshot_warning_is_off_only_during_the_fit_and_a_users_threshold_is_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SNAPSHOT_WARNING, raising=False)
    with pytest.raises(RuntimeError, match="fit failed"), _snapshot_warning_off():
        assert os.environ[SNAPSHOT_WARNING] == "0"
        raise RuntimeError("fit failed")
    assert SNAPSHOT_WARNING not in os.environ  # put back after a failed fit too
    monkeypatch.setenv(SNAPSHOT_WARNING, "7")
    with _snapshot_warning_off():
        assert os.environ[SNAPSHOT_WARNING] == "7"
    assert os.environ[SNAPSHOT_WARNING] == "7"


def test_local_sweep_tracks_every_trial_and_registers_a_verified_champion(env: dict[str, Any]) -> None:
    space = build(tiny_space("local", num_samples=3, parameters={"epochs": 2},
                             attacks={"diagnostics": True}))
    snapshots, tbx = _Messages(), _Messages()
    logging.getLogger("ray.tune.execution.experiment_state").addHandler(snapshots)
    logging.getLogger("ray.tune.logger.tensorboardx").addHandler(tbx)
    reset_log_once("invalid_tbx_value")  # Tune warns about a value TensorBoard cannot take once per process
    try:
        result = run_sweep(space, storage_path=str(env["storage"]), tracking_uri=env["uri"], experiment=EXPERIMENT,
                           num_cpus=2, verbose=0)
    finally:
        logging.getLogger("ray.tune.execution.experiment_state").removeHandler(snapshots)
        logging.getLogger("ray.tune.logger.tensorboardx").removeHandler(tbx)
    # a checkpoint per epoch, two kept: Tune snapshots its state every second checkpoint of a trial, by the sweep's
    # choice, and does not warn about it (with epochs this short it would, given its default threshold of 5 s);
    # the variable that turns the warning off is put back afterwards
    assert not [m for m in snapshots.messages if "snapshotting has been triggered" in m]
    assert SNAPSHOT_WARNING not in os.environ
    # TensorBoard gets every trial's numbers as scalars, and nothing it cannot plot (the final report's attack
    # table and diagnostics are lists: they go to MLflow only)
    assert not [m for m in tbx.messages if "invalid value" in m]
    events = sorted(env["storage"].glob("local/*/events.out.tfevents.*"))
    assert len(events) == 3
    for path in events:
        scalars, histograms = tensorboard_tags(path)
        assert {"ray/tune/accuracy", "ray/tune/robust_accuracy", "ray/tune/val_accuracy", "ray/tune/epoch"} <= scalars
        assert not histograms

    assert isinstance(result, SweepResult)
    assert [t.status for t in result.trials] == ["finished"] * 3, [t.error for t in result.trials]
    by_id = {t.trial_id: t for t in result.trials}
    assert len(by_id) == 3

    # --- MLflow: one parent, one nested run per trial, found by tags
    client = MlflowClient(env["uri"])
    parents, trials = runs_of(env["uri"], "local")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == result.parent_run_id
    assert parent.info.status == "FINISHED"
    assert json.loads(parent.data.tags["qshield.objectives"]) == space.directions()
    assert parent.data.metrics["trials_finished"] == 3
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"pareto.png", "trials.json"}
    assert sorted(r.data.tags[TRIAL] for r in trials) == sorted(by_id)
    for run in trials:
        trial = by_id[run.data.tags[TRIAL]]
        assert run.info.status == "FINISHED"
        assert run.data.tags[PARENT] == parent.info.run_id
        assert run.data.tags["qshield.final"] == "true"
        assert run.data.tags["qshield.git_sha"]
        assert run.data.tags["version.ray"] == ray.__version__
        # params: the sampled Tune config, every parameter of the space
        assert run.data.params == {k: str(v) for k, v in trial.config.items()}
        # per-epoch metrics: one point per epoch, at step = epoch; no metric has two values at one step
        for key in ("train_loss", "val_accuracy"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2]
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert len(steps) == len(set(steps)), (key, steps)
        # final metrics equal what Tune recorded
        for key in ("accuracy", "asr", "robust_accuracy", "adversary_cost"):
            assert run.data.metrics[key] == pytest.approx(trial.metrics[key], abs=1e-12)
        # masking diagnostics (on in this sweep): flags as metrics and the report as an artifact
        assert any(k.startswith("masking/") for k in run.data.metrics)
        assert run.data.tags["qshield.trustworthy"] == str(bool(trial.metrics["trustworthy"])).lower()
        paths = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"attacks.json", "masking_diagnostics.json", "worst_case.json", "min_eps.json"} <= paths
        # the run's name carries the searched values; its model is a LoggedModel linked to it
        assert run.info.run_name.startswith(f"trial {run.data.tags[TRIAL]}: ") and "n_qubits=" in run.info.run_name
        (output,) = run.outputs.model_outputs
        assert run.data.tags["qshield.model_id"] == output.model_id
        logged = client.get_logged_model(output.model_id)
        assert logged.source_run_id == run.info.run_id
        # and carries the trial's final metrics (MLflow's model view and search_logged_models read them there)
        on_model = {m.key: m.value for m in logged.metrics or []}
        for key in ("accuracy", "asr", "robust_accuracy", "adversary_cost"):
            assert on_model[key] == pytest.approx(run.data.metrics[key], abs=1e-12)
        # the worst case over the suite is never better than any single attack (and carries its interval)
        for name in ("fgsm", "pgd"):
            assert run.data.metrics["robust_accuracy"] <= run.data.metrics[f"attack/{name}/robust_accuracy"]
        low, high = run.data.metrics["robust_accuracy_ci_low"], run.data.metrics["robust_accuracy_ci_high"]
        assert low <= run.data.metrics["robust_accuracy"] <= high
        assert run.data.tags["qshield.strongest_attack"] in ("fgsm", "pgd")

    # --- MLflow as users browse it: model-training view, artifacts next to the database, no stray ./mlruns
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert Path(experiment.artifact_location).is_relative_to(env["tmp"] / "mlartifacts")
    assert not (env["tmp"] / "mlruns").exists()
    # the trials table links every trial to its run
    local_parent = Path(mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, dst_path=str(env["tmp"] / "p"),
                                                            tracking_uri=env["uri"]))
    table = json.loads((local_parent / "trials.json").read_text())
    table_rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert {r["trial_id"]: r["run_id"] for r in table_rows} == {r.data.tags[TRIAL]: r.info.run_id for r in trials}
    assert ("Champion: trial" if result.champion is not None else "No champion:") in (
        local_parent / "summary.md").read_text()
    # the Optuna study is persisted next to the tracking database and Optuna's own API opens it
    import optuna

    study = optuna.load_study(study_name="local", storage=f"sqlite:///{env['tmp'] / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 3
    assert parent.data.tags["qshield.optuna_storage"] == f"sqlite:///{env['tmp'] / 'optuna.db'}"

    # --- the attack table agrees with the per-attack metrics; the logged weights reproduce the accuracy
    run = trials[0]
    local = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(env["tmp"] / "dl"),
                                                     tracking_uri=env["uri"]))
    table = json.loads((local / "attacks.json").read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [r["attack"] for r in rows] == ["fgsm", "pgd"]
    for r in rows:
        assert r["asr"] == pytest.approx(run.data.metrics[f"attack/{r['attack']}/asr"], abs=1e-12)
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{run.data.tags['qshield.model_id']}",
                                                         dst_path=str(env["tmp"] / "lm"), tracking_uri=env["uri"]))
    assert {p.name for p in (model_dir / "artifacts").iterdir()} == {
        "model.pt", "params.json", "space.json", "metrics.json", "input_example.npy"}
    model, _ = load_model(model_dir / "artifacts" / "model.pt")
    bundle = load_dataset("digits", seed=0, limit_train=200, limit_test=60, progress=False)
    x, y = bundle.test.tensors
    with torch.no_grad():
        recomputed = int((model(x).argmax(dim=1) == y).sum()) / len(y)
    assert recomputed == pytest.approx(run.data.metrics["accuracy"], abs=1e-9)
    assert json.loads((model_dir / "artifacts" / "params.json").read_text()) == by_id[run.data.tags[TRIAL]].config

    # --- Pareto front against dominance worked out by hand; the sweep's pick lies in the table
    done = result.finished()
    points = [{k: float(t.metrics[k]) for k in space.directions()} for t in done]
    assert set(result.front) == hand_front(points, space.directions())
    assert result.knee in result.front

    # --- registry, default rule (robust_floor): the most robust trial within 0.02 of the best clean accuracy among
    # the unflagged trials (masking, near chance... are never chosen unasked; among all of them only with
    # allow_flagged when every trial is flagged), worked out here from the runs' metrics and tags; ties by the
    # objectives in order, then the trial id
    unflagged = [r for r in trials if r.data.tags["qshield.trustworthy"] == "true"]
    allow = not unflagged
    if allow:
        with pytest.raises(SelectionError, match="no trial's robustness numbers can be trusted"):
            select_champion("local", experiment=EXPERIMENT, tracking_uri=env["uri"])
        assert result.champion is None and "No champion: no trial's robustness" in format_summary(result)
    pool = unflagged or trials
    sel = select_champion("local", experiment=EXPERIMENT, tracking_uri=env["uri"], allow_flagged=allow)
    best_acc = max(r.data.metrics["accuracy"] for r in pool)
    eligible = [r for r in pool if r.data.metrics["accuracy"] >= best_acc - 0.02 - 1e-12]
    sign = {k: (1 if d == "max" else -1) for k, d in space.directions().items()}
    expected = min(eligible, key=lambda r: (-r.data.metrics["robust_accuracy"],
                                            tuple(-sign[k] * r.data.metrics[k] for k in space.directions()),
                                            r.data.tags[TRIAL]))
    assert sel.run_id == expected.info.run_id and sel.rule == "robust_floor"
    if not allow:
        assert result.finished()[result.champion].trial_id == expected.data.tags[TRIAL]  # the summary agrees
    assert "highest worst-case robust accuracy" in sel.reason and ("FLAGGED" in sel.reason) == allow
    champion_run = client.get_run(sel.run_id)
    assert champion_run.data.tags[SWEEP] == "local"
    logged = {k: champion_run.data.metrics[k] for k in space.directions()}
    assert sel.objectives == pytest.approx(logged)
    version = client.get_model_version(sel.model_name, sel.version)
    assert version.run_id == sel.run_id and version.source == f"models:/{champion_run.data.tags['qshield.model_id']}"
    assert version.tags["qshield.verification"] == "passed"
    assert version.tags["qshield.rule"] == "robust_floor" and version.tags["qshield.reason"] == sel.reason
    assert version.tags["qshield.trustworthy"] == champion_run.data.tags["qshield.trustworthy"]
    assert version.tags["qshield.trustworthy"] == str(not allow).lower()
    for key, value in logged.items():
        assert float(version.tags[f"objective.{key}"]) == pytest.approx(value, rel=1e-5, abs=1e-9)
    assert client.get_model_version_by_alias(sel.model_name, CHAMPION).version == sel.version
    # the challenger comes from the trials the champion was chosen among: the front of the others in the pool
    others = [r for r in pool if r.info.run_id != sel.run_id]
    front = [others[i] for i in hand_front([{k: r.data.metrics[k] for k in space.directions()} for r in others],
                                           space.directions())] if others else []
    if others:
        challenger = client.get_model_version_by_alias(sel.model_name, "challenger")
        assert challenger.run_id in {r.info.run_id for r in others}
        assert challenger.tags["qshield.rule"] == "challenger: most robust other Pareto-front trial"
        assert challenger.tags["qshield.trial_id"] in {r.data.tags[TRIAL] for r in front}
    else:  # one unflagged trial: no challenger
        with pytest.raises(mlflow.exceptions.MlflowException, match="alias challenger not found"):
            client.get_model_version_by_alias(sel.model_name, "challenger")
    assert set(sel.verified) == {"accuracy", "asr", "robust_accuracy", "adversary_cost"}
    for key, (was, now) in sel.verified.items():
        assert now == pytest.approx(was, abs=1e-6) and was == pytest.approx(champion_run.data.metrics[key])
    # the parent run carries the champion; selecting did not reopen the finished sweep run
    parent_now = client.get_run(parent.info.run_id)
    assert parent_now.info.status == "FINISHED"
    assert parent_now.data.tags["qshield.champion_run_id"] == sel.run_id
    assert parent_now.data.metrics["champion_accuracy"] == pytest.approx(champion_run.data.metrics["accuracy"])

    # --- MLflow's own loader: models:/<name>@champion is a pyfunc model giving the torch model's probabilities
    served = mlflow.pyfunc.load_model(f"models:/{sel.model_name}@{CHAMPION}")
    assert served.metadata.get_input_schema().inputs[0].shape == (-1, 1, 8, 8)
    champion_model, _ = load_model(Path(mlflow.artifacts.download_artifacts(
        f"models:/{sel.model_name}/{sel.version}", dst_path=str(env["tmp"] / "v"), tracking_uri=env["uri"]))
        / "artifacts" / "model.pt")
    probs = served.predict(x.numpy())
    with torch.no_grad():
        assert probs == pytest.approx(torch.softmax(champion_model(x), dim=1).numpy(), abs=1e-5)

    # --- selecting again is idempotent: no new version for a run already registered
    before = {v.version: v for v in client.search_model_versions(f"name='{sel.model_name}'")}
    again = select_champion("local", experiment=EXPERIMENT, tracking_uri=env["uri"], verify=False, allow_flagged=allow)
    after = {v.version: v for v in client.search_model_versions(f"name='{sel.model_name}'")}
    assert again.version == sel.version and set(after) == set(before)
    # another rule may pick another run: then (and only then) a version is added, the first kept intact
    knee = select_champion("local", experiment=EXPERIMENT, tracking_uri=env["uri"], rule="knee", verify=False,
                           allow_flagged=allow)
    after = {v.version: v for v in client.search_model_versions(f"name='{sel.model_name}'")}
    assert len(after) == len({v.run_id for v in after.values()})  # one version per run, never two
    assert (knee.version in before) == (knee.run_id in {v.run_id for v in before.values()})
    assert after[sel.version].run_id == sel.run_id
    assert client.get_model_version_by_alias(sel.model_name, CHAMPION).version == knee.version


# ----------------------------------------------------------------------------------------------------------
# (c) two Ray nodes


def test_two_node_cluster_runs_trials_on_both_nodes(env: dict[str, Any]) -> None:
    """Head and worker with one CPU each and two one-CPU trials at a time: each node must take one.

    Both nodes share the host's IP, so trials are told apart by the Ray node id every report carries.
    """
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        node_ids = {cluster.head_node.node_id, worker.node_id}
        ray.init(address=cluster.address)
        assert {n["NodeID"] for n in ray.nodes() if n["Alive"]} == node_ids
        result = run_sweep(build(tiny_space("two-nodes", num_samples=2, max_concurrent=2)),
                           storage_path=str(env["storage"]), tracking_uri=env["uri"], experiment=EXPERIMENT, verbose=0)
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert [t.status for t in result.trials] == ["finished", "finished"], [t.error for t in result.trials]
    nodes = {t.metrics["node_id"] for t in result.trials}
    assert nodes == node_ids
    # every report of a trial came from one node (no silent migration), and MLflow has both trials
    rows = result_rows(env["storage"] / "two-nodes")
    assert {tid: {r["node_id"] for r in rs} for tid, rs in rows.items()} == {
        t.trial_id: {t.metrics["node_id"]} for t in result.trials}
    _, trials = runs_of(env["uri"], "two-nodes")
    assert sorted(r.data.tags[TRIAL] for r in trials) == sorted(t.trial_id for t in result.trials)


# ----------------------------------------------------------------------------------------------------------
# (b) ray start --head + ray job submit of the entrypoint


def test_ray_job_submit_runs_the_entrypoint_on_a_started_cluster(env: dict[str, Any]) -> None:
    """``ray start --head`` (dashboard + job server), then ``ray job submit --working-dir <repo> -- python -m
    orchestrator.run``; the job must succeed on that cluster and leave its runs in the MLflow store.

    Token authentication is made explicit (Ray 2.60 turns it on by itself when ``~/.ray/auth_token`` exists,
    and then the job CLI needs the token): a fresh token for this cluster in ``RAY_AUTH_TOKEN``.
    ``python`` in the entrypoint resolves through ``PATH`` from ``--runtime-env-json`` to this interpreter.
    """
    pytest.importorskip("aiohttp_cors", reason="the job server is part of the Ray dashboard: pip install 'ray[default]'")
    space_file = write_space(env["tmp"] / "job.yaml", tiny_space("job"))
    gcs, dash, client_port = free_port(), free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="qsray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    ray_env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    address = f"http://127.0.0.1:{dash}"
    head_log = env["tmp"] / "head.log"
    with head_log.open("w") as log:
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--port", str(gcs),
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
             "--ray-client-server-port", str(client_port), "--temp-dir", temp_dir, "--disable-usage-stats"],
            env=ray_env, stdout=log, stderr=subprocess.STDOUT,
        )
    recorded: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, f"ray start exited {head.returncode}:\n{head_log.read_text()[-4000:]}"
            request = urllib.request.Request(f"{address}/api/version",
                                             headers={"Authorization": f"Bearer {ray_env['RAY_AUTH_TOKEN']}"})
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:  # not listening yet, or the token refused (401): the timeout reports the dashboard log
                pass
            if time.monotonic() > deadline:
                logs = Path(temp_dir, "session_latest", "logs", "dashboard.log")
                pytest.fail(f"dashboard did not answer in 120 s:\n{logs.read_text()[-4000:] if logs.exists() else ''}")
            time.sleep(1)

        job_id = f"qshield-test-{uuid.uuid4().hex[:8]}"
        runtime_env = {"env_vars": {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}}
        submit = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT),
             "--submission-id", job_id, "--runtime-env-json", json.dumps(runtime_env), "--no-wait", "--",
             "python", "-m", "orchestrator.run", "--space", str(space_file), "--storage-path", str(env["storage"]),
             "--tracking-uri", env["uri"], "--experiment", EXPERIMENT, "--select", "knee", "--allow-flagged"],
            env=ray_env, check=False, capture_output=True, text=True, timeout=120,
        )
        assert submit.returncode == 0, submit.stdout + submit.stderr
        recorded = descendants(head.pid)

        status = ""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            out = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address, job_id],
                                 env=ray_env, check=False, capture_output=True, text=True, timeout=60)
            status = out.stdout + out.stderr
            if any(word in status for word in ("succeeded", "failed", "stopped")):
                break
            recorded |= descendants(head.pid)
            time.sleep(3)
        logs = subprocess.run([str(BIN / "ray"), "job", "logs", "--address", address, job_id],
                              env=ray_env, check=False, capture_output=True, text=True, timeout=60).stdout
        assert f"Job '{job_id}' succeeded" in status, status + "\n" + logs[-6000:]

        # the job ran on this cluster (attached through RAY_ADDRESS), not on a Ray of its own
        listed = subprocess.run([str(BIN / "ray"), "list", "nodes", "--address", address, "--format", "json"],
                                env=ray_env, check=False, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        cluster_nodes = {n["node_id"] for n in json.loads(listed.stdout)}
    finally:
        stop_ray_head(head, recorded, temp_dir)

    assert "Connecting to existing Ray cluster" in logs
    assert "Sweep 'job': 2 finished, 0 stopped early, 0 failed" in logs
    assert "champion: models:/qshield-job@champion" in logs
    rows = result_rows(env["storage"] / "job")
    assert len(rows) == 2 and {r["node_id"] for rs in rows.values() for r in rs} <= cluster_nodes

    parents, trials = runs_of(env["uri"], "job")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags[TRIAL] for r in trials) == sorted(rows)
    assert all(r.info.status == "FINISHED" and r.data.tags[PARENT] == parents[0].info.run_id for r in trials)
    version = MlflowClient(env["uri"]).get_model_version_by_alias("qshield-job", CHAMPION)
    assert version.tags["qshield.verification"] == "passed"
    # --allow-flagged: the version says whether its trial's numbers can be trusted, as the trial run does
    champion_run = MlflowClient(env["uri"]).get_run(version.run_id)
    assert version.tags["qshield.trustworthy"] == champion_run.data.tags["qshield.trustworthy"]


# ----------------------------------------------------------------------------------------------------------
# (d) the driver killed mid-sweep, then the same command again


def test_killed_driver_resumes_without_rerunning_or_duplicating(env: dict[str, Any]) -> None:
    """``python -m orchestrator.run`` is SIGKILLed once Tune has recorded a finished trial; its local Ray goes
    with it (kernel fate-sharing; leftovers are killed by pid). Re-running the same command restores the sweep:
    the finished trial is not run again (same Tune results, same MLflow run and metric history), the others
    complete, and MLflow holds exactly one parent and one finished nested run per Tune trial (and, at most, the run
    of a trial the killed driver started after Tune's last snapshot, ended as abandoned: :func:`check_resumed`).
    """
    n = 3
    # 3 epochs: with one worker process running trial after trial, a 1-epoch trial takes about a second, and
    # the kill has to land while the others still run
    space_file = write_space(env["tmp"] / "resume.yaml", tiny_space("resume", num_samples=n, max_concurrent=1,
                                                                     parameters={"epochs": 3}))
    exp_dir = env["storage"] / "resume"
    cmd = [sys.executable, "-m", "orchestrator.run", "--space", str(space_file), "--storage-path",
           str(env["storage"]), "--tracking-uri", env["uri"], "--experiment", EXPERIMENT, "--num-cpus", "2"]
    # Tune snapshots its experiment state every >= 10 s by default; every quarter second here, so that the kill
    # lands right after the first trial is recorded as finished, with the others still to run.
    driver_env = clean_env(TUNE_GLOBAL_CHECKPOINT_S="0.25")
    first_log = env["tmp"] / "first.log"
    with first_log.open("w") as log:
        driver = subprocess.Popen(cmd, cwd=ROOT, env=driver_env, stdout=log, stderr=subprocess.STDOUT)
    recorded: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 240
        while True:
            assert driver.poll() is None, f"driver ended (rc {driver.returncode}) before it was killed:\n" + (
                first_log.read_text()[-4000:])
            recorded |= descendants(driver.pid)
            states = tune_trial_states(exp_dir)
            if any(s == "TERMINATED" for s in states.values()):
                break
            assert time.monotonic() < deadline, "no trial finished in 240 s:\n" + first_log.read_text()[-4000:]
            time.sleep(0.5)
        recorded |= descendants(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        kill_recorded(recorded)

    finished_before = {tid for tid, s in states.items() if s == "TERMINATED"}
    assert 1 <= len(finished_before) < n, states
    rows_before = result_rows(exp_dir)
    _, trials_before = runs_of(env["uri"], "resume")
    client = MlflowClient(env["uri"])
    kept = {}
    for run in trials_before:
        if run.data.tags[TRIAL] in finished_before:
            history = [(m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, "accuracy")]
            kept[run.data.tags[TRIAL]] = (run.info.run_id, run.info.start_time, history)
    assert set(kept) == finished_before

    second = subprocess.run(cmd, cwd=ROOT, env=driver_env, check=False, capture_output=True, text=True, timeout=420)
    assert second.returncode == 0, (second.stdout + second.stderr)[-6000:]
    assert "resuming sweep resume" in second.stdout + second.stderr
    assert f"Sweep 'resume': {n} finished, 0 stopped early, 0 failed" in second.stdout

    rows_after, _, trials = check_resumed(exp_dir, env["uri"], "resume", n)
    for tid in finished_before:  # not run again: Tune's results of the finished trial are unchanged
        assert rows_after[tid] == rows_before[tid]
    for run in trials:
        tid = run.data.tags[TRIAL]
        if tid in kept:
            run_id, start, history = kept[tid]
            assert (run.info.run_id, run.info.start_time) == (run_id, start)
            assert [(m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, "accuracy")] == history
