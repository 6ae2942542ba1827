"""``SmallCNN``: a small, fast CNN for 28x28 (MNIST-like) and tiny 8x8 (sklearn digits) inputs."""

from __future__ import annotations

import torch
from torch import nn

from ._base import Classifier


class SmallCNN(Classifier):
    """Two conv blocks, adaptive pooling, one hidden linear layer.

    ``[B, C, H, W]`` -> Conv3x3(C->c1) BN ReLU MaxPool2 -> Conv3x3(c1->c2) BN ReLU MaxPool2 ->
    AdaptiveAvgPool(2x2) -> flatten (4*c2) -> Linear(4*c2 -> hidden) ReLU Dropout -> features ``[B, hidden]``;
    ``classifier``: Linear(hidden -> num_classes). Any H, W >= 4 works (28 -> 14 -> 7 -> 2; 8 -> 4 -> 2 -> 2).
    About 4.5 M multiply-adds per 28x28 image with the defaults, so a CPU epoch of MNIST takes seconds.

    Args:
        in_channels: image channels.
        num_classes: C.
        channels: conv widths ``(c1, c2)``, default (32, 64).
        hidden: feature width, default 128.
        dropout: dropout before the class head, default 0.2.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(in_channels, num_classes, image_size=None, min_size=4)
        c1, c2 = channels
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * c2, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
