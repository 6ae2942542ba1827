"""Errors raised by the training loop."""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; raised before the optimiser applies that step.

    Attributes:
        epoch: 1-based epoch in which it happened.
        step: 1-based batch index within that epoch.
        loss: the offending value (``nan``, ``inf`` or ``-inf``).
        detail: extra context appended to the message (e.g. the training method), may be empty.
    """

    def __init__(self, epoch: int, step: int, loss: float, detail: str = "") -> None:
        self.epoch = epoch
        self.step = step
        self.loss = loss
        self.detail = detail
        msg = f"training loss became {loss} at epoch {epoch}, step {step}; the optimiser step was not applied"
        super().__init__(msg + (f" ({detail})" if detail else ""))

    def __reduce__(self) -> tuple[type, tuple[int, int, float, str]]:
        # rebuilt from the constructor's arguments: pickling (a Ray trial's error on its way to the driver) and
        # copy.copy would otherwise call __init__ with the message alone and fail with a TypeError
        return (type(self), (self.epoch, self.step, self.loss, self.detail))
