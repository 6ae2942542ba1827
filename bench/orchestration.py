"""Benchmark: what the sweep machinery costs per trial, and trial throughput on 1 vs 2 Ray nodes, in one run.

The same tiny sweep (sklearn digits, 200 training / 60 test images, one epoch of a hybrid small CNN + 2-4 qubits,
FGSM + 3-step PGD on 16 images, one CPU per trial, MLflow on a temporary sqlite store) runs through
:func:`orchestrator.runtime.run_sweep` on three ``ray.cluster_utils.Cluster`` layouts, each started fresh:

* ``1 node x 1 CPU``: one trial at a time;
* ``2 nodes x 1 CPU``: head + one worker node, two trials at a time (one per node);
* ``1 node x 2 CPUs``: the control with the same CPU count as two nodes (what a second node costs or saves).

These CPUs are Ray's logical resources: every process may run on every core of the machine, so on a small machine
the driver and Ray's own processes take cores the one-slot layout leaves idle. With ``--pin`` the same layouts
run as equal machines: each node's processes (Ray's, and the worker processes that run the trials) are held to
cores of their own with ``os.sched_setaffinity`` (inherited by the processes a node starts; every process below
each node checked twice a second during the sweep, and every trial's process must have been seen), the driver's
with the head's, as a ``ray job submit`` driver runs on the head. Nothing in Ray or the standard library does this
for ``cluster_utils`` nodes, hence the few lines here. With ``--dedicated-head`` the same trial nodes are workers
added beside a head node that runs no trials (``num_cpus`` 0, as ``k8s/base`` sets up a KubeRay cluster), where the
driver and Ray's head processes run: pinned, the head gets a core of its own (3 cores for the two-node layout).

The TPE sampler is seeded and samples at random for all trials (``n_startup_trials`` = trials), so every layout
runs the same trial configurations (checked). Each layout runs ``--repeats`` times, interleaved (the order
rotates every round), and the table shows the repeat with the shortest wall time (best of N, as ``timeit``
does: other work on the shared machine only ever adds time). With ``--baseline REF`` the same layouts also run
on the code of git revision ``REF`` (its ``orchestrator`` and ``qshield`` packages, this benchmark's code), in the
same interleaved rounds: a before/after comparison under the same load.

Every measurement runs in a child process per code version (``--serve``; it imports that version's packages,
runs one unmeasured one-trial warm-up sweep so that the driver's imports are done, then measures on request).
Before each measured sweep the MLflow and Optuna sqlite stores are created (and timed: *fresh store*), as they
exist for every sweep but the first against a store; the sweep's own time starts at the ``run_sweep`` call.
Per layout:

* ``wall``: the ``run_sweep`` call once the cluster is up (MLflow parent run, reading the data, Tune set-up,
  all trials, summary);
* ``trial time``: each trial's own time as Tune reports it (``time_total_s``: inside the trainable, from its
  start to its last report: training, attacks; the first trial of each worker process also imports what the
  trial code imports lazily, e.g. ``torch._dynamo`` through the first ``torch.optim.Adam``);
* ``slots`` k = CPUs / CPUs per trial; ``overhead per trial`` = (k * wall - sum of trial times) / trials:
  slot-seconds not spent inside a trial (driver set-up, actor and worker-process start with its imports,
  placement groups, checkpoint and result syncing, the MLflow callback, idle slots at the tail), per trial;
* ``set-up`` = from the call to the first trial's MLflow run (driver set-up, first worker process up);
  ``wind-down`` = from the last trial's run ending to the return (summary); ``between trials`` = the rest of the
  overhead, per trial (what each further trial adds);
* ``throughput`` = trials / wall, per minute; ``steady throughput`` = trials completed per minute after every
  slot has finished its first trial (from the MLflow runs' end times): what further trials add, without the
  one-off set-up and each worker process's first-trial warm-up;
* ``worker processes``: distinct trial process ids (one per slot when actors are reused);
* ``driver CPU per trial``: CPU seconds of the driver process (Tune's loop, the search algorithm, the MLflow
  callback; all its threads) in the ``run_sweep`` call, per trial. One driver serves the whole cluster, so
  60 / this is a ceiling on trials per minute of this size, however many nodes run them.

Writes the table with machine and version information to ``docs/benchmarks.md`` (section
``orchestration``, ``orchestration_pinned`` with ``--pin``, ``_dedicated_head`` appended with ``--dedicated-head``;
with another ``--trials`` N, ``_<N>trials`` appended)
unless ``--no-write``. Run
from the repository root::

    python -m bench.orchestration [--trials 6] [--repeats 3] [--pin] [--dedicated-head] [--baseline REF]
                                  [--no-warmup] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.quantum_layer import DOC, ROOT, _cpu_name, write_section

SECTION = "orchestration"
DEFAULT_TRIALS = 6
DONE = "__bench_orchestration_done__"
#: the issue's targets (issue 13, item 2)
TARGET_OVERHEAD_S = 1.0
TARGET_TWO_NODES = 1.85


@dataclass(frozen=True)
class Layout:
    """A ``ray.cluster_utils.Cluster``: CPUs of the nodes that run trials, the head's first unless
    ``dedicated_head``; ``dedicated_head``: the head (and the driver) runs no trials (``num_cpus`` 0, as in
    ``k8s/base``) and every entry of ``node_cpus`` is an added worker node; ``pinned``: each node's processes (the
    driver's with the head's) held to as many cores of their own, a dedicated head to one core (see
    :func:`node_cores`, :func:`pin_process`)."""

    label: str
    node_cpus: tuple[int, ...]
    pinned: bool = False
    dedicated_head: bool = False

    @property
    def cpus(self) -> int:
        """CPUs for trials (Ray's logical resources; one trial each): the slots."""
        return sum(self.node_cpus)

    @property
    def nodes(self) -> tuple[int, ...]:
        """Ray's CPUs of every node of the cluster, the head first (0 for a dedicated head)."""
        return ((0,) if self.dedicated_head else ()) + self.node_cpus

    @property
    def cores(self) -> int:
        """Cores a pinned layout needs: one per trial CPU, and one for a dedicated head (see :func:`node_cores`)."""
        return sum(max(n, 1) for n in self.nodes)


LAYOUTS = (
    Layout("1 node x 1 CPU", (1,)),
    Layout("2 nodes x 1 CPU", (1, 1)),
    Layout("1 node x 2 CPUs", (2,)),
)


def layouts(pinned: bool = False, dedicated_head: bool = False) -> tuple[Layout, ...]:
    """:data:`LAYOUTS` as measured: ``pinned`` (``--pin``), every node on cores of its own, as equal machines;
    ``dedicated_head`` (``--dedicated-head``), the same trial nodes as workers beside a head that runs no trials."""
    def label(layout: Layout) -> str:
        text = f"head + {layout.label}" if dedicated_head else layout.label
        return f"{text} (pinned)" if pinned else text

    return tuple(Layout(label(layout), layout.node_cpus, pinned, dedicated_head) for layout in LAYOUTS)


def node_cores(layout: Layout) -> list[set[int]]:
    """The cores each node of a pinned layout gets, in node order (head first, one core for a dedicated head):
    consecutive cores of those this process may use."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < layout.cores:
        raise RuntimeError(f"{layout.label}: needs {layout.cores} cores of its own, this process may use "
                           f"{len(cores)} ({cores})")
    out, start = [], 0
    for n in (max(n, 1) for n in layout.nodes):  # a dedicated head runs no trial but Ray's processes and the driver
        out.append(set(cores[start:start + n]))
        start += n
    return out


def pin_process(cores: set[int]) -> None:
    """Hold every thread of this process to ``cores`` (``sched_setaffinity`` acts on one thread; processes and
    threads started afterwards inherit the affinity of the thread that starts them)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


@dataclass
class Measurement:
    layout: Layout
    cluster_start_s: float
    store_init_s: float
    wall_s: float
    trial_s: list[float]
    trials_per_node: list[int]  # in node order: head first
    setup_s: float
    wind_down_s: float
    run_end_s: list[float]  # the trials' MLflow runs' end times, seconds after the run_sweep call, sorted
    processes: int
    configs: list[dict[str, Any]] = field(repr=False)
    driver_cpu_s: float = float("nan")  # CPU seconds of the driver process (all its threads) in the run_sweep call

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
    def between_trials_s(self) -> float:
        """Overhead per trial once set-up and wind-down (slot-seconds) are taken out."""
        rest = self.slots * (self.wall_s - self.setup_s - self.wind_down_s) - sum(self.trial_s)
        return rest / len(self.trial_s)

    @property
    def driver_cpu_per_trial_s(self) -> float:
        return self.driver_cpu_s / len(self.trial_s)

    @property
    def throughput_per_min(self) -> float:
        return 60.0 * len(self.trial_s) / self.wall_s

    @property
    def steady_throughput_per_min(self) -> float:
        """Trials per minute from the k-th completion (every slot done with its first trial) to the last."""
        ends, k = self.run_end_s, self.slots
        if len(ends) <= k or ends[-1] <= ends[k - 1]:
            return float("nan")
        return 60.0 * (len(ends) - k) / (ends[-1] - ends[k - 1])

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["layout"] = {**asdict(self.layout), "node_cpus": list(self.layout.node_cpus)}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        data = dict(data)
        data["layout"] = Layout(**{**data["layout"], "node_cpus": tuple(data["layout"]["node_cpus"])})
        return cls(**data)


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
            # unused by standard training, but part of every trial's configuration: fixed here so that a baseline
            # revision with another default (7 before the one-schema change) runs the same configurations
            "method": "standard",
            "pgd_steps": 10,
        },
        "attacks": {
            "names": ["fgsm", "pgd"],
            "n_eval": 16,
            "batch_size": 16,
            "diagnostics": False,
            # 3 steps of 12/255 reach eps = 32/255 (digits' threshold); a smaller alpha is refused as unreachable
            "settings": {"pgd": {"steps": 3, "alpha": "12/255"}},
        },
        "objectives": {"accuracy": "max", "asr": "min", "adversary_cost": "max"},
        "resources": {"cpus": 1, "gpus": 0},
        "num_samples": trials,
        "max_concurrent": max_concurrent,
        "search": {"algorithm": "tpe", "n_startup_trials": trials},
    }


def prepare_stores(workdir: Path, uri: str) -> float:
    """Create the sqlite MLflow store (with the benchmark's experiment) and the Optuna store next to it, as a
    sweep finds them after the first one; returns the seconds it took."""
    import optuna

    from orchestrator.runtime import optuna_storage
    from orchestrator.tracking import SweepTracker

    t0 = time.perf_counter()
    SweepTracker("store-init", "bench", uri).experiment_id
    study = optuna_storage(uri)
    if study:
        optuna.storages.RDBStorage(study)
    return time.perf_counter() - t0


def measure(layout: Layout, trials: int, workdir: Path) -> Measurement:
    """Start ``layout`` as a fresh cluster, run the sweep on it, stop the cluster."""
    import ray
    from mlflow import MlflowClient
    from ray.cluster_utils import Cluster

    from orchestrator.runtime import run_sweep
    from orchestrator.space import parse_space

    name = "bench-" + (layout.label.replace(" (pinned)", "-pinned").replace(" + ", "-").replace(" ", "")
                       .replace("x", "-"))
    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    store_init = prepare_stores(workdir, uri)
    space = parse_space(tiny_space(name, trials, layout.cpus), source="<bench>")
    everywhere = os.sched_getaffinity(0)
    cores = node_cores(layout) if layout.pinned else [everywhere] * len(layout.nodes)
    pin_process(cores[0])  # the driver, and the head node's processes it starts, on the head's cores
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": layout.nodes[0], "include_dashboard": False})
    try:
        nodes = [cluster.head_node]
        for cpus, own in zip(layout.nodes[1:], cores[1:]):
            os.sched_setaffinity(0, own)  # this thread starts the node's processes: they inherit its cores
            nodes.append(cluster.add_node(num_cpus=cpus))
            os.sched_setaffinity(0, cores[0])
        cluster.wait_for_nodes()
        node_ids = [n.node_id for n in nodes]
        ray.init(address=cluster.address, log_to_driver=False)
        started = time.perf_counter() - t0
        called = time.time()
        with _watch_pinning(layout, nodes, cores) if layout.pinned else contextlib.nullcontext(set()) as seen:
            t1, cpu = time.perf_counter(), time.process_time()
            result = run_sweep(space, storage_path=str(workdir / "ray"), tracking_uri=uri, experiment="bench",
                               verbose=0)
            wall, driver_cpu = time.perf_counter() - t1, time.process_time() - cpu
        returned = called + wall
        unseen = ({t.metrics.get("pid") for t in result.trials} - {None} - seen) if layout.pinned else set()
        if unseen:
            raise RuntimeError(f"{layout.label}: trial processes {sorted(unseen)} were never seen below a node")
    finally:
        ray.shutdown()
        cluster.shutdown()
        pin_process(everywhere)
    failed = [t for t in result.trials if t.status != "finished"]
    if failed or len(result.trials) != trials:
        raise RuntimeError(f"{layout.label}: {len(result.trials)} trials, not finished: "
                           + "; ".join(f"{t.trial_id} {t.status} {t.error}" for t in failed))
    ran_on = [t.metrics["node_id"] for t in result.trials]
    unknown = set(ran_on) - set(node_ids)
    if unknown:
        raise RuntimeError(f"{layout.label}: trials ran on nodes {unknown} outside the cluster {node_ids}")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`qshield.role` = 'trial'",
                              max_results=1000)
    if len(runs) != trials:
        raise RuntimeError(f"{layout.label}: {len(runs)} MLflow trial runs for {trials} trials")
    starts = sorted(r.info.start_time / 1000.0 - called for r in runs)
    ends = sorted(r.info.end_time / 1000.0 - called for r in runs)
    return Measurement(
        layout=layout,
        cluster_start_s=started,
        store_init_s=store_init,
        wall_s=wall,
        trial_s=[float(t.metrics["time_total_s"]) for t in result.trials],
        trials_per_node=[ran_on.count(n) for n in node_ids],
        setup_s=starts[0],
        wind_down_s=(returned - called) - ends[-1],
        run_end_s=ends,
        processes=len({t.metrics.get("pid") for t in result.trials}),
        configs=sorted((_config_key(t.config) for t in result.trials), key=repr),
        driver_cpu_s=driver_cpu,
    )


@contextlib.contextmanager
def _watch_pinning(layout: Layout, nodes: list[Any], cores: list[set[int]], every_s: float = 0.5
                   ) -> Iterator[set[int]]:
    """While the block runs (a sweep: its trials' worker processes end with it), check every ``every_s`` seconds,
    and once more at its end, that each node's processes run on that node's cores (:func:`_check_pinned`); yields
    the processes seen so far. The checks run in a thread of the driver process (their CPU time counts in the
    driver's, a few milliseconds a check)."""
    seen: set[int] = set()
    errors: list[RuntimeError] = []
    stop = threading.Event()

    def check() -> None:
        try:
            seen.update(_check_pinned(layout, nodes, cores))
        except RuntimeError as err:
            errors.append(err)
            stop.set()

    def watch() -> None:
        while not stop.wait(every_s):
            check()

    thread = threading.Thread(target=watch, name="bench-pinning", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
    check()
    if errors:
        raise errors[0]


def _check_pinned(layout: Layout, nodes: list[Any], cores: list[set[int]]) -> set[int]:
    """Every process of every node (Ray's own and the worker processes its raylet started, with theirs) runs on
    that node's cores, else the layout would not be what it says; returns the processes checked."""
    import psutil  # Ray ships it (ray/thirdparty_files, put on the path by ``import ray``)

    checked: set[int] = set()
    for node, own in zip(nodes, cores):
        for info in (info for processes in node.all_processes.values() for info in processes):
            try:
                top = psutil.Process(info.process.pid)
                below = [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:  # ended meanwhile
                continue
            for process in below:
                try:
                    allowed, name = set(process.cpu_affinity()), process.name()
                except psutil.NoSuchProcess:
                    continue
                if allowed != own:
                    raise RuntimeError(f"{layout.label}: process {process.pid} ({name}) may run on cores "
                                       f"{sorted(allowed)}, not its node's {sorted(own)}")
                checked.add(process.pid)
    return checked


def _config_key(config: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 12) if isinstance(v, float) else v) for k, v in sorted(config.items())}


# ------------------------------------------------------------------------------------------------------------
# child processes: one per code version


def serve(warmup: bool) -> int:
    """Child mode: optionally warm up, then measure one layout per JSON command line read from stdin."""
    os.environ.pop("RAY_ADDRESS", None)  # the clusters are addressed explicitly
    if warmup:  # page cache, bytecode and the driver's imports (MLflow store, Optuna, Tune, plots): not measured
        with tempfile.TemporaryDirectory(prefix="qshield-bench-warmup-") as tmp:
            measure(Layout("warm-up", (1,)), 1, Path(tmp))
    import orchestrator

    print(DONE, Path(orchestrator.__file__).resolve().parent, flush=True)  # which code this child runs
    for line in sys.stdin:
        command = json.loads(line)
        layout = layouts(command["pinned"], command["dedicated_head"])[command["layout"]]
        m = measure(layout, command["trials"], Path(command["workdir"]))
        Path(command["out"]).write_text(json.dumps(m.to_json()))
        print(DONE, flush=True)
    return 0


class Child:
    """A ``--serve`` process running one code version (``pythonpath`` first on its path)."""

    def __init__(self, label: str, pythonpath: Path, warmup: bool) -> None:
        self.label = label
        expected = (pythonpath / "orchestrator").resolve()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")])}
        env.pop("RAY_ADDRESS", None)
        args = [sys.executable, "-m", "bench.orchestration", "--serve"] + ([] if warmup else ["--no-warmup"])
        # cwd: ``python -m`` puts it first on the path, and Ray puts the driver's on its workers' paths
        self.proc = subprocess.Popen(args, cwd=pythonpath, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        running = self._wait()
        if Path(running) != expected:
            self.close()
            raise RuntimeError(f"{label}: the child runs the orchestrator in {running}, not {expected}")

    def _wait(self) -> str:
        """Forward the child's output until its next done line; returns what follows the marker on it."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.split(" ", 1)[0].strip() == DONE:
                return line.strip()[len(DONE):].strip()
            sys.stderr.write(f"[{self.label}] {line}")
        raise RuntimeError(f"{self.label}: the benchmark child exited with {self.proc.wait()}")

    def measure(self, layout: int, pinned: bool, dedicated_head: bool, trials: int, workdir: Path) -> Measurement:
        out = workdir / "measurement.json"
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"layout": layout, "pinned": pinned, "dedicated_head": dedicated_head,
                                          "trials": trials, "workdir": str(workdir), "out": str(out)}) + "\n")
        self.proc.stdin.flush()
        self._wait()
        return Measurement.from_json(json.loads(out.read_text()))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=120)


def baseline_tree(ref: str, workdir: Path) -> tuple[str, Path]:
    """A folder to put first on the path: ``orchestrator`` and ``qshield`` of git revision ``ref`` (extracted with
    ``git archive``), and this checkout's ``bench``; returns (short sha, folder)."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    src, tree = workdir / f"src-{sha}", workdir / f"path-{sha}"
    src.mkdir(parents=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "orchestrator", "qshield"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    for package in ("orchestrator", "qshield"):
        (tree / package).symlink_to(src / package)
    (tree / "bench").symlink_to(ROOT / "bench")
    return sha, tree


def run(trials: int, repeats: int, warmup: bool, workdir: Path, baseline: str | None, pin: bool = False,
        dedicated_head: bool = False) -> dict[str, list[list[Measurement]]]:
    """``repeats`` rounds over every (code version, layout) pair, the order rotating each round; per version one
    list of repeats per layout."""
    versions: dict[str, Path] = {f"{_git_sha()} (this checkout)": ROOT}
    if baseline is not None:
        sha, tree = baseline_tree(baseline, workdir)
        versions[f"{sha} (baseline)"] = tree
    children = {label: Child(label, path, warmup) for label, path in versions.items()}
    try:
        out = {label: [[] for _ in LAYOUTS] for label in versions}
        pairs = [(label, i) for label in versions for i in range(len(LAYOUTS))]
        for r in range(repeats):
            for k in range(len(pairs)):
                label, i = pairs[(k + r) % len(pairs)]
                m = children[label].measure(i, pin, dedicated_head, trials,
                                            workdir / f"r{r}-{label.split()[0]}-layout{i}")
                print(f"[{r + 1}/{repeats}] {label}, {m.layout.label}: wall {m.wall_s:.1f} s, trials "
                      f"{sum(m.trial_s):.1f} s in total, overhead/trial {m.overhead_per_trial_s:.2f} s, "
                      f"{m.throughput_per_min:.1f} trials/min (steady {m.steady_throughput_per_min:.1f}), per node "
                      f"{m.trials_per_node}, {m.processes} worker processes", flush=True)
                out[label][i].append(m)
    finally:
        for child in children.values():
            child.close()
    reference = next(iter(out.values()))[0][0].configs
    if any(m.configs != reference for runs in out.values() for ms in runs for m in ms):
        raise RuntimeError("the layouts ran different trial configurations; the comparison would be unfair")
    return out


def best_run(runs: list[Measurement]) -> Measurement:
    """The repeat with the shortest sweep wall time (its figures are shown together, so they stay consistent)."""
    return min(runs, key=lambda m: m.wall_s)


def render(results: dict[str, list[list[Measurement]]], trials: int, load: tuple[float, float]) -> str:
    labels = list(results)
    repeats = len(results[labels[0]][0])
    baseline = next((label for label in labels if label.endswith("(baseline)")), None)
    first = results[labels[0]][0][0].layout
    pinned, dedicated = first.pinned, first.dedicated_head
    command = (f"python -m bench.orchestration --trials {trials} --repeats {repeats}" + (" --pin" if pinned else "")
               + (" --dedicated-head" if dedicated else ""))
    if baseline is not None:
        command += f" --baseline {baseline.split()[0]}"
    lines = [
        (f"## Sweep orchestration: overhead per trial and throughput, 1 vs 2 Ray nodes ({trials} trials"
         + (", a head node that runs no trials" if dedicated else "")
         + (", each node on cores of its own)" if pinned else ")")),
        "",
        (f"Measured by `{command}` on {_machine()}; {_versions()}; {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} "
         f"UTC. Load average (1 min) of the machine before / after: {load[0]:.1f} / {load[1]:.1f}."),
        "",
        (f"The same {trials}-trial sweep (sklearn digits, 200 train / 60 test images, 1 epoch of a hybrid small "
         "CNN + 2-4 qubits, FGSM + 3-step PGD on 16 images, 1 CPU per trial, MLflow on sqlite) through "
         "`run_sweep` on a fresh `ray.cluster_utils.Cluster` per layout and repeat; identical trial "
         f"configurations in every layout{' and code version' if baseline else ''} (seeded random sampling, "
         f"checked); {repeats} interleaved repeats, the row shows the repeat with the shortest wall time (other "
         "work on the machine only adds time), the last column the throughput of every repeat. The MLflow and "
         "Optuna stores exist before the sweep starts (creating them, once per store, took the seconds in *fresh "
         "store*; not in the wall time). *Trial time* is Tune's `time_total_s` (inside the trainable; a worker "
         "process's first trial also does the trial code's one-off lazy imports); *overhead per trial* = (slots x "
         "wall - sum of trial times) / trials: slot-seconds spent outside the trials' own code; *set-up* = call to "
         "the first trial's MLflow run (driver set-up, first worker process with its imports), *wind-down* = last "
         "run ended to return (summary), *between trials* = the rest of the overhead per trial; *steady "
         "throughput* = trials per minute after every slot finished its first trial."),
        "",
        ("| code | layout | slots | sweep wall (s) | trial time sum / mean (s) | overhead per trial (s) "
         "| set-up / wind-down (s) | between trials (s) | throughput (trials/min) | steady throughput (trials/min) "
         "| driver CPU per trial (s) | worker processes | trials per node | fresh store (s) "
         "| throughput, all repeats |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    best = {label: [best_run(r) for r in runs] for label, runs in results.items()}
    for label in labels:
        for m, ms in zip(best[label], results[label]):
            lines.append(
                f"| {label} | {m.layout.label} | {m.slots} | {m.wall_s:.1f} | "
                f"{sum(m.trial_s):.1f} / {sum(m.trial_s) / len(m.trial_s):.2f} | {m.overhead_per_trial_s:.2f} | "
                f"{m.setup_s:.1f} / {m.wind_down_s:.1f} | {m.between_trials_s:.2f} | {m.throughput_per_min:.1f} | "
                f"{m.steady_throughput_per_min:.1f} | {m.driver_cpu_per_trial_s:.2f} | {m.processes} | "
                f"{' + '.join(str(c) for c in m.trials_per_node)} | {m.store_init_s:.1f} | "
                f"{', '.join(f'{x.throughput_per_min:.1f}' for x in ms)} |"
            )
    current = labels[0]
    one, two, control = best[current]
    ratio = two.throughput_per_min / one.throughput_per_min
    steady = two.steady_throughput_per_min / one.steady_throughput_per_min
    # set-up and wind-down are paid in full whatever the slots: a perfect second slot halves only the rest
    fixed = one.setup_s + one.wind_down_s
    bound = one.wall_s / (fixed + (one.wall_s - fixed) / 2)
    lines += [
        "",
        (f"This checkout: overhead per trial on one node {one.overhead_per_trial_s:.2f} s (target ≤ "
         f"{TARGET_OVERHEAD_S:.0f} s: {'met' if one.overhead_per_trial_s <= TARGET_OVERHEAD_S else 'not met'}); "
         f"two nodes vs one: {ratio:.2f}x the throughput (target ≥ {TARGET_TWO_NODES}x: "
         f"{'met' if ratio >= TARGET_TWO_NODES else 'not met'}), {steady:.2f}x in steady throughput; two nodes vs "
         f"one node with the same two CPUs: {two.throughput_per_min / control.throughput_per_min:.2f}x. "
         f"On one node {fixed:.1f} s of the {one.wall_s:.1f} s are set-up and wind-down, which two nodes pay just "
         f"the same: even a second node that halved everything else exactly would give at most {bound:.2f}x here "
         "(less still, as each worker process also pays its first-trial warm-up)."),
    ]
    lines += [
        "",
        (f"The driver: {two.driver_cpu_per_trial_s:.2f} s of CPU per trial on two nodes "
         f"({one.driver_cpu_per_trial_s:.2f} s on one), {100 * two.driver_cpu_s / two.wall_s:.0f}% of a core during "
         f"the two-node sweep. One driver serves every node, so trials of this size cannot finish faster than about "
         f"{60 / two.driver_cpu_per_trial_s:.0f} per minute whatever the cluster (a heavier trial moves the ceiling "
         "up in proportion: the driver's work per trial does not grow with the trial's)."),
    ]
    if baseline is not None:
        b_one, b_two, _ = best[baseline]
        lines += [
            "",
            (f"Baseline {baseline.split()[0]} in the same rounds: overhead per trial on one node "
             f"{b_one.overhead_per_trial_s:.2f} s (now {one.overhead_per_trial_s / b_one.overhead_per_trial_s:.2f}x "
             f"of it); throughput on one node {one.throughput_per_min / b_one.throughput_per_min:.2f}x and on two "
             f"nodes {two.throughput_per_min / b_two.throughput_per_min:.2f}x the baseline's; its two nodes vs one: "
             f"{b_two.throughput_per_min / b_one.throughput_per_min:.2f}x."),
        ]
    def on_cores(nodes: list[set[int]], what: str) -> str:
        return " and ".join(f"{what} {i + 1} on core{'s' if len(c) > 1 else ''} {', '.join(map(str, sorted(c)))}"
                            for i, c in enumerate(nodes))

    if pinned and dedicated:
        head, *workers = node_cores(two.layout)
        cores = on_cores(workers, "worker node")
        lines += [
            "",
            (f"Pinned, with a dedicated head: the head node (`num_cpus` 0: it runs no trials, as in `k8s/base`) and "
             f"the driver on core {', '.join(map(str, sorted(head)))}, {cores} (checked for every Ray process and "
             "trial worker): one or two equal one-core worker machines beside a head of their own, the way a "
             "KubeRay cluster grows. The head's core does the driver's work (Tune, the MLflow writes) for every "
             "trial of the cluster, so it is what the throughput ratio depends on once trials are this short."),
        ]
    elif pinned:
        cores = on_cores(node_cores(two.layout), "node")
        lines += [
            "",
            (f"Pinned: every node's processes held to cores of their own ({cores}; checked for every Ray process "
             "and trial worker), the driver with the head: two equal one-core machines. The head's core runs its "
             "own trials and the driver's work (Tune, the MLflow writes) for every trial of the cluster, twice as "
             "many per minute with two nodes; and a trial on either node waits for the driver at every report (a "
             "Tune function trainable goes on once the driver has taken its result), so the trials of both nodes "
             "take longer than on one node (the trial time column). On a cluster the head should run no trials "
             "(`num-cpus: \"0\"`, as in `k8s/base`), leaving its cores to the driver; `--dedicated-head` measures "
             "that layout (it needs 3 cores to pin)."),
        ]
    lines += [
        "",
        (f"{os.cpu_count()} cores on this machine, shared with other work while measuring (the load average above "
         "counts it): "
         + ("" if pinned else "every process may use every core, so the one-slot layouts run the driver and Ray's "
            "own processes on the core their trial leaves free, while in the two-slot layouts they take time from the "
            "trials (the trial times include that contention); ")
         + "every worker process pays its imports and first-trial warm-up once, so a few short trials cannot make "
         "a second node pay off fully (the steady throughput shows what further trials gain)."),
    ]
    return "\n".join(lines)


def _machine() -> str:
    cpu = _cpu_name()
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
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.orchestration", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help=f"trials per sweep (default {DEFAULT_TRIALS}; at least 3; another count writes its own "
                             "section, orchestration_<N>trials)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the layouts (default 3)")
    parser.add_argument("--baseline", metavar="REF", default=None,
                        help="also measure git revision REF in the same rounds (before/after)")
    parser.add_argument("--pin", action="store_true",
                        help="equal machines: every node's processes (the driver's with the head's) on cores of "
                             "their own (needs 2 cores, 3 with --dedicated-head; writes the section "
                             "orchestration_pinned[_dedicated_head][_<N>trials])")
    parser.add_argument("--dedicated-head", action="store_true",
                        help="the trial nodes as workers beside a head (and driver) that runs no trials, as in "
                             "k8s/base (the section gets _dedicated_head)")
    parser.add_argument("--no-warmup", action="store_true", help="skip each child's unmeasured warm-up sweep")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # child mode (see serve)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(not args.no_warmup)
    if args.trials < 3:
        parser.error(f"--trials={args.trials}: at least 3 trials are needed (two slots, then a steady state)")
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: at least 1")
    usable, needed = len(os.sched_getaffinity(0)), max(layout.cores for layout in layouts(True, args.dedicated_head))
    if args.pin and usable < needed:
        flags = "--pin --dedicated-head" if args.dedicated_head else "--pin"
        parser.error(f"{flags}: the layouts need {needed} cores of their own, this process may use {usable}")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="qshield-bench-") as tmp:
        results = run(args.trials, args.repeats, not args.no_warmup, Path(tmp), args.baseline, args.pin,
                      args.dedicated_head)
    text = render(results, args.trials, (load_before, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        # the 6-trial sweep has the section "orchestration"; another size gets its own section beside it
        section = SECTION + ("_pinned" if args.pin else "") + ("_dedicated_head" if args.dedicated_head else "")
        write_section(text, section if args.trials == DEFAULT_TRIALS else f"{section}_{args.trials}trials")
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
