"""One live driver per sweep name: a lease with heartbeat and expiry next to the sweep's Tune experiment (issue 15).

Two drivers started with the same sweep name (a second terminal, a re-sent ``ray job submit``, a retried Kubernetes
job while the first attempt still runs) would write into one Tune experiment directory and one MLflow parent run and
merge their trials without a word. :func:`orchestrator.runtime.run_sweep` therefore takes the sweep's lease after
checking the storage path and before it touches the tracking store or starts Ray, holds it while the sweep runs and
gives it back when ``run_sweep`` ends, also on an exception. A second driver is refused with :class:`LeaseHeldError`
(exit status 2 on the command line): the message names the sweep, the driver holding it (host, pid, Ray address),
since when, and says to run the same command again once that driver ends, which resumes the sweep as before.

**Where.** ``<storage_path>/.qshield-leases/<name>/``, beside Tune's ``<storage_path>/<name>``: a local directory,
or the shared volume (the ReadWriteMany PVC of ``k8s/``) that every driver of a cluster mounts. ``$QSHIELD_LEASE_DIR``
puts the leases elsewhere (every driver of a sweep must then use the same one). An object-store storage path
(``s3://...``) is refused unless ``$QSHIELD_LEASE_DIR`` names a shared directory, or is ``none`` to run without a
lease: pyarrow's filesystems, which Tune uses for URIs, offer no create-if-absent, so no exclusive lease can be
built on them here.

**The protocol.** A lease is a file ``lease-<generation>.json`` holding its driver's record (:meth:`SweepLease.record`);
the highest generation present is the current one.

* A driver takes generation ``g + 1`` by creating its file with ``O_CREAT | O_EXCL``, and only when generation ``g``
  is absent, released (its driver ended normally) or stale. Exclusive creation is atomic on local filesystems and
  on NFS (v3 and later), so of several drivers racing for one stale lease exactly one creates ``g + 1``; the others
  then read the winner's record and are refused. The winner deletes the older generations.
* The holder renews every ``heartbeat_s``: it first checks that no higher generation exists and that its file is
  still its own, then rewrites the file (temporary file + ``os.replace``, atomic on the same filesystems) with a new
  heartbeat. When it finds a higher generation (a driver took over) or its file gone, or cannot write for
  ``expiry_s - heartbeat_s``, the lease is **lost**: every MLflow call of the sweep's tracker and every step of the
  Tune loop then raise :class:`LeaseLostError`, so the driver stops instead of writing next to the new holder (Tune's
  state and the MLflow runs stay as they are, for the holder to continue).
* Stale, judged by a contender: on the same machine (hostname, boot id and PID namespace all equal) when the
  holder's process is gone (its pid is free, a zombie, or a different process with a different start time): at
  once, so a SIGKILLed local driver is taken over immediately. From another machine, a live holder is recognised
  by its record changing (one heartbeat), and a dead one once the contender has seen the record unchanged for the
  holder's ``expiry_s``, timed on the contender's own monotonic clock: no clocks of two hosts are ever compared.
* ``$QSHIELD_LEASE_TAKE_OVER=1`` takes the lease without waiting (for a holder known to be gone when the expiry is
  long). It stays exclusive among contenders (it too creates the next generation exclusively); a holder that is in
  fact still alive finds the higher generation at its next heartbeat and stops.

Settings (environment, read when the lease is taken): ``QSHIELD_LEASE_HEARTBEAT_S`` (default 5),
``QSHIELD_LEASE_EXPIRY_S`` (default 30, at least twice the heartbeat), ``QSHIELD_LEASE_TAKE_OVER`` (``0``/``1``),
``QSHIELD_LEASE_DIR`` (a directory, or ``none``). A contender applies the expiry the holder recorded, so drivers
with different settings still agree.

**Why this is written here and not taken from a library.** ``filelock`` (in the environment, 4.2) has
``SoftFileLease``, a heartbeat lease on an exclusively created marker, but it takes over an expired lease only by
swapping names atomically (``renameat2(RENAME_EXCHANGE)``); NFS, CephFS, EFS and other network filesystems refuse
that call, and there filelock never takes the lease over (its ``_take_over_by_exchange``: "NFS, SMB and the like
refuse it"): a RayJob retried on a fresh cluster after its driver was killed would be refused for good. Its
``FileLock`` (``fcntl.flock``) is released when the process dies, but flock over NFS depends on the server's lock
manager and FUSE volumes often ignore it, and it records no holder to name in a refusal. The generation scheme above
needs only exclusive creation and rename-replace, which those filesystems provide; it relies on them and on NFS's
close-to-open consistency (every read opens the file). What it cannot do, no lease can: a holder that stalls for
longer than the expiry (a frozen VM) overlaps its successor until its next heartbeat check stops it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

#: the leases of every sweep of a storage path live in ``<storage_path>/<LEASE_DIRNAME>/<name>/``
LEASE_DIRNAME = ".qshield-leases"
DEFAULT_HEARTBEAT_S = 5.0
DEFAULT_EXPIRY_S = 30.0
ENV_HEARTBEAT, ENV_EXPIRY = "QSHIELD_LEASE_HEARTBEAT_S", "QSHIELD_LEASE_EXPIRY_S"
ENV_TAKE_OVER, ENV_DIR = "QSHIELD_LEASE_TAKE_OVER", "QSHIELD_LEASE_DIR"
#: the sweep-name rule of ``SweepSpace.NAME_PATTERN`` (not imported: this module stays light for helper processes)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_FILE = re.compile(r"lease-(\d{9,})\.json")
_FORMAT = 1

#: parent-run tags naming the driver that holds the sweep
TAG_DRIVER, TAG_DRIVER_SINCE, TAG_LEASE = "qshield.driver", "qshield.driver_since", "qshield.lease"


class SweepLeaseError(RuntimeError):
    """Base of the lease errors."""


class LeaseConfigError(SweepLeaseError):
    """A lease setting (environment variable, sweep name, storage path) is unusable; raised before anything runs."""


class LeaseHeldError(SweepLeaseError):
    """Another live driver holds the sweep (or its MLflow runs belong to another storage path); nothing was run."""


class LeaseLostError(SweepLeaseError):
    """This driver lost its sweep's lease while running and stopped."""


@dataclass(frozen=True)
class LeaseSettings:
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    expiry_s: float = DEFAULT_EXPIRY_S
    take_over: bool = False
    directory: str | None = None  # $QSHIELD_LEASE_DIR: a directory, "none", or None (beside the storage path)

    def __post_init__(self) -> None:
        for field, var, value in (("heartbeat_s", ENV_HEARTBEAT, self.heartbeat_s),
                                  ("expiry_s", ENV_EXPIRY, self.expiry_s)):
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise LeaseConfigError(f"{var} ({field}) must be a positive number of seconds; got {value!r}")
        if self.expiry_s < 2 * self.heartbeat_s:
            raise LeaseConfigError(
                f"{ENV_EXPIRY}={self.expiry_s:g} must be at least twice {ENV_HEARTBEAT}={self.heartbeat_s:g}, so a "
                f"live driver that misses a heartbeat keeps its lease; allowed: {ENV_EXPIRY} >= "
                f"{2 * self.heartbeat_s:g}")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LeaseSettings:
        """The settings in ``env`` (default ``os.environ``); a bad value raises :class:`LeaseConfigError` naming
        the variable and what is allowed."""
        env = dict(os.environ if env is None else env)

        def seconds(var: str, default: float) -> float:
            text = env.get(var, "").strip()
            if not text:
                return default
            try:
                return float(text)
            except ValueError:
                raise LeaseConfigError(f"{var}={text!r} is not a number; allowed: a positive number of seconds "
                                       f"(default {default:g})") from None

        take = env.get(ENV_TAKE_OVER, "").strip().lower()
        if take not in ("", "0", "1", "false", "true", "no", "yes"):
            raise LeaseConfigError(f"{ENV_TAKE_OVER}={take!r}; allowed values: 0, 1 (also false/true, no/yes)")
        directory = env.get(ENV_DIR, "").strip() or None
        return cls(seconds(ENV_HEARTBEAT, DEFAULT_HEARTBEAT_S), seconds(ENV_EXPIRY, DEFAULT_EXPIRY_S),
                   take in ("1", "true", "yes"), directory)


def lease_directory(name: str, storage_path: str, settings: LeaseSettings) -> Path | None:
    """Where the leases of sweep ``name`` live, or None when ``$QSHIELD_LEASE_DIR=none`` turns them off."""
    if not re.match(NAME_PATTERN, name) or len(name) > 100:
        raise LeaseConfigError(f"name={name!r}: a sweep name must match {NAME_PATTERN} (letters, digits, '.', '_', "
                               f"'-', starting with a letter or digit; at most 100 characters)")
    if settings.directory is not None:
        if settings.directory.lower() == "none":
            return None
        if "://" in settings.directory:
            raise LeaseConfigError(f"{ENV_DIR}={settings.directory!r}: allowed values: a directory on a filesystem "
                                   f"every driver of the sweep shares, or 'none'")
        return Path(os.path.abspath(os.path.expanduser(settings.directory))) / name
    if "://" in storage_path:
        raise LeaseConfigError(
            f"storage_path={storage_path!r} is an object store, where no exclusive lease can be taken (pyarrow's "
            f"filesystems have no create-if-absent), so two drivers of sweep {name!r} could run at once and merge: "
            f"set {ENV_DIR} to a directory every driver of the sweep shares (e.g. a ReadWriteMany volume), or "
            f"{ENV_DIR}=none to run without a lease")
    return Path(storage_path) / LEASE_DIRNAME / name


# ------------------------------------------------------------------------------------------------------------------
# who and where


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def host_identity() -> tuple[str, str]:
    """``(hostname, machine id)``: the machine id is the boot id and PID namespace (Linux), so two containers or
    two boots with one hostname are told apart; empty where /proc has neither."""
    boot, ns = _boot_id(), _pid_namespace()
    return socket.gethostname(), (f"{boot}/{ns}" if boot or ns else "")


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, from /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` runs (not a zombie) and, when ``start`` is known, is the one that started then."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start


def redact(uri: str) -> str:
    """``uri`` with a password replaced by ``***`` (a lease record is readable by whoever reads the storage)."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable URI>"


def _ray_address() -> str:
    address = os.environ.get("RAY_ADDRESS")
    if address:
        return address
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        try:
            return f"attached in-process ({ray.get_runtime_context().gcs_address})"
        except Exception:  # noqa: BLE001 - only a label for the record
            return "attached in-process"
    return "local"


def _now() -> tuple[float, str]:
    t = time.time()
    return t, datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _ago(unix: Any) -> str:
    if not isinstance(unix, (int, float)):
        return "?"
    seconds = time.time() - unix
    if seconds < 0:
        return "just now (by its clock)"
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


# ------------------------------------------------------------------------------------------------------------------
# the lease


def _read(path: Path) -> tuple[bytes | None, dict[str, Any] | None]:
    """(raw bytes, record) of a lease file: (None, None) when absent, (bytes, None) when not (yet) a record."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        record = json.loads(raw)
    except ValueError:
        return raw, None
    if not isinstance(record, dict) or record.get("qshield_lease") != _FORMAT or not record.get("token"):
        return raw, None
    return raw, record


def generations(directory: Path) -> dict[int, Path]:
    """``{generation: file}`` of the lease files in ``directory``."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {}
    return {int(m.group(1)): directory / n for n in names if (m := _FILE.fullmatch(n))}


def current_holder(directory: Path) -> dict[str, Any] | None:
    """The record of the highest generation in ``directory`` (held or released), None when there is none."""
    gens = generations(directory)
    return _read(gens[max(gens)])[1] if gens else None


def describe(record: dict[str, Any]) -> str:
    """``pid 123 on host 'h' (Ray: local), started <time> (2 min ago), last heartbeat 3 s ago``."""
    return (f"pid {record.get('pid')} on host {record.get('host')!r} (Ray: {record.get('ray')}), started "
            f"{record.get('started_at')} ({_ago(record.get('started_unix'))}), last heartbeat "
            f"{_ago(record.get('heartbeat_unix'))}")


class SweepLease:
    """The lease of sweep ``name`` in ``directory`` (see the module docstring). ``directory=None``: no lease
    (``$QSHIELD_LEASE_DIR=none``); every method then does nothing.

    Use :meth:`for_sweep` (settings from the environment) as a context manager; ``acquire`` / ``release`` for the
    rest. ``on_lost`` is called (from the heartbeat thread) with the reason when the lease is lost.
    """

    def __init__(self, name: str, directory: Path | None, *, storage_path: str = "", tracking_uri: str = "",
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, expiry_s: float = DEFAULT_EXPIRY_S,
                 on_lost: Callable[[str], None] | None = None) -> None:
        LeaseSettings(heartbeat_s, expiry_s)  # validates
        self.name, self.directory = name, directory
        self.storage_path, self.tracking_uri = storage_path, redact(tracking_uri)
        self.heartbeat_s, self.expiry_s = float(heartbeat_s), float(expiry_s)
        self.on_lost = on_lost
        self.generation = 0
        self.token = ""
        self.path: Path | None = None
        self.lost: str | None = None
        self.waited_s = 0.0  # how long acquire() watched a holder before taking the lease (figures)
        self._grace_s = 0.0
        self._record: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- construction from the environment ------------------------------------------------------------------------
    @classmethod
    def for_sweep(cls, name: str, storage_path: str, *, tracking_uri: str = "",
                  settings: LeaseSettings | None = None) -> SweepLease:
        """Take the lease of sweep ``name`` on ``storage_path`` with the settings of the environment; raises
        :class:`LeaseHeldError` when a live driver holds it and :class:`LeaseConfigError` for a bad setting."""
        settings = settings or LeaseSettings.from_env()
        directory = lease_directory(name, storage_path, settings)
        if directory is None:
            log.warning("sweep %s runs without a lease (%s=none): a second driver with this name would not be "
                        "refused", name, ENV_DIR)
        lease = cls(name, directory, storage_path=storage_path, tracking_uri=tracking_uri,
                    heartbeat_s=settings.heartbeat_s, expiry_s=settings.expiry_s)
        lease.acquire(take_over=settings.take_over)
        return lease

    def __enter__(self) -> SweepLease:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        lost = self.lost
        self.release()
        if lost is not None and not isinstance(exc, LeaseLostError):
            raise LeaseLostError(self.lost_message()) from exc
        return False

    # -- taking it ------------------------------------------------------------------------------------------------
    def acquire(self, *, take_over: bool = False) -> None:
        """Take the lease (see the module docstring for when a held one is stale); :class:`LeaseHeldError` when a
        live driver holds it. ``take_over``: take a held lease without waiting for it to expire."""
        if self.directory is None:
            return
        if self.path is not None:
            raise SweepLeaseError(f"the lease of sweep {self.name!r} is already held by this object")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LeaseConfigError(f"cannot create the lease directory {self.directory}: {exc}") from exc
        started = time.monotonic()
        seen: dict[int, tuple[bytes | None, float]] = {}  # generation -> (content, when first seen with it)
        while True:
            gens = generations(self.directory)
            top = max(gens, default=0)
            if top:
                verdict = self._judge(top, gens[top], seen, take_over)
                if verdict == "watch":
                    time.sleep(min(1.0, self.heartbeat_s / 4))
                    continue
            if self._create(top + 1):
                break
            # another driver created that generation first: judge it on the next round

        for gen, path in generations(self.directory).items():  # the older generations are history now
            if gen < self.generation:
                path.unlink(missing_ok=True)
        for leftover in self.directory.glob(".lease-*.tmp"):
            m = re.match(r"\.lease-(\d+)\.", leftover.name)
            if m and int(m.group(1)) < self.generation:
                leftover.unlink(missing_ok=True)
        with _HELD_LOCK:
            _HELD[self.name] = self
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name=f"qshield-lease-{self.name}", daemon=True)
        self._thread.start()
        if self._grace_s:
            time.sleep(self._grace_s)
        self.waited_s = time.monotonic() - started
        log.info("sweep %s: lease generation %d taken (%s)%s", self.name, self.generation, self.path,
                 f" after watching the previous holder for {self.waited_s:.1f} s" if self.waited_s >= 1 else "")

    def _judge(self, gen: int, path: Path, seen: dict[int, tuple[bytes | None, float]], take_over: bool) -> str:
        """"free" (absent, released, stale: take the next generation) or "watch"; raises LeaseHeldError."""
        raw, record = _read(path)
        if raw is None:  # deleted meanwhile (a winner cleaning up): look again
            return "watch"
        if record is not None and record.get("state") == "released":
            return "free"
        now = time.monotonic()
        first = seen.get(gen)
        if first is None:
            seen[gen] = first = (raw, now)
        if take_over:
            log.warning("sweep %s: taking the lease over without waiting (%s=1); its holder was: %s", self.name,
                        ENV_TAKE_OVER, describe(record) if record else f"unreadable record {path}")
            # a holder that still runs finds the new generation at its next heartbeat and stops: give it that time
            # before this driver writes anything
            self._grace_s = 2 * float((record or {}).get("heartbeat_s") or self.heartbeat_s)
            return "free"
        if record is None:  # being written by a driver that just created it, or torn: watch it like a remote one
            if raw != first[0]:
                seen[gen] = (raw, now)
                return "watch"
            return "free" if now - first[1] >= self.expiry_s else "watch"
        host, machine = host_identity()
        if record.get("host") == host and record.get("machine") == machine:
            if process_alive(int(record.get("pid", 0)), record.get("pid_start")):
                raise LeaseHeldError(self.refusal(record, path))
            log.warning("sweep %s: its previous driver (%s) is gone; taking its lease over", self.name,
                        describe(record))
            return "free"
        if raw != first[0]:  # it heartbeats: alive
            raise LeaseHeldError(self.refusal(record, path))
        expiry = float(record.get("expiry_s") or self.expiry_s)
        if now - first[1] >= expiry:
            log.warning("sweep %s: the lease of %s was not renewed for %.0f s (its expiry); taking it over",
                        self.name, describe(record), now - first[1])
            return "free"
        return "watch"

    def _create(self, gen: int) -> bool:
        assert self.directory is not None
        path = self.directory / f"lease-{gen:09d}.json"
        token = secrets.token_hex(16)
        host, machine = host_identity()
        unix, iso = _now()
        record = {
            "qshield_lease": _FORMAT, "sweep": self.name, "generation": gen, "token": token, "state": "held",
            "host": host, "machine": machine, "pid": os.getpid(), "pid_start": process_start(os.getpid()),
            "ray": _ray_address(), "storage_path": self.storage_path, "tracking_uri": self.tracking_uri,
            "started_at": iso, "started_unix": unix, "heartbeat_at": iso, "heartbeat_unix": unix, "beats": 0,
            "heartbeat_s": self.heartbeat_s, "expiry_s": self.expiry_s,
        }
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, json.dumps(record, indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.generation, self.token, self.path, self._record = gen, token, path, record
        return True

    def refusal(self, record: dict[str, Any], path: Path) -> str:
        """The message refusing a second driver."""
        expiry = float(record.get("expiry_s") or self.expiry_s)
        where = "".join(f"{label} {record[key]}; " for label, key in (("storage", "storage_path"),
                                                                         ("tracking", "tracking_uri"))
                        if record.get(key))
        return (
            f"sweep {self.name!r} is already running: its driver is {describe(record)}; {where}lease {path}. "
            f"A second driver "
            f"would merge its trials into the same Tune experiment and MLflow runs, so this one stops before "
            f"starting Ray. Run the same command again once it ends to resume the sweep. If that driver is gone "
            f"(its machine died), its lease expires {expiry:g} s after its last heartbeat and the same command "
            f"then takes the sweep over; to take over at once, run it with {ENV_TAKE_OVER}=1 (a driver that still "
            f"runs stops at its next heartbeat)."
        )

    # -- holding it -----------------------------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.heartbeat_s):
            try:
                reason = self._not_ours()
                if reason is not None:
                    self._lose(reason)
                    return
                self._rewrite(state="held")
                last_ok = time.monotonic()
            except OSError as exc:
                failing = time.monotonic() - last_ok
                if failing >= self.expiry_s - self.heartbeat_s:
                    self._lose(f"it could not be renewed for {failing:.0f} s ({exc})")
                    return
                log.warning("sweep %s: lease renewal failed (%s); retrying", self.name, exc)

    def _not_ours(self) -> str | None:
        """Why the lease is no longer this driver's (a higher generation, its file gone or replaced), or None."""
        assert self.directory is not None and self.path is not None
        gens = generations(self.directory)
        top = max(gens, default=0)
        if top > self.generation:
            record = _read(gens[top])[1]
            return (f"generation {top} was taken by " + (describe(record) if record else "another driver")
                    + f" ({gens[top]})")
        raw, record = _read(self.path)
        if raw is None:
            return f"its file {self.path} was removed"
        if record is None or record.get("token") != self.token:
            return f"its file {self.path} was overwritten"
        return None

    def _rewrite(self, state: str) -> None:
        assert self.path is not None
        unix, iso = _now()
        self._record = {**self._record, "state": state, "heartbeat_at": iso, "heartbeat_unix": unix,
                        "beats": int(self._record.get("beats", 0)) + 1}
        if state == "released":
            self._record["released_at"] = iso
        tmp = self.path.with_name(f".lease-{self.generation:09d}.{self.token}.tmp")
        tmp.write_bytes(json.dumps(self._record, indent=1).encode())
        os.replace(tmp, self.path)

    def _lose(self, reason: str) -> None:
        self.lost = reason
        log.error("sweep %s: this driver lost its lease: %s; it stops", self.name, reason)
        if self.on_lost is not None:
            self.on_lost(reason)

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if the lease was lost."""
        if self.lost is not None:
            raise LeaseLostError(self.lost_message())

    def lost_message(self) -> str:
        return (f"sweep {self.name!r}: this driver lost its lease ({self.lost}), so it stopped rather than write "
                f"next to another driver; the Tune state and MLflow runs written so far are kept for the driver "
                f"holding the lease now; run the same command again once that one ends to resume the sweep")

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released (unless it was lost); safe to call twice."""
        if self._thread is not None:
            self._stop.set()
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=max(5.0, 2 * self.heartbeat_s))
            self._thread = None
        with _HELD_LOCK:
            if _HELD.get(self.name) is self:
                del _HELD[self.name]
        if self.path is None:
            return
        if self.lost is None:
            try:
                if self._not_ours() is None:
                    self._rewrite(state="released")
            except OSError as exc:  # it will expire
                log.warning("sweep %s: could not mark the lease released (%s); it expires in %g s", self.name,
                            exc, self.expiry_s)
        self.path = None

    # -- what it says about itself --------------------------------------------------------------------------------
    @property
    def record(self) -> dict[str, Any]:
        """The holder's record as written to the lease file (empty before acquire)."""
        return dict(self._record)

    def tags(self) -> dict[str, str]:
        """Tags naming this driver for the sweep's MLflow parent run."""
        if self.directory is None:
            return {TAG_LEASE: "none"}
        return {TAG_DRIVER: f"pid {self._record.get('pid')} on host {self._record.get('host')} "
                            f"(Ray: {self._record.get('ray')})",
                TAG_DRIVER_SINCE: str(self._record.get("started_at")), TAG_LEASE: str(self.directory)}

    def check_parent_run(self, tracker: Any, run: Any | None) -> None:
        """Refuse (:class:`LeaseHeldError`) when the sweep's MLflow parent run ``run`` (``tracker.find_parent_run()``,
        None when there is none) is ``RUNNING`` with its Tune state on another storage path or its lease in another
        directory: the lease of that path is not this one, so two drivers could feed one parent run. Read only; call
        before the parent run is reopened."""
        if run is None:
            return
        parent_id = run.info.run_id
        if run.info.status != "RUNNING":
            return
        tags = run.data.tags
        storage, lease_dir = tags.get("qshield.storage_path"), tags.get(TAG_LEASE)
        mine = "none" if self.directory is None else str(self.directory)
        if storage and storage != self.storage_path:
            where = f"its Tune state in storage_path={storage!r}, not {self.storage_path!r}"
            fix = f"resume it with --storage-path {storage}"
        elif lease_dir and lease_dir not in ("none", mine) and mine != "none":
            where = f"its lease in {lease_dir}, not {mine}"
            fix = f"resume it with {ENV_DIR} set as that driver had it"
        else:
            return
        driver = tags.get(TAG_DRIVER)
        holder = f" (driver {driver}, since {tags.get(TAG_DRIVER_SINCE)})" if driver else ""
        raise LeaseHeldError(
            f"sweep {self.name!r}: its MLflow parent run {parent_id} in experiment {tracker.experiment_name!r} at "
            f"{redact(tracker.tracking_uri)} is RUNNING with {where}{holder}. Two storage paths or lease directories "
            f"would let two drivers feed one MLflow sweep, so this one stops before starting Ray: {fix} (it is "
            f"refused while that driver runs), or give this sweep another --name")


# ------------------------------------------------------------------------------------------------------------------
# the leases this process holds, for the guards in the tracker and the Tune callback

_HELD: dict[str, SweepLease] = {}
_HELD_LOCK = threading.Lock()


def check_lease(sweep: str) -> None:
    """Raise :class:`LeaseLostError` when this process held the lease of ``sweep`` and lost it (else nothing):
    called before every MLflow call of the sweep's tracker and at every step of the Tune loop."""
    lease = _HELD.get(sweep)
    if lease is not None and lease.lost is not None:
        raise LeaseLostError(lease.lost_message())
