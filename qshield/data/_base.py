"""The dataset plug-in interface: a static :class:`DatasetSpec` plus a :class:`DatasetLoader` with one method.

A loader reads the files of one dataset and returns its splits as :class:`RawSplit` objects, which expose the
labels up front and read images only for the indices asked for (so a limited subset of a large image-folder
dataset never decodes the whole folder). :func:`qshield.data.load_dataset` does the splitting, balancing and
limiting on the labels, then reads the selected images.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np

from ._errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["ArraySplit", "DatasetLoader", "DatasetSpec", "RawSplit", "SourceSplits", "check_labels"]


@dataclass(frozen=True)
class DatasetSpec:
    """Static metadata of a registered dataset.

    Attributes:
        name: registry name (lower case).
        num_classes: number of classes ``K``; labels are ``0..K-1``.
        in_channels: image channels ``C`` (1 grey, 3 RGB).
        image_size: image height = width ``S`` in pixels; images are ``[C, S, S]``.
        class_names: the ``K`` class names, index = label.
        official_split: ``True`` when the dataset ships its own train/test split (used as is);
            ``False`` for the built-ins, which are split by seed (``test_fraction``).
        builtin: ``True`` when the data ships inside an installed package (no data root needed).
        description: one line for docs and listings.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    class_names: tuple[str, ...]
    official_split: bool
    builtin: bool
    description: str

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"DatasetSpec {self.name!r}: class_names has {len(self.class_names)} entries, "
                f"num_classes={self.num_classes}"
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return (self.in_channels, self.image_size, self.image_size)


def check_labels(labels: object, num_classes: int, source: str | os.PathLike[str]) -> np.ndarray:
    """Validate class labels and return them as a 1-D int64 array.

    Accepts ``[N]`` or MedMNIST-style ``[N, 1]`` integer arrays (or a list of ints). Raises
    :class:`DatasetFormatError` naming ``source`` for a wrong shape, a non-integer dtype or a value outside
    ``0..num_classes-1``.
    """
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DatasetFormatError(source, f"labels must have shape [N] or [N, 1]; got {tuple(np.shape(labels))}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DatasetFormatError(source, f"labels must be integers; got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = np.flatnonzero((arr < 0) | (arr >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise DatasetFormatError(
            source,
            f"{bad.size} label(s) out of range; allowed 0..{num_classes - 1} ({num_classes} classes), "
            f"e.g. label {int(arr[i])} at index {i}",
        )
    return arr


class RawSplit(abc.ABC):
    """One split (train or test) of a dataset as read from disk: labels now, images on request."""

    @property
    @abc.abstractmethod
    def labels(self) -> np.ndarray:
        """``[N]`` int64 class labels in ``0..K-1``."""

    @abc.abstractmethod
    def read(self, indices: np.ndarray, *, progress: bool = False) -> np.ndarray:
        """The images at ``indices`` as float32 ``[n, C, H, W]`` with values in ``[0, 1]``."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class ArraySplit(RawSplit):
    """A split held in memory as an array on the format's native pixel scale.

    Validated once, on construction: ``images`` must be ``[N, C, H, W]`` matching ``spec``, real-valued,
    finite, within ``[0, max_value]``, with one label per image in ``0..K-1``. Conversion to float32 in
    ``[0, 1]`` (division by ``max_value``) happens in :meth:`read`, for the selected indices only.

    Args:
        images: ``[N, C, H, W]`` numeric array (e.g. uint8 0..255).
        labels: ``[N]`` (or ``[N, 1]``) integer labels.
        spec: the dataset's spec (expected shape and class count).
        source: file or folder the data came from, named in errors.
        max_value: the format's maximum pixel value (255 for 8-bit images, 16 for sklearn digits).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: object,
        *,
        spec: DatasetSpec,
        source: str | os.PathLike[str],
        max_value: float = 255.0,
    ) -> None:
        images = np.asarray(images)
        expected = spec.image_shape
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise DatasetFormatError(
                source,
                f"images have shape {tuple(images.shape)}; expected [N, C, H, W] = [N, {expected[0]}, "
                f"{expected[1]}, {expected[2]}] for {spec.name}",
            )
        if images.dtype == np.bool_ or not (
            np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)
        ):
            raise DatasetFormatError(source, f"pixel values must be integers or floats; got dtype {images.dtype}")
        if np.issubdtype(images.dtype, np.floating):
            finite = np.isfinite(images)
            if not finite.all():
                n_bad = int(images.size - np.count_nonzero(finite))
                raise DatasetFormatError(
                    source,
                    f"images contain {n_bad} non-finite pixel value(s) (NaN or inf); allowed: finite values in "
                    f"[0, {max_value:g}]",
                )
        if images.size and not (images.dtype == np.uint8 and max_value == 255):
            lo, hi = float(images.min()), float(images.max())
            if lo < 0 or hi > max_value:
                raise DatasetFormatError(
                    source, f"pixel values must lie in [0, {max_value:g}]; found min={lo:g}, max={hi:g}"
                )
        lab = check_labels(labels, spec.num_classes, source)
        if lab.shape[0] != images.shape[0]:
            raise DatasetFormatError(source, f"{images.shape[0]} images but {lab.shape[0]} labels")
        self._images = images
        self._labels = lab
        self._scale = float(max_value)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def read(self, indices: np.ndarray, *, progress: bool = False) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        out = self._images[idx].astype(np.float32)
        out /= np.float32(self._scale)
        return np.ascontiguousarray(out)


class SourceSplits(NamedTuple):
    """What a loader returns: the train split and the official test split (``None`` when there is none)."""

    train: RawSplit
    test: RawSplit | None


class DatasetLoader(abc.ABC):
    """Base class of the dataset plug-ins: set ``spec``, implement :meth:`load`.

    Optional: override :meth:`fetch_instructions` to say how to obtain the files (used in
    :class:`DatasetNotFoundError`).

    Args:
        root: the data root (see :func:`qshield.data.default_root`); ignored by built-in datasets.
        verify_checksums: check files against their published MD5 where the format defines one (CIFAR-10).
            Default ``True``; ``False`` is meant for tiny test fixtures in the official format.
        progress: show a tqdm progress bar for long reads (image folders).
    """

    spec: ClassVar[DatasetSpec]

    def __init__(self, root: str | os.PathLike[str], *, verify_checksums: bool = True, progress: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        self.verify_checksums = bool(verify_checksums)
        self.progress = bool(progress)

    @abc.abstractmethod
    def load(self) -> SourceSplits:
        """Read and validate the files; raise :class:`DatasetNotFoundError` / :class:`DatasetFormatError`."""

    def fetch_instructions(self) -> str:
        """How to obtain the files on a networked machine, with the data root filled in."""
        return ""

    def not_found(self, missing: Sequence[str | os.PathLike[str]], *, hint: str = "") -> DatasetNotFoundError:
        """The error to raise when ``missing`` paths do not exist (``hint``: an extra line for the message)."""
        instructions = self.fetch_instructions()
        if hint:
            instructions = f"{instructions}\n{hint}" if instructions else hint
        return DatasetNotFoundError(self.spec.name, missing, instructions)
