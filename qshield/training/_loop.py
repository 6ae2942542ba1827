"""``train``: Adam + NLL on the model's log-probabilities, one tqdm bar, per-epoch callback, seeded."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ._config import TrainConfig
from ._errors import NonFiniteLossError
from ._history import TrainHistory
from ._method import TrainingMethod
from ._pgd_at import PGDAdversarialTraining
from ._quantum_patches import QuantumPatchesTraining
from ._standard import StandardTraining

#: method name -> class
METHODS: dict[str, type[TrainingMethod]] = {
    cls.name: cls for cls in (StandardTraining, PGDAdversarialTraining, QuantumPatchesTraining)
}

#: Offset between the shuffling seed and the training method's generator seed (two independent streams).
METHOD_SEED_OFFSET = 0x5EED

Callback = Callable[[int, dict[str, float]], Any]


def get_method(name: str) -> type[TrainingMethod]:
    """The training-method class registered under ``name``; ``ValueError`` listing the names otherwise."""
    key = str(getattr(name, "value", name)).lower()
    if key not in METHODS:
        raise ValueError(f"method={name!r} does not exist; allowed values: {', '.join(map(repr, METHODS))}")
    return METHODS[key]


def log_probs(output: torch.Tensor) -> torch.Tensor:
    """The model's class log-probabilities: ``log_softmax`` of its output (logits of a classical model; already
    normalised log-probabilities of a :class:`~qshield.models.HybridModel`, on which it is the identity)."""
    return F.log_softmax(output, dim=1)


def _check_batch(x: Any, y: Any, num_classes: int | None, unit_range: bool, where: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{where}: inputs must be float tensors [B, C, H, W], got {got}")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
        got = (tuple(y.shape), str(y.dtype)) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"{where}: labels must be an integer tensor [B] matching the inputs, got {got}")
    if num_classes is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{where}: labels must be in [0, {num_classes - 1}] (num_classes={num_classes}), "
            f"got values in [{int(y.min())}, {int(y.max())}]"
        )
    if unit_range and x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(
            f"{where}: inputs must lie in [0, 1] for this training method, got values in "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )


def _loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers)


def _dataset_len(dataset: Any, name: str) -> int:
    try:
        n = len(dataset)
    except TypeError:
        raise ValueError(f"{name} must be a map-style Dataset with a length, got {type(dataset).__name__}") from None
    if n == 0:
        raise ValueError(f"{name} is empty")
    return n


@torch.no_grad()
def evaluate_dataset(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """Mean NLL ``loss``, ``accuracy`` (fraction, argmax), ``correct`` and ``n`` (counts, for intervals) of
    ``model`` on ``dataset`` in eval mode.

    The model's train/eval mode is restored afterwards. The pass runs in a forked torch RNG seeded with ``seed``,
    so a randomised model (e.g. :class:`~qshield.models.ReferenceHybrid`, which draws a projection per call) gets a
    reproducible accuracy and the caller's random stream is untouched; deterministic models are unaffected.
    """
    _dataset_len(dataset, "dataset")
    was_training = model.training
    model.eval()
    num_classes = getattr(model, "num_classes", None)
    dev = torch.device(device)
    forked = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(seed)
            return _evaluate_batches(model, dataset, batch_size, dev, num_classes)
    finally:
        model.train(was_training)


def _evaluate_batches(
    model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, num_classes: int | None
) -> dict[str, float]:
    total, loss_sum, correct = 0, 0.0, 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        _check_batch(x, y, num_classes, False, "dataset")
        x, y = x.to(device), y.to(device).long()
        lp = log_probs(model(x))
        loss_sum += float(F.nll_loss(lp, y, reduction="sum"))
        correct += int((lp.argmax(dim=1) == y).sum())
        total += y.shape[0]
    return {"loss": loss_sum / total, "accuracy": correct / total, "correct": correct, "n": total}


def train(
    model: nn.Module,
    train_dataset: Dataset,
    config: TrainConfig | Mapping[str, Any] | None = None,
    *,
    val_dataset: Dataset | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> TrainHistory:
    """Train ``model`` in place with Adam and the NLL of its log-probabilities; returns the per-epoch metrics.

    Args:
        model: any module mapping ``[B, C, H, W]`` to ``[B, num_classes]`` logits or log-probabilities
            (see :func:`log_probs`); moved to ``device``.
        train_dataset: map-style dataset of ``(image [C, H, W] float, label int)`` pairs, images in [0, 1]
            (required for ``pgd_at`` and ``quantum_patches``; checked per batch).
        config: :class:`TrainConfig` or its dict form; default ``TrainConfig()`` (paper defaults).
        val_dataset: evaluated after every epoch (eval mode, clean) when given.
        callback: ``callback(epoch, metrics)`` after every epoch (epoch is 1-based; metrics as in
            :class:`TrainHistory`). An exception it raises stops training and propagates (a Ray Tune trainable
            reports through it).
        progress: show a tqdm bar over all steps (loss in its postfix).
        device: where the model and batches go.

    Seeding (deterministic on CPU for a given ``config.seed``): the shuffling order comes from a
    ``torch.Generator`` seeded with ``seed``; the training method's own randomness (Quantum Patches sample choice
    and random circuits) from a second generator seeded with ``seed + 0x5EED``; everything drawn from the global
    torch RNG during training (dropout masks, torchattacks' PGD random start) happens inside
    ``torch.random.fork_rng`` after ``torch.manual_seed(seed)``, so the caller's global RNG state is unchanged
    afterwards. The model's initial weights are not touched: build it with ``build_model(config, seed=...)``.
    DataLoader workers (``num_workers > 0``) are seeded by PyTorch from the shuffling generator.

    Raises:
        ValueError: bad config, empty dataset, malformed batches, labels out of range, inputs outside [0, 1]
            where the method needs them there.
        NonFiniteLossError: the loss became NaN/inf (names the epoch and step; that step is not applied).
    """
    if config is None:
        config = TrainConfig()
    elif isinstance(config, Mapping):
        config = TrainConfig.from_dict(config)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable(epoch, metrics), got {type(callback).__name__}")
    _dataset_len(train_dataset, "train_dataset")
    if val_dataset is not None:
        _dataset_len(val_dataset, "val_dataset")
    method_cls = get_method(config.method)
    device = torch.device(device)
    model.to(device)
    num_classes = getattr(model, "num_classes", None)

    loader = _loader(train_dataset, config.batch_size, config.shuffle, config.seed, config.num_workers)
    steps_per_epoch = len(loader) if config.limit_batches is None else min(len(loader), config.limit_batches)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    method_gen = torch.Generator().manual_seed(config.seed + METHOD_SEED_OFFSET)
    history = TrainHistory()
    fork_devices = [device.index or 0] if device.type == "cuda" else []

    bar = tqdm(total=config.epochs * steps_per_epoch, desc=f"train[{config.method.value}]", disable=not progress,
               leave=False, dynamic_ncols=True)
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(config.seed)
            method = method_cls(config, model, method_gen)
            for epoch in range(1, config.epochs + 1):
                model.train()
                start = time.perf_counter()
                loss_sum, correct, seen = 0.0, 0, 0
                for step, (x, y) in enumerate(loader, start=1):
                    if step > steps_per_epoch:
                        break
                    where = f"train_dataset batch {step} of epoch {epoch}"
                    _check_batch(x, y, num_classes, method_cls.needs_unit_range, where)
                    x, y = x.to(device), y.to(device).long()
                    x, y = method.batch(x, y)
                    lp = log_probs(model(x))
                    loss = F.nll_loss(lp, y)
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(epoch, step, float(loss.detach()), f"method={config.method.value!r}")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    value = float(loss.detach())
                    loss_sum += value * y.shape[0]
                    correct += int((lp.argmax(dim=1) == y).sum())
                    seen += y.shape[0]
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{value:.4f}", refresh=False)
                metrics: dict[str, float] = {
                    "epoch": epoch,
                    "train_loss": loss_sum / seen,
                    "train_accuracy": correct / seen,
                    "epoch_time_s": time.perf_counter() - start,
                    "samples": seen,
                }
                if val_dataset is not None:
                    val = evaluate_dataset(model, val_dataset, batch_size=config.batch_size, device=device)
                    metrics["val_loss"] = val["loss"]
                    metrics["val_accuracy"] = val["accuracy"]
                history.epochs.append(metrics)
                if callback is not None:
                    callback(epoch, dict(metrics))
    finally:
        bar.close()
    return history
