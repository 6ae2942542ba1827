"""Converting a :class:`SweepSpace` into Ray Tune objects (Ray and Optuna are imported lazily, on call).

The intended use (the runner adds its trainable, ``RunConfig`` and callbacks)::

    space = load_space("mnist5k-demo")
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, space=space), space.resources.to_tune()),
        param_space=to_tune_param_space(space),
        tune_config=make_tune_config(space),   # search_alg + scheduler + num_samples, no metric/mode
        run_config=...,
    )

``OptunaSearch`` receives its space from ``param_space`` (Tune calls ``set_search_properties``), so the
searcher is built without one; ``metric``/``mode`` must then NOT be passed to ``TuneConfig`` (the searcher
holds the objective lists). Tune checks that every reported result carries the searcher's metrics (and the
scheduler's ``val_accuracy``), so a trial's per-epoch reports name the objectives with None until its final
report gives their values (``orchestrator.trial.run_trial``). Optuna is told only the final result of a trial; a trial without the objectives there (e.g. stopped early by ASHA) is not counted as a completed trial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..space import Choice, Domain, Fixed, IntRange, LogUniform, Uniform, plain_value
from ..space import VAL_METRIC, SearchAlgorithm, SweepSpace

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ray.tune import TuneConfig
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

__all__ = ["to_tune_param_space", "make_search_alg", "make_scheduler", "make_tune_config", "make_sampler"]


def _tune_domain(domain: Domain) -> Any:
    from ray import tune

    if isinstance(domain, Fixed):
        return plain_value(domain.value)
    if isinstance(domain, Choice):
        return tune.choice([plain_value(v) for v in domain.values])
    if isinstance(domain, Uniform):
        return tune.uniform(domain.lo, domain.hi)
    if isinstance(domain, LogUniform):
        return tune.loguniform(domain.lo, domain.hi)
    if isinstance(domain, IntRange):
        return tune.randint(domain.lo, domain.hi + 1)  # Tune's upper bound is exclusive
    raise TypeError(f"unknown domain {domain!r}")  # pragma: no cover - Domain is a closed union


def to_tune_param_space(space: SweepSpace) -> dict[str, Any]:
    """The trial hyper-parameters as a flat Ray Tune ``param_space``.

    Fixed parameters become plain values (enums as their strings); ``choice`` → ``tune.choice``, ``uniform`` →
    ``tune.uniform``, ``loguniform`` → ``tune.loguniform``, ``int: [lo, hi]`` → ``tune.randint(lo, hi + 1)``
    (inclusive ``hi``). Keys: every name of ``PARAMETERS`` (arch, backbone, n_qubits, ..., method);
    ``n_qubits: null`` resolved for the dataset (``SweepSpace.resolved_domains``).
    """
    return {name: _tune_domain(domain) for name, domain in space.resolved_domains().items()}


def make_sampler(space: SweepSpace) -> Any:
    """The seeded Optuna sampler: ``TPESampler(seed=space.seed)`` or ``NSGAIISampler(seed=space.seed)``."""
    import optuna

    search = space.search
    if search.algorithm is SearchAlgorithm.NSGA2:
        kwargs: dict[str, Any] = {"seed": space.seed}
        if search.population_size is not None:
            kwargs["population_size"] = search.population_size
        return optuna.samplers.NSGAIISampler(**kwargs)
    kwargs = {"seed": space.seed}
    if search.n_startup_trials is not None:
        kwargs["n_startup_trials"] = search.n_startup_trials
    return optuna.samplers.TPESampler(**kwargs)


def make_search_alg(space: SweepSpace, storage: str | None = None, study_name: str | None = None) -> Searcher:
    """Ray Tune's multi-objective ``OptunaSearch`` for ``space``.

    ``metric`` = the objective names, ``mode`` = their directions (in the YAML's order), the sampler from
    :func:`make_sampler`, the space's ``search.points_to_evaluate`` enqueued first; wrapped in
    ``ConcurrencyLimiter(max_concurrent=...)`` when ``max_concurrent`` is set. The search space itself comes from
    the Tuner's ``param_space`` (:func:`to_tune_param_space`).

    Args:
        storage: an Optuna RDB URL (``sqlite:///.../optuna.db``, ``postgresql://...``): the study is persisted
            there under ``study_name`` (default: the space's name), so Optuna's own tools (``optuna-dashboard``,
            ``optuna.load_study``) open it; None keeps it in memory.
    """
    from ray.tune.search import ConcurrencyLimiter

    directions = space.directions()
    rdb = None
    if storage is not None:
        import optuna

        rdb = optuna.storages.RDBStorage(storage)
    searcher = _searcher_class()(
        metric=list(directions),
        mode=list(directions.values()),
        sampler=make_sampler(space),
        study_name=study_name or space.name,
        storage=rdb,
        points_to_evaluate=[dict(p) for p in space.search.points_to_evaluate] or None,
    )
    if space.max_concurrent is not None:
        return ConcurrencyLimiter(searcher, max_concurrent=space.max_concurrent)
    return searcher


def _searcher_class() -> type:
    """``OptunaSearch`` that records a trial without all objectives (stopped early by the scheduler: its last
    result has training metrics only) as PRUNED instead of handing Optuna a list of Nones, which Optuna refuses and
    which would leave the study's trial RUNNING forever."""
    from ray.tune.search.optuna import OptunaSearch

    class MultiObjectiveOptunaSearch(OptunaSearch):
        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            if result and any(result.get(m) is None for m in metrics):
                result = None
            super().on_trial_complete(trial_id, result=result, error=error)

    return MultiObjectiveOptunaSearch


def make_scheduler(space: SweepSpace) -> TrialScheduler | None:
    """``ASHAScheduler`` on validation accuracy (``val_accuracy``, max) per epoch, or None without early stopping.

    ``time_attr="training_iteration"`` (one report per epoch), ``max_t`` = the largest ``epochs`` value,
    ``grace_period`` and ``reduction_factor`` from the space.
    """
    stopping = space.early_stopping
    if stopping is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        metric=VAL_METRIC,
        mode="max",
        max_t=space.max_epochs,
        grace_period=stopping.grace_period,
        reduction_factor=stopping.reduction_factor,
    )


def make_tune_config(space: SweepSpace, storage: str | None = None, study_name: str | None = None) -> TuneConfig:
    """``tune.TuneConfig`` with the search algorithm (its Optuna study in ``storage`` when given, see
    :func:`make_search_alg`), scheduler (if any), ``num_samples`` and ``reuse_actors=True``; no metric/mode."""
    from ray import tune

    kwargs: dict[str, Any] = {"search_alg": make_search_alg(space, storage=storage, study_name=study_name),
                              "num_samples": space.num_samples,
                              # one actor (worker process) runs trial after trial: imports and the dataset once
                              "reuse_actors": True}
    scheduler = make_scheduler(space)
    if scheduler is not None:
        kwargs["scheduler"] = scheduler
    return tune.TuneConfig(**kwargs)
