"""The QShield paper's metrics, computed from predicted labels.

* ODR (original detection rate) = clean accuracy: ``mean(clean_pred == y)`` over all test images.
* ASR (attack success rate): only test images the model classifies correctly are attacked;
  ``ASR = #(attacked and adversarial misclassified) / #attacked``.
* Robust accuracy: ``mean(clean_pred == y and adv_pred == y)`` over all test images; equals
  ``ODR * (1 - ASR)`` and is never above ODR.

All three are fractions in [0, 1]; ASR is NaN when nothing was attacked (no correct clean prediction).
"""

from __future__ import annotations

import math

import torch

__all__ = ["asr", "odr", "robust_accuracy"]


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
