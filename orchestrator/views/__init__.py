"""What people look at: the robustness card of a registered model version (``qshield card``, automatic for the
champion) and ``qshield app``, a web page over the registry; both on a shared probe that resolves a registry URI,
loads the model with its recorded space, finds the sweep's comparison model and attacks a few images.
See ``docs/card-and-app.md``.
"""

from __future__ import annotations

from ._app import (
    ALLOWED_TYPES,
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_UPLOAD_BYTES,
    PASSWORD_ENV,
    USER_ENV,
    AppConfigError,
    InputError,
    create_app,
    credentials_for,
    is_loopback,
    redact,
    serve,
    to_model_input,
    validate_upload,
)
from ._card import CARD_DIR, CARD_TAG, RobustnessCard, build_card, champion_card, make_card, select_and_card
from ._probe import ModelLookupError, ModelRef

__all__ = [
    "ALLOWED_TYPES",
    "CARD_DIR",
    "CARD_TAG",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MAX_UPLOAD_BYTES",
    "PASSWORD_ENV",
    "USER_ENV",
    "AppConfigError",
    "InputError",
    "ModelLookupError",
    "ModelRef",
    "RobustnessCard",
    "build_card",
    "champion_card",
    "create_app",
    "credentials_for",
    "is_loopback",
    "make_card",
    "redact",
    "select_and_card",
    "serve",
    "to_model_input",
    "validate_upload",
]
