"""One sweep trial, independent of Ray: data -> model -> training (per-epoch reports) -> attacks -> objectives.

:func:`run_trial` is what the Ray Tune trainable (:mod:`orchestrator.runtime`) calls; the same function also
re-runs a single trial exactly from its recorded parameters (``qshield rerun RUN_ID``) and is unit-tested
without Ray. Reports go through a ``report(metrics, checkpoint_dir)`` callable.

Objectives of a finished trial (keys of its final report, see ``docs/search-spaces.md``); every rate also has
``<key>_ci_low`` / ``<key>_ci_high``, its 95% Wilson interval:

* ``accuracy``: clean accuracy on the whole (limited) test split;
* ``robust_accuracy``: the field's robust accuracy: the per-example worst case over the space's attack suite on
  the first ``n_eval`` test images (an image counts only if it is classified correctly clean and after every
  attack); ``strongest_attack`` names the attack that fooled the most images;
* ``asr``: worst-case attack success rate: attacked images fooled by at least one attack / attacked images
  (only correctly classified images are attacked); ``asr_mean`` is the paper's per-attack ASR averaged;
* ``adversary_cost``: the median smallest L∞ ε that flips an attacked image, found by bisection with PGD
  (``qshield.evaluation.minimal_eps``; images not flipped at ``eps_max`` count as ``eps_max``) — a cost that
  measures the model, not the attack's configuration.

Per attack: ``attack/<name>/asr``, ``.../robust_accuracy`` (the paper's metrics, with intervals),
``.../queries_per_example`` (counted forward + backward calls), ``.../seconds_per_example``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset

from qshield.attacks import AttackConfig, model_device
from qshield.data import DatasetBundle, DatasetSpec, dataset_spec, load_dataset, stratified_split
from qshield.evaluation import EvaluationReport, evaluate, wilson_interval
from qshield.models import ModelConfig, build_model, load_model, save_model
from qshield.schema import searchable_fields
from qshield.training import TrainConfig, evaluate_dataset, train

from .space import SweepSpace

#: fraction of the training split held out for per-epoch validation accuracy (early stopping reads it)
VAL_FRACTION = 0.1
MODEL_FILE = "model.pt"
#: The trial record next to the weights: the sampled parameters and the validated space (JSON).
PARAMS_FILE = "params.json"
SPACE_FILE = "space.json"
STATE_FILE = "trial_state.json"

Report = Callable[[dict[str, Any], "Path | None"], None]


@dataclass(frozen=True)
class TrialPlan:
    """Everything one trial needs, resolved from a Tune config (the sampled parameters) and its space."""

    model: ModelConfig
    train: TrainConfig
    attacks: tuple[AttackConfig, ...]
    params: dict[str, Any]


def model_config_from_params(params: Mapping[str, Any], bundle: DatasetBundle | DatasetSpec) -> ModelConfig:
    """Map the sweep parameters onto a :class:`~qshield.models.ModelConfig` for ``bundle``'s data (a loaded
    bundle or just the dataset's spec: only ``in_channels``, ``image_size`` and ``num_classes`` are read): the
    model's searchable fields as given, ``w_q`` as ``fusion_weights=(1 - w_q, w_q)``."""
    w_q = float(params["w_q"])
    searched = {name: params[name] for name in searchable_fields(ModelConfig) if name in params}
    return ModelConfig.from_dict(
        {
            **searched,
            "in_channels": bundle.in_channels,
            "image_size": bundle.image_size,
            "num_classes": bundle.num_classes,
            "fusion_weights": (1.0 - w_q, w_q),
        }
    )


def space_attacks(space: SweepSpace) -> tuple[AttackConfig, ...]:
    """The space's attacks, each with its resolved ε and per-attack overrides."""
    return tuple(
        AttackConfig(name.value, eps=space.eps_for(name), params=space.attack_overrides(name))
        for name in space.attacks.names
    )


def plan_trial(params: Mapping[str, Any], space: SweepSpace, bundle: DatasetBundle | DatasetSpec) -> TrialPlan:
    """Resolve a trial's configs; raises ``ValueError`` naming the field on a bad combination."""
    model = model_config_from_params(params, bundle)
    searched = {name: params[name] for name in searchable_fields(TrainConfig) if name in params}
    at_steps = int(searched.get("pgd_steps", TrainConfig.model_fields["pgd_steps"].default))
    at_eps = space.threat_eps()
    train_cfg = TrainConfig(
        **searched,
        seed=space.seed,
        # PGD adversarial training at the space's threat model: its ε, 2.5·ε/steps per step (Madry et al.)
        pgd_eps=at_eps,
        pgd_alpha=min(1.0, 2.5 * at_eps / at_steps),
    )
    attacks = space_attacks(space)
    return TrialPlan(model=model, train=train_cfg, attacks=attacks, params=dict(params))


def load_trial_data(space: SweepSpace, *, progress: bool = False) -> DatasetBundle:
    return load_dataset(
        space.dataset.value,
        root=space.data_root,
        seed=space.seed,
        balance=space.balance,
        limit_train=space.limit_train,
        limit_test=space.limit_test,
        progress=progress,
    )


def split_validation(train_set: TensorDataset, seed: int) -> tuple[Subset, Subset]:
    """A seeded, stratified hold-out of :data:`VAL_FRACTION` of the training split."""
    labels = train_set.tensors[1].numpy()
    fit_idx, val_idx = stratified_split(labels, VAL_FRACTION, np.random.default_rng(seed))
    return Subset(train_set, fit_idx.tolist()), Subset(train_set, val_idx.tolist())


def run_trial(
    params: Mapping[str, Any],
    space: SweepSpace,
    report: Report,
    *,
    resume_from: Path | None = None,
    bundle: DatasetBundle | None = None,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train and attack one model; returns the final metrics (also passed to ``report``).

    ``report(metrics, checkpoint_dir)`` is called after every epoch (``epoch``, ``train_loss``,
    ``train_accuracy``, ``val_accuracy``; ``checkpoint_dir`` holds the model so far, except after the last epoch:
    None there, as the final report carries the model — one checkpoint fewer per trial, which also spares Tune a
    snapshot of the whole experiment per short trial; a trial lost during its attacks re-trains its last epoch)
    and once at the end with ``final=True``, the objectives, per-attack metrics ``attack/<name>/asr`` etc.,
    masking diagnostics ``masking/<check>`` (1 = passed), ``trustworthy``, and ``attack_table`` / ``diagnostics``
    (JSON-able) for the tracker. ``checkpoint_dir`` of the final report holds ``model/`` (weights + config + tables).

    ``resume_from`` is a checkpoint directory written by an earlier report of the same trial: training restarts
    from the epoch it recorded (the model's weights restored; the optimiser starts afresh).

    ``bundle``: the space's dataset when the caller holds it already (a sweep reads it once and shares it between
    trials; it is only read, never changed); else it is loaded here. ``device``: where the model (its quantum
    circuit included), every training and evaluation batch and the attacks run, e.g. ``"cuda:0"``; checkpoints
    are written from CPU copies, so they load anywhere.

    Bad parameters (``ValueError`` naming the field) and an unreadable or unsafe ``resume_from`` checkpoint
    (:class:`~qshield.models.UnsafeCheckpointError` / ``ValueError`` naming the file) are refused before any
    data is read or any step is trained.
    """
    plan = plan_trial(params, space, dataset_spec(space.dataset.value))
    done_epochs = 0
    model = None
    if resume_from is not None and (Path(resume_from) / MODEL_FILE).exists():
        model, _ = load_model(Path(resume_from) / MODEL_FILE)
        done_epochs = _resumed_epoch(Path(resume_from) / STATE_FILE, plan.train.epochs)
    bundle = bundle or load_trial_data(space)
    fit_set, val_set = split_validation(bundle.train, space.seed)
    if model is None:
        model = build_model(plan.model, seed=space.seed)
    device = torch.device(device)
    model.to(device)

    def on_epoch(epoch: int, metrics: Mapping[str, Any]) -> None:
        absolute = done_epochs + epoch
        # the training loop counts from 1 after a resume; the objectives arrive with the final report, and every
        # report names them (None until then), as Tune's strict metric check expects of a result the searcher reads
        row = {**dict.fromkeys(space.directions()), **_numeric(metrics), "epoch": absolute}
        row.pop("epoch_seconds", None)
        if "val_accuracy" not in row and "val_acc" in row:
            row["val_accuracy"] = row.pop("val_acc")
        if absolute >= plan.train.epochs:
            # the last epoch: the final report carries the model (see the docstring)
            report(row, None)
            return
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp)
            save_model(model, plan.model, ckpt / MODEL_FILE)
            (ckpt / STATE_FILE).write_text(json.dumps({"epoch": absolute}))
            report(row, ckpt)

    remaining = plan.train.epochs - done_epochs
    if remaining > 0:
        train_cfg = plan.train
        if done_epochs:
            # a different shuffling stream for the remaining epochs than for the first ones
            train_cfg = train_cfg.replace(epochs=remaining, seed=train_cfg.seed + done_epochs)
        train(model, fit_set, train_cfg, val_dataset=val_set, callback=on_epoch, progress=progress, device=device)

    final = evaluate_trained(model, space, bundle=bundle, attacks=plan.attacks, progress=progress, device=device)
    final["epoch"] = plan.train.epochs
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        model_dir = ckpt / "model"
        model_dir.mkdir()
        save_model(model, plan.model, model_dir / MODEL_FILE)
        (model_dir / PARAMS_FILE).write_text(json.dumps(plan.params, indent=2, default=str))
        (model_dir / SPACE_FILE).write_text(json.dumps(space.to_dict(), indent=2, default=str))
        (model_dir / "metrics.json").write_text(
            json.dumps({k: v for k, v in final.items() if k not in ("attack_table", "diagnostics")}, indent=2)
        )
        # two real test images: the input example of the logged MLflow model
        np.save(model_dir / "input_example.npy", bundle.test.tensors[0][:2].numpy().astype(np.float32),
                allow_pickle=False)
        shutil.copy(model_dir / MODEL_FILE, ckpt / MODEL_FILE)
        (ckpt / STATE_FILE).write_text(json.dumps({"epoch": plan.train.epochs}))
        report(final, ckpt)
    return final


def _resumed_epoch(path: Path, epochs: int) -> int:
    """The epoch recorded in a checkpoint's ``trial_state.json``: an integer in ``0..epochs``."""
    try:
        epoch = json.loads(path.read_text())["epoch"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"resume_from: {str(path)!r} is missing or unreadable ({type(exc).__name__}: {exc}); "
                         f"allowed values: a checkpoint directory written by run_trial") from None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        raise ValueError(f"resume_from: {str(path)!r} has epoch={epoch!r}; allowed values: an integer in 0..{epochs}")
    return epoch


def evaluate_trained(
    model: torch.nn.Module,
    space: SweepSpace,
    *,
    bundle: DatasetBundle | None = None,
    attacks: tuple[AttackConfig, ...] | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Clean accuracy on the test split and the space's attacks on its first ``n_eval`` images (seeded), on
    ``device`` (default: where the model is; the model is moved there, the images batch by batch)."""
    bundle = bundle or load_trial_data(space)
    if attacks is None:
        attacks = space_attacks(space)
    if device is not None:
        model.to(device)
    model.eval()
    test_x, test_y = bundle.test.tensors
    clean = evaluate_dataset(model, bundle.test, batch_size=256, device=model_device(model))
    n_eval = min(space.attacks.n_eval, len(test_y))
    evaluation = evaluate(
        model,
        test_x[:n_eval],
        test_y[:n_eval],
        list(attacks),
        dataset=space.dataset.value,
        batch_size=space.attacks.batch_size,
        progress=progress,
        diagnostics=space.attacks.diagnostics is not None,
        masking=space.masking_config(),
        seed=space.seed,
        min_eps=space.min_eps_config(),
    )
    return final_metrics(int(clean["correct"]), int(clean["n"]), evaluation)


def _with_ci(out: dict[str, Any], key: str, value: float, interval: tuple[float, float]) -> None:
    out[key] = value
    out[f"{key}_ci_low"], out[f"{key}_ci_high"] = interval


def final_metrics(correct: int, n_test: int, evaluation: EvaluationReport) -> dict[str, Any]:
    """The objectives and the per-attack breakdown of one evaluation (see the module docstring).

    Args:
        correct: test images classified correctly (the whole limited test split).
        n_test: test images.
        evaluation: the attack evaluation on the first ``n_eval`` test images.
    """
    results = evaluation.results
    out: dict[str, Any] = {"final": True, "n_test": n_test, "n_eval": evaluation.n_total}
    _with_ci(out, "accuracy", correct / n_test if n_test else math.nan, wilson_interval(correct, n_test))
    out["odr_attacked_subset"] = evaluation.odr
    wc = evaluation.worst_case
    if wc is not None:
        _with_ci(out, "robust_accuracy", wc.robust_accuracy, wc.robust_accuracy_ci)
        _with_ci(out, "asr", wc.asr, wc.asr_ci)
        out["strongest_attack"] = wc.strongest_attack
    else:  # no attack in the suite: nothing fools any image
        _with_ci(out, "robust_accuracy", evaluation.odr, evaluation.odr_ci)
        _with_ci(out, "asr", 0.0, (0.0, 0.0))
    out["asr_mean"] = float(np.mean([r.asr for r in results])) if results else 0.0
    flips = evaluation.min_eps
    if flips is not None:
        out["adversary_cost"] = flips.median
        out["adversary_cost_q25"], out["adversary_cost_q75"] = flips.quantile(0.25), flips.quantile(0.75)
        out["adversary_cost_censored"] = flips.n_censored
        out["min_eps"] = flips.to_dict()
    out["attack_seconds"] = float(np.sum([r.seconds_per_example * r.n_attacked for r in results]))
    out["trustworthy"] = bool(evaluation.trustworthy)
    out["near_chance"] = bool(evaluation.near_chance)
    out["flag"] = evaluation.flag
    for r in results:
        _with_ci(out, f"attack/{r.attack}/asr", r.asr, r.asr_ci)
        _with_ci(out, f"attack/{r.attack}/robust_accuracy", r.robust_accuracy, r.robust_accuracy_ci)
        out[f"attack/{r.attack}/queries_per_example"] = r.forward_per_example + r.backward_per_example
        out[f"attack/{r.attack}/seconds_per_example"] = r.seconds_per_example
        out[f"attack/{r.attack}/reaches_eps"] = 1.0 if r.reaches_eps else 0.0
    diag = evaluation.diagnostics
    if diag is not None:
        for check in diag.checks:
            out[f"masking/{check.name}"] = 1.0 if check.passed else 0.0
        out["diagnostics"] = _jsonable(dataclasses.asdict(diag))
    out["attack_table"] = [
        {k: v for k, v in r.to_dict().items() if k != "config"} | {"flag": evaluation.flag} for r in results
    ]
    if wc is not None:
        out["worst_case"] = _jsonable(wc.to_dict())
    return out


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (NaN -> None, tuples -> lists, enums -> values)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return getattr(obj, "value", str(obj))


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)
    }


def read_trial_record(files: Path, source: str | None = None) -> tuple[dict[str, Any], SweepSpace]:
    """What a trial recorded next to its weights: its sampled parameters (``params.json``) and the whole validated
    space (``space.json``), the one reader of both (the rerun, the registry's verification and the card use it).
    ``ValueError`` (a :class:`~orchestrator.space.SpaceError` for a bad space) when a file is missing or
    unreadable; ``source`` names the record in messages."""
    from .space import parse_space

    where = source or str(files)
    missing = [name for name in (PARAMS_FILE, SPACE_FILE) if not (files / name).is_file()]
    if missing:
        raise ValueError(f"{where} holds no {', '.join(missing)}; it was not recorded by a qshield sweep trial")
    try:
        params = json.loads((files / PARAMS_FILE).read_text())
        raw_space = json.loads((files / SPACE_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: unreadable record: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError(f"{where}/{PARAMS_FILE} is not a mapping of parameters")
    return params, parse_space(raw_space, source=f"{where}/{SPACE_FILE}")
