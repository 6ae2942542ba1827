"""OrganAMNIST (MedMNIST v2/v3) read through the ``medmnist`` package from the official ``organamnist.npz``;
never downloads (``download=False``).

Layout under the data root (the file name MedMNIST itself uses, 28x28 version)::

    ROOT/organamnist.npz   keys train_images [34561, 28, 28] uint8, train_labels [34561, 1],
                                val_images [6491, 28, 28],   val_labels [6491, 1],
                                test_images [17778, 28, 28], test_labels [17778, 1]

The official train/test split is used; the validation split is not part of either (pass it to training code
yourself if needed). ``medmnist.OrganAMNIST`` opens the archive with ``np.load`` (numpy's default
``allow_pickle=False``, so no code can run from it); the class names are medmnist's ``INFO["organamnist"]``.
A missing or unreadable file becomes :class:`~qshield.data.DatasetNotFoundError` /
:class:`~qshield.data.DatasetFormatError` naming it.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ._base import ArraySplit, DatasetLoader, DatasetSpec, SourceSplits, check_labels
from ._errors import DatasetFormatError

__all__ = ["OrganAMNISTLoader"]

ORGANAMNIST_URL = "https://zenodo.org/records/10519652/files/organamnist.npz?download=1"
ORGANAMNIST_MD5 = "68e3f8846a6bd62f0c9bf841c0d9eacc"
_REQUIRED_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


class OrganAMNISTLoader(DatasetLoader):
    """OrganAMNIST (Yang et al., MedMNIST): abdominal CT axial slices, 11 organs, 1x28x28 grey.

    Official split: 34,561 train / 17,778 test (6,491 validation images are not used).
    """

    spec = DatasetSpec(
        name="organamnist",
        num_classes=11,
        in_channels=1,
        image_size=28,
        class_names=(  # medmnist.INFO["organamnist"]["label"], in label order (tests/test_data.py checks)
            "bladder",
            "femur-left",
            "femur-right",
            "heart",
            "kidney-left",
            "kidney-right",
            "liver",
            "lung-left",
            "lung-right",
            "pancreas",
            "spleen",
        ),
        official_split=True,
        builtin=False,
        description="MedMNIST OrganAMNIST, 11 organs, official 34561/17778 split, 1x28x28",
    )

    @property
    def path(self) -> Path:
        return self.root / "organamnist.npz"

    def fetch_instructions(self) -> str:
        return (
            f"  mkdir -p {self.root} && curl -L -o {self.path} '{ORGANAMNIST_URL}'   (md5 {ORGANAMNIST_MD5})\n"
            f"  (or: python -c \"import medmnist; medmnist.OrganAMNIST(split='test', download=True, "
            f'root={str(self.root)!r})")\n'
            f"then copy {self.path} to the same place on this machine."
        )

    def load(self) -> SourceSplits:
        if not self.path.is_file():
            raise self.not_found([self.path])
        from medmnist import OrganAMNIST

        arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split in ("train", "test"):
            try:
                data = OrganAMNIST(split=split, root=str(self.root), download=False, size=28)
                arrays[split] = (np.asarray(data.imgs), np.asarray(data.labels))
            except KeyError as exc:
                with np.load(self.path, allow_pickle=False) as npz:
                    keys = sorted(npz.files)
                missing = [k for k in _REQUIRED_KEYS if k not in keys]
                raise DatasetFormatError(self.path, f"npz archive lacks key(s) {missing}; it has {keys}") from exc
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError) as exc:
                raise DatasetFormatError(
                    self.path, f"not a readable npz archive (truncated or corrupted?): {type(exc).__name__}: {exc}"
                ) from exc
        splits = {}
        for split, (images, raw_labels) in arrays.items():
            if images.ndim == 4 and images.shape[-1] == 1:  # tolerate an explicit trailing channel axis
                images = images[..., 0]
            if images.ndim != 3:
                raise DatasetFormatError(self.path, f"{split}_images has shape {images.shape}; expected [N, 28, 28]")
            labels = check_labels(raw_labels, self.spec.num_classes, f"{self.path}[{split}_labels]")
            splits[split] = ArraySplit(
                images[:, None, :, :], labels, spec=self.spec, source=f"{self.path}[{split}_images]", max_value=255
            )
        return SourceSplits(train=splits["train"], test=splits["test"])
