"""One sweep name, one live driver (issue 15; figures in ``docs/reliability.md``, section 1).

Real parts only. The lease of :mod:`orchestrator.lease` is held by real processes (``python -c`` with the module,
killed with SIGKILL); a driver "on another machine" runs in its own UTS namespace (``unshare -u``, its own hostname:
its lease then cannot be probed from here, exactly like a driver on another host; skipped where namespaces cannot
be made); a read-only remount of a tmpfs (``unshare -m``) is the fault that stops a holder from renewing. The sweeps
are real drivers (``python -m orchestrator.run``) attached to a real Ray cluster (``ray start --head``, as ``ray job
submit`` runs them), writing to a sqlite MLflow store or a real ``mlflow server``; ``qshield select`` races itself in
real processes. Sweeps are the tiny ones of ``tests/test_faults.py`` (digits, 150/40 images, FGSM on 8 images).

Timing is never asserted, except the one bound that is part of the contract: a contender never takes over a lease
from another machine before it has seen the lease unchanged for the holder's expiry (waiting longer only makes the
bound safer). Measured figures are logged (``-o log_cli=true``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient

from orchestrator.lease import (
    ENV_DIR,
    LEASE_DIRNAME,
    NAME_PATTERN,
    LeaseConfigError,
    LeaseHeldError,
    LeaseLostError,
    LeaseSettings,
    SweepLease,
    current_holder,
    generations,
    lease_directory,
)
from orchestrator.tracking import PARENT, TRIAL, SweepTracker
from tests import test_sweep as shared
from tests import test_faults as faults
from tests.test_faults import MlflowServer, _no_sweep_may_start, fault_space
from tests.test_sweep import (
    BIN,
    EXPERIMENT,
    ROOT,
    clean_env,
    free_port,
    runs_of,
    stop_ray_head,
    tune_trial_states,
    write_space,
)

# fixtures of test_sweep.py / test_faults.py, registered here: `env` (private cwd, sqlite store, Tune storage,
# no inherited RAY_ADDRESS), the autouse `no_ray_left`, and `mlflow_server` (a real `mlflow server` process)
env = shared.env
no_ray_left = shared.no_ray_left
mlflow_server = faults.mlflow_server

log = logging.getLogger(__name__)

#: a process that takes a lease and holds it until it is lost (exit 3) or killed; refused: exit 2
HOLDER = r"""
import json, sys, time
from pathlib import Path
from orchestrator.lease import LeaseHeldError, SweepLease
name, directory, hb, exp, take = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
go = Path(sys.argv[6]) if len(sys.argv) > 6 else None
print("READY", flush=True)
while go is not None and not go.exists():
    time.sleep(0.002)
lease = SweepLease(name, directory, storage_path="/shared/ray_results", tracking_uri="http://qs:s3cret@mlflow:5000",
                   heartbeat_s=hb, expiry_s=exp, on_lost=lambda reason: print("LOST " + reason, flush=True))
try:
    lease.acquire(take_over=take == "1")
except LeaseHeldError as exc:
    print("REFUSED " + str(exc), flush=True)
    sys.exit(2)
print("HELD " + json.dumps(lease.record), flush=True)
while lease.lost is None:
    time.sleep(0.02)
sys.exit(3)
"""


def _can_unshare(flag: str) -> bool:
    try:
        return subprocess.run(["unshare", flag, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


UTS = _can_unshare("-u")
needs_uts = pytest.mark.skipif(not UTS, reason="cannot make a UTS namespace here (unshare -u): no second 'machine'")


def on_machine(host: str | None, cmd: list[str]) -> list[str]:
    """``cmd`` run with hostname ``host`` in a UTS namespace of its own (unchanged when ``host`` is None)."""
    if host is None:
        return cmd
    return ["unshare", "-u", "sh", "-c", f'hostname {host} && exec "$0" "$@"', *cmd]


class Holder:
    """A lease-holding process (:data:`HOLDER`), its output in a file."""

    def __init__(self, tmp: Path, name: str, directory: Path, *, hb: float = 0.3, exp: float = 2.0,
                 take: bool = False, go: Path | None = None, host: str | None = None) -> None:
        self.out = tmp / f"holder-{uuid.uuid4().hex[:8]}.out"
        cmd = [sys.executable, "-c", HOLDER, name, str(directory), str(hb), str(exp), "1" if take else "0"]
        with self.out.open("w") as out:
            self.proc = subprocess.Popen(on_machine(host, cmd + ([str(go)] if go else [])), stdout=out,
                                         stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.out.read_text()

    def line(self, prefix: str, timeout: float = 60.0) -> str:
        """The first output line starting with ``prefix`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.text().splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
            if self.proc.poll() is not None and not any(l.startswith(prefix) for l in self.text().splitlines()):
                raise AssertionError(f"holder exited {self.proc.returncode} without {prefix!r}:\n{self.text()}")
            assert time.monotonic() < deadline, f"no {prefix!r} in {timeout:.0f} s:\n{self.text()}"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for h in started:
        h.kill()


# ------------------------------------------------------------------------------------------------------------------
# the lease itself


def test_a_live_holder_on_this_machine_is_refused_at_once_and_a_killed_one_taken_over_at_once(
    tmp_path: Path, holders: list[Holder], caplog: pytest.LogCaptureFixture
) -> None:
    """The second terminal: the refusal names the sweep, the holder (pid, host, Ray), since when, the lease file,
    the storage and the tracking URI (password hidden) and says how to resume. After the holder is SIGKILLed, the
    same machine can prove it gone (pid free, or a different process's start time): taken over without waiting."""
    caplog.set_level(logging.INFO, logger="orchestrator.lease")
    directory = tmp_path / "leases" / "demo"
    holder = Holder(tmp_path, "demo", directory, hb=0.3, exp=2.0)
    holders.append(holder)
    record = json.loads(holder.line("HELD"))
    assert record["pid"] == holder.pid and record["generation"] == 1 and record["state"] == "held"

    contender = SweepLease("demo", directory, heartbeat_s=0.3, expiry_s=2.0)
    started = time.monotonic()
    with pytest.raises(LeaseHeldError) as refused:
        contender.acquire()
    refuse_s = time.monotonic() - started
    message = str(refused.value)
    assert message.startswith(
        f"sweep 'demo' is already running: its driver is pid {holder.pid} on host {socket.gethostname()!r} "
        f"(Ray: local), started {record['started_at']} ("), message
    assert "storage /shared/ray_results; tracking http://qs:***@mlflow:5000; " in message and "s3cret" not in message
    assert f"lease {directory / 'lease-000000001.json'}." in message
    assert "Run the same command again once it ends to resume the sweep." in message
    assert "its lease expires 2 s after its last heartbeat" in message and "QSHIELD_LEASE_TAKE_OVER=1" in message
    assert contender.path is None and set(generations(directory)) == {1}  # the refused contender wrote nothing

    killed = time.monotonic()
    holder.kill()
    contender.acquire()
    takeover_s = time.monotonic() - killed
    try:
        assert contender.generation == 2 and set(generations(directory)) == {2}  # the dead holder's file is gone
        assert current_holder(directory)["pid"] == os.getpid()
        assert any("is gone; taking its lease over" in r.getMessage() for r in caplog.records)
    finally:
        contender.release()
    assert current_holder(directory)["state"] == "released"
    again = SweepLease("demo", directory, heartbeat_s=0.3, expiry_s=2.0)
    again.acquire()  # a released lease is free at once
    again.release()
    assert set(generations(directory)) == {3}
    log.info("same machine: refused in %.3f s; taken over %.3f s after SIGKILL", refuse_s, takeover_s)


@needs_uts
def test_a_holder_on_another_machine_is_known_by_its_heartbeat_and_taken_over_after_its_expiry(
    tmp_path: Path, holders: list[Holder]
) -> None:
    """From another machine a holder's pid cannot be probed: it is alive when its record changes (a heartbeat),
    and taken over once seen unchanged for the expiry *it* recorded (2 s here; the contender's own is 600 s)."""
    directory = tmp_path / "leases" / "far"
    holder = Holder(tmp_path, "far", directory, hb=0.3, exp=2.0, host="lease-test-elsewhere")
    holders.append(holder)
    assert json.loads(holder.line("HELD"))["host"] == "lease-test-elsewhere"

    contender = SweepLease("far", directory, heartbeat_s=0.2, expiry_s=600.0)
    started = time.monotonic()
    with pytest.raises(LeaseHeldError, match=r"its driver is pid \d+ on host 'lease-test-elsewhere'"):
        contender.acquire()
    refuse_s = time.monotonic() - started

    holder.kill()
    killed = time.monotonic()
    contender.acquire()
    takeover_s = time.monotonic() - killed
    contender.release()
    assert contender.generation == 2
    # the contract: never sooner than the holder's expiry of watching it unchanged (later only under load)
    assert contender.waited_s >= 2.0, contender.waited_s
    log.info("another machine: refused in %.2f s (one heartbeat: 0.3 s); taken over %.2f s after SIGKILL "
             "(expiry 2 s, watched %.2f s)", refuse_s, takeover_s, contender.waited_s)


def test_drivers_racing_for_one_lease_exactly_one_wins(tmp_path: Path, holders: list[Holder]) -> None:
    """Four processes released at the same instant, for a lease nobody holds, then for the stale lease of the
    killed winner: each time exactly one holds it and the other three are refused naming it. With UTS namespaces
    every racer is on a machine of its own, so the second race is decided after the expiry (all four judge the
    lease stale together, then race to create the next generation), else on this machine (dead pid)."""
    directory = tmp_path / "leases" / "race"
    winners: list[Holder] = []
    for round_ in (1, 2):
        go = tmp_path / f"go-{round_}"
        racers = [Holder(tmp_path, "race", directory, hb=0.3, exp=2.0, go=go,
                         host=f"lease-race-{round_}-{i}" if UTS else None) for i in range(4)]
        holders.extend(racers)
        for r in racers:
            r.line("READY")
        go.touch()
        deadline = time.monotonic() + 60
        while sum(r.proc.poll() == 2 for r in racers) < 3:
            assert time.monotonic() < deadline, "\n".join(r.text() for r in racers)
            time.sleep(0.05)
        held = [r for r in racers if r.proc.poll() is None]
        assert len(held) == 1, "\n---\n".join(r.text() for r in racers)
        winner = held[0]
        record = json.loads(winner.line("HELD"))
        assert record["generation"] == round_ and record["pid"] == winner.pid
        for r in racers:
            if r is not winner:
                assert f"its driver is pid {winner.pid} on host" in r.line("REFUSED"), r.text()
        assert set(generations(directory)) == {round_}
        winners.append(winner)
        winner.kill()  # stale now, for the next round
    log.info("race: rounds won by pids %s", [w.pid for w in winners])


def test_a_holder_whose_lease_is_taken_stops_writing(env: dict[str, Any], holders: list[Holder]) -> None:
    """A driver (this process) holds the lease; another takes it over by force (``QSHIELD_LEASE_TAKE_OVER``).
    Within a heartbeat this driver knows it lost the lease: its tracker writes nothing more to MLflow, the Tune
    loop's step guard raises, and leaving the lease raises :class:`LeaseLostError` saying why, without marking
    the new holder's lease released."""
    from orchestrator.runtime import MLflowTrialCallback

    settings = LeaseSettings(heartbeat_s=0.2, expiry_s=1.0)
    lease = SweepLease.for_sweep("lost", str(env["storage"]), tracking_uri=env["uri"], settings=settings)
    directory = env["storage"] / LEASE_DIRNAME / "lost"
    tracker = SweepTracker("lost", EXPERIMENT, env["uri"])
    parent = tracker.parent_run_id()
    tracker.log_metrics(parent, {"before": 1.0})
    with pytest.raises(LeaseLostError) as lost:
        with lease:
            thief = Holder(env["tmp"], "lost", directory, hb=0.2, exp=1.0, take=True)
            holders.append(thief)
            thief.line("HELD")
            deadline = time.monotonic() + 30
            while lease.lost is None:
                assert time.monotonic() < deadline, "the loss was not noticed"
                time.sleep(0.02)
            with pytest.raises(LeaseLostError):
                tracker.log_metrics(parent, {"after": 1.0})
            with pytest.raises(LeaseLostError):
                MLflowTrialCallback(tracker).on_step_begin(iteration=7, trials=[])
    message = str(lost.value)
    assert message.startswith("sweep 'lost': this driver lost its lease (generation 2 was taken by pid "
                              f"{thief.pid} on host"), message
    assert "run the same command again once that one ends to resume the sweep" in message
    assert set(MlflowClient(env["uri"]).get_run(parent).data.metrics) == {"before"}
    now = current_holder(directory)
    assert now["pid"] == thief.pid and now["state"] == "held" and thief.proc.poll() is None


@pytest.mark.skipif(not _can_unshare("-m"), reason="cannot make a mount namespace here (unshare -m)")
def test_a_holder_that_cannot_renew_declares_the_lease_lost(tmp_path: Path) -> None:
    """A real fault: the lease's filesystem (a tmpfs, in a private mount namespace) turns read-only under the
    holder. Its renewals fail with EROFS; once they have failed for expiry - heartbeat, a contender could take the
    lease, so the holder declares it lost (and stops) rather than carry on."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    out = tmp_path / "holder.out"
    holder = f"{sys.executable} -c '{HOLDER}' ro {mount}/ro 0.2 1.0 0"
    script = (f"mount -t tmpfs -o size=1m tmpfs {mount} && {{ {holder} > {out} 2>&1 & }} && "
              f"until grep -q HELD {out}; do sleep 0.05; done && mount -o remount,ro {mount} && wait")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    text = out.read_text()
    assert done.returncode == 0, done.stderr + text
    lost = [line for line in text.splitlines() if line.startswith("LOST ")]
    assert lost and re.match(r"LOST it could not be renewed for \d+ s \(.*Read-only file system", lost[0]), text


def test_bad_lease_settings_are_refused_before_anything_runs(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each error names the setting and what is allowed, before the tracking store or Ray is touched."""
    from orchestrator.run import main
    from orchestrator.space import SweepSpace

    _no_sweep_may_start(monkeypatch)
    assert NAME_PATTERN == SweepSpace.NAME_PATTERN
    space_file = write_space(env["tmp"] / "bad.yaml", fault_space("bad"))
    args = ["--space", str(space_file), "--storage-path", str(env["storage"]), "--tracking-uri", env["uri"]]
    cases = [
        ({"QSHIELD_LEASE_EXPIRY_S": "soon"}, args,
         "QSHIELD_LEASE_EXPIRY_S='soon' is not a number; allowed: a positive number of seconds (default 30)"),
        ({"QSHIELD_LEASE_HEARTBEAT_S": "-1"}, args,
         "QSHIELD_LEASE_HEARTBEAT_S (heartbeat_s) must be a positive number of seconds; got -1.0"),
        ({"QSHIELD_LEASE_HEARTBEAT_S": "10", "QSHIELD_LEASE_EXPIRY_S": "15"}, args,
         "QSHIELD_LEASE_EXPIRY_S=15 must be at least twice QSHIELD_LEASE_HEARTBEAT_S=10, so a live driver that "
         "misses a heartbeat keeps its lease; allowed: QSHIELD_LEASE_EXPIRY_S >= 20"),
        ({"QSHIELD_LEASE_TAKE_OVER": "maybe"}, args,
         "QSHIELD_LEASE_TAKE_OVER='maybe'; allowed values: 0, 1 (also false/true, no/yes)"),
        ({}, [*args, "--name", "../elsewhere"], "name='../elsewhere': a sweep name must match"),
        ({}, [*args[:2], "--storage-path", "s3://bucket/ray_results", *args[4:]],
         "storage_path='s3://bucket/ray_results' is an object store, where no exclusive lease can be taken"),
        ({ENV_DIR: "s3://bucket/leases"}, args, "QSHIELD_LEASE_DIR='s3://bucket/leases': allowed values: a directory"),
    ]
    for variables, argv, expected in cases:
        with monkeypatch.context() as m:
            for k, v in variables.items():
                m.setenv(k, v)
            assert main(argv) == 2, (variables, argv)
            err = capsys.readouterr().err.strip()
            assert err.startswith(f"error: {expected}"), (err, expected)
    assert not (env["tmp"] / "mlflow.db").exists()  # refused before the tracking store was touched
    assert not (env["storage"] / LEASE_DIRNAME).exists() or not any((env["storage"] / LEASE_DIRNAME).iterdir())

    # QSHIELD_LEASE_DIR=none: no lease (for object stores without a shared directory), said in the log and tags
    with pytest.raises(LeaseConfigError, match=f"set {ENV_DIR} to a directory every driver of the sweep shares"):
        lease_directory("x", "s3://bucket/ray_results", LeaseSettings())
    off = LeaseSettings(directory="none")
    assert lease_directory("x", "s3://bucket/ray_results", off) is None
    lease = SweepLease.for_sweep("x", "s3://bucket/ray_results", settings=off)
    assert lease.tags() == {"qshield.lease": "none"} and lease.path is None
    lease.release()


def test_qshield_demo_started_while_one_runs_is_refused(tmp_path: Path, holders: list[Holder]) -> None:
    """The issue's first report: ``qshield demo`` started while a demo runs in the same folder. The running one is
    a process holding the demo's lease (what a running demo holds); the second exits 2 with the refusal, prints no
    MLflow hints, and writes nothing: no tracking store, no Tune experiment."""
    workdir = tmp_path / "qshield-demo"
    holder = Holder(tmp_path, "mnist5k-demo", workdir / "ray_results" / LEASE_DIRNAME / "mnist5k-demo")
    holders.append(holder)
    holder.line("HELD")
    demo = subprocess.run([sys.executable, "-m", "orchestrator.cli", "demo", "--workdir", str(workdir)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**clean_env(PYTHONPATH=str(ROOT)), "MLFLOW_TRACKING_URI": ""})
    assert demo.returncode == 2, demo.stdout + demo.stderr
    assert demo.stderr.strip().splitlines()[-1].startswith(
        f"error: sweep 'mnist5k-demo' is already running: its driver is pid {holder.pid} on host "), demo.stderr
    assert "Open the MLflow UI" not in demo.stdout
    assert sorted(p.name for p in workdir.iterdir()) == ["ray_results"]
    assert sorted(p.name for p in (workdir / "ray_results").iterdir()) == [LEASE_DIRNAME]


def test_one_name_on_two_storage_paths_is_refused_while_its_parent_run_is_running(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two storage paths mean two leases, but one tracking store means one MLflow parent run. A driver on storage
    A gets as far as starting Ray (refused here by a guard, as if it died there): its parent run stays ``RUNNING``
    with A's storage and lease recorded. The same sweep on storage B is refused before Ray, naming A and the
    driver recorded on the run; on A it resumes (gets past the checks to Ray again). Each driver gave its lease
    back on the way out."""
    from orchestrator.runtime import run_sweep

    _no_sweep_may_start(monkeypatch)
    from orchestrator.space import parse_space

    space = parse_space(fault_space("dual"), source="<test>")
    a, b = env["tmp"] / "storage-a", env["tmp"] / "storage-b"
    with pytest.raises(AssertionError, match="Ray was started"):
        run_sweep(space, storage_path=str(a), tracking_uri=env["uri"], experiment=EXPERIMENT)
    (parent,), _ = runs_of(env["uri"], "dual")
    assert parent.info.status == "RUNNING" and parent.data.tags["qshield.storage_path"] == str(a)
    assert parent.data.tags["qshield.lease"] == str(a / LEASE_DIRNAME / "dual")
    assert current_holder(a / LEASE_DIRNAME / "dual")["state"] == "released"

    with pytest.raises(LeaseHeldError) as refused:
        run_sweep(space, storage_path=str(b), tracking_uri=env["uri"], experiment=EXPERIMENT)
    message = str(refused.value)
    assert message.startswith(f"sweep 'dual': its MLflow parent run {parent.info.run_id} in experiment "
                              f"'{EXPERIMENT}' at {env['uri']} is RUNNING with its Tune state in "
                              f"storage_path={str(a)!r}, not {str(b)!r} (driver pid {os.getpid()} on host "), message
    assert f"resume it with --storage-path {a} (it is refused while that driver runs), or give this sweep another " \
           f"--name" in message
    assert current_holder(b / LEASE_DIRNAME / "dual")["state"] == "released"
    assert not (b / "dual").exists()
    with pytest.raises(AssertionError, match="Ray was started"):  # on A: past the checks, as a resume
        run_sweep(space, storage_path=str(a), tracking_uri=env["uri"], experiment=EXPERIMENT)
    (parent,), _ = runs_of(env["uri"], "dual")
    assert parent.data.tags["qshield.storage_path"] == str(a)


#: a sweep driver's first contact with its tracking store (``SweepTracker``: the client, then the experiment),
#: released by a go file so that several processes do it at the same instant
FIRST_CONTACT = r"""
import sys, time
from pathlib import Path
from orchestrator.tracking import SweepTracker
go, uri, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print("READY", flush=True)
while not go.exists():
    time.sleep(0.001)
print("EXPERIMENT", SweepTracker(name, "qshield-test", uri).experiment_id, flush=True)
"""


def test_drivers_started_together_on_a_fresh_sqlite_store_create_it_once(tmp_path: Path) -> None:
    """Found by the two-names test below: the first ``MlflowClient`` of a new sqlite store creates its tables, and
    processes doing that at the same instant fail (measured without the lock, four at once: 3 and 4 of the 4 failed
    with ``duplicate column name: step``, ``table _alembic_tmp_model_versions already exists`` or alembic's
    ``Online migration expected to match one row``). With the store created under a file lock
    (``orchestrator.tracking.mlflow_client``) all three here open it, and agree on one experiment (created once,
    found by the others or, when they race to create it, taken from the winner)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    codes, texts = released_together(tmp_path, FIRST_CONTACT, [[uri, f"s{i}"] for i in range(3)],
                                     {**os.environ, "PYTHONPATH": str(ROOT)}, wait_s=120)
    assert codes == [0] * 3, "\n---\n".join(texts)
    experiments = {re.search(r"EXPERIMENT (\S+)", t).group(1) for t in texts}
    assert len(experiments) == 1, texts  # one experiment, created once (the others found it)


# ------------------------------------------------------------------------------------------------------------------
# real sweeps: drivers attached to a Ray cluster


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``ray start --head --block`` (4 CPUs, no dashboard, token authentication): the cluster the drivers attach to
    through ``RAY_ADDRESS``, as ``ray job submit`` and KubeRay run them (and one Ray start for all the sweeps here).
    Yields the drivers' environment. Its processes are ended by pid (``tests/test_sweep.py``'s helpers)."""
    temp_dir = tempfile.mkdtemp(prefix="qslease-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    gcs = free_port()
    ray_env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), PYTHONPATH=str(ROOT))
    head_log = tmp_path_factory.mktemp("ray-head") / "head.log"
    with head_log.open("w") as out:
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "4", "--port", str(gcs),
             "--include-dashboard", "false", "--ray-client-server-port", str(free_port()), "--temp-dir", temp_dir,
             "--disable-usage-stats"], env=ray_env, stdout=out, stderr=subprocess.STDOUT)
    recorded: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in head_log.read_text():
            assert head.poll() is None, f"ray start exited {head.returncode}:\n{head_log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, "ray start --head did not finish in 180 s"
            time.sleep(0.5)
        yield {**ray_env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"}
    finally:
        stop_ray_head(head, recorded, temp_dir)


def driver_cmd(space_file: Path, storage: Path, uri: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.run", "--space", str(space_file), "--storage-path", str(storage),
            "--tracking-uri", uri, "--experiment", EXPERIMENT, *extra]


def start(cmd: list[str], log_file: Path, env_: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_file.open("w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env_, stdout=out, stderr=subprocess.STDOUT)


def registry_versions(uri: str, model: str) -> list[Any]:
    return MlflowClient(uri).search_model_versions(f"name = '{model}'")


def created_versions(database: Path, model: str) -> int:
    """How many versions of ``model`` were ever created in a sqlite store, deleted ones included (MLflow keeps a
    deleted version's row, marked ``Deleted_Internal``): above the kept count, the duplicates a race created and
    removed. A figure only."""
    import sqlite3

    with sqlite3.connect(database) as db:
        return int(db.execute("select count(*) from model_versions where name = ?", (model,)).fetchone()[0])


#: ``qshield select`` (``orchestrator.cli.main``) in a process that first selects once under a model name of its
#: own (imports, the store's engine and the sweep's runs all warm), then waits for a go file, so that several of
#: them select at the same instant
SELECT = r"""
import sys, time
from pathlib import Path
from orchestrator.cli import main
go, warm, argv = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
assert main([*argv, "--model-name", warm]) == 0
print("READY", flush=True)
while not go.exists():
    time.sleep(0.001)
sys.exit(main(argv))
"""


def outputs_message(codes: list[int | None], texts: list[str]) -> str:
    """The exit statuses of processes and their outputs, a failed process's exception and whole output (stdout and
    stderr: its traceback) first: a CI log cuts the middle of a long assertion message."""
    failed = [i for i, code in enumerate(codes) if code not in (0, None)]

    def exception(text: str) -> str:
        lines = [line for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if re.match(r"(error: |[\w.]+(Error|Exception)\b)", line)]
        return (errors or lines or ["(no output)"])[-1]

    return "\n---\n".join([
        f"exit statuses {codes}; " + "; ".join(f"process {i}: {exception(texts[i])}" for i in failed),
        *(f"process {i} (exit {codes[i]}), its whole output:\n{texts[i]}" for i in failed),
        *(f"process {i} (exit {codes[i]}):\n{texts[i]}" for i in range(len(codes)) if i not in failed)])


def released_together(tmp: Path, script: str, args: list[list[str]], env_: dict[str, str],
                      wait_s: float = 300) -> tuple[list[int | None], list[str]]:
    """Run ``python -c SCRIPT GO *ARGS`` once per entry of ``args``, from the repository root, and release them at
    the same moment: each prints ``READY`` and then waits for the file ``GO``, created once all are ready. Returns
    their exit statuses and outputs (stdout and stderr)."""
    go = tmp / f"go-{uuid.uuid4().hex[:6]}"
    outs = [tmp / f"{go.name}-{i}.out" for i in range(len(args))]
    procs = []
    for out, extra in zip(outs, args):
        with out.open("w") as f:
            procs.append(subprocess.Popen([sys.executable, "-c", script, str(go), *extra], cwd=ROOT, env=env_,
                                          stdout=f, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 120
        while not all("READY" in out.read_text() for out in outs):
            assert all(p.poll() is None for p in procs), \
                outputs_message([p.poll() for p in procs], [o.read_text() for o in outs])
            assert time.monotonic() < deadline, "processes not ready in 120 s"
            time.sleep(0.05)
        go.touch()
        codes: list[int | None] = [p.wait(timeout=wait_s) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes, [o.read_text() for o in outs]


def select_at_once(tmp: Path, argv: list[str], count: int, env_: dict[str, str]) -> list[str]:
    """Run ``qshield select ARGV`` in ``count`` processes released at once; their outputs (each must exit 0)."""
    name = uuid.uuid4().hex[:6]
    codes, texts = released_together(tmp, SELECT, [[f"warm-{name}-{i}", "select", *argv] for i in range(count)], env_)
    assert codes == [0] * count, outputs_message(codes, texts)
    return texts


def test_one_name_two_drivers_at_once_one_refused_then_sigkill_takeover_after_expiry_and_resume(
    env: dict[str, Any], ray_head: dict[str, str]
) -> None:
    """The issue's case. (1) The same command twice at once: one driver runs, the other exits 2 before starting
    Ray, naming the running driver. (2) The running driver is SIGKILLed once Tune has recorded a finished trial:
    its lease stays behind, held. (3) The same command again, from another machine (its own UTS namespace; on
    this machine when none can be made): it watches the dead driver's lease for its expiry (4 s), takes it over
    and resumes the sweep (the finished trial is not run again). (4) Nothing merged or duplicated: one Tune
    experiment with the sweep's trials, one MLflow parent run, one finished nested run per trial (a trial the
    killed driver started after Tune's last snapshot: its run ended as abandoned, see ``check_resumed``). (5) ``qshield select`` three times at once under a new model name, then once more:
    every selection reports the same champion (and challenger), each run is registered once, the aliases point at
    those versions."""
    # 3 trials of 3 epochs, one at a time, and Tune's state snapshots every quarter second: one worker process runs
    # trial after trial (a 1-epoch trial takes about a second), and the kill has to land while others still run
    name, n = "one-driver", 3
    space_file = write_space(env["tmp"] / "one.yaml", fault_space(name, num_samples=n, max_concurrent=1,
                                                                  parameters={"epochs": 3}))
    exp_dir, lease_dir = env["storage"] / name, env["storage"] / LEASE_DIRNAME / name
    cmd = driver_cmd(space_file, env["storage"], env["uri"])
    driver_env = {**ray_head, "QSHIELD_LEASE_HEARTBEAT_S": "0.5", "QSHIELD_LEASE_EXPIRY_S": "4",
                  "TUNE_GLOBAL_CHECKPOINT_S": "0.25"}
    figures: dict[str, Any] = {}

    # (1) twice at once
    logs = [env["tmp"] / f"driver-{i}.log" for i in (1, 2)]
    began = time.monotonic()
    drivers = [start(cmd, log_file, driver_env) for log_file in logs]
    try:
        deadline = time.monotonic() + 240
        while all(d.poll() is None for d in drivers):
            assert time.monotonic() < deadline, "neither driver was refused:\n" + logs[0].read_text()[-3000:]
            time.sleep(0.1)
        figures["second_driver_refused_s"] = round(time.monotonic() - began, 1)
        (loser,) = [d for d in drivers if d.poll() is not None]
        (winner,) = [d for d in drivers if d is not loser]
        loser_log = logs[drivers.index(loser)].read_text()
        assert loser.returncode == 2, loser_log[-4000:]
        errors = [line for line in loser_log.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, loser_log[-4000:]
        assert errors[0].startswith(
            f"error: sweep '{name}' is already running: its driver is pid {winner.pid} on host "
            f"{socket.gethostname()!r} (Ray: {ray_head['RAY_ADDRESS']}), started "), errors[0]
        assert f"storage {env['storage']}; tracking {env['uri']}; lease {lease_dir / 'lease-000000001.json'}" \
            in errors[0]
        assert "Run the same command again once it ends to resume the sweep." in errors[0]
        assert "Connecting to existing Ray cluster" not in loser_log and "Sweep '" not in loser_log

        # (2) SIGKILL the running driver once a trial has finished
        deadline = time.monotonic() + 300
        while "TERMINATED" not in (states := tune_trial_states(exp_dir)).values():
            assert winner.poll() is None, "driver ended before it was killed:\n" + \
                logs[drivers.index(winner)].read_text()[-4000:]
            assert time.monotonic() < deadline, "no trial finished in 300 s"
            time.sleep(0.3)
        winner.send_signal(signal.SIGKILL)
        winner.wait(timeout=30)
        killed = time.monotonic()
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
                d.wait()
    finished_before = {tid for tid, s in states.items() if s == "TERMINATED"}
    assert 1 <= len(finished_before) < n, states
    left = current_holder(lease_dir)
    assert left["pid"] == winner.pid and left["state"] == "held" and set(generations(lease_dir)) == {1}
    rows_before = shared.result_rows(exp_dir)

    # (3) the same command from another machine: takeover after the expiry, resume, select
    third_log = env["tmp"] / "driver-3.log"
    third = start(on_machine("lease-test-third" if UTS else None, cmd), third_log, driver_env)
    try:
        while 2 not in generations(lease_dir):
            assert third.poll() is None, third_log.read_text()[-4000:]
            time.sleep(0.05)
        figures["taken_over_after_sigkill_s"] = round(time.monotonic() - killed, 1)
        third.wait(timeout=420)
    finally:
        if third.poll() is None:
            third.kill()
            third.wait()
    out = third_log.read_text()
    assert third.returncode == 0, out[-6000:]
    if UTS:
        watched = re.search(r"lease generation 2 taken \(.*\) after watching the previous holder for ([\d.]+) s", out)
        assert watched and float(watched.group(1)) >= 4.0, out[:3000]  # never before the holder's expiry
        figures["watched_s"] = float(watched.group(1))
    else:
        assert "is gone; taking its lease over" in out, out[:3000]
    assert f"resuming sweep {name}" in out
    assert f"Sweep '{name}': {n} finished, 0 stopped early, 0 failed" in out

    # (4) nothing merged, nothing duplicated
    rows, parent, _ = shared.check_resumed(exp_dir, env["uri"], name, n)
    for tid in finished_before:  # not run again
        assert rows[tid] == rows_before[tid]
    tags = parent.data.tags
    assert re.fullmatch(rf"pid \d+ on host {'lease-test-third' if UTS else re.escape(socket.gethostname())} "
                        rf"\(Ray: {re.escape(ray_head['RAY_ADDRESS'])}\)", tags["qshield.driver"]), tags
    assert tags["qshield.lease"] == str(lease_dir)
    assert set(generations(lease_dir)) == {2} and current_holder(lease_dir)["state"] == "released"

    # (5) `qshield select` racing itself, under a new model name: every racer creates the registered model and a
    # version of the champion's run at the same moment
    from orchestrator.tracking import select_champion

    # (its trials are tiny, near chance and unchecked: flagged; the race is about registering, so allow them)
    argv = ["--sweep", name, "--experiment", EXPERIMENT, "--tracking-uri", env["uri"], "--model-name",
            "qshield-race", "--no-verify", "--allow-flagged"]
    texts = select_at_once(env["tmp"], argv, 3, {**ray_head, "MLFLOW_TRACKING_URI": env["uri"]})
    picks = set()
    for text in texts:
        # (each output also holds the selection a racer made under its own name, to warm up, before the race)
        champion = re.search(r"models:/qshield-race@champion = version (\d+) \(trial \S+, run (\w+),", text)
        challenger = re.search(r"models:/qshield-race@challenger = version (\d+)", text)
        assert champion, text
        picks.add((*champion.groups(), challenger.group(1) if challenger else None))
    assert len(picks) == 1, texts  # all three report the same champion (and challenger, if any)
    ((champion, champion_run, challenger),) = picks
    client = MlflowClient(env["uri"])
    versions = registry_versions(env["uri"], "qshield-race")
    assert len(versions) == len({v.run_id for v in versions}) == (2 if challenger else 1), \
        [(v.version, v.run_id) for v in versions]
    assert {str(v.version): v.run_id for v in versions}[champion] == champion_run
    assert str(client.get_model_version_by_alias("qshield-race", "champion").version) == champion
    if challenger:
        assert str(client.get_model_version_by_alias("qshield-race", "challenger").version) == challenger
    again = select_champion(name, model_name="qshield-race", experiment=EXPERIMENT, tracking_uri=env["uri"],
                            verify=False, allow_flagged=True)
    assert str(again.version) == champion  # selecting again added nothing:
    assert {str(v.version) for v in registry_versions(env["uri"], "qshield-race")} == {str(v.version) for v in versions}
    figures["race"] = {"versions_kept": sorted(int(v.version) for v in versions),
                       "versions_created": created_versions(env["tmp"] / "mlflow.db", "qshield-race")}
    log.info("one name, two drivers: %s", figures)


def test_a_running_driver_whose_lease_is_taken_stops(env: dict[str, Any], ray_head: dict[str, str],
                                                     holders: list[Holder]) -> None:
    """A real driver on the cluster; once its first trial has reported an epoch, another process takes the lease
    by force. The driver stops within its heartbeat: exit status 1 with the reason, the parent run left ``RUNNING``
    (not summarised, not finished), no trial run finished after the loss."""
    name = "taken"
    space_file = write_space(env["tmp"] / "taken.yaml",
                             fault_space(name, num_samples=1, parameters={"epochs": 1000}))
    log_file = env["tmp"] / "taken.log"
    driver = start(driver_cmd(space_file, env["storage"], env["uri"]), log_file,
                   {**ray_head, "QSHIELD_LEASE_HEARTBEAT_S": "0.5", "QSHIELD_LEASE_EXPIRY_S": "4"})
    try:
        deadline = time.monotonic() + 300
        while not any(not r.get("final") for rs in shared.result_rows(env["storage"] / name).values() for r in rs):
            assert driver.poll() is None, log_file.read_text()[-4000:]
            assert time.monotonic() < deadline, "no epoch reported in 300 s"
            time.sleep(0.2)
        thief = Holder(env["tmp"], name, env["storage"] / LEASE_DIRNAME / name, hb=0.5, exp=4.0, take=True)
        holders.append(thief)
        thief.line("HELD")
        taken = time.monotonic()
        driver.wait(timeout=120)
        stopped_s = time.monotonic() - taken
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    out = log_file.read_text()
    assert driver.returncode == 1, out[-5000:]
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert errors and errors[-1].startswith(f"error: sweep '{name}': this driver lost its lease (generation 2 was "
                                            f"taken by pid {thief.pid} on host "), out[-5000:]
    (parent,), trials = runs_of(env["uri"], name)
    assert parent.info.status == "RUNNING" and "trials_finished" not in parent.data.metrics
    assert [r.info.status for r in trials] == ["RUNNING"]  # 1000 epochs: still training, and left unfinished
    assert thief.proc.poll() is None and current_holder(env["storage"] / LEASE_DIRNAME / name)["pid"] == thief.pid
    log.info("a driver whose lease was taken exited %.1f s after the new holder had it", stopped_s)


def test_two_names_at_once_on_one_sqlite_store_and_on_an_mlflow_server(
    env: dict[str, Any], ray_head: dict[str, str], mlflow_server: MlflowServer
) -> None:
    """Four drivers at once on one cluster and one storage path: sweeps ``sq-a`` and ``sq-b`` into a new sqlite
    store, ``srv-a`` and ``srv-b`` into a real ``mlflow server``. All complete; each store holds exactly its two
    sweeps, each sweep one parent run with exactly its own trials, and each name its own lease. (Registries: one
    model per sweep name, ``qshield-<name>``; the same-name case above is where they crossed.)"""
    mlflow_server.start()
    stores = {"sq-a": env["uri"], "sq-b": env["uri"], "srv-a": mlflow_server.uri, "srv-b": mlflow_server.uri}
    n = 1
    procs, logs = {}, {}
    began = time.monotonic()
    try:
        for name, uri in stores.items():
            space_file = write_space(env["tmp"] / f"{name}.yaml", fault_space(name, num_samples=n))
            logs[name] = env["tmp"] / f"{name}.log"
            procs[name] = start(driver_cmd(space_file, env["storage"], uri), logs[name],
                                {**ray_head, "QSHIELD_LEASE_HEARTBEAT_S": "0.5", "QSHIELD_LEASE_EXPIRY_S": "4"})
        for p in procs.values():
            p.wait(timeout=480)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    elapsed = time.monotonic() - began
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}:\n" + logs[name].read_text()[-5000:]
        assert f"Sweep '{name}': {n} finished, 0 stopped early, 0 failed" in logs[name].read_text()

    for uri in (env["uri"], mlflow_server.uri):
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        everything = client.search_runs([exp.experiment_id], max_results=1000)
        mine = {name for name, u in stores.items() if u == uri}
        assert {r.data.tags.get("qshield.sweep") for r in everything} == mine  # nothing of the other store
        for name in mine:
            parents, trials = runs_of(uri, name)
            assert len(parents) == 1 and parents[0].info.status == "FINISHED"
            tune_ids = set(shared.result_rows(env["storage"] / name))
            ids = [r.data.tags[TRIAL] for r in trials]
            assert len(ids) == len(set(ids)) == n and set(ids) == tune_ids
            assert all(r.data.tags[PARENT] == parents[0].info.run_id for r in trials)
            assert current_holder(env["storage"] / LEASE_DIRNAME / name)["state"] == "released"
    assert sorted(p.name for p in (env["storage"] / LEASE_DIRNAME).iterdir()) == sorted(stores)
    log.info("two names at once on two stores: 4 sweeps of %d trials in %.0f s", n, elapsed)
