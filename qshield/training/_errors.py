"""Errors raised by the training loop."""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; raised before the optimiser applies that step.

    Attributes:
        epoch: 1-based epoch in which it happened.
        step: 1-based batch index within that epoch.
        loss: the offending value (``nan``, ``inf`` or ``-inf``).
    """

    def __init__(self, epoch: int, step: int, loss: float, detail: str = "") -> None:
        self.epoch = epoch
        self.step = step
        self.loss = loss
        msg = f"training loss became {loss} at epoch {epoch}, step {step}; the optimiser step was not applied"
        super().__init__(msg + (f" ({detail})" if detail else ""))
