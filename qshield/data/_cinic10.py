"""CINIC-10 (Darlow et al. 2018) from its image-folder layout (the layout ``torchvision.datasets.ImageFolder``
reads). Never downloads.

Layout under the data root (what ``CINIC-10.tar.gz`` unpacks to, placed in a ``cinic10`` folder)::

    ROOT/cinic10/train/{airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck}/*.png   90,000 images
    ROOT/cinic10/valid/{...}/*.png                                                            90,000 (unused)
    ROOT/cinic10/test/{...}/*.png                                                             90,000 images

``train`` and ``test`` are the official split; ``valid`` is optional and not read. The class folders must be
exactly the ten CIFAR-10 names; as in ImageFolder, labels are the indices of the sorted folder names (which is
the CIFAR-10 label order) and files are taken in sorted order, searched recursively, with ImageFolder's image
extensions. Only the selected images are decoded (after any limit or balancing); each must decode and be
32x32, grey images are converted to RGB as ImageFolder's PIL loader does. The scan is our own rather than
``ImageFolder`` (same order, same labels) so that loading does not depend on torchvision's compiled extension
matching the installed torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ._base import DatasetLoader, DatasetSpec, RawSplit, SourceSplits
from ._cifar10 import CIFAR10_CLASSES
from ._errors import DatasetFormatError

__all__ = ["IMG_EXTENSIONS", "CINIC10Loader", "ImageFolderSplit"]

CINIC10_URL = "https://datashare.is.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz"
#: File extensions taken as images (torchvision's ``IMG_EXTENSIONS``), compared case-insensitively.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderSplit(RawSplit):
    """A split stored as ``folder/{class}/**/*.png`` (ImageFolder layout); labels from the sorted class-folder
    names, images decoded on request.

    Args:
        folder: the split folder (e.g. ``ROOT/cinic10/train``).
        spec: the dataset spec (class names in label order, image shape).

    Raises:
        DatasetFormatError: the class folders differ from ``spec.class_names`` or a class folder has no image.
    """

    def __init__(self, folder: Path, *, spec: DatasetSpec) -> None:
        self.folder = Path(folder)
        self.spec = spec
        classes = sorted(e.name for e in os.scandir(self.folder) if e.is_dir() and not e.name.startswith("."))
        if tuple(classes) != spec.class_names:
            extra = sorted(set(classes) - set(spec.class_names))
            missing = sorted(set(spec.class_names) - set(classes))
            raise DatasetFormatError(
                self.folder,
                f"class folders must be exactly {list(spec.class_names)}; missing {missing}, unexpected {extra}",
            )
        paths: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(classes):
            class_dir = self.folder / name
            found = [
                Path(dirpath) / fname
                for dirpath, _, fnames in sorted(os.walk(class_dir, followlinks=True))
                for fname in sorted(fnames)
                if fname.lower().endswith(IMG_EXTENSIONS)
            ]
            if not found:
                raise DatasetFormatError(class_dir, f"no image file ({', '.join(IMG_EXTENSIONS)}) in this class folder")
            paths.extend(found)
            labels.extend([label] * len(found))
        self._paths = paths
        self._labels = np.asarray(labels, dtype=np.int64)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def paths(self) -> tuple[Path, ...]:
        """The image files, in label-then-name order (index = sample index)."""
        return tuple(self._paths)

    def read(self, indices: np.ndarray, *, progress: bool = False) -> np.ndarray:
        c, h, w = self.spec.image_shape
        mode = "L" if c == 1 else "RGB"
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((idx.size, c, h, w), dtype=np.float32)
        for j, i in enumerate(tqdm(idx, desc=f"reading {self.folder.name}", unit="img", disable=not progress)):
            path = self._paths[int(i)]
            try:
                with Image.open(path) as raw:
                    img = raw.convert(mode)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DatasetFormatError(path, f"cannot decode image: {exc}") from exc
            if img.size != (w, h):
                raise DatasetFormatError(path, f"image is {img.size[0]}x{img.size[1]} pixels; expected {w}x{h}")
            out[j] = np.asarray(img, dtype=np.uint8).reshape(h, w, c).transpose(2, 0, 1)
        out /= np.float32(255.0)
        return out


class CINIC10Loader(DatasetLoader):
    """CINIC-10: the CIFAR-10 classes from CIFAR-10 plus downsampled ImageNet, 3x32x32; official 90k/90k
    train/test folders (``valid`` unused)."""

    spec = DatasetSpec(
        name="cinic10",
        num_classes=10,
        in_channels=3,
        image_size=32,
        class_names=CIFAR10_CLASSES,
        official_split=True,
        builtin=False,
        description="CINIC-10, 90k/90k official train/test folders (valid unused), 3x32x32",
    )

    @property
    def folder(self) -> Path:
        return self.root / "cinic10"

    def fetch_instructions(self) -> str:
        return (
            f"  mkdir -p {self.folder} && curl -L {CINIC10_URL} | tar xz -C {self.folder}\n"
            "  (dataset page: https://doi.org/10.7488/ds/2448; the archive unpacks to train/, valid/, test/)\n"
            f"then copy {self.folder} to the same place on this machine."
        )

    def load(self) -> SourceSplits:
        train_dir, test_dir = self.folder / "train", self.folder / "test"
        missing = [d for d in (train_dir, test_dir) if not d.is_dir()]
        if missing:
            raise self.not_found(missing)
        return SourceSplits(
            train=ImageFolderSplit(train_dir, spec=self.spec), test=ImageFolderSplit(test_dir, spec=self.spec)
        )
