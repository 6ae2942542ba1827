"""Save and load models in a safe format: tensors + the config as JSON, read with ``weights_only=True``."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._build import build_model
from ._config import ModelConfig

#: Marker and version of the checkpoint layout written by :func:`save_model`.
FORMAT = "qshield-model"
FORMAT_VERSION = 1


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled Python objects (not just tensors and plain data) and was refused unread."""


def save_model(model: nn.Module, config: ModelConfig, path: str | os.PathLike[str]) -> None:
    """Write ``{"format", "version", "config": <JSON text>, "state_dict": <tensors>}`` with ``torch.save``.

    The file holds only tensors, strings and ints, so :func:`load_model` reads it with
    ``torch.load(weights_only=True)``. ``config`` must describe ``model`` (checked: the state-dict keys of
    ``build_model(config)`` must equal the model's).
    """
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    expected = build_model(config.replace(pretrained_path=None), seed=0).state_dict().keys()
    if set(expected) != set(state):
        diff = sorted(set(expected) ^ set(state))[:5]
        raise ValueError(f"config does not describe this model: state-dict keys differ, e.g. {diff}")
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "state_dict": state,
    }
    torch.save(payload, path)


def load_model(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Read a file written by :func:`save_model`; returns ``(model, config)`` with the model in eval mode.

    The model is rebuilt from the stored config (with ``pretrained_path`` dropped: the stored weights replace
    any pretrained ones) and the state dict is loaded with ``strict=True``.

    Raises:
        UnsafeCheckpointError: the file holds pickled objects; ``torch.load(weights_only=True)`` refused them and
            nothing in it was executed.
        ValueError: not a qshield model file, or its config/state dict is invalid.
    """
    if not os.path.isfile(path):
        raise ValueError(f"path={str(path)!r} is not a file")
    try:
        payload: Any = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        culprit = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line), "")
        culprit = culprit.split(". Please")[0]
        raise UnsafeCheckpointError(
            f"refused to load {str(path)!r}: it contains pickled Python objects, not only tensors and plain data, "
            f"and qshield model files are read with torch.load(weights_only=True); nothing in it was run"
            + (f" ({culprit})" if culprit else "")
        ) from err
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a qshield model file (no format={FORMAT!r} marker)")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} has version={payload.get('version')!r}; allowed values: {FORMAT_VERSION}")
    try:
        data = json.loads(payload["config"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} has no valid JSON config: {err}") from err
    config = ModelConfig.from_dict(data)
    model = build_model(config.replace(pretrained_path=None), seed=0)  # seeded: leaves the global RNG alone
    state = payload.get("state_dict")
    if not isinstance(state, Mapping):
        raise ValueError(f"{str(path)!r} has no state_dict mapping")
    model.load_state_dict(state, strict=True)
    model.to(map_location)
    model.eval()
    return model, config
