"""Benchmark: per-trial tracking cost and driver memory over a long sweep (300 tiny trials by default).

One sweep of ``--trials`` tiny trials (sklearn digits, 100 training / 20 test images, one epoch of the small CNN,
FGSM on 8 images; objectives accuracy and ASR) runs through the real driver, :func:`orchestrator.runtime.run_sweep`,
on a local Ray with one CPU per trial and ``--slots`` trials at a time, with MLflow on a fresh sqlite store: every
trial gets its run, params, per-epoch and final metrics, attack table and a logged pyfunc model (LoggedModel).

Measured in the driver process, without changing what it does:

* *tracking per trial*: the seconds the driver spends in :class:`~orchestrator.runtime.MLflowTrialCallback` for
  a trial (``on_trial_start``, every ``on_trial_result``, ``on_trial_complete``), wall clock (the callback's methods
  are wrapped with a timer); compared between the first and the last ``--window`` trials (by start order);
* *between trials*: on each slot, the seconds from one trial's last report to the next trial's start (driver
  callback, Tune's bookkeeping and scheduling, the reused actor's reset), first vs last window;
* *driver memory*: the driver's resident set size (``VmRSS``) after every ``--window`` completed trials.

Targets (issue 13, item 2): tracking per trial flat from the first 50 trials to the last 50 (within 20%) and
bounded driver memory. ``--repeats`` sweeps (default 2), each in a fresh driver process; per window the sweep with
the lower median is shown (best of N: other work on a shared machine only adds time, and drifts between the first
and the last window). Writes its section of ``docs/benchmarks.md`` (``tracking``) unless ``--no-write``::

    python -m bench.tracking [--trials 300] [--slots 1] [--window 50] [--repeats 2] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.orchestration import _git_sha, _machine
from bench.quantum_layer import DOC, ROOT, write_section

SECTION = "tracking"
TARGET_FLAT = 1.20  # last window / first window


def space_dict(trials: int, slots: int) -> dict[str, Any]:
    """The tiny sweep (module docstring); trial configurations sampled at random (seeded)."""
    return {
        "name": "bench-tracking",
        "dataset": "digits",
        "limit_train": 100,
        "limit_test": 20,
        "seed": 0,
        "parameters": {
            "arch": "cnn",
            "lr": {"loguniform": [3.0e-3, 3.0e-2]},
            "epochs": 1,
            "batch_size": 32,
        },
        "attacks": {"names": ["fgsm"], "n_eval": 8, "batch_size": 8, "diagnostics": False, "min_eps": None},
        "objectives": {"accuracy": "max", "asr": "min"},
        "resources": {"cpus": 1, "gpus": 0},
        "num_samples": trials,
        "max_concurrent": slots,
        "search": {"algorithm": "tpe", "n_startup_trials": trials},
    }


def rss_bytes() -> int:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class Probe:
    """Timings the wrapped callback records, per trial id."""

    tracking_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    started: dict[str, float] = field(default_factory=dict)  # wall time of on_trial_start
    last_report: dict[str, float] = field(default_factory=dict)  # wall time the last result reached the driver
    pid: dict[str, int] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)
    rss: list[tuple[int, int]] = field(default_factory=list)  # (trials completed, bytes)
    lock: threading.Lock = field(default_factory=threading.Lock)


def instrument(probe: Probe, window: int) -> None:
    """Wrap MLflowTrialCallback's methods with timers (in this process: the driver's)."""
    from orchestrator.runtime import MLflowTrialCallback

    def wrap(name: str) -> None:
        original = getattr(MLflowTrialCallback, name)

        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            trial = kwargs["trial"]
            t0 = time.perf_counter()
            now = time.time()
            try:
                return original(self, *args, **kwargs)
            finally:
                spent = time.perf_counter() - t0
                with probe.lock:
                    probe.tracking_s[trial.trial_id] += spent
                    if name == "on_trial_start":
                        probe.started[trial.trial_id] = now
                    elif name == "on_trial_result":
                        probe.last_report[trial.trial_id] = now
                        probe.pid[trial.trial_id] = int(kwargs["result"].get("pid", 0))
                    elif name in ("on_trial_complete", "on_trial_error"):
                        probe.completed.append(trial.trial_id)
                        if len(probe.completed) % window == 0:
                            probe.rss.append((len(probe.completed), rss_bytes()))

        setattr(MLflowTrialCallback, name, timed)

    for name in ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error"):
        wrap(name)


def gaps(probe: Probe) -> dict[str, float]:
    """Per trial (by id): seconds from the previous trial's last report in the same worker process to its start."""
    by_pid: dict[int, list[str]] = defaultdict(list)
    for tid in sorted(probe.started, key=probe.started.get):
        by_pid[probe.pid.get(tid, 0)].append(tid)
    out = {}
    for tids in by_pid.values():
        for prev, tid in zip(tids, tids[1:]):
            if prev in probe.last_report:
                out[tid] = probe.started[tid] - probe.last_report[prev]
    return out


def run(trials: int, slots: int, window: int, workdir: Path) -> dict[str, Any]:
    import ray
    from mlflow import MlflowClient

    from orchestrator.runtime import run_sweep
    from orchestrator.space import parse_space

    probe = Probe()
    instrument(probe, window)
    os.environ.pop("RAY_ADDRESS", None)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    space = parse_space(space_dict(trials, slots), source="<bench>")
    ray.init(address="local", num_cpus=slots, include_dashboard=False, log_to_driver=False)
    try:
        rss_start = rss_bytes()
        t0 = time.perf_counter()
        result = run_sweep(space, storage_path=str(workdir / "ray"), tracking_uri=uri, experiment="bench", verbose=0)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    failed = [t for t in result.trials if t.status != "finished"]
    if failed or len(result.trials) != trials:
        raise RuntimeError(f"{len(result.trials)} trials, not finished: "
                           + "; ".join(f"{t.trial_id} {t.status} {t.error}" for t in failed[:5]))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench")
    runs = []
    token = None
    while True:
        page = client.search_runs([experiment.experiment_id], "tags.`qshield.role` = 'trial'", max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    with_model = sum(1 for r in runs if r.data.tags.get("qshield.model_id") and r.info.status == "FINISHED")
    order = sorted(probe.started, key=probe.started.get)
    return {"trials": trials, "slots": slots, "window": window, "wall": wall, "order": order,
            "tracking": [probe.tracking_s[t] for t in order], "gaps": gaps(probe), "rss_start": rss_start,
            "rss": probe.rss, "runs": len(runs), "with_model": with_model,
            "processes": len(set(probe.pid.values())),
            "trial_s": [float(t.metrics["time_total_s"]) for t in result.trials]}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[round(q * (len(ordered) - 1))]


def windows(res: dict[str, Any]) -> list[dict[str, float]]:
    """Per window of ``window`` trials (start order): median / p25 / mean tracking seconds, median gap."""
    w, order = res["window"], res["order"]
    out = []
    for i in range(0, res["trials"] - w + 1, w):
        track = res["tracking"][i:i + w]
        gaps_ = [res["gaps"][t] for t in order[i:i + w] if t in res["gaps"]]
        out.append({"first": i + 1, "last": i + w, "median": statistics.median(track),
                    "p25": _quantile(track, 0.25), "mean": statistics.fmean(track),
                    "gap": statistics.median(gaps_) if gaps_ else float("nan")})
    return out


def render(runs: list[dict[str, Any]], load: tuple[float, float]) -> str:
    res = runs[0]
    w, n = res["window"], res["trials"]
    per_run = [windows(r) for r in runs]
    # best of N per window (other work on the machine only adds time), as bench/orchestration.py does per layout
    best = [min((ws[k] for ws in per_run), key=lambda x: x["median"]) for k in range(len(per_run[0]))]
    ratio = best[-1]["median"] / best[0]["median"]
    mib = 1024**2
    lines = [
        f"## Tracking over a {n}-trial sweep: per-trial cost and driver memory",
        "",
        (f"Measured by `python -m bench.tracking --trials {n} --slots {res['slots']} --window {w} --repeats "
         f"{len(runs)}` on {_machine()}; Python {platform.python_version()}, ray {version('ray')}, mlflow "
         f"{version('mlflow')}, optuna {version('optuna')}; git {_git_sha()}; "
         f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Load average (1 min) before / after: "
         f"{load[0]:.1f} / {load[1]:.1f}."),
        "",
        (f"{len(runs)} sweep(s) of {n} tiny trials each (digits, 100 train / 20 test images, 1 epoch of the small "
         f"CNN, FGSM on 8 images), each in a fresh driver process, through `run_sweep` on a local Ray, "
         f"{res['slots']} trial(s) at a time, MLflow on a fresh sqlite store: "
         + "; ".join(f"{r['runs']} trial runs, {r['with_model']} finished with a logged model, {r['processes']} "
                     f"worker process(es), wall {r['wall']:.0f} s" for r in runs)
         + f"; trial time {statistics.median(res['trial_s']):.2f} s median. *Tracking per trial*: seconds in the "
         "MLflow callback for one trial (run creation, params, per-epoch and final metrics, tags, attack table, "
         "JSON artifacts, the pyfunc LoggedModel with its input-example check, end of run), trials in start order; "
         "*between trials*: one worker's last report to its next trial's start. Per window the sweep with the "
         "lower median is shown (best of N: load from other work drifts between the first and the last window)."),
        "",
        "| trials | tracking per trial: median | p25 | mean | between trials: median | medians of every sweep |",
        "|---|---|---|---|---|---|",
    ]
    for k, b in enumerate(best):
        lines.append(f"| {b['first']}-{b['last']} | {b['median'] * 1e3:.0f} ms | {b['p25'] * 1e3:.0f} ms | "
                     f"{b['mean'] * 1e3:.0f} ms | {b['gap'] * 1e3:.0f} ms | "
                     + ", ".join(f"{ws[k]['median'] * 1e3:.0f}" for ws in per_run) + " ms |")
    lines += [
        "",
        (f"Tracking per trial, last {w} / first {w} trials (medians): {ratio:.2f}x (target ≤ {TARGET_FLAT:.2f}x: "
         f"{'met' if ratio <= TARGET_FLAT else 'not met'}); every sweep: "
         + ", ".join(f"{ws[-1]['median'] / ws[0]['median']:.2f}x" for ws in per_run) + "."),
        "",
    ]
    for i, r in enumerate(runs, 1):
        rss = r["rss"]
        (t0, b0), (t1, b1) = rss[0], rss[-1]
        lines.append(
            f"Driver memory (resident set), sweep {i}: before {r['rss_start'] / mib:.0f} MiB; after every {w} trials "
            + ", ".join(f"{k}: {b / mib:.0f}" for k, b in rss)
            + f" MiB; from trial {t0} to {t1}: {(b1 - b0) / mib:+.1f} MiB, {(b1 - b0) / max(1, t1 - t0) / 1024:.0f} "
            "KiB per trial.")
    lines += [
        "",
        ("What grows is Tune's: it keeps every trial's object until the sweep ends (its last result, and "
         "min/max/average/last-5/last-10 records of every numeric result key); the tracker keeps one index entry "
         "per trial."),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=300, help="trials in the sweep (default 300)")
    parser.add_argument("--slots", type=int, default=1, help="trials at a time (CPUs of the local Ray; default 1)")
    parser.add_argument("--window", type=int, default=50, help="trials compared at each end (default 50)")
    parser.add_argument("--repeats", type=int, default=2, help="sweeps, each in a fresh process (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--child", metavar="OUT", help=argparse.SUPPRESS)  # one sweep, its figures to OUT (JSON)
    args = parser.parse_args(argv)
    if args.window < 2 or args.trials < 2 * args.window:
        parser.error(f"--trials={args.trials} --window={args.window}: need window >= 2 and trials >= 2 x window")
    if args.slots < 1 or args.repeats < 1:
        parser.error(f"--slots={args.slots} --repeats={args.repeats}: at least 1 each")
    if args.child:
        with tempfile.TemporaryDirectory(prefix="qshield-bench-tracking-") as tmp:
            res = run(args.trials, args.slots, args.window, Path(tmp))
        Path(args.child).write_text(json.dumps(res))
        return 0
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="qshield-bench-tracking-") as tmp:
        for r in range(args.repeats):
            out = Path(tmp) / f"sweep{r}.json"
            subprocess.run([sys.executable, "-m", "bench.tracking", "--trials", str(args.trials), "--slots",
                            str(args.slots), "--window", str(args.window), "--child", str(out)],
                           cwd=ROOT, check=True)
            runs.append(json.loads(out.read_text()))
            print(f"sweep {r + 1}/{args.repeats}: " + ", ".join(
                f"{x['first']}-{x['last']}: {x['median'] * 1e3:.0f} ms" for x in windows(runs[-1])), flush=True)
    text = render(runs, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        write_section(text, SECTION)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
