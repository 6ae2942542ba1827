"""``digits``: scikit-learn's 1,797 8x8 handwritten digits (``sklearn.datasets.load_digits``), offline.

Pixel values are integers 0..16 (counts of on-pixels in 4x4 blocks of the original 32x32 bitmaps), scaled to
``[0, 1]`` by dividing by 16. No official split: :func:`qshield.data.load_dataset` makes a stratified one by
seed (``test_fraction``). Tiny and fast: the dataset for unit tests and smoke runs.
"""

from __future__ import annotations

import numpy as np

from ._base import ArraySplit, DatasetLoader, DatasetSpec, SourceSplits

__all__ = ["DigitsLoader"]

#: Maximum pixel value of the sklearn digits (4x4 blocks of binary pixels).
DIGITS_MAX_VALUE = 16.0


class DigitsLoader(DatasetLoader):
    """scikit-learn's optical-recognition digits (UCI), 1,797 images, 1x8x8 grey, split by seed."""

    spec = DatasetSpec(
        name="digits",
        num_classes=10,
        in_channels=1,
        image_size=8,
        class_names=tuple(str(d) for d in range(10)),
        official_split=False,
        builtin=True,
        description="scikit-learn 8x8 digits (1,797 images, offline), values 0..16 scaled to [0, 1]",
    )

    def load(self) -> SourceSplits:
        try:
            from sklearn.datasets import load_digits  # lazy: scikit-learn is slow to import
        except ImportError as exc:
            raise ImportError("the 'digits' dataset needs scikit-learn: pip install 'scikit-learn>=1.4'") from exc
        bunch = load_digits()
        images = np.asarray(bunch.images)[:, None, :, :]  # [1797, 8, 8] float64 0..16 -> [N, 1, 8, 8]
        return SourceSplits(
            train=ArraySplit(
                images,
                np.asarray(bunch.target),
                spec=self.spec,
                source="sklearn.datasets.load_digits",
                max_value=DIGITS_MAX_VALUE,
            ),
            test=None,
        )
