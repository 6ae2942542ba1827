"""``evaluate_attack`` (one attack), ``evaluate`` (a suite of attacks with its per-example worst case, the smallest
flipping ε and the masking diagnostics), ``asr_vs_eps``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from qshield.attacks import ATTACKS, DEFAULT_EPS, Adaptive, AttackConfig, hidden_parts
from qshield.attacks import model_device
from qshield.attacks import check_dataset, check_eps

from ._core import as_config, check_batch_size, check_data, check_outputs, eval_mode, isolated_rng, predict, run_attack
from ._masking import MaskingConfig, check_gradient_masking
from ._metrics import odr
from ._min_eps import MinEpsConfig, minimal_eps
from ._results import AsrCurve, AttackResult, EvaluationReport, WorstCase

__all__ = ["asr_vs_eps", "evaluate", "evaluate_attack", "worst_case"]


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid; allowed values: an integer >= 0")
    return seed


def _clean_pass(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int = 0
) -> tuple[torch.Tensor, int]:
    """Clean predictions ``[N]`` and the number of classes; checks output shape and label range on the first batch.

    Runs in an isolated RNG state seeded with ``seed``, so a randomised model's clean predictions are reproducible
    and the caller's random stream is untouched."""
    with isolated_rng(seed, model_device(model)):
        return _clean_pass_unseeded(model, images, labels, batch_size)


def _clean_pass_unseeded(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, int]:
    with torch.no_grad():
        first = model(images[:batch_size].to(model_device(model)))
    check_outputs(first, labels[:batch_size].to(first.device))
    if int(labels.max()) >= first.shape[1]:
        raise ValueError(
            f"labels has class {int(labels.max())} but the model outputs {first.shape[1]} classes; "
            f"allowed values: 0..{first.shape[1] - 1}"
        )
    rest = (
        predict(model, images[batch_size:], batch_size)
        if len(images) > batch_size
        else torch.empty(0, dtype=torch.long)
    )
    return torch.cat([first.argmax(dim=1).cpu(), rest]), int(first.shape[1])


def worst_case(
    clean_pred: torch.Tensor, labels: torch.Tensor, adv_preds: Sequence[tuple[str, torch.Tensor]]
) -> WorstCase:
    """The per-example worst case over a suite (:class:`~qshield.evaluation.WorstCase`).

    Args:
        clean_pred: clean predictions ``[N]``.
        labels: ``[N]``.
        adv_preds: ``(attack name, predictions after that attack [N])`` per attack, in suite order (each equal to
            ``clean_pred`` on the images it did not attack).
    """
    correct = clean_pred == labels
    names: list[str] = []
    for i, (name, _) in enumerate(adv_preds):
        names.append(name if name not in names else f"{name}#{i}")
    fooled = {n: correct & (pred != labels) for n, (_, pred) in zip(names, adv_preds, strict=True)}
    any_fooled = torch.zeros_like(correct)
    for mask in fooled.values():
        any_fooled |= mask
    counts = {n: int(m.sum()) for n, m in fooled.items()}
    only = {}
    for n, mask in fooled.items():
        others = torch.zeros_like(correct)
        for other, m in fooled.items():
            if other != n:
                others |= m
        only[n] = int((mask & ~others).sum())
    strongest = max(names, key=lambda n: (counts[n], -names.index(n))) if names and int(correct.sum()) else None
    return WorstCase(
        attacks=tuple(names),
        n_total=int(labels.numel()),
        n_attacked=int(correct.sum()),
        n_robust=int((correct & ~any_fooled).sum()),
        fooled_by=counts,
        only_fooled_by=only,
        strongest_attack=strongest,
    )


def evaluate_attack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: str | AttackConfig,
    *,
    eps: float | None = None,
    dataset: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
    adaptive: Adaptive | str = Adaptive.AUTO,
    **overrides: Any,
) -> AttackResult:
    """Run one attack the way the QShield paper measures it.

    The model is put in eval mode (and restored after). Clean predictions give ODR; only the correctly
    classified images are attacked; ASR = misclassified adversarials / attacked; robust accuracy = images
    correct clean and after the attack / all images. Attack time is wall clock around the attack calls; forward
    and backward passes are counted by a :class:`~qshield.attacks.QueryCounter`. Attacks run in an isolated RNG
    state seeded with ``seed``. Adversarials are checked to stay in [0, 1] and, for Linf attacks, in the ε-ball.

    Args:
        model: classifier ``[B, C, H, W] in [0, 1] -> logits or log-probabilities [B, C]``.
        images: ``[N, C, H, W]`` floats in [0, 1].
        labels: ``[N]`` class indices.
        attack: attack name or :class:`~qshield.attacks.AttackConfig` (``eps`` and ``overrides`` given here win).
        eps: Linf budget in [0, 1] for attacks that have one.
        dataset: dataset name for the default ε (:data:`~qshield.attacks.DEFAULT_EPS`).
        batch_size: images per attack call.
        seed: seed of the attack's randomness.
        progress: show a tqdm bar.
        adaptive: attack mode (:func:`~qshield.attacks.resolve_adaptive`): ``auto`` (BPDA / transfer / EOT as the
            model declares hidden parts; nothing changes for a model that declares none), ``off`` (the naive
            attacker), ``bpda``, ``transfer``. The result's ``adaptive`` says which was used.
        **overrides: attack parameters (e.g. ``steps=20``, ``eot_iter=4``).

    Raises:
        ValueError: bad attack / ε / dataset / override / images / labels / batch size, before any compute
            (label range against the number of classes: after the first forward pass).
    """
    config = as_config(attack, eps, dataset, **overrides)
    adaptive = Adaptive.parse(adaptive)
    images, labels = check_data(images, labels)
    batch_size = check_batch_size(batch_size)
    seed = _check_seed(seed)
    with eval_mode(model):
        clean, _ = _clean_pass(model, images, labels, batch_size, seed)
        n_attacked = int((clean == labels).sum())
        with tqdm(total=n_attacked, desc=config.label, disable=not progress) as bar:
            result, _ = run_attack(model, images, labels, clean, config, batch_size=batch_size, seed=seed, bar=bar,
                                   adaptive=adaptive)
    return result


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attacks: Sequence[str | AttackConfig],
    *,
    dataset: str | None = None,
    eps: float | None = None,
    batch_size: int = 128,
    progress: bool = True,
    diagnostics: bool = True,
    masking: MaskingConfig | None = None,
    seed: int = 0,
    model_name: str | None = None,
    min_eps: MinEpsConfig | None = None,
    adaptive: Adaptive | str = Adaptive.AUTO,
) -> EvaluationReport:
    """Evaluate ``model`` against ``attacks`` and (by default) run the gradient-masking diagnostics.

    Every attack, ε and setting is validated before anything runs. The clean pass is done once and shared.
    Besides one :class:`AttackResult` per attack (the paper's metrics), the report holds the per-example worst
    case over the suite (:class:`~qshield.evaluation.WorstCase`: an image is robust only if no attack fools it)
    and, with ``min_eps``, the smallest ε that flips each image (:func:`~qshield.evaluation.minimal_eps`).

    Args:
        model: classifier ``[B, C, H, W] in [0, 1] -> logits or log-probabilities [B, C]``.
        images: ``[N, C, H, W]`` floats in [0, 1].
        labels: ``[N]`` class indices.
        attacks: names or :class:`~qshield.attacks.AttackConfig` objects (a config's own ε wins).
        dataset: dataset name for default ε values and dataset-specific attack defaults.
        eps: Linf budget for the attacks that have one (overrides the dataset's default).
        batch_size: images per attack call.
        progress: show a tqdm progress bar over attacks × images.
        diagnostics: run :func:`~qshield.evaluation.check_gradient_masking` (its ε: ``masking.eps``, else
            ``eps``, else the dataset's default).
        masking: settings of the diagnostics.
        seed: seed of the attacks' randomness (the diagnostics use ``masking.seed``).
        model_name: name shown in tables (default: the model's class name).
        min_eps: measure the smallest flipping ε per image with these settings (None: not measured).
        adaptive: attack mode of every attack, of the smallest-ε search and of the diagnostics
            (:func:`~qshield.attacks.resolve_adaptive`): ``auto`` (default; BPDA / transfer / EOT for a model that
            declares hidden parts, unchanged for one that declares none), ``off`` (the naive attacker, e.g. to
            reproduce a paper's evaluation), ``bpda``, ``transfer``.

    Returns:
        :class:`EvaluationReport` with one :class:`AttackResult` per attack (each saying its adaptive mode) and the
        diagnostics; its ``trustworthy`` is False when the diagnostics failed or did not run, or when a row was
        produced without the adaptive treatment the model needs (:meth:`EvaluationReport.row_flags`).
    """
    if isinstance(attacks, (str, AttackConfig)) or not isinstance(attacks, Sequence):
        raise ValueError(f"attacks={attacks!r} is invalid; allowed values: a list of attack names or AttackConfig")
    dataset = check_dataset(dataset)
    eps = check_eps(eps)
    adaptive = Adaptive.parse(adaptive)
    configs = [as_config(a, eps, dataset, eps_is_default=True) for a in attacks]
    images, labels = check_data(images, labels)
    batch_size = check_batch_size(batch_size)
    seed = _check_seed(seed)
    masking = masking or MaskingConfig()
    if not isinstance(masking, MaskingConfig):
        raise ValueError(f"masking must be a MaskingConfig, got {type(masking).__name__}")
    masking_eps = masking.eps if masking.eps is not None else eps
    if masking_eps is None and dataset is not None:
        masking_eps = DEFAULT_EPS[dataset]
    if diagnostics and masking_eps is None:
        raise ValueError(
            "diagnostics=True needs an ε for the white-box vs black-box check: pass eps=, dataset=, "
            "MaskingConfig(eps=...), or diagnostics=False"
        )
    name = model_name or type(model).__name__
    if min_eps is not None and not isinstance(min_eps, MinEpsConfig):
        raise ValueError(f"min_eps must be a MinEpsConfig or None, got {type(min_eps).__name__}")

    with eval_mode(model):
        clean, num_classes = _clean_pass(model, images, labels, batch_size, seed)
        n_attacked = int((clean == labels).sum())
        results = []
        adv_preds = []
        with tqdm(total=n_attacked * len(configs), desc=f"evaluate {name}", disable=not progress) as bar:
            for config in configs:
                bar.set_postfix_str(config.label)
                result, adv_pred = run_attack(
                    model, images, labels, clean, config, batch_size=batch_size, seed=seed, bar=bar, adaptive=adaptive
                )
                results.append(result)
                adv_preds.append((config.name, adv_pred))
        flips = (
            minimal_eps(model, images, labels, clean, min_eps, batch_size=batch_size, seed=seed, progress=progress,
                        adaptive=adaptive)
            if min_eps is not None
            else None
        )
        diag = (
            check_gradient_masking(
                model, images, labels, eps=masking_eps, config=masking, clean_predictions=clean, progress=progress,
                adaptive=adaptive,
            )
            if diagnostics
            else None
        )
    return EvaluationReport(
        model=name,
        dataset=dataset,
        odr=odr(clean, labels),
        n_total=len(labels),
        results=tuple(results),
        diagnostics=diag,
        num_classes=num_classes,
        worst_case=worst_case(clean, labels, adv_preds) if adv_preds else None,
        min_eps=flips,
        hidden=hidden_parts(model),
    )


def asr_vs_eps(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_values: Sequence[float],
    *,
    attack: str | AttackConfig = "pgd",
    label: str = "",
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
    adaptive: Adaptive | str = Adaptive.AUTO,
    **overrides: Any,
) -> AsrCurve:
    """ASR of an ε attack at each ε of ``eps_values`` (increasing, in [0, 1]), the data of an ASR-vs-ε plot.

    The clean pass is shared; ``overrides`` apply at every ε (note the reference's PGD α = 2/255 is fixed, so
    pass ``alpha`` or use :func:`check_gradient_masking`'s sweep, which scales α with ε). ``adaptive`` as in
    :func:`evaluate`.
    """
    values = tuple(check_eps(e) for e in eps_values)
    if not values or any(v is None for v in values) or any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"eps_values={eps_values!r} is invalid; allowed values: increasing numbers in [0, 1]")
    base = attack if isinstance(attack, AttackConfig) else AttackConfig(attack)
    if not base.preset.uses_eps:
        with_eps = ", ".join(repr(n) for n, p in ATTACKS.items() if p.uses_eps)
        raise ValueError(f"attack={base.name!r} has no ε budget; allowed values: {with_eps}")
    configs = [base.with_overrides(eps=e, **overrides).resolve() for e in values]
    adaptive = Adaptive.parse(adaptive)
    images, labels = check_data(images, labels)
    batch_size = check_batch_size(batch_size)
    seed = _check_seed(seed)
    with eval_mode(model):
        clean, _ = _clean_pass(model, images, labels, batch_size, seed)
        n_attacked = int((clean == labels).sum())
        asrs = []
        with tqdm(total=n_attacked * len(configs), desc=f"{base.name} vs eps", disable=not progress) as bar:
            for config in configs:
                result, _ = run_attack(model, images, labels, clean, config, batch_size=batch_size, seed=seed, bar=bar,
                                       adaptive=adaptive)
                asrs.append(result.asr)
    return AsrCurve(label or type(model).__name__, base.name, tuple(float(v) for v in values), tuple(asrs), n_attacked)
