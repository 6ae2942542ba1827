"""Lazy access to torchattacks and a quiet constructor for its attack classes."""

from __future__ import annotations

import contextlib
import io
import logging
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torchattacks

__all__ = ["construct", "import_torchattacks", "model_device"]

logger = logging.getLogger(__name__)

_INSTALL = (
    "qshield.attacks needs torchattacks==3.5.1. Install it without its dependencies (it pins an old "
    "`requests` that conflicts with mlflow/ray): `pip install --no-deps torchattacks==3.5.1` "
    "(it is pinned in requirements/lock.txt)."
)


def import_torchattacks() -> ModuleType:
    """Import torchattacks on first use; ``ImportError`` with install steps if it is missing."""
    try:
        import torchattacks
    except ImportError as exc:  # pragma: no cover - torchattacks is in the lock file
        raise ImportError(_INSTALL) from exc
    return torchattacks


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer; the CPU for a model with neither."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def construct(cls: type, model: nn.Module, **kwargs: Any) -> torchattacks.Attack:
    """Instantiate a torchattacks class and set its device from the model.

    torchattacks prints (to stdout) when a model has no parameters to read the device from; that text is
    captured and sent to the ``logging`` debug channel instead, and the device is set explicitly.
    """
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        attack = cls(model, **kwargs)
    if buffer.getvalue().strip():
        logger.debug("torchattacks %s: %s", cls.__name__, buffer.getvalue().strip())
    attack.set_device(model_device(model))
    return attack
