"""``DNN``: the paper's MLP baseline (QShield, arXiv 2604.10933, Sec. "Baselines")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._base import Classifier

#: The paper's hidden-width ladder; an input of d values keeps the widths below d (at least the last one).
WIDTH_LADDER = (1024, 512, 256, 128)


def dnn_hidden_widths(input_dim: int) -> tuple[int, ...]:
    """Hidden widths for an input of ``input_dim`` values.

    The paper's two nets are 784->512->256->128->C (28x28 grey) and 3072->1024->512->256->128->C (32x32x3):
    both keep the widths of the ladder 1024, 512, 256, 128 that are smaller than the input. The same rule
    generalises to any size; when none is smaller (e.g. 8x8 digits, 64 values) the last width, 128, is kept.
    """
    widths = tuple(w for w in WIDTH_LADDER if w < input_dim)
    return widths or WIDTH_LADDER[-1:]


class DNN(Classifier):
    """Flatten, then per hidden width: Linear -> BatchNorm1d -> ReLU -> Dropout(p); then Linear -> C logits.

    Args:
        in_channels, image_size: input shape ``[B, in_channels, image_size, image_size]`` (exact).
        num_classes: C.
        hidden: hidden widths; default :func:`dnn_hidden_widths` of ``in_channels * image_size**2``.
        dropout: dropout probability after every hidden layer (paper: 0.2).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        hidden: Sequence[int] | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(in_channels, num_classes, image_size=image_size)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        input_dim = in_channels * image_size * image_size
        widths = tuple(hidden) if hidden is not None else dnn_hidden_widths(input_dim)
        if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"hidden={hidden!r} must be a non-empty sequence of positive integers")
        layers: list[nn.Module] = [nn.Flatten()]
        prev = input_dim
        for width in widths:
            layers += [nn.Linear(prev, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            prev = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)
        self.hidden = widths

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
