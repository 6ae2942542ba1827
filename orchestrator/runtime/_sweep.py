"""Run a sweep: validate, attach to (or start) Ray, restore-or-start the Tuner, fit, score, log the summary.

Everything that can be checked is checked before Ray starts: the space (already validated on load), the storage
path (writable, enough free space), the sweep's lease (one live driver per sweep name, :mod:`orchestrator.lease`)
and the MLflow tracking store (the parent run is created or found first).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..lease import SweepLease
from ..space import SweepSpace
from ..tracking import SweepTracker, TrackingError, param_strings, resolve_tracking_uri
from ._callbacks import error_text, tensorboard_logger
from ._summary import SweepResult, TrialRecord, summarise
from ._tune import make_tune_config, to_tune_param_space

if TYPE_CHECKING:  # pragma: no cover - typing only
    from qshield.data import DatasetBundle

log = logging.getLogger(__name__)

#: refuse to start a local sweep with less free space than this on the storage path (bytes)
MIN_FREE_BYTES = 200 * 1024**2
#: checkpoints Tune keeps per trial: disk stays bounded, and a restarted or resumed trial starts from the latest
KEEP_CHECKPOINTS = 2
#: Tune's warning about frequent experiment-state snapshots (see :func:`_snapshot_warning_off`)
SNAPSHOT_WARNING = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"


class SweepSetupError(RuntimeError):
    """The sweep cannot start (storage, tracking or cluster problem); raised before any trial runs."""


def check_storage(storage_path: str) -> None:
    """A local storage path must be creatable, writable, and have at least :data:`MIN_FREE_BYTES` free."""
    if "://" in storage_path:
        return  # remote storage: checked by pyarrow when Tune opens it
    path = Path(storage_path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".qshield-write-test-"):
            pass
    except OSError as exc:
        raise SweepSetupError(f"storage_path={storage_path!r} is not writable: {exc}") from exc
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise SweepSetupError(
            f"storage_path={storage_path!r} has only {free / 1024**2:.0f} MiB free; at least "
            f"{MIN_FREE_BYTES / 1024**2:.0f} MiB are needed for checkpoints"
        )


def _check_attack_library() -> None:
    """torchattacks is installed apart from the package's dependencies (docs/install.md): check for it before any
    trial trains, rather than fail each trial after its training."""
    from qshield.attacks import import_torchattacks

    try:
        import_torchattacks()
    except ImportError as exc:
        raise SweepSetupError(str(exc)) from None


def _load_data(space: SweepSpace) -> DatasetBundle:
    """The space's dataset, read once for the whole sweep; a missing or unreadable one stops it before Ray
    starts."""
    from qshield.data import DatasetFormatError

    from ..trial import load_trial_data

    try:
        return load_trial_data(space)
    except (OSError, DatasetFormatError) as exc:  # DatasetNotFoundError is a FileNotFoundError
        raise SweepSetupError(f"dataset {space.dataset.value!r} cannot be read: {exc}") from exc


def check_local_capacity(space: SweepSpace, num_cpus: int | None) -> None:
    """Refuse (:class:`SweepSetupError`), before anything is written or started, a sweep whose trials a local Ray
    could never place: they would wait forever (Ray's "no available node types can fulfill") with the lease taken
    and the parent run ``RUNNING``. Only for a local Ray: a cluster (``$RAY_ADDRESS``, or one already attached)
    may grow by autoscaling, so it is not judged here."""
    import ray

    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        raise SweepSetupError(f"num_cpus={num_cpus!r} is not allowed; allowed values: a whole number >= 1, or None "
                              "(every CPU of this machine)")
    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        return
    cpus = num_cpus or os.cpu_count() or 1
    if space.resources.cpus > cpus:
        where = f"--num-cpus {num_cpus}" if num_cpus else "this machine's CPU count"
        raise SweepSetupError(
            f"resources.cpus={space.resources.cpus:g} per trial exceeds the {cpus} CPUs of the local Ray ({where}), "
            f"so no trial could ever start; allowed values: at most {cpus}, or attach to a larger cluster with "
            "RAY_ADDRESS"
        )
    if space.resources.gpus > 0:
        import torch

        gpus = torch.cuda.device_count()
        if space.resources.gpus > gpus:
            raise SweepSetupError(
                f"resources.gpus={space.resources.gpus:g} per trial, but this machine has {gpus} CUDA device(s) for "
                f"a local Ray, so no trial could ever start; allowed values: at most {gpus} here, or attach to a "
                "GPU cluster with RAY_ADDRESS"
            )


def init_ray(num_cpus: int | None = None) -> None:
    """Attach to the cluster in ``$RAY_ADDRESS`` when set, else start a local Ray (no dashboard).

    ``address="local"``: a bare ``ray.init()`` would instead attach to the last cluster ``ray start`` recorded in
    ``/tmp/ray/ray_current_cluster`` (and then refuse ``num_cpus``, or hang on a stale record).
    """
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)


#: space fields that may change between a sweep's start and its resumption (they change nothing Tune restores)
_RESUMABLE_CHANGES = ("space/description",)


def check_same_space(parent: Any | None, space: SweepSpace, name: str) -> None:
    """Refuse (:class:`SweepSetupError`) to resume sweep ``name`` with another space than the one it started with
    (its parent run's ``space/...`` params; ``parent`` None or without them: nothing to compare). Tune restores the
    recorded search (configurations, trial count, search algorithm) whatever the file says now, so an edited space
    would change only part of what the remaining trials do, and rewrite the objectives and constraints that
    ``select`` reads for trials that never ran under them."""
    recorded = {k: v for k, v in (parent.data.params if parent is not None else {}).items() if k.startswith("space/")}
    if not recorded:
        return
    now = param_strings({"space": space.to_dict()})
    differ = sorted(k for k in recorded.keys() | now.keys()
                    if recorded.get(k) != now.get(k) and k not in _RESUMABLE_CHANGES)
    if differ:
        shown = "; ".join(f"{k.removeprefix('space/')}: was {recorded.get(k, '(absent)')}, now "
                          f"{now.get(k, '(absent)')}" for k in differ[:6])
        more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
        raise SweepSetupError(
            f"sweep {name!r} exists and was started with another search space ({shown}{more}); resume it with the "
            f"same space file and options (such as --num-samples), or start a new sweep under another --name"
        )


def run_sweep(
    space: SweepSpace,
    *,
    name: str | None = None,
    storage_path: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = "qshield",
    num_cpus: int | None = None,
    verbose: int = 1,
) -> SweepResult:
    """Run (or resume) the sweep ``space`` and return its trials, Pareto front and knee point.

    Restore-or-start: when ``<storage_path>/<name>`` holds a Tune experiment, it is restored (finished trials
    kept, unfinished ones resumed from their last checkpoint, errored ones retried); otherwise a new one starts.
    MLflow runs are found again by tags, so a resumed sweep never duplicates them.

    One live driver per sweep name (:mod:`orchestrator.lease`): the sweep's lease is taken after the storage check
    and before the tracking store or Ray is touched (:class:`~orchestrator.lease.LeaseHeldError` when another live
    driver holds it), and given back when this function ends, also on an exception.

    The dataset is read here, once, before Ray starts (an unreadable one raises :class:`SweepSetupError`), and put
    into Ray's object store; every trial trains on that snapshot (see :mod:`orchestrator.runtime._trainable`).
    """
    name = name or space.name
    storage = storage_path or space.resolved_storage_path()
    if "://" not in storage:
        storage = os.path.abspath(os.path.expanduser(storage))
    tracking_uri = resolve_tracking_uri(tracking_uri)  # a file store is refused here, before anything is written
    check_local_capacity(space, num_cpus)
    check_storage(storage)
    _check_attack_library()
    # one live driver per sweep name; released on every exit (a SIGKILLed driver's lease expires)
    with SweepLease.for_sweep(name, storage, tracking_uri=tracking_uri) as lease:
        return _run_leased(space, name, storage, lease, tracking_uri, experiment, num_cpus, verbose)


def _run_leased(space: SweepSpace, name: str, storage: str, lease: SweepLease, tracking_uri: str | None,
                experiment: str, num_cpus: int | None, verbose: int) -> SweepResult:
    """:func:`run_sweep` once the sweep's lease is held: the dataset is read (an unreadable one stops the sweep
    before the tracking store or Ray is touched), then the sweep runs."""
    import ray
    from ray import tune

    from ._callbacks import MLflowTrialCallback
    from ._trainable import SharedData, qshield_trainable

    bundle = _load_data(space)
    tracker = SweepTracker(name, experiment, tracking_uri)
    found = tracker.find_parent_run()  # read only
    lease.check_parent_run(tracker, found)  # refuse a RUNNING parent fed from another storage path
    check_same_space(found, space, name)  # refuse to resume with an edited space
    parent = tracker.parent_run_id(params={"space": space.to_dict()})
    study_storage = optuna_storage(tracker.tracking_uri)
    tracker.set_tags(
        parent,
        {
            "qshield.objectives": json.dumps(space.directions()),
            "qshield.constraints": json.dumps(space.constraints.as_dict()),
            "qshield.selection": json.dumps(space.selection.as_dict()),
            "qshield.dataset": space.dataset.value,
            "qshield.storage_path": storage,
            "qshield.optuna_study": name,
            "qshield.optuna_storage": redact_url(study_storage) if study_storage else "in memory",
            **lease.tags(),  # the driver holding the sweep
        },
    )
    init_ray(num_cpus)
    data = SharedData(ray.put(bundle))
    del bundle  # the object store holds it now

    resources = {"cpu": space.resources.cpus, "gpu": space.resources.gpus}
    trainable = tune.with_resources(
        tune.with_parameters(qshield_trainable, space=space, data=data), resources)
    exp_path = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(exp_path):
        log.info("resuming sweep %s from %s", name, exp_path)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=to_tune_param_space(space),
            tune_config=make_tune_config(space, storage=study_storage, study_name=name),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                callbacks=[MLflowTrialCallback(tracker, space.parameters.searched()), *tensorboard_logger()],
                failure_config=tune.FailureConfig(max_failures=space.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
                verbose=verbose,
            ),
        )
    try:
        with _snapshot_warning_off():
            grid = tuner.fit()
    except Exception as exc:  # Tune wraps a callback's exception in a TuneError holding the traceback as text
        lost = _tracking_error(exc)
        if lost is None:
            raise
        raise TrackingError(
            f"{lost}; the sweep stopped rather than run on untracked, and its state is kept in {exp_path}: run it "
            f"again with the same name to resume once the tracking server answers"
        ) from exc

    result = SweepResult(name, storage, tracker.tracking_uri, parent, space.directions(),
                         selection=space.selection.as_dict(), constraints=space.constraints.as_dict())
    for r in grid:
        metrics = dict(r.metrics or {})
        trial_id = str(metrics.get("trial_id") or Path(r.path).name)
        if r.error is not None:
            status = "error"
        elif metrics.get("final"):
            status = "finished"
        else:
            status = "stopped_early"
        result.trials.append(
            TrialRecord(
                trial_id=trial_id,
                status=status,
                config=dict(r.config or {}),
                metrics=metrics,
                error=None if r.error is None else error_text(r.error),
                node_ip=metrics.get("node_ip"),
            )
        )
    summarise(result, tracker)
    return result


@contextlib.contextmanager
def _snapshot_warning_off() -> Iterator[None]:
    """Tune's warning "Experiment state snapshotting has been triggered multiple times ... may become a
    bottleneck" off during the fit, unless the user set its threshold (``$TUNE_WARN_EXCESSIVE_...``).

    With ``num_to_keep`` set, Tune snapshots the experiment state whenever a trial has written that many
    checkpoints since the last snapshot, so that a resume never points at a deleted checkpoint. A trial
    checkpoints every epoch, so epochs of a few seconds (the demo's) force a snapshot every few seconds, and Tune
    warns each time, advising more checkpoints kept or fewer written: :data:`KEEP_CHECKPOINTS` and a checkpoint
    per epoch are the sweep's deliberate choice. Tune reads the variable when the fit starts, in this process (with Ray
    Client, ``ray://``, the fit runs on the cluster and Tune warns as before); it is put back after.
    """
    if SNAPSHOT_WARNING in os.environ:
        yield
        return
    os.environ[SNAPSHOT_WARNING] = "0"
    try:
        yield
    finally:
        os.environ.pop(SNAPSHOT_WARNING, None)


def optuna_storage(tracking_uri: str) -> str | None:
    """Where the sweep's Optuna study is persisted: ``$QSHIELD_OPTUNA_STORAGE`` when set (e.g. the tracking
    server's PostgreSQL database on a cluster), else ``optuna.db`` next to a local ``sqlite:///`` tracking store,
    else None (in memory)."""
    env = os.environ.get("QSHIELD_OPTUNA_STORAGE")
    if env:
        return env
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix):
        return f"{prefix}{Path(tracking_uri[len(prefix):]).resolve().parent / 'optuna.db'}"
    return None


def redact_url(url: str) -> str:
    """A database URL with its password replaced by ``***`` (safe to log)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy understands: show nothing of it
        return "<unparsable storage URL>"


def _tracking_error(exc: BaseException) -> TrackingError | None:
    """The :class:`TrackingError` in ``exc``'s chain of causes and contexts, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TrackingError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
