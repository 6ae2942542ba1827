"""The QShield paper's metrics, computed from predicted labels.

* ODR (original detection rate) = clean accuracy: ``mean(clean_pred == y)`` over all test images.
* ASR (attack success rate): only test images the model classifies correctly are attacked;
  ``ASR = #(attacked and adversarial misclassified) / #attacked``.
* Robust accuracy: ``mean(clean_pred == y and adv_pred == y)`` over all test images; equals
  ``ODR * (1 - ASR)`` and is never above ODR.

All three are fractions in [0, 1]; ASR is NaN when nothing was attacked (no correct clean prediction).
Every rate is reported with its 95% Wilson interval (:func:`wilson_interval`); differences between two models
with Newcombe's interval (:func:`difference_interval`).
"""

from __future__ import annotations

import math

import torch

__all__ = ["CONFIDENCE", "asr", "difference_interval", "odr", "robust_accuracy", "wilson_interval"]


def _check(name: str, pred: torch.Tensor, labels: torch.Tensor) -> None:
    if pred.ndim != 1 or labels.ndim != 1 or pred.shape != labels.shape:
        raise ValueError(
            f"{name} must be 1-D label tensors of the same length; got shapes {tuple(pred.shape)} and "
            f"{tuple(labels.shape)}"
        )


def odr(clean_pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Clean accuracy (ODR) of predictions ``[N]`` against labels ``[N]``; NaN for N = 0."""
    _check("clean_pred/labels", clean_pred, labels)
    if labels.numel() == 0:
        return math.nan
    return int((clean_pred == labels).sum()) / labels.numel()


def asr(clean_pred: torch.Tensor, adv_pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Attack success rate: misclassified adversarials among the correctly classified clean images.

    ``adv_pred`` entries of clean-misclassified images are ignored (they are not attacked). NaN when no clean
    prediction is correct.
    """
    _check("clean_pred/labels", clean_pred, labels)
    _check("adv_pred/labels", adv_pred, labels)
    attacked = clean_pred == labels
    n = int(attacked.sum())
    if n == 0:
        return math.nan
    return int((adv_pred[attacked] != labels[attacked]).sum()) / n


def robust_accuracy(clean_pred: torch.Tensor, adv_pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of all images classified correctly both clean and after the attack; NaN for N = 0."""
    _check("clean_pred/labels", clean_pred, labels)
    _check("adv_pred/labels", adv_pred, labels)
    if labels.numel() == 0:
        return math.nan
    return int(((clean_pred == labels) & (adv_pred == labels)).sum()) / labels.numel()


#: Confidence level of every interval qshield reports.
CONFIDENCE = 0.95


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (Wilson 1927), via SciPy's
    ``binomtest(...).proportion_ci(method="wilson")``.

    Used for every rate qshield reports (accuracy, ASR, robust accuracy): unlike the normal approximation it
    stays inside [0, 1] and is not degenerate at 0 or n successes, which is where robustness numbers live.

    Args:
        successes: count in ``0..n``.
        n: trials (>= 0).
        confidence: two-sided level in (0, 1), default 0.95.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n == 0``.
    """
    for name, value in (("successes", successes), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, (int,)) or value < 0:
            raise ValueError(f"{name}={value!r} is invalid; allowed values: an integer >= 0")
    if successes > n:
        raise ValueError(f"successes={successes} exceeds n={n}; allowed values: 0..n")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} is invalid; allowed values: a number in (0, 1)")
    if n == 0:
        return (math.nan, math.nan)
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=float(confidence), method="wilson")
    return (float(ci.low), float(ci.high))


def difference_interval(
    successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Difference of two independent proportions ``p_a - p_b`` with Newcombe's hybrid score interval
    (Newcombe 1998, "Interval estimation for the difference between independent proportions", method 10).

    Written here because neither SciPy nor the project's other dependencies ship a two-sample proportion
    interval; it is built from the two :func:`wilson_interval` bounds (``l``, ``u``)::

        d = p_a - p_b
        low  = d - sqrt((p_a - l_a)^2 + (u_b - p_b)^2)
        high = d + sqrt((u_a - p_a)^2 + (p_b - l_b)^2)

    Returns:
        ``(d, low, high)``; all NaN when either ``n`` is 0.
    """
    la, ua = wilson_interval(successes_a, n_a, confidence)
    lb, ub = wilson_interval(successes_b, n_b, confidence)
    if n_a == 0 or n_b == 0:
        return (math.nan, math.nan, math.nan)
    pa, pb = successes_a / n_a, successes_b / n_b
    d = pa - pb
    return (d, d - math.hypot(pa - la, ub - pb), d + math.hypot(ua - pa, pb - lb))
