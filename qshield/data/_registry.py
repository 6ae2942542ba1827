"""The dataset registry: name -> loader class (whose ``spec`` carries the metadata)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from ._base import DatasetLoader, DatasetSpec
from ._cifar10 import CIFAR10Loader
from ._cinic10 import CINIC10Loader
from ._digits import DigitsLoader
from ._mnist import MNISTLoader
from ._mnist5k import MNIST5kLoader
from ._organamnist import OrganAMNISTLoader

__all__ = ["DATASETS", "DATA_ROOT_ENV", "available_datasets", "dataset_spec", "default_root", "get_dataset_loader"]

#: Registered datasets, read-only. ``DATASETS[name].spec`` holds ``num_classes``, ``in_channels``,
#: ``image_size``, ``class_names`` and whether the dataset has an official split or is built in.
DATASETS: Mapping[str, type[DatasetLoader]] = MappingProxyType(
    {
        loader.spec.name: loader
        for loader in (
            MNISTLoader,
            CIFAR10Loader,
            OrganAMNISTLoader,
            CINIC10Loader,
            MNIST5kLoader,
            DigitsLoader,
        )
    }
)

#: Environment variable naming the default data root.
DATA_ROOT_ENV = "QSHIELD_DATA"


def available_datasets() -> tuple[str, ...]:
    """The registered dataset names, sorted."""
    return tuple(sorted(DATASETS))


def get_dataset_loader(name: str) -> type[DatasetLoader]:
    """The loader class registered as ``name`` (case-insensitive).

    Raises:
        ValueError: unknown name; the message lists the registered names.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in DATASETS:
        allowed = ", ".join(repr(n) for n in available_datasets())
        raise ValueError(f"name={name!r} is not a known dataset; allowed values: {allowed}")
    return DATASETS[key]


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of dataset ``name`` (no files are read)."""
    return get_dataset_loader(name).spec


def default_root() -> Path:
    """The data root used when ``root=None``: ``$QSHIELD_DATA`` if set and non-empty, else ``./data``
    (relative to the current working directory), read at call time."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    return Path(env).expanduser() if env else Path("data")
