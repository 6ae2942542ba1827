"""CIFAR-10 from torchvision's on-disk layout: the python-pickle batches. Never downloads.

Layout under the data root (what ``cifar-10-python.tar.gz`` unpacks to, and what
``torchvision.datasets.CIFAR10(ROOT, download=True)`` leaves there)::

    ROOT/cifar-10-batches-py/data_batch_1 .. data_batch_5   training batches, 10000 images each
    ROOT/cifar-10-batches-py/test_batch                     10000 test images
    ROOT/cifar-10-batches-py/batches.meta                   dict with label_names

Each batch is a pickled dict with ``data`` (``[n, 3072]`` uint8; per row the 1024 red, then 1024 green, then
1024 blue values of a 32x32 image in row-major order) and ``labels`` (``n`` ints 0..9).

Integrity and safety:

* ``verify_checksums=True`` (default): every file must match the MD5 that torchvision publishes for the
  official archive (the same check ``torchvision.datasets.CIFAR10`` makes), else :class:`DatasetFormatError`
  naming the file. ``False`` skips only that comparison, for tiny fixture files in the official format.
* Files are always read with :func:`safe_unpickle`, a restricted unpickler that admits plain containers and
  numpy arrays and nothing else, so even an unverified file cannot run code (``torchvision`` uses plain
  ``pickle.load``). The reader is our own rather than ``torchvision.datasets.CIFAR10`` (same files, same
  result) so that loading does not depend on torchvision's compiled extension matching the installed torch.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ._base import ArraySplit, DatasetLoader, DatasetSpec, SourceSplits, check_labels
from ._errors import DatasetFormatError

__all__ = ["CIFAR10_CLASSES", "CIFAR10_MD5", "CIFAR10Loader", "md5sum", "safe_unpickle"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_BASE_FOLDER = "cifar-10-batches-py"
_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_FILES = ("test_batch",)
_META_FILE = "batches.meta"
#: MD5 of the official files (as published in ``torchvision.datasets.CIFAR10``).
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

# The only globals a CIFAR pickle needs: numpy array reconstruction (numpy 1.x and 2.x module paths) and the
# codec through which Python 2 pickles of byte strings are decoded.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (not plain data)")
        return super().find_class(module, name)


def safe_unpickle(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` admitting only plain Python containers and numpy arrays (``encoding="latin1"``, as
    CIFAR's Python 2 pickles need).

    Raises:
        DatasetFormatError: the file is truncated, not a pickle, or references any other global (which could
            run code when unpickled).
    """
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DatasetFormatError(path, f"not a readable CIFAR pickle: {exc}") from exc


def md5sum(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex MD5 digest of a file, read in chunks of ``chunk_bytes`` (default 1 MiB)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One data batch as ``(data [n, 3, 32, 32], labels [n] int64)``, structure and values checked."""
    entry = safe_unpickle(path)
    if not isinstance(entry, dict):
        raise DatasetFormatError(path, f"a CIFAR batch must be a dict; got {type(entry).__name__}")
    if "data" not in entry or "labels" not in entry:
        raise DatasetFormatError(path, f"a CIFAR-10 batch needs keys 'data' and 'labels'; found {sorted(entry)}")
    data = np.asarray(entry["data"])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetFormatError(path, f"'data' has shape {data.shape}; expected [n, 3072] (3x32x32 per row)")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise DatasetFormatError(
            path, f"'data' contains {n_bad} non-finite pixel value(s) (NaN or inf); allowed: finite values in [0, 255]"
        )
    labels = check_labels(entry["labels"], len(CIFAR10_CLASSES), path)
    if labels.shape[0] != data.shape[0]:
        raise DatasetFormatError(path, f"'data' holds {data.shape[0]} images but 'labels' has {labels.shape[0]}")
    return data.reshape(-1, 3, 32, 32), labels


class CIFAR10Loader(DatasetLoader):
    """CIFAR-10 (Krizhevsky 2009): official 50,000 / 10,000 train/test split, 3x32x32 RGB."""

    spec = DatasetSpec(
        name="cifar10",
        num_classes=10,
        in_channels=3,
        image_size=32,
        class_names=CIFAR10_CLASSES,
        official_split=True,
        builtin=False,
        description="CIFAR-10, 50k/10k official split, 3x32x32",
    )

    @property
    def folder(self) -> Path:
        return self.root / _BASE_FOLDER

    def fetch_instructions(self) -> str:
        return (
            f'  python -c "import torchvision; torchvision.datasets.CIFAR10({str(self.root)!r}, download=True)"\n'
            f"  (or: curl -L https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz | tar xz -C {self.root})\n"
            f"then copy {self.folder} to the same place on this machine."
        )

    def _verify(self, path: Path) -> None:
        if self.verify_checksums:
            want = CIFAR10_MD5[path.name]
            got = md5sum(path)
            if got != want:
                raise DatasetFormatError(
                    path,
                    f"MD5 {got} does not match the official CIFAR-10 file ({want}): corrupted or not the "
                    "original (verify_checksums=False is meant only for trusted files in the official format, "
                    "such as test fixtures)",
                )

    def load(self) -> SourceSplits:
        names = (*_TRAIN_FILES, *_TEST_FILES, _META_FILE)
        missing = [self.folder / n for n in names if not (self.folder / n).is_file()]
        if missing:
            raise self.not_found(missing)
        for name in names:
            self._verify(self.folder / name)
        meta_path = self.folder / _META_FILE
        meta = safe_unpickle(meta_path)
        if not isinstance(meta, dict) or "label_names" not in meta:
            raise DatasetFormatError(meta_path, "batches.meta must be a dict with key 'label_names'")
        if tuple(meta["label_names"]) != CIFAR10_CLASSES:
            raise DatasetFormatError(
                meta_path, f"label_names are {tuple(meta['label_names'])}; expected {CIFAR10_CLASSES}"
            )
        out = {}
        for split, files in (("train", _TRAIN_FILES), ("test", _TEST_FILES)):
            parts = [_read_batch(self.folder / f) for f in files]
            images = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
            source = self.folder if split == "train" else self.folder / "test_batch"
            out[split] = ArraySplit(images, labels, spec=self.spec, source=source, max_value=255)
        return SourceSplits(train=out["train"], test=out["test"])
