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
import shutil
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
from tests.test_faults import MlflowServer, _no_sweep_may_start, fault_space
from tests.test_sweep import (
    BIN,
    EXPERIMENT,
    ROOT,
    clean_env,
    descendants,
    free_port,
    kill_recorded,
    runs_of,
    tune_trial_states,
    write_space,
)

env = shared.env
no_ray_left = shared.no_ray_left

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
    from orchestrator.callbacks import MLflowTrialCallback

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
    off = LeaseSettings(directory="none")
    assert lease_directory("x", "s3://bucket/ray_results", off) is None
    lease = SweepLease.for_sweep("x", "s3://bucket/ray_results", settings=off)
    assert lease.tags() == {"qshield.lease": "none"} and lease.path is None
    lease.release()
