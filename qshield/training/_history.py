"""``TrainHistory``: the per-epoch metrics a training run produced."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainHistory:
    """One dict of metrics per completed epoch, in order (the same dicts the callback received).

    Keys: ``epoch`` (1-based), ``train_loss`` (mean NLL over the batches trained on, i.e. the adversarial or
    augmented batches for ``pgd_at``/``quantum_patches``), ``train_accuracy`` (on those batches, in train mode),
    ``epoch_time_s`` (wall-clock seconds of the epoch's training, without validation), ``samples`` (training
    samples seen) and, with a validation set, ``val_loss`` and ``val_accuracy`` (eval mode, clean data).
    """

    epochs: list[dict[str, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.epochs)

    def series(self, key: str) -> list[float]:
        """The values of one metric over the epochs; ``KeyError`` listing the keys that exist."""
        if self.epochs and key not in self.epochs[-1]:
            raise KeyError(f"metric {key!r} not recorded; available: {', '.join(self.epochs[-1])}")
        return [m[key] for m in self.epochs]

    @property
    def last(self) -> dict[str, float]:
        """The metrics of the final epoch (empty dict before any epoch finished)."""
        return dict(self.epochs[-1]) if self.epochs else {}
