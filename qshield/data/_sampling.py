"""Seeded, stratified index selection: train/test split, class balancing, size limits.

All functions work on a 1-D integer label array and return **sorted** index arrays (original order kept), so
the same seed always selects the same samples in the same order. Randomness comes only from the
:class:`numpy.random.Generator` passed in (no global state).
"""

from __future__ import annotations

import numpy as np

__all__ = ["balance_classes", "stratified_counts", "stratified_split", "stratified_subsample"]


def _as_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array; got shape {arr.shape} and dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"labels must be non-negative; got minimum {int(arr.min())}")
    return arr


def stratified_counts(class_counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` draws over classes in proportion to ``class_counts`` (largest-remainder rounding).

    Args:
        class_counts: ``[K]`` non-negative integers, the available samples per class.
        n: total to allocate, ``0 <= n <= class_counts.sum()``.

    Returns:
        ``[K]`` int64 counts summing to ``n``, each ``<= class_counts``. Ties in the remainders go to the lower
        class index, so the result is deterministic.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= n <= total:
        raise ValueError(f"n={n} must lie in [0, {total}] (the number of available samples)")
    if total == 0:
        return np.zeros_like(counts)
    exact = counts * (n / total)
    alloc = np.floor(exact).astype(np.int64)
    short = n - int(alloc.sum())
    if short:
        remainder = exact - alloc
        remainder[alloc >= counts] = -1.0  # a full class cannot take more
        order = np.argsort(-remainder, kind="stable")
        alloc[order[:short]] += 1
    return alloc


def stratified_subsample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` samples drawn without replacement, stratified by label.

    Per-class sizes follow :func:`stratified_counts`; within a class the members are drawn uniformly by ``rng``.
    Returns sorted int64 indices, ``[n]``.
    """
    labels = _as_labels(labels)
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    counts = np.bincount(labels)
    take = stratified_counts(counts, n)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False) for c, k in enumerate(take) if k > 0]
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A stratified train/test split.

    The test set has ``round(N * test_fraction)`` samples spread over the classes by
    :func:`stratified_counts`; the train set is the rest. Both must be non-empty.

    Returns:
        ``(train_idx, test_idx)``, sorted, disjoint, together covering ``range(N)``.
    """
    labels = _as_labels(labels)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} must lie strictly between 0 and 1")
    n = labels.size
    n_test = round(n * test_fraction)
    if n_test < 1 or n_test > n - 1:
        raise ValueError(
            f"test_fraction={test_fraction!r} gives {n_test} test samples out of {n}; "
            "train and test must both be non-empty"
        )
    test_idx = stratified_subsample(labels, n_test, rng)
    mask = np.ones(n, dtype=bool)
    mask[test_idx] = False
    return np.flatnonzero(mask).astype(np.int64), test_idx


def balance_classes(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices that keep the same number of samples from every class present: the smallest class count.

    This is the class balancing of the QShield paper (subsampling every class to the rarest one). Classes with
    no sample at all are ignored (they cannot be balanced up). Returns sorted int64 indices.
    """
    labels = _as_labels(labels)
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    k = int(counts[present].min())
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c in present]
    return np.sort(np.concatenate(chosen)).astype(np.int64)
