"""Save and load models in a safe format: tensors + the config as JSON, read with ``weights_only=True``.

A model file also carries a SHA-256 digest of its config and tensors, so that a file damaged in storage or
transit (truncated, or with flipped bytes that the zip container does not catch) is refused with a clear error
instead of loading wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._build import build_model
from ._config import ModelConfig

#: Marker and version of the checkpoint layout written by :func:`save_model`.
FORMAT = "qshield-model"
FORMAT_VERSION = 1


#: What a readable model file is, for error messages.
_ALLOWED = "a model file written by qshield.models.save_model"


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled Python objects (not just tensors and plain data) and was refused unread."""


def state_digest(config_json: str, state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a model file's config text and tensors (names, dtypes, shapes and bytes, by name)."""
    h = hashlib.sha256(config_json.encode("utf-8"))
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_model(model: nn.Module, config: ModelConfig, path: str | os.PathLike[str]) -> None:
    """Write ``{"format", "version", "config": <JSON text>, "state_dict": <tensors>, "sha256"}`` with ``torch.save``.

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
    config_json = json.dumps(config.to_dict(), sort_keys=True)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": config_json,
        "state_dict": state,
        "sha256": state_digest(config_json, state),
    }
    torch.save(payload, path)


def load_model(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Read a file written by :func:`save_model`; returns ``(model, config)`` with the model in eval mode.

    The model is rebuilt from the stored config (with ``pretrained_path`` dropped: the stored weights replace
    any pretrained ones) and the state dict is loaded with ``strict=True``. The file's SHA-256 digest (written
    by :func:`save_model`; files without one are accepted) is checked before any weight is used.

    Raises:
        UnsafeCheckpointError: the file holds pickled objects; ``torch.load(weights_only=True)`` refused them and
            nothing in it was executed.
        ValueError: not a qshield model file; the file is truncated or corrupted (unreadable container, digest
            mismatch); or its config/state dict is invalid. The message names the path.
    """
    if not os.path.isfile(path):
        raise ValueError(f"path={str(path)!r} is not a file; allowed values: {_ALLOWED}")
    try:
        payload: Any = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        culprit = next((line.strip() for line in text.splitlines() if "Unsupported" in line), "")
        culprit = culprit.split(". Please")[0]
        if not culprit:  # weights_only wraps every unpickling failure; only unsupported globals are payloads
            raise _corrupt(path, err) from err
        raise UnsafeCheckpointError(
            f"refused to load {str(path)!r}: it contains pickled Python objects, not only tensors and plain data, "
            f"and qshield model files are read with torch.load(weights_only=True); nothing in it was run"
            f" ({culprit})"
        ) from err
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, struct.error, OSError) as err:
        raise _corrupt(path, err) from err
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a qshield model file (no format={FORMAT!r} marker)")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} has version={payload.get('version')!r}; allowed values: {FORMAT_VERSION}")
    try:
        data = json.loads(payload["config"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} has no valid JSON config: {err}") from err
    state = payload.get("state_dict")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} has no state_dict mapping of tensors; allowed values: {_ALLOWED}")
    expected = payload.get("sha256")
    if expected is not None and expected != state_digest(payload["config"], state):
        raise ValueError(
            f"{str(path)!r} is corrupted: its config and weights do not match the SHA-256 digest stored when it was "
            f"saved (damaged in storage or transit?); allowed values: {_ALLOWED}, unmodified"
        )
    config = ModelConfig.from_dict(data)
    model = build_model(config.replace(pretrained_path=None), seed=0)  # seeded: leaves the global RNG alone
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{str(path)!r}: the weights do not fit the stored config: {err}") from err
    model.to(map_location)
    model.eval()
    return model, config


def _corrupt(path: str | os.PathLike[str], err: BaseException) -> ValueError:
    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else "unexpected end of data"
    return ValueError(
        f"cannot read {str(path)!r}: the file is truncated or corrupted ({type(err).__name__}: {detail}); "
        f"allowed values: {_ALLOWED}"
    )
