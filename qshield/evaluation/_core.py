"""Shared machinery of the evaluation: input checks, batched prediction, isolated RNG, one counted attack run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from qshield.attacks import Adaptive, AttackConfig, Norm, QueryCounter, make_attack, resolve_adaptive
from qshield.attacks import model_device

from ._metrics import asr, odr, robust_accuracy
from ._results import AttackResult

__all__ = [
    "as_config",
    "check_batch_size",
    "check_data",
    "check_outputs",
    "eval_mode",
    "isolated_rng",
    "predict",
    "run_attack",
]

#: Slack for float rounding when checking that adversarials respect [0, 1] and the ε-ball.
_TOL = 1e-5


def check_data(images: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``images [N, C, H, W]`` (floating, finite, in [0, 1]) and ``labels [N]`` (integers >= 0)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a floating tensor of shape [N, C, H, W]; got {shape}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor of shape [N]; got {shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but images has {images.shape[0]}; they must match")
    if images.shape[0] == 0:
        raise ValueError("images is empty (N=0); allowed values: at least one image")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contains NaN or inf; allowed values: finite numbers in [0, 1]")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"images has values in [{lo:.4g}, {hi:.4g}]; allowed values: [0, 1] (no normalisation)")
    if int(labels.min()) < 0:
        raise ValueError(f"labels has a negative entry {int(labels.min())}; allowed values: class indices >= 0")
    return images, labels.long()


def check_batch_size(batch_size: object) -> int:
    """A positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; allowed values: an integer >= 1")
    return batch_size


def check_outputs(outputs: torch.Tensor, labels: torch.Tensor) -> None:
    """The model must return ``[B, C]`` scores with ``C > max(label)``."""
    if outputs.ndim != 2 or outputs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"model output must have shape [B, C] (logits or log-probabilities); got {tuple(outputs.shape)} "
            f"for a batch of {labels.shape[0]}"
        )
    if int(labels.max()) >= outputs.shape[1]:
        raise ValueError(
            f"labels has class {int(labels.max())} but the model outputs {outputs.shape[1]} classes; "
            f"allowed values: 0..{outputs.shape[1] - 1}"
        )


def as_config(
    attack: str | AttackConfig,
    eps: float | None,
    dataset: str | None,
    *,
    eps_is_default: bool = False,
    **overrides: Any,
) -> AttackConfig:
    """Resolve a name or config with ε, dataset and overrides.

    ``eps`` replaces a config's own ε, unless ``eps_is_default`` (then it only fills a missing one).
    """
    base = attack if isinstance(attack, AttackConfig) else AttackConfig(attack)
    if eps_is_default and base.eps is not None:
        eps = None
    return base.with_overrides(eps=eps, **overrides).resolve(dataset)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted labels ``[N]`` (argmax of the outputs, on the CPU), computed in batches without gradients."""
    device = model_device(model)
    preds = [
        model(images[i : i + batch_size].to(device)).argmax(dim=1).cpu() for i in range(0, len(images), batch_size)
    ]
    return torch.cat(preds)


@contextlib.contextmanager
def isolated_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's and numpy's global generators with ``seed`` inside the block and restore them after.

    torchattacks draws random starts from torch's global RNG (APGD and Square even re-seed it) and the
    one-pixel attack from numpy's; this keeps each attack reproducible without disturbing the caller.
    """
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode inside the block and restore its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_adversarial(adv: torch.Tensor, x: torch.Tensor, config: AttackConfig) -> None:
    """An attack's output must keep the shape, stay in [0, 1] and (Linf attacks) inside the ε-ball."""
    if adv.shape != x.shape:
        raise RuntimeError(f"attack {config.name!r} returned shape {tuple(adv.shape)} for inputs {tuple(x.shape)}")
    if not bool(torch.isfinite(adv).all()):
        raise RuntimeError(f"attack {config.name!r} returned non-finite images (NaN/inf gradients from the model?)")
    if float(adv.min()) < -_TOL or float(adv.max()) > 1 + _TOL:
        raise RuntimeError(f"attack {config.name!r} left the [0, 1] image range")
    if config.preset.norm is Norm.LINF and config.eps is not None:
        dist = float((adv - x).abs().amax()) if adv.numel() else 0.0
        if dist > config.eps + _TOL:
            raise RuntimeError(
                f"attack {config.name!r} left the ε-ball: Linf distance {dist:.6g} > eps={config.eps:.6g}"
            )


def run_attack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    clean_pred: torch.Tensor,
    config: AttackConfig,
    *,
    batch_size: int,
    seed: int,
    bar: tqdm | None = None,
    adaptive: Adaptive | str = Adaptive.AUTO,
) -> tuple[AttackResult, torch.Tensor]:
    """Attack the correctly classified images with ``config``; return the result and the adversarial labels.

    The model must already be in the mode it is evaluated in (eval). ``adaptive`` chooses the attack mode
    (:func:`~qshield.attacks.resolve_adaptive`: BPDA / transfer / EOT for a model that declares hidden parts under
    ``auto``); the result's ``config`` holds the EOT passes actually used and ``adaptive`` the mode's label.
    Success is always decided by the defended ``model`` itself. Adversary cost is counted by a
    :class:`~qshield.attacks.QueryCounter` around the module the attack reads (the model; its BPDA wrapper, one
    query = one defended + one surrogate pass; or, for transfer, the twin): only queries made by the attack count
    (the clean pass and the final check of the adversarials are the evaluator's, not the adversary's).

    Returns:
        ``(AttackResult, adv_pred [N])`` where ``adv_pred`` equals ``clean_pred`` on images not attacked.
    """
    device = model_device(model)
    attacked = (clean_pred == labels).nonzero().flatten()
    config, mode = resolve_adaptive(model, config, adaptive)
    counter = QueryCounter(mode.attack_model(model))
    attack = make_attack(counter, config, adaptive=Adaptive.OFF)
    adv_pred = clean_pred.clone()
    with isolated_rng(seed, device):
        for start in range(0, len(attacked), batch_size):
            idx = attacked[start : start + batch_size]
            x = images[idx].to(device)
            y = labels[idx].to(device)
            try:
                with counter.timed():
                    adv = attack(x, y)
            except RuntimeError as exc:
                raise RuntimeError(
                    f"attack {config.name!r} failed on this model: {exc}. If the model's output does not depend "
                    "differentiably on its input (detached or non-differentiable parts), gradient attacks cannot "
                    "run: the model masks gradients (see check_gradient_masking)"
                ) from exc
            _check_adversarial(adv.detach(), x, config)
            adv_pred[idx] = predict(model, adv.detach(), batch_size)
            if bar is not None:
                bar.update(len(idx))
    n_total = len(labels)
    n_attacked = len(attacked)
    n_fooled = int((adv_pred[attacked] != labels[attacked]).sum())
    cost = counter.cost(n_attacked)
    result = AttackResult(
        attack=config.name,
        eps=config.eps,
        odr=odr(clean_pred, labels),
        asr=asr(clean_pred, adv_pred, labels),
        robust_accuracy=robust_accuracy(clean_pred, adv_pred, labels),
        n_total=n_total,
        n_attacked=n_attacked,
        seconds_per_example=cost.seconds_per_example,
        forward_per_example=cost.forward_per_example,
        backward_per_example=cost.backward_per_example,
        n_fooled=n_fooled,
        config=config,
        reaches_eps=config.reaches_eps,
        adaptive=mode.label,
    )
    return result, adv_pred
