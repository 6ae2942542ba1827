"""Benchmark: a 4-trial sweep with fractional GPUs (``gpus: 0.25``) on one real GPU.

A local Ray (every GPU of the machine, up to 8 CPUs) runs :func:`orchestrator.runtime.run_sweep` on a small
hybrid sweep (``mnist5k``, 2,000 training / 200 test images, 3 epochs of the small CNN + 4 qubits with mixed noise,
FGSM and 5-step PGD on 64 images) whose space asks for ``resources: {cpus: 1, gpus: 0.25}``: four trials share
one GPU. ``TUNE_MAX_PENDING_TRIALS_PG`` is set to the trial count so that Tune requests every trial's placement
group at once (with a search algorithm it otherwise starts trials one by one).

Checked and recorded, from the trials' own reports and from outside:

* every trial ran on ``cuda:0`` of the GPU Ray assigned it, and saw only that GPU (``CUDA_VISIBLE_DEVICES``);
* the GPU was fully reserved by four trials at once (Ray's available GPU sampled every 50 ms reached 0);
* how many processes held memory on the GPU at once, beyond those there before the sweep (``nvidia-smi
  --query-compute-apps``, every 0.5 s; process ids in a container may not match the host's, so they are counted,
  not matched);
* trials overlapping in time (their MLflow runs' start and end), the sweep's wall time, each trial's time.

Writes its section of ``docs/benchmarks.md`` (``gpu_sweep``) unless ``--no-write``; refuses to run without CUDA::

    python -m bench.gpu_sweep [--trials 4] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.quantum_layer import DOC, ROOT, write_section

SECTION = "gpu_sweep"


def space_dict(trials: int) -> dict[str, Any]:
    return {
        "name": "bench-gpu-sweep",
        "dataset": "mnist5k",
        "limit_train": 2000,
        "limit_test": 200,
        "seed": 0,
        "parameters": {
            "arch": "hybrid",
            "backbone": "cnn",
            "n_qubits": 4,
            "depth": 1,
            "entanglement": "full",
            "noise": "mixed",
            "noise_strength": 0.005,
            "lr": {"loguniform": [1.0e-3, 1.0e-2]},
            "epochs": 3,
            "batch_size": 64,
        },
        "attacks": {"names": ["fgsm", "pgd"], "n_eval": 64, "batch_size": 64, "diagnostics": False,
                    "settings": {"pgd": {"steps": 5}}, "min_eps": None},
        "objectives": {"accuracy": "max", "robust_accuracy": "max"},
        "resources": {"cpus": 1, "gpus": 0.25},
        "num_samples": trials,
        "max_concurrent": trials,
        "search": {"algorithm": "tpe", "n_startup_trials": trials},
    }


def gpu_processes() -> set[int] | None:
    """Process ids holding memory on a GPU now (``nvidia-smi``), or None when it cannot say."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {int(line) for line in out.split() if line.strip().isdigit()}


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def run(trials: int, workdir: Path) -> dict[str, Any]:
    import ray
    import torch
    from mlflow import MlflowClient

    from orchestrator.runtime import run_sweep
    from orchestrator.space import parse_space

    os.environ.pop("RAY_ADDRESS", None)
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(trials)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    space = parse_space(space_dict(trials), source="<bench>")
    ray.init(address="local", num_cpus=min(os.cpu_count() or 1, 8), num_gpus=torch.cuda.device_count(),
             include_dashboard=False, log_to_driver=False)
    samples: dict[str, list[Any]] = {"gpu_free": [], "gpu_pids": []}
    before = gpu_processes() or set()
    stop = threading.Event()

    def sample_resources() -> None:
        while not stop.is_set():
            samples["gpu_free"].append(ray.available_resources().get("GPU", 0.0))
            time.sleep(0.05)

    def sample_gpu() -> None:
        while not stop.is_set():
            pids = gpu_processes()
            if pids is not None:
                samples["gpu_pids"].append(pids)
            time.sleep(0.5)

    threads = [threading.Thread(target=f, daemon=True) for f in (sample_resources, sample_gpu)]
    try:
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        result = run_sweep(space, storage_path=str(workdir / "ray"), tracking_uri=uri, experiment="bench",
                           verbose=0)
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        ray.shutdown()
    failed = [t for t in result.trials if t.status != "finished"]
    if failed:
        raise RuntimeError("; ".join(f"{t.trial_id} {t.status} {t.error}" for t in failed))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("bench").experiment_id],
                              "tags.`qshield.role` = 'trial'")
    on_gpu = [len(p - before) for p in samples["gpu_pids"]]
    return {
        "trials": [{"id": t.trial_id, **{k: t.metrics.get(k) for k in (
            "device", "gpu_ids", "cuda_visible_devices", "pid", "time_total_s", "accuracy", "robust_accuracy")}}
            for t in result.trials],
        "wall": wall,
        "gpu_fully_reserved": bool(samples["gpu_free"]) and min(samples["gpu_free"]) == 0.0,
        "max_on_gpu": max(on_gpu) if on_gpu else None,
        "overlap": max_overlap([(r.info.start_time, r.info.end_time) for r in runs]),
        "gpu": torch.cuda.get_device_name(0),
    }


def render(res: dict[str, Any], trials: int) -> str:
    import torch

    on_gpu = "not measured (no nvidia-smi)" if res["max_on_gpu"] is None else str(res["max_on_gpu"])
    lines = [
        "## Fractional GPUs: four trials on one GPU" if trials == 4
        else f"## Fractional GPUs: {trials} trials at gpus: 0.25",
        "",
        (f"Measured by `python -m bench.gpu_sweep --trials {trials}` on {platform.machine()} with {res['gpu']}, "
         f"CUDA {torch.version.cuda}, torch {torch.__version__}, Python {platform.python_version()}: a {trials}-trial "
         "sweep (mnist5k, 2,000 train / 200 test images, 3 epochs of the small CNN + 4 qubits with mixed noise, "
         "FGSM + 5-step PGD on 64 images) with `resources: {cpus: 1, gpus: 0.25}` through `run_sweep` on a local "
         f"Ray. Sweep wall {res['wall']:.1f} s. The GPU fully reserved by four trials at once (Ray's available GPU "
         f"reached 0): {'yes' if res['gpu_fully_reserved'] else 'NO'}; most processes holding GPU memory at once, "
         f"beyond those before the sweep (nvidia-smi): {on_gpu}; most trials running at once (MLflow run times): "
         f"{res['overlap']}."),
        "",
        "| trial | device | Ray GPU ids | CUDA_VISIBLE_DEVICES | pid | trial time (s) | accuracy | robust accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in res["trials"]:
        lines.append(f"| {t['id']} | {t['device']} | {t['gpu_ids']} | {t['cuda_visible_devices']} | {t['pid']} | "
                     f"{t['time_total_s']:.1f} | {t['accuracy']:.3f} | {t['robust_accuracy']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_sweep", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4, help="trials, all at once (default 4: one GPU's worth)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        parser.error("no CUDA device is available: this benchmark needs one GPU")
    if args.trials < 1:
        parser.error(f"argument --trials: {args.trials}; allowed values: >= 1")
    with tempfile.TemporaryDirectory(prefix="qshield-bench-gpu-sweep-") as tmp:
        res = run(args.trials, Path(tmp))
    text = render(res, args.trials)
    print(text)
    bad = [t["id"] for t in res["trials"] if t["device"] != "cuda:0"]
    if not args.no_write:
        write_section(text, SECTION)
        print(f"wrote {DOC.relative_to(ROOT)}")
    if bad:
        print(f"trials {bad} did not run on the GPU", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
