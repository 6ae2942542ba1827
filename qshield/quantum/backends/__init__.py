"""Simulator backends, looked up by name.

``torch`` is built in; ``qulacs`` and ``pennylane`` load lazily so a missing optional package only fails when
that backend is asked for, with install steps in the error.
"""

from __future__ import annotations

import importlib

from ._base import Backend

__all__ = ["Backend", "BACKENDS", "get_backend", "available_backends"]

#: name -> "module:Class" (imported on first use)
BACKENDS: dict[str, str] = {
    "torch": "qshield.quantum.backends._torch:TorchBackend",
    "qulacs": "qshield.quantum.backends._qulacs:QulacsBackend",
    "pennylane": "qshield.quantum.backends._pennylane:PennyLaneBackend",
}


def get_backend(name: str) -> type[Backend]:
    """Return the backend class registered under ``name``.

    Raises:
        ValueError: unknown name (the message lists the registered backends).
        ImportError: the backend's simulator package is not installed (the message says how to install it).
    """
    key = str(name).lower()
    if key not in BACKENDS:
        raise ValueError(f"backend={name!r} does not exist; allowed values: {', '.join(map(repr, BACKENDS))}")
    module_name, cls_name = BACKENDS[key].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)


def available_backends() -> list[str]:
    """Names of the backends whose simulator packages import on this machine."""
    names = []
    for name in BACKENDS:
        try:
            get_backend(name)
        except ImportError:
            continue
        names.append(name)
    return names
