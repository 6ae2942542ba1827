"""MLflow tracking for sweeps: one parent run per sweep, one nested run per trial, no duplicates on resume.

Only :class:`mlflow.MlflowClient` is used (no global "active run"), so several sweeps or a resumed driver never
tangle their runs. Runs are found again by tags:

* parent: ``qshield.role = sweep`` and ``qshield.sweep = <sweep name>``;
* trial:  ``qshield.role = trial``, ``qshield.sweep = <sweep name>`` and ``qshield.trial_id = <Tune trial id>``
  (Tune keeps trial ids across ``Tuner.restore``), with ``mlflow.parentRunId`` pointing at the parent.

Per-trial cost stays flat as a sweep grows: a tracker searches the sweep's trial runs by tag once (the first time
it needs a trial run: after a restart, the runs an earlier driver created) and from then on keeps the index
itself, adding the runs it creates; a run it has just created is not read back (no params to compare, no metric
history). This relies on one writer per sweep, which the sweep's driver is.

Default tracking URI: ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the working directory
(MLflow >= 3.13 refuses a plain local file store).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from ..lease import check_lease

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: Experiment tag the MLflow UI reads to open an experiment in its model-training (not GenAI) view.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
ROLE, SWEEP, TRIAL = "qshield.role", "qshield.sweep", "qshield.trial_id"
PARENT = "mlflow.parentRunId"
_MAX_PARAM_LEN = 6000
T = TypeVar("T")


class TrackingURIError(ValueError):
    """A tracking URI that MLflow cannot use as a store (the message names it and what is allowed)."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` (absolute, in the cwd).

    Raises :class:`TrackingURIError` for a file store (a plain path, or ``file://``): MLflow 3.13 and later refuse
    it, deep inside the first call, so it is refused here, before anything is written."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    chosen = uri or env or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    if urlparse(chosen).scheme in ("", "file"):
        given = "given" if uri else "from $MLFLOW_TRACKING_URI"
        raise TrackingURIError(
            f"tracking URI {chosen!r} ({given}) is a file store, which MLflow no longer accepts; allowed values: "
            f"sqlite:///<absolute path>/mlflow.db (a local store), http(s)://<host>:<port> (an MLflow server) or a "
            f"database URI (postgresql://, mysql://, mssql://)"
        )
    return chosen


def sqlite_database(uri: str) -> Path | None:
    """The database file of a local ``sqlite:///relative`` or ``sqlite:////absolute`` store URI, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):].split("?")[0]) if uri.startswith(prefix) else None


def existing_store(uri: str | None = None) -> str:
    """:func:`resolve_tracking_uri`, refusing (:class:`TrackingURIError`) a local ``sqlite:///`` store whose database
    does not exist: a command that only reads (``select``, ``card``, ``app``) would otherwise create an empty store
    at a mistyped path and report what is missing from it."""
    chosen = resolve_tracking_uri(uri)
    database = sqlite_database(chosen)
    if database is not None and not database.is_file():
        raise TrackingURIError(
            f"tracking URI {chosen!r}: no MLflow store at {str(database)!r}; allowed values: the tracking URI the sweep "
            f"logged to (--tracking-uri of `qshield sweep`, or $MLFLOW_TRACKING_URI)"
        )
    return chosen


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``tracking_uri``. Creating the first client of a new local ``sqlite:///`` store creates
    its tables, and two processes doing that at once make one fail (alembic: "Online migration expected to match one
    row"): two sweeps started together on a fresh ``mlflow.db``. So for such a store the client is created under an
    exclusive lock (``filelock.FileLock``, an ``fcntl`` lock: a sqlite store is local anyway) on
    ``.<database>.qshield-init.lock`` beside the database."""
    database = sqlite_database(tracking_uri)
    if database is None or not database.parent.is_dir():
        return MlflowClient(tracking_uri=tracking_uri)
    from filelock import FileLock

    with FileLock(database.with_name(f".{database.name}.qshield-init.lock")):
        return MlflowClient(tracking_uri=tracking_uri)


def default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """``<database folder>/mlartifacts/<experiment>`` for a local ``sqlite:///`` store; None (the server's choice)
    otherwise."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = Path(tracking_uri[len(prefix):])
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in experiment)
    return str(database.resolve().parent / "mlartifacts" / safe)


def run_environment_tags() -> dict[str, str]:
    """Tags recording what produced a run: git sha, Python and package versions, host architecture."""
    tags = {"qshield.git_sha": _git_sha(), "python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("qshield", "torch", "ray", "mlflow", "optuna", "pennylane", "qulacs", "torchattacks"):
        try:
            from importlib.metadata import version

            tags[f"version.{pkg}"] = version(pkg)
        except Exception:  # noqa: BLE001 - a missing optional package is recorded as such
            tags[f"version.{pkg}"] = "not installed"
    return tags


def _git_sha() -> str:
    env = os.environ.get("QSHIELD_GIT_SHA")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        sha = out.stdout.strip()
        if out.returncode == 0 and sha:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                   text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings with ``/``-joined keys (``{"a": {"b": 1}}`` -> ``{"a/b": 1}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def param_strings(params: Mapping[str, Any]) -> dict[str, str]:
    """``params`` as MLflow params hold them: flattened (:func:`flatten`), lists and mappings as JSON, the rest as
    ``str``, cut at MLflow's length limit."""
    return {k: (json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v))[:_MAX_PARAM_LEN]
            for k, v in flatten(params).items()}


class TrackingError(RuntimeError):
    """The tracking server could not be reached after retries; nothing was silently dropped."""


def call_mlflow(what: str, fn: Callable[[], T], tracking_uri: str, *, retries: int = 5, backoff_s: float = 1.0) -> T:
    """``fn()`` (one call to the MLflow tracking server or Model Registry), retried ``retries`` times with exponential
    backoff from ``backoff_s`` while it fails transiently (:func:`_is_transient`); then, or at once when the failure
    is not transient, a :class:`TrackingError` naming ``what`` and ``tracking_uri`` (caused by the last failure).
    The one retry loop of qshield's MLflow calls: the sweep's runs (:class:`SweepTracker`) and the registry writes
    of ``qshield select`` and the robustness card."""
    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            return fn()
        except (MlflowException, OSError, ConnectionError) as exc:
            if attempt == retries or not _is_transient(exc):
                raise TrackingError(
                    f"MLflow at {tracking_uri} failed to {what} after {attempt + 1} attempt(s): {exc}"
                ) from exc
            log.warning("MLflow %s failed (%s); retrying in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


class SweepTracker:
    """Creates and finds the MLflow runs of one sweep.

    Args:
        sweep: sweep name (also Tune's experiment name).
        experiment: MLflow experiment name (created if missing).
        tracking_uri: see :func:`resolve_tracking_uri`.
        retries / backoff_s: every call to the tracking server is retried this many times with exponential
            backoff; after that a :class:`TrackingError` is raised (the sweep fails loudly, never loses data
            silently).
    """

    def __init__(
        self,
        sweep: str,
        experiment: str = "qshield",
        tracking_uri: str | None = None,
        *,
        retries: int = 5,
        backoff_s: float = 1.0,
    ) -> None:
        self.sweep = sweep
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client = mlflow_client(self.tracking_uri)  # issue 15: a fresh sqlite store, two drivers at once
        self.retries = retries
        self.backoff_s = backoff_s
        self.experiment_name = experiment
        self._experiment_id: str | None = None
        self._parent_id: str | None = None
        self._trial_index: dict[str, str] | None = None  # trial id -> run id, once searched (see the module doc)
        self._env_tags: dict[str, str] | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks with the experiment state
        state = dict(self.__dict__)
        state.pop("client", None)
        state["_trial_index"] = None  # an unpickled tracker (a restored driver) searches again
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.client = mlflow_client(self.tracking_uri)  # issue 15: a fresh sqlite store, two drivers at once

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        check_lease(self.sweep)  # issue 15: a driver that lost its sweep's lease writes nothing more
        return call_mlflow(what, fn, self.tracking_uri, retries=self.retries, backoff_s=self.backoff_s)

    @property
    def experiment_id(self) -> str:
        """The experiment's id; created on first use, in MLflow's model-training view
        (tag ``mlflow.experimentKind = custom_model_development``) and, for a sqlite store, with its artifacts in
        ``mlartifacts/<experiment>`` next to the database (MLflow's default would be ``./mlruns`` of whatever
        directory the process runs in)."""
        if self._experiment_id is None:
            exp = self._call("get experiment", lambda: self.client.get_experiment_by_name(self.experiment_name))
            if exp is None:
                location = default_artifact_location(self.tracking_uri, self.experiment_name)
                self._experiment_id = self._call("create experiment", lambda: self._create_experiment(location))
            else:
                self._experiment_id = exp.experiment_id
                if exp.tags.get(EXPERIMENT_KIND) is None:
                    self._call("tag experiment", lambda: self.client.set_experiment_tag(
                        exp.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING))
        return self._experiment_id

    def _create_experiment(self, location: str | None) -> str:
        """Create the experiment; when another driver created it meanwhile (two sweeps started together on a new
        store, issue 15), use theirs."""
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=location,
                                                 tags={EXPERIMENT_KIND: MODEL_TRAINING})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    def _find(self, filter_string: str) -> list[Any]:
        """Every run of the experiment matching ``filter_string`` (all pages)."""
        runs: list[Any] = []
        token: str | None = None
        while True:
            page = self._call(
                "search runs",
                lambda t=token: self.client.search_runs([self.experiment_id], filter_string=filter_string,
                                                        max_results=1000, page_token=t),
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def environment_tags(self) -> dict[str, str]:
        """:func:`run_environment_tags`, computed once per tracker (it runs ``git`` and reads package metadata)."""
        if self._env_tags is None:
            self._env_tags = run_environment_tags()
        return dict(self._env_tags)

    # -- parent -----------------------------------------------------------------------------------------------
    def parent_run_id(self, params: Mapping[str, Any] | None = None) -> str:
        """The sweep's parent run, created on first use and found again (by tags) after a restart."""
        if self._parent_id is None:
            found = self.find_parent_run_id()
            if found is not None:
                self._parent_id = found
                self._call("reopen parent run", lambda: self.client.update_run(found, status="RUNNING"))
            else:
                tags = {ROLE: "sweep", SWEEP: self.sweep, **self.environment_tags()}
                run = self._call(
                    "create parent run",
                    lambda: self.client.create_run(self.experiment_id, run_name=f"sweep {self.sweep}", tags=tags),
                )
                self._parent_id = run.info.run_id
                if params:
                    self.log_params(self._parent_id, params, new_run=True)
        return self._parent_id

    def find_parent_run(self) -> Any | None:
        """The sweep's existing parent run (an MLflow ``Run``, found by tags: status, tags, params), or None; never
        creates or reopens a run."""
        runs = self._find(f"tags.`{ROLE}` = 'sweep' and tags.`{SWEEP}` = '{quote(self.sweep)}'")
        return runs[0] if runs else None

    def find_parent_run_id(self) -> str | None:
        """The id of :meth:`find_parent_run`, or None."""
        run = self.find_parent_run()
        return run.info.run_id if run is not None else None

    # -- trials -----------------------------------------------------------------------------------------------
    def trial_run_id(self, trial_id: str, params: Mapping[str, Any] | None = None, run_name: str | None = None) -> str:
        """The nested run of a Tune trial; an existing one is reused (no duplicates when a sweep resumes)."""
        return self.open_trial_run(trial_id, params, run_name)[0]

    def open_trial_run(
        self, trial_id: str, params: Mapping[str, Any] | None = None, run_name: str | None = None
    ) -> tuple[str, bool]:
        """``(run id, created)``: the trial's existing run reopened (``RUNNING``), or a new one created with
        ``params`` (``created`` True: it holds nothing else yet)."""
        parent = self.parent_run_id()
        index = self._trial_runs_index()
        run_id = index.get(trial_id)
        if run_id is not None:
            self._call("reopen trial run", lambda: self.client.update_run(run_id, status="RUNNING"))
            return run_id, False
        tags = {ROLE: "trial", SWEEP: self.sweep, TRIAL: trial_id, PARENT: parent, **self.environment_tags()}
        run = self._call(
            "create trial run",
            lambda: self.client.create_run(self.experiment_id, run_name=run_name or f"trial {trial_id}", tags=tags),
        )
        index[trial_id] = run.info.run_id
        if params:
            self.log_params(run.info.run_id, params, new_run=True)
        return run.info.run_id, True

    def _trial_runs_index(self) -> dict[str, str]:
        """``{trial id: run id}`` of this sweep's trial runs: searched once, then kept up to date by this tracker
        (should a trial id ever have two runs, the first in MLflow's search order, as a search by its id would)."""
        if self._trial_index is None:
            index: dict[str, str] = {}
            for run in self.trial_runs():
                index.setdefault(run.data.tags.get(TRIAL, ""), run.info.run_id)
            self._trial_index = index
        return self._trial_index

    def trial_runs(self) -> list[Any]:
        """All trial runs of this sweep (MLflow ``Run`` objects)."""
        return self._find(f"tags.`{ROLE}` = 'trial' and tags.`{SWEEP}` = '{quote(self.sweep)}'")

    # -- logging ----------------------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, Any], *, new_run: bool = False) -> None:
        """Log (flattened) params; params already logged are skipped (resume-safe). ``new_run``: the run was
        just created and holds no params (skips reading it back)."""
        existing = {} if new_run else self._call("read run", lambda: self.client.get_run(run_id)).data.params
        batch = [Param(k, value) for k, value in param_strings(params).items() if k not in existing]
        for i in range(0, len(batch), 100):
            chunk = batch[i : i + 100]
            self._call("log params", lambda c=chunk: self.client.log_batch(run_id, params=c))

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the finite numeric entries of ``metrics`` (flattened); other entries are ignored."""
        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step or 0)
            for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(float(v)) != float("inf")
        ]
        for i in range(0, len(batch), 500):
            chunk = batch[i : i + 500]
            self._call("log metrics", lambda c=chunk: self.client.log_batch(run_id, metrics=c))

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        batch = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        self._call("set tags", lambda: self.client.log_batch(run_id, tags=batch))

    def log_artifacts(self, run_id: str, local_dir: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._call("log artifacts", lambda: self.client.log_artifacts(run_id, str(local_dir), artifact_path))

    def log_json(self, run_id: str, obj: Any, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(json.dumps(obj, indent=2, default=str))
            parent = str(Path(artifact_file).parent)
            self._call(
                "log artifact",
                lambda: self.client.log_artifact(run_id, str(path), None if parent == "." else parent),
            )

    def log_table(self, run_id: str, rows: Iterable[Mapping[str, Any]], artifact_file: str) -> None:
        """Log a list of row dicts as an MLflow table (shown in the UI's artifact viewer)."""
        import pandas as pd

        frame = pd.DataFrame(list(rows))
        self._call("log table", lambda: self.client.log_table(run_id, frame, artifact_file))

    def log_model(self, run_id: str, model_dir: str | os.PathLike, step: int = 0) -> str:
        """Log a trial's model directory as the run's MLflow Model (pyfunc, from code), with the run's metrics at
        ``step`` linked to it; returns its model id."""
        from ._model import log_trial_model

        return self._call("log model", lambda: log_trial_model(self.tracking_uri, run_id, model_dir, step))

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("end run", lambda: self.client.set_terminated(run_id, status=status))


def quote(value: str) -> str:
    """Escape a value for a string literal of an MLflow filter (``search_runs`` / ``search_model_versions``)."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


#: what a database says when two writers inserted the same row at once (sqlite, PostgreSQL, MySQL, SQL Server)
_LOST_INSERT_RACE = ("UNIQUE constraint failed", "duplicate key value violates unique constraint", "Duplicate entry",
                     "Violation of PRIMARY KEY constraint", "Violation of UNIQUE KEY constraint")


def _is_transient(exc: BaseException) -> bool:
    """Connection problems, server errors and a locked database are retried; bad requests are not, except one: a
    write that lost a race to insert the same row (MLflow's ``set_model_version_tag`` and
    ``set_registered_model_alias`` read, then insert or update: two callers setting the same tag or alias of a new
    version at once both insert, and the second fails with the database's unique-constraint error, ``BAD_REQUEST``).
    Done again, such a write finds the row and updates it. A create that finds its resource made meanwhile is
    ``RESOURCE_ALREADY_EXISTS``: not transient (the callers use the existing one)."""
    if isinstance(exc, (OSError, ConnectionError)):
        return True
    code = getattr(exc, "error_code", "") or ""
    text = str(exc)
    return (
        code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "ENDPOINT_NOT_FOUND")
        or "Max retries exceeded" in text
        or "Connection" in text
        or "database is locked" in text
        or (code == "BAD_REQUEST" and any(marker in text for marker in _LOST_INSERT_RACE))
    )
