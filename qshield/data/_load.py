"""``load_dataset``: one call from a dataset name to train/test tensors."""

from __future__ import annotations

import numbers
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ._base import RawSplit
from ._bundle import DatasetBundle
from ._errors import DatasetFormatError
from ._registry import default_root, get_dataset_loader
from ._sampling import balance_classes, stratified_split, stratified_subsample

__all__ = ["load_dataset"]

# Independent random streams, one per selection step, so e.g. changing limit_test never changes the train set.
_STREAM_SPLIT, _STREAM_BALANCE, _STREAM_LIMIT = 0, 1, 2
_SPLIT_ID = {"train": 0, "test": 1}


def _rng(seed: int, stream: int, split: str = "train") -> np.random.Generator:
    return np.random.default_rng([seed, stream, _SPLIT_ID[split]])


def _check_flag(value: object, field: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{field}={value!r} must be a bool; allowed values: True, False")  # noqa: TRY004
    return bool(value)


def _check_limit(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{field}={value!r} must be None (no limit) or an integer >= 1")
    return int(value)


def _select(
    split: RawSplit,
    base: np.ndarray,
    *,
    which: str,
    seed: int,
    balance: bool,
    limit: int | None,
) -> np.ndarray:
    """Indices into ``split`` after balancing and limiting the samples at ``base`` (sorted, seeded)."""
    idx = base
    if balance:
        idx = idx[balance_classes(split.labels[idx], _rng(seed, _STREAM_BALANCE, which))]
    if limit is not None:
        if limit > idx.size:
            warnings.warn(
                f"limit_{which}={limit} exceeds the {idx.size} available {which} samples; using all {idx.size}",
                UserWarning,
                stacklevel=3,
            )
        else:
            idx = idx[stratified_subsample(split.labels[idx], limit, _rng(seed, _STREAM_LIMIT, which))]
    return idx


def _tensors(split: RawSplit, idx: np.ndarray, *, progress: bool) -> TensorDataset:
    images = split.read(idx, progress=progress)
    labels = split.labels[idx].astype(np.int64)
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    balance: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
    verify_checksums: bool = True,
    progress: bool = True,
) -> DatasetBundle:
    """Load a registered dataset as float32 image tensors in ``[0, 1]`` with int64 labels. Never downloads.

    Steps, each seeded by ``seed`` through its own random stream (same arguments -> same samples, in the same
    order; a different seed -> a different selection):

    1. read the files under ``root`` (see ``docs/data.md`` for each dataset's layout) and validate them;
    2. split: the dataset's official train/test split where it has one (``mnist``, ``cifar10``,
       ``organamnist``, ``cinic10``; ``test_fraction`` is then unused), else (built-ins ``mnist5k``,
       ``digits``) a stratified split with ``round(N * test_fraction)`` test samples;
    3. ``balance``: subsample every class of each split (train and test separately) to that split's smallest
       class count, as the QShield paper balances its classes;
    4. ``limit_train`` / ``limit_test``: keep at most that many samples of each split, stratified by class
       (a limit above the available count keeps everything, with a warning). Images are decoded only for
       the samples kept.

    Args:
        name: dataset name, one of ``qshield.data.available_datasets()`` (case-insensitive).
        root: data root; default :func:`qshield.data.default_root` (``$QSHIELD_DATA``, else ``./data``).
            Ignored by the built-ins.
        seed: non-negative integer seeding steps 2-4. Default 0.
        test_fraction: test share for datasets without an official split, in ``(0, 1)``. Default 0.2.
        balance: equalise class counts by subsampling (step 3). Default ``False``.
        limit_train: at most this many training samples (step 4); ``None`` (default) for all.
        limit_test: at most this many test samples (step 4); ``None`` (default) for all.
        verify_checksums: compare files with their published MD5 where torchvision defines one (CIFAR-10).
            Default ``True``; set ``False`` only for trusted files in the official format (test fixtures).
        progress: tqdm progress bar while decoding image folders (CINIC-10). Default ``True``.

    Returns:
        A :class:`DatasetBundle`; ``train``/``test`` are ``TensorDataset(images [N, C, H, W] float32 in [0, 1],
        labels [N] int64)``.

    Raises:
        ValueError: an argument is invalid (raised before any file is read); the message names the field, the
            value and what is allowed.
        DatasetNotFoundError: the files are not under ``root``; the message lists the paths looked for and
            how to fetch them on a networked machine.
        DatasetFormatError: a file is truncated or corrupted, or holds wrong image shapes, out-of-range labels
            or non-finite pixel values; the message names the file.
    """
    loader_cls = get_dataset_loader(name)
    spec = loader_cls.spec
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    if (
        isinstance(test_fraction, (bool, np.bool_))
        or not isinstance(test_fraction, numbers.Real)
        or not 0.0 < float(test_fraction) < 1.0
    ):
        raise ValueError(f"test_fraction={test_fraction!r} must be a number strictly between 0 and 1")
    balance = _check_flag(balance, "balance")
    limit_train = _check_limit(limit_train, "limit_train")
    limit_test = _check_limit(limit_test, "limit_test")
    verify_checksums = _check_flag(verify_checksums, "verify_checksums")
    progress = _check_flag(progress, "progress")
    if root is None:
        root = default_root()
    elif not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"root={root!r} must be None, a str or a path-like object")
    seed = int(seed)

    loader = loader_cls(Path(root), verify_checksums=verify_checksums, progress=progress)
    source = loader.load()
    if source.test is None:
        train_base, test_base = stratified_split(source.train.labels, float(test_fraction), _rng(seed, _STREAM_SPLIT))
        train_split = test_split = source.train
    else:
        train_split, test_split = source.train, source.test
        train_base = np.arange(len(train_split), dtype=np.int64)
        test_base = np.arange(len(test_split), dtype=np.int64)
    for which, split, base in (("train", train_split, train_base), ("test", test_split, test_base)):
        if base.size == 0:
            raise DatasetFormatError(loader.root if not spec.builtin else spec.name, f"the {which} split is empty")

    train_idx = _select(train_split, train_base, which="train", seed=seed, balance=balance, limit=limit_train)
    test_idx = _select(test_split, test_base, which="test", seed=seed, balance=balance, limit=limit_test)
    return DatasetBundle(
        train=_tensors(train_split, train_idx, progress=progress),
        test=_tensors(test_split, test_idx, progress=progress),
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        class_names=spec.class_names,
        name=spec.name,
    )
