"""Scale (issue 13, items 2-4): tracking that stays O(1) per trial, trials sharing one dataset, device plumbing,
and fractional GPUs on a Ray cluster with logical GPUs.

Real parts: a sqlite MLflow store driven by the sweep's own tracker and Tune callback (with a stand-in for Tune's
``Trial``, as in ``tests/test_determinism.py``), the real ``run_trial`` on sklearn digits, and a real
``ray.cluster_utils.Cluster`` running ``run_sweep``. Two things cannot be real here: there is no CUDA device on
this machine, so the cluster's GPU is a *logical* one (Ray schedules and sets ``CUDA_VISIBLE_DEVICES`` for it
as for a real one, but torch sees no device and the trial runs on the CPU: the test checks exactly that), and the
CUDA run of a trial is a ``gpu``-marked test (``bash scripts/dev.sh gpu-check`` runs it on a GPU machine).
Wall-clock times are never asserted: per-trial tracking is checked by counting the calls the tracker makes to
the MLflow client (a counting wrapper around the real client; every call goes through), the timing figures are
``bench/tracking.py``'s.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from orchestrator.runtime import MLflowTrialCallback, to_tune_param_space
from orchestrator.runtime._trainable import trial_device
from orchestrator.space import parse_space
from orchestrator.tracking import ROLE, SWEEP, TRIAL, SweepTracker
from orchestrator.trial import load_trial_data, run_trial
from tests.test_sweep import TrialStub

EXPERIMENT = "qshield-scale"


class CountingClient:
    """The real ``MlflowClient`` with a count of the calls made through it (each call is passed on unchanged)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def sampled(space: Any) -> dict[str, Any]:
    """The trial parameters of ``space`` with its one searched parameter, ``entanglement``, drawn as 'linear'."""
    return {k: ("linear" if hasattr(v, "sample") else v) for k, v in to_tune_param_space(space).items()}


def one_trial(callback: MLflowTrialCallback, trial_id: str, lr: float) -> None:
    """What a sweep tells the callback about one two-epoch trial (no checkpoint, so no model is logged)."""
    trial = TrialStub(trial_id, {"lr": lr, "epochs": 2})
    callback.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        trial.last_result = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_accuracy": 0.5 + 0.1 * epoch}
        callback.on_trial_result(0, [], trial, result=dict(trial.last_result))
    trial.last_result = {"final": True, "epoch": 2, "accuracy": 0.9, "asr": 0.25, "trustworthy": True, "flag": "ok",
                         "strongest_attack": "fgsm", "device": "cpu",
                         "attack_table": [{"attack": "fgsm", "asr": 0.25, "n_attacked": 8}]}
    callback.on_trial_result(0, [], trial, result=dict(trial.last_result))
    callback.on_trial_complete(0, [], trial)


def test_tracking_calls_per_trial_do_not_grow_with_the_sweep_and_a_restart_finds_the_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QSHIELD_GIT_SHA", "test")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker("flat", EXPERIMENT, uri, retries=0)
    callback = MLflowTrialCallback(tracker, searched=("lr",))
    callback.setup()
    spy = tracker.client = CountingClient(tracker.client)
    n = 60
    per_trial = []
    for i in range(n):
        before = Counter(spy.calls)
        one_trial(callback, f"t{i:05d}", 0.001 * (i + 1))
        per_trial.append(spy.calls - before)

    # the sweep's trial runs were searched once (the index), never per trial; nothing just created is read back
    assert spy.calls["search_runs"] == 1 and per_trial[0]["search_runs"] == 1
    assert all(calls["search_runs"] == 0 for calls in per_trial[1:])
    assert all(calls["get_metric_history"] == 0 and calls["get_run"] == 0 for calls in per_trial)
    # every later trial makes exactly the same calls: trial 2 and trial 60 alike
    assert all(calls == per_trial[1] for calls in per_trial[1:]), (per_trial[1], per_trial[-1])
    assert sum(per_trial[1].values()) <= 8, per_trial[1]

    # what was recorded: one run per trial, with its params, both epochs, the objectives, ended FINISHED
    client = tracker.client._client
    runs = client.search_runs([tracker.experiment_id], f"tags.`{ROLE}` = 'trial' and tags.`{SWEEP}` = 'flat'",
                              max_results=1000)
    by_trial = {r.data.tags[TRIAL]: r for r in runs}
    assert len(runs) == len(by_trial) == n
    last = by_trial[f"t{n - 1:05d}"]
    assert last.info.status == "FINISHED" and last.data.tags["qshield.final"] == "true"
    assert last.data.tags["qshield.device"] == "cpu"
    assert last.data.params == {"lr": str(0.001 * n), "epochs": "2"}
    assert [m.step for m in client.get_metric_history(last.info.run_id, "train_loss")] == [1, 2]
    assert last.data.metrics["accuracy"] == 0.9

    # a pickled tracker (Tune keeps its callbacks in the experiment state) forgets the index: it searches again
    assert pickle.loads(pickle.dumps(tracker))._trial_index is None
    # a restarted driver: a fresh tracker finds the existing runs with one search and reopens them, no duplicates
    again = SweepTracker("flat", EXPERIMENT, uri, retries=0)
    again.client = spy2 = CountingClient(again.client)
    for i in (0, n - 1):
        run_id, created = again.open_trial_run(f"t{i:05d}", params={"lr": 0.001 * (i + 1), "epochs": 2})
        assert (run_id, created) == (by_trial[f"t{i:05d}"].info.run_id, False)
    assert again.open_trial_run("t99999", params={"lr": 0.5, "epochs": 2})[1] is True
    assert spy2.calls["search_runs"] == 2  # the parent, then the sweep's trial runs: once
    assert len(again.trial_runs()) == n + 1


def test_trials_sharing_one_dataset_leave_it_unchanged_and_match_a_trial_that_reads_its_own() -> None:
    """A reused worker process runs trial after trial on the one dataset it fetched: the trials must not change it
    and must give what a trial reading the data itself gives (the same metrics, bit for bit, on CPU)."""
    space = parse_space({
        "name": "shared", "dataset": "digits", "limit_train": 200, "limit_test": 40, "seed": 0,
        "parameters": {"arch": "hybrid", "backbone": "cnn", "n_qubits": 4, "depth": 1,
                       "entanglement": {"choice": ["none", "linear"]}, "lr": 3.0e-3, "epochs": 3, "batch_size": 16},
        "attacks": {"names": ["fgsm", "pgd"], "n_eval": 16, "batch_size": 16, "diagnostics": False,
                    "settings": {"pgd": {"steps": 3, "alpha": "12/255"}}, "min_eps": {"rounds": 2, "steps": 2}},
        "resources": {"cpus": 1, "gpus": 0}, "num_samples": 1,
    }, source="<test>")
    params = sampled(space)
    bundle = load_trial_data(space)
    before = [t.clone() for t in (*bundle.train.tensors, *bundle.test.tensors)]

    def quiet(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        pass

    def comparable(final: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in final.items() if "seconds" not in k and k != "attack_table"}

    first = run_trial(params, space, quiet, bundle=bundle, device="cpu")
    second = run_trial(params, space, quiet, bundle=bundle, device="cpu")
    own = run_trial(params, space, quiet)
    assert all(torch.equal(a, b) for a, b in zip(before, (*bundle.train.tensors, *bundle.test.tensors)))
    assert comparable(first) == comparable(second) == comparable(own)
    # a real trial: it learned, and both attacks had correctly classified images to attack
    assert first["n_test"] == 40 and first["accuracy"] > 0.3  # chance: 0.1
    assert all(row["n_attacked"] > 0 for row in first["attack_table"])


def test_the_trial_device_follows_the_gpu_ray_assigned(caplog: pytest.LogCaptureFixture) -> None:
    assert trial_device([], cuda_available=True) == "cpu"  # no GPU assigned: the CPU, even on a GPU machine
    assert trial_device(["1"], cuda_available=True) == "cuda:0"  # Ray narrowed CUDA_VISIBLE_DEVICES to it
    with caplog.at_level(logging.WARNING):
        assert trial_device(["0"], cuda_available=False) == "cpu"
    assert "Ray assigned GPU(s) ['0'] to this trial, but torch sees no CUDA device" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_a_trial_on_cuda_moves_model_circuit_and_data_there_and_matches_the_cpu() -> None:
    space = parse_space({
        "name": "cuda", "dataset": "digits", "limit_train": 200, "limit_test": 40, "seed": 0,
        "parameters": {"arch": "hybrid", "backbone": "cnn", "n_qubits": 4, "depth": 1,
                       "entanglement": {"choice": ["none", "linear"]},
                       "noise": "depolarizing", "noise_strength": 0.05, "lr": 3.0e-3, "epochs": 2, "batch_size": 16},
        "attacks": {"names": ["fgsm", "pgd"], "n_eval": 16, "batch_size": 16, "diagnostics": False,
                    "settings": {"pgd": {"steps": 3, "alpha": "12/255"}}, "min_eps": {"rounds": 2, "steps": 2}},
        "resources": {"cpus": 1, "gpus": 1}, "num_samples": 1,
    }, source="<test>")
    params = sampled(space)
    seen: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        from qshield.models import load_model

        model, _ = load_model(Path(checkpoint_dir) / "model.pt")  # checkpoints load on the CPU
        seen.append({"final": bool(metrics.get("final")), "device": next(model.parameters()).device.type})

    torch.cuda.reset_peak_memory_stats()
    on_cuda = run_trial(params, space, report, device="cuda:0")
    assert torch.cuda.max_memory_allocated() > 0  # the model, circuit and batches were on the GPU
    on_cpu = run_trial(params, space, lambda m, c: None, device="cpu")
    assert [s["device"] for s in seen] == ["cpu"] * 3 and seen[-1]["final"]
    assert on_cuda["accuracy"] == pytest.approx(on_cpu["accuracy"], abs=0.1)  # GPU kernels differ in the last bits
    assert on_cuda["n_test"] == on_cpu["n_test"] == 40


@pytest.mark.slow
def test_fractional_gpus_pack_four_trials_on_one_logical_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node with 5 CPUs and one logical GPU; five trials of ``cpus: 1, gpus: 0.25``: four hold the GPU at
    once (GPU fully reserved while a CPU stays free), the fifth waits for a quarter GPU, not for a CPU. Every trial
    records the GPU Ray gave it and the ``CUDA_VISIBLE_DEVICES`` its process saw; with no CUDA here it ran on
    the CPU and says so.

    Tune keeps one trial pending at a time with a search algorithm (trials would start one by one as each actor
    comes up); ``TUNE_MAX_PENDING_TRIALS_PG=5`` lets it ask for all five placement groups at once, so that the
    packing is visible regardless of how long each actor takes to start on this shared machine.
    """
    ray = pytest.importorskip("ray")
    from mlflow import MlflowClient
    from ray.cluster_utils import Cluster

    from orchestrator.runtime import run_sweep
    from tests.test_sweep import tiny_space

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # run_sweep sets it; restored afterwards
    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "5")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = parse_space(tiny_space("fractional", num_samples=5, max_concurrent=5,
                                   resources={"cpus": 1, "gpus": 0.25},
                                   attacks={"names": ["fgsm"], "n_eval": 8, "batch_size": 8, "settings": {},
                                            "min_eps": {"rounds": 2, "steps": 2}}),
                        source="<test>")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 5, "num_gpus": 1, "include_dashboard": False})
    samples: list[dict[str, float]] = []
    stop = threading.Event()

    def sample_resources() -> None:
        while not stop.is_set():
            free = ray.available_resources()
            samples.append({"GPU": free.get("GPU", 0.0), "CPU": free.get("CPU", 0.0)})
            time.sleep(0.05)

    monitor = threading.Thread(target=sample_resources, daemon=True)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        assert ray.cluster_resources()["GPU"] == 1
        monitor.start()
        result = run_sweep(space, storage_path=str(tmp_path / "ray_results"), tracking_uri=uri,
                           experiment=EXPERIMENT, verbose=0)
    finally:
        stop.set()
        if monitor.is_alive():
            monitor.join(timeout=30)
        ray.shutdown()
        cluster.shutdown()

    assert [t.status for t in result.trials] == ["finished"] * 5, [t.error for t in result.trials]
    # packing: at some moment the whole GPU was reserved (4 x 0.25) while a CPU stayed free; never 5 at once
    assert min(s["GPU"] for s in samples) == 0.0
    assert min(s["CPU"] for s in samples) >= 1.0
    assert any(s["GPU"] == 0.0 and s["CPU"] == 1.0 for s in samples)
    for trial in result.trials:
        m = trial.metrics
        assert m["gpu_ids"] == "0" and m["cuda_visible_devices"] == "0", m  # its GPU, and only it, visible
        assert m["device"] == "cpu"  # a logical GPU: torch sees no CUDA device, so the trial ran on the CPU
    # at most four worker processes (one per quarter GPU), reused by the fifth trial; MLflow records the device
    assert len({t.metrics["pid"] for t in result.trials}) <= 4
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name(EXPERIMENT).experiment_id],
        filter_string=f"tags.`{ROLE}` = 'trial' and tags.`{SWEEP}` = 'fractional'")
    assert len(runs) == 5 and {r.data.tags["qshield.device"] for r in runs} == {"cpu"}
