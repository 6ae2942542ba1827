"""The classifier interface shared by the baselines and usable as a hybrid backbone."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class Classifier(nn.Module, ABC):
    """An image classifier split into a feature extractor and a linear class head.

    Subclasses implement :meth:`forward_features` (``x [B, C, H, W] -> features [B, feature_dim]``) and set
    ``self.classifier = nn.Linear(feature_dim, num_classes)``. :meth:`forward` returns class logits ``[B, C]``
    (unnormalised scores; ``log_softmax`` of them is the model's log-probability). A
    :class:`~qshield.models.HybridModel` uses the same two parts of its backbone, so "the CNN alone" and the
    hybrid's classical branch are the same computation.

    Args:
        in_channels: channels of the input images.
        num_classes: number of classes.
        image_size: the input height = width the model requires, or None when any size >= ``min_size`` works.
        min_size: smallest height/width accepted.
    """

    classifier: nn.Linear

    def __init__(self, in_channels: int, num_classes: int, image_size: int | None = None, min_size: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size
        self.min_size = min_size

    @property
    def feature_dim(self) -> int:
        """Width of :meth:`forward_features`' output (the input width of ``classifier``)."""
        return self.classifier.in_features

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a float batch ``[B, in_channels, H, W]`` this model accepts."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"input x must be a float tensor [B, {self.in_channels}, H, W], got {got}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"input x has {x.shape[1]} channels; allowed: in_channels={self.in_channels}")
        h, w = int(x.shape[2]), int(x.shape[3])
        if self.image_size is not None and (h, w) != (self.image_size, self.image_size):
            raise ValueError(f"input x has size {h}x{w}; allowed: {self.image_size}x{self.image_size}")
        if min(h, w) < self.min_size:
            raise ValueError(f"input x has size {h}x{w}; allowed: height and width >= {self.min_size}")

    @abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W]`` (values in [0, 1], no normalisation, as the paper) -> ``[B, feature_dim]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, num_classes]``."""
        self.check_input(x)
        return self.classifier(self.forward_features(x))
