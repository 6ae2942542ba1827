"""Benchmark: what the sweep machinery costs per trial, and trial throughput on 1 vs 2 Ray nodes, in one run.

The same tiny sweep (sklearn digits, 200 training / 60 test images, one epoch of a hybrid small CNN + 2-4 qubits,
FGSM + 3-step PGD on 16 images, one CPU per trial, MLflow on a temporary sqlite store) runs through
:func:`orchestrator.runtime.run_sweep` on three ``ray.cluster_utils.Cluster`` layouts, each started fresh:

* ``1 node x 1 CPU``: one trial at a time;
* ``2 nodes x 1 CPU``: head + one worker node, two trials at a time (one per node);
* ``1 node x 2 CPUs``: the control with the same CPU count as two nodes (what a second node costs or saves).

The TPE sampler is seeded and samples at random for all trials (``n_startup_trials`` = trials), so every layout
runs the same trial configurations (checked). Each layout runs ``--repeats`` times, interleaved (the order
rotates every round), and the table shows the repeat with the shortest wall time (best of N, as ``timeit``
does: other work on the shared machine only ever adds time). Per layout:

* ``wall``: the ``run_sweep`` call once the cluster is up (MLflow parent run, Tune setup, all trials, summary);
* ``trial time``: each trial's own time as Tune reports it (``time_total_s``: inside the trainable, from its
  start to its last report: data, training, attacks);
* ``slots`` k = CPUs / CPUs per trial; ``lower bound`` = max(sum of trial times / k, longest trial): the wall
  time of a perfect scheduler with zero overhead;
* ``overhead per trial`` = (k * wall - sum of trial times) / trials: slot-seconds not spent inside a trial
  (actor and worker-process start, placement groups, checkpoint and result syncing, the MLflow callback,
  idle slots at the tail), per trial;
* ``sweep overhead`` = wall - lower bound;
* ``throughput`` = trials / wall, per minute.

Writes the table with machine and version information to ``docs/benchmarks.md`` (section
``orchestration``) unless ``--no-write``. Run from the repository root::

    python -m bench.orchestration [--trials 6] [--repeats 3] [--no-warmup] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.quantum_layer import DOC, ROOT, write_section

SECTION = "orchestration"


@dataclass(frozen=True)
class Layout:
    """A ``ray.cluster_utils.Cluster``: CPUs of the head node, then of each added worker node."""

    label: str
    node_cpus: tuple[int, ...]

    @property
    def cpus(self) -> int:
        return sum(self.node_cpus)


LAYOUTS = (
    Layout("1 node x 1 CPU", (1,)),
    Layout("2 nodes x 1 CPU", (1, 1)),
    Layout("1 node x 2 CPUs", (2,)),
)


@dataclass
class Measurement:
    layout: Layout
    cluster_start_s: float
    wall_s: float
    trial_s: list[float]
    trials_per_node: list[int]  # in node order: head first
    configs: list[dict[str, Any]] = field(repr=False)

    @property
    def slots(self) -> int:
        return self.layout.cpus  # one CPU per trial

    @property
    def lower_bound_s(self) -> float:
        return max(sum(self.trial_s) / self.slots, max(self.trial_s))

    @property
    def overhead_per_trial_s(self) -> float:
        return (self.slots * self.wall_s - sum(self.trial_s)) / len(self.trial_s)

    @property
    def sweep_overhead_s(self) -> float:
        return self.wall_s - self.lower_bound_s

    @property
    def throughput_per_min(self) -> float:
        return 60.0 * len(self.trial_s) / self.wall_s


def tiny_space(name: str, trials: int, max_concurrent: int) -> dict[str, Any]:
    """The benchmark sweep (see the module docstring); every trial's configuration drawn at random (seeded)."""
    return {
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
            "measurement": "expval",
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
            "settings": {"pgd": {"steps": 3, "alpha": "4/255"}},
        },
        "objectives": {"accuracy": "max", "asr": "min", "adversary_cost": "max"},
        "resources": {"cpus": 1, "gpus": 0},
        "num_samples": trials,
        "max_concurrent": max_concurrent,
        "search": {"algorithm": "tpe", "n_startup_trials": trials},
    }


def measure(layout: Layout, trials: int, workdir: Path) -> Measurement:
    """Start ``layout`` as a fresh cluster, run the sweep on it, stop the cluster."""
    import ray
    from ray.cluster_utils import Cluster

    from orchestrator.space import parse_space
    from orchestrator.runtime import run_sweep

    name = "bench-" + layout.label.replace(" ", "").replace("x", "-")
    workdir.mkdir(parents=True, exist_ok=True)
    space = parse_space(tiny_space(name, trials, layout.cpus), source="<bench>")
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": layout.node_cpus[0], "include_dashboard": False})
    try:
        nodes = [cluster.head_node] + [cluster.add_node(num_cpus=c) for c in layout.node_cpus[1:]]
        cluster.wait_for_nodes()
        node_ids = [n.node_id for n in nodes]
        ray.init(address=cluster.address, log_to_driver=False)
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = run_sweep(space, storage_path=str(workdir / "ray"), tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
                           experiment="bench", verbose=0)
        wall = time.perf_counter() - t1
    finally:
        ray.shutdown()
        cluster.shutdown()
    failed = [t for t in result.trials if t.status != "finished"]
    if failed or len(result.trials) != trials:
        raise RuntimeError(f"{layout.label}: {len(result.trials)} trials, not finished: "
                           + "; ".join(f"{t.trial_id} {t.status} {t.error}" for t in failed))
    ran_on = [t.metrics["node_id"] for t in result.trials]
    unknown = set(ran_on) - set(node_ids)
    if unknown:
        raise RuntimeError(f"{layout.label}: trials ran on nodes {unknown} outside the cluster {node_ids}")
    return Measurement(
        layout=layout,
        cluster_start_s=started,
        wall_s=wall,
        trial_s=[float(t.metrics["time_total_s"]) for t in result.trials],
        trials_per_node=[ran_on.count(n) for n in node_ids],
        configs=sorted((_config_key(t.config) for t in result.trials), key=repr),
    )


def _config_key(config: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 12) if isinstance(v, float) else v) for k, v in sorted(config.items())}


def run(trials: int, repeats: int, warmup: bool, workdir: Path) -> list[list[Measurement]]:
    """``repeats`` rounds over :data:`LAYOUTS` (the order rotates each round); one list of repeats per layout."""
    os.environ.pop("RAY_ADDRESS", None)  # the clusters below are addressed explicitly
    if warmup:  # page cache and Python bytecode for the worker imports (torch, qshield, Tune), not measured
        print("warm-up sweep (not measured) ...", flush=True)
        measure(Layout("warm-up", (1,)), 1, workdir / "warmup")
    out: list[list[Measurement]] = [[] for _ in LAYOUTS]
    for r in range(repeats):
        for k in range(len(LAYOUTS)):
            i = (k + r) % len(LAYOUTS)
            layout = LAYOUTS[i]
            m = measure(layout, trials, workdir / f"r{r}-layout{i}")
            print(f"[{r + 1}/{repeats}] {layout.label}: wall {m.wall_s:.1f} s, trials {sum(m.trial_s):.1f} s in "
                  f"total, overhead/trial {m.overhead_per_trial_s:.2f} s, {m.throughput_per_min:.1f} trials/min, "
                  f"per node {m.trials_per_node}", flush=True)
            out[i].append(m)
    reference = out[0][0].configs
    if any(m.configs != reference for ms in out for m in ms):
        raise RuntimeError("the layouts ran different trial configurations; the comparison would be unfair")
    return out


def best_run(runs: list[Measurement]) -> Measurement:
    """The repeat with the shortest sweep wall time (its figures are shown together, so they stay consistent)."""
    return min(runs, key=lambda m: m.wall_s)


def render(runs: list[list[Measurement]], trials: int, load: tuple[float, float]) -> str:
    results = [best_run(r) for r in runs]
    repeats = len(runs[0])
    one, two, control = results
    lines = [
        "## Sweep orchestration: overhead per trial and throughput, 1 vs 2 Ray nodes",
        "",
        (f"Measured by `python -m bench.orchestration --trials {trials} --repeats {repeats}` on {_machine()}; "
         f"{_versions()}; git {_git_sha()}; {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC. "
         f"Load average (1 min) of the machine before / after: {load[0]:.1f} / {load[1]:.1f}."),
        "",
        (f"The same {trials}-trial sweep (sklearn digits, 200 train / 60 test images, 1 epoch of a hybrid small "
         "CNN + 2-4 qubits, FGSM + 3-step PGD on 16 images, 1 CPU per trial, MLflow on sqlite) through "
         "`run_sweep` on a fresh `ray.cluster_utils.Cluster` per layout and repeat; identical trial "
         f"configurations in every layout (seeded random sampling, checked); {repeats} interleaved repeats, the "
         "row shows the repeat with the shortest wall time (other work on the machine only adds time), the last "
         "column the throughput of every repeat. "
         "*Trial time* is Tune's `time_total_s` (inside the trainable); *lower bound* = max(sum of trial times / "
         "slots, longest trial); *overhead per trial* = (slots x wall - sum of trial times) / trials, i.e. "
         "slot-seconds spent outside the trials' own code (a fresh worker process per trial importing torch and "
         "qshield, actor and placement-group set-up, result and checkpoint syncing, the MLflow callback, idle "
         "slots at the end)."),
        "",
        ("| layout | slots | cluster start (s) | sweep wall (s) | trial time sum / mean (s) | lower bound (s) "
         "| sweep overhead (s) | overhead per trial (s) | throughput (trials/min) | trials per node "
         "| throughput, all repeats |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, ms in zip(results, runs):
        lines.append(
            f"| {m.layout.label} | {m.slots} | {m.cluster_start_s:.1f} | {m.wall_s:.1f} | "
            f"{sum(m.trial_s):.1f} / {sum(m.trial_s) / len(m.trial_s):.2f} | {m.lower_bound_s:.1f} | "
            f"{m.sweep_overhead_s:.1f} | {m.overhead_per_trial_s:.2f} | {m.throughput_per_min:.1f} | "
            f"{' + '.join(str(c) for c in m.trials_per_node)} | "
            f"{', '.join(f'{x.throughput_per_min:.1f}' for x in ms)} |"
        )
    lines += [
        "",
        (f"Two nodes vs one: {two.throughput_per_min / one.throughput_per_min:.2f}x the throughput. Two nodes vs "
         f"one node with the same two CPUs: {two.throughput_per_min / control.throughput_per_min:.2f}x. "
         f"{os.cpu_count()} cores on this machine, shared with other work while measuring (the load average "
         "above counts it): the trial times of the two-slot layouts include the contention of two trials, Ray's "
         "own processes and that other work for the same cores."),
    ]
    return "\n".join(lines)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024**2:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.system()} {platform.machine()} ({cpu}, {os.cpu_count()} cores{mem})"


def _versions() -> str:
    names = ("ray", "torch", "mlflow", "optuna")
    return f"Python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in names)


def _git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.orchestration", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6, help="trials per sweep (default 6; at least 2)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the layouts (default 3)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the unmeasured one-trial warm-up sweep")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if args.trials < 2:
        parser.error(f"--trials={args.trials}: at least 2 trials are needed to fill two slots")
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: at least 1")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="qshield-bench-") as tmp:
        runs = run(args.trials, args.repeats, not args.no_warmup, Path(tmp))
    text = render(runs, args.trials, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        write_section(text, SECTION)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
