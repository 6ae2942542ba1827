"""Errors raised by :mod:`qshield.data` when a dataset is missing or its files are malformed."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DatasetFormatError", "DatasetNotFoundError"]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not under the data root.

    The message names every path that was looked for and how to fetch the data on a machine with network
    access (``qshield`` itself never downloads). Subclass of :class:`FileNotFoundError`, so callers that
    already handle missing files keep working.

    Attributes:
        dataset: registry name of the dataset (e.g. ``"mnist"``).
        missing: the paths that were looked for and not found.
        instructions: the fetch instructions, with the data root filled in.
    """

    def __init__(self, dataset: str, missing: Sequence[str | os.PathLike[str]], instructions: str) -> None:
        self.dataset = dataset
        self.missing: tuple[Path, ...] = tuple(Path(p) for p in missing)
        self.instructions = instructions
        looked = "\n".join(f"  - {p}" for p in self.missing)
        message = (
            f"dataset {dataset!r} not found; looked for (missing):\n{looked}\n"
            f"qshield never downloads data. To fetch it on a machine with network access:\n{instructions}"
        )
        super().__init__(message)
        # OSError.filename: the first missing path, for code that inspects it.
        self.filename = str(self.missing[0]) if self.missing else None

    def __str__(self) -> str:  # OSError.__str__ would prefix errno/filename formatting when those are set
        return str(self.args[0])

    def __reduce__(self) -> tuple[type, tuple[str, tuple[Path, ...], str]]:
        # rebuilt from the constructor's arguments: pickling (a Ray trial's error on its way to the driver) and
        # copy.copy would otherwise call __init__ with the message alone and fail with a TypeError
        return (type(self), (self.dataset, self.missing, self.instructions))


class DatasetFormatError(ValueError):
    """A dataset file exists but is unreadable or violates its format (truncated archive, wrong image shape,
    labels out of range, non-finite pixel values, failed checksum, ...).

    Attributes:
        path: the offending file or folder.
        problem: what is wrong with it, in words.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        return (type(self), (self.path, self.problem))  # picklable and copyable (see DatasetNotFoundError)
