"""MNIST from torchvision's on-disk layout: the raw IDX files, plain or gzipped. Never downloads.

Layout under the data root (what ``torchvision.datasets.MNIST(ROOT, download=True)`` leaves there)::

    ROOT/MNIST/raw/train-images-idx3-ubyte   60000 x 28 x 28 uint8   (or the same name + ".gz")
    ROOT/MNIST/raw/train-labels-idx1-ubyte   60000 uint8
    ROOT/MNIST/raw/t10k-images-idx3-ubyte    10000 x 28 x 28 uint8
    ROOT/MNIST/raw/t10k-labels-idx1-ubyte    10000 uint8

IDX format (LeCun): big-endian header ``0x00 0x00 type ndim`` (type ``0x08`` = unsigned byte), then one
big-endian uint32 per dimension, then the values in row-major order. Every header (magic number,
dimensions) and the file length are checked, so a truncated or foreign file is reported by name. The reader
is our own rather than ``torchvision.datasets.MNIST`` (same files, same result) so that loading does not
depend on torchvision's compiled extension matching the installed torch.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from ._base import ArraySplit, DatasetLoader, DatasetSpec, SourceSplits, check_labels
from ._errors import DatasetFormatError

__all__ = ["MNISTLoader", "read_idx_ubyte"]

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08


def read_idx_ubyte(path: str | Path, trailing: tuple[int, ...]) -> np.ndarray:
    """Read an unsigned-byte IDX file (plain, or gzip if the name ends in ``.gz``) into a uint8 array.

    Args:
        path: the file.
        trailing: expected dimensions after the first (item) axis: ``()`` for labels, ``(28, 28)`` for
            MNIST images.

    Returns:
        uint8 array of shape ``(N, *trailing)``.

    Raises:
        DatasetFormatError: unreadable gzip stream, wrong magic number or element type, wrong dimensions, or
            a length that does not match the header (truncated or padded file).
    """
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetFormatError(path, f"cannot read the gzip stream (truncated or corrupted?): {exc}") from exc
    ndim = 1 + len(trailing)
    header_len = 4 * (1 + ndim)
    if len(data) < header_len:
        raise DatasetFormatError(path, f"IDX header truncated: {len(data)} bytes, the header needs {header_len}")
    zero, dtype_code, found_ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != _UBYTE or found_ndim != ndim:
        raise DatasetFormatError(
            path,
            f"IDX magic number is 0x{data[:4].hex()}; expected 0x0000{_UBYTE:02x}{ndim:02x} "
            f"(unsigned bytes, {ndim} dimension(s))",
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    if tuple(dims[1:]) != tuple(trailing):
        want = "(N, " + ", ".join(map(str, trailing)) + ")" if trailing else "(N,)"
        raise DatasetFormatError(path, f"IDX dimensions are {tuple(dims)}; expected {want}")
    expected = header_len + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DatasetFormatError(
            path,
            f"{len(data)} bytes of data but the header {tuple(dims)} implies {expected} (truncated or corrupted)",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


class MNISTLoader(DatasetLoader):
    """MNIST handwritten digits (LeCun et al. 1998): official 60,000 / 10,000 train/test split, 1x28x28 grey."""

    spec = DatasetSpec(
        name="mnist",
        num_classes=10,
        in_channels=1,
        image_size=28,
        class_names=tuple(str(d) for d in range(10)),
        official_split=True,
        builtin=False,
        description="MNIST digits, 60k/10k official split, 1x28x28",
    )

    @property
    def raw_folder(self) -> Path:
        return self.root / "MNIST" / "raw"

    def fetch_instructions(self) -> str:
        return (
            f'  python -c "import torchvision; torchvision.datasets.MNIST({str(self.root)!r}, download=True)"\n'
            f"then copy {self.raw_folder} (the four *-ubyte files, plain or .gz) to the same place on this machine."
        )

    def _find(self, name: str) -> Path | None:
        for candidate in (self.raw_folder / name, self.raw_folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def load(self) -> SourceSplits:
        names = [n for pair in _FILES.values() for n in pair]
        found = {n: self._find(n) for n in names}
        missing = [self.raw_folder / n for n, p in found.items() if p is None]
        if missing:
            raise self.not_found(missing)
        paths = {n: p for n, p in found.items() if p is not None}
        splits = {}
        for split, (img_name, lab_name) in _FILES.items():
            img_path, lab_path = paths[img_name], paths[lab_name]
            images = read_idx_ubyte(img_path, (28, 28))
            labels = check_labels(read_idx_ubyte(lab_path, ()), self.spec.num_classes, lab_path)
            if labels.shape[0] != images.shape[0]:
                raise DatasetFormatError(
                    lab_path, f"{labels.shape[0]} labels but {img_path.name} holds {images.shape[0]} images"
                )
            splits[split] = ArraySplit(images[:, None, :, :], labels, spec=self.spec, source=img_path, max_value=255)
        return SourceSplits(train=splits["train"], test=splits["test"])
