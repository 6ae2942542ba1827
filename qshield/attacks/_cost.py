"""Adversary cost, counted: model forward passes, backward passes and wall seconds."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["AdversaryCost", "QueryCounter"]


@dataclass(frozen=True)
class AdversaryCost:
    """What an attack spent on ``n_examples`` examples.

    Attributes:
        n_examples: examples attacked.
        forward: model forward passes, counted per example (the sum of the batch sizes of every call).
        backward: backward passes through the model output, counted per example (the batch size of every
            gradient that reached the output).
        seconds: wall-clock seconds spent inside :meth:`QueryCounter.timed` blocks.
    """

    n_examples: int
    forward: int
    backward: int
    seconds: float

    @property
    def forward_per_example(self) -> float:
        """``forward / n_examples`` (NaN when nothing was attacked)."""
        return self.forward / self.n_examples if self.n_examples else math.nan

    @property
    def backward_per_example(self) -> float:
        """``backward / n_examples`` (NaN when nothing was attacked)."""
        return self.backward / self.n_examples if self.n_examples else math.nan

    @property
    def seconds_per_example(self) -> float:
        """``seconds / n_examples`` (NaN when nothing was attacked)."""
        return self.seconds / self.n_examples if self.n_examples else math.nan


class QueryCounter(nn.Module):
    """Transparent wrapper that counts what an adversary asks of a model.

    * forward: each call adds its batch size ``x.shape[0]`` to :attr:`forward_examples` (and 1 to
      :attr:`forward_calls`);
    * backward: when the output requires grad, an autograd hook is registered on it; every gradient that
      flows back into the output (``loss.backward()``, ``torch.autograd.grad``, one per Jacobian row for
      DeepFool) adds its batch size to :attr:`backward_examples` (and 1 to :attr:`backward_calls`);
    * wall time: :meth:`timed` accumulates seconds into :attr:`seconds`.

    The output tensor is returned unchanged (same object), so the counted model behaves exactly like the
    model. The counter copies the model's train/eval mode at construction (torchattacks restores the mode it
    reads from the module it is given).

    ``forward(x [B, ...]) -> model(x)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_calls = 0
        self.forward_examples = 0
        self.backward_calls = 0
        self.backward_examples = 0
        self.seconds = 0.0
        self.train(model.training)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward_calls += 1
        self.backward_examples += int(grad.shape[0]) if grad.ndim else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.forward_calls += 1
        self.forward_examples += int(x.shape[0])
        if out.requires_grad:
            out.register_hook(self._on_backward)
        return out

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Add the wall-clock seconds spent in the ``with`` block to :attr:`seconds`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start

    def reset(self) -> None:
        """Zero all counts."""
        self.forward_calls = self.forward_examples = 0
        self.backward_calls = self.backward_examples = 0
        self.seconds = 0.0

    def cost(self, n_examples: int) -> AdversaryCost:
        """The counts so far as an :class:`AdversaryCost` over ``n_examples`` attacked examples."""
        return AdversaryCost(
            n_examples=int(n_examples),
            forward=self.forward_examples,
            backward=self.backward_examples,
            seconds=self.seconds,
        )
