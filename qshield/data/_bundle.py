"""The result of :func:`qshield.data.load_dataset`."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import TensorDataset

__all__ = ["DatasetBundle"]


@dataclass(frozen=True)
class DatasetBundle:
    """A loaded dataset: train and test tensors plus the metadata models need.

    Attributes:
        train: ``TensorDataset(images, labels)``; images float32 ``[N, C, H, W]`` in ``[0, 1]`` (no
            normalisation, as in the QShield paper), labels int64 ``[N]`` in ``0..num_classes-1``.
        test: same layout as ``train``.
        num_classes: ``K``.
        in_channels: ``C`` (1 grey, 3 RGB).
        image_size: ``H == W`` in pixels.
        class_names: the ``K`` class names, index = label.
        name: registry name of the dataset.
    """

    train: TensorDataset
    test: TensorDataset
    num_classes: int
    in_channels: int
    image_size: int
    class_names: tuple[str, ...]
    name: str

    def __repr__(self) -> str:
        return (
            f"DatasetBundle(name={self.name!r}, train={len(self.train)}, test={len(self.test)}, "
            f"num_classes={self.num_classes}, in_channels={self.in_channels}, image_size={self.image_size})"
        )
