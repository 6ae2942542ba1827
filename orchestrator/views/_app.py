"""``qshield app``: a web page over the MLflow registry — pick a model, an image and an attack, see what happens.

A FastAPI application (FastAPI and uvicorn come with MLflow's server, so nothing else is installed) serving one
self-contained HTML page (``static/index.html``: inline CSS and script, no external fetch) and a small JSON
API under ``/api``:

* ``GET /api/models``: every alias and version of every registered model, the attacks of
  :data:`qshield.attacks.ATTACKS` and the upload limits;
* ``GET /api/test-images?model=URI``: a few test images of the model's recorded dataset (the trial's own split),
  the model's input shape, classes, the sweep's threat ε and its comparison model
  (:func:`orchestrator.views._probe.partner_of`: the classical control of a hybrid, the best hybrid of a classical model);
* ``POST /api/upload``: the raw bytes of a PNG or JPEG (at most :data:`MAX_UPLOAD_BYTES`, checked while
  reading); checked for type (magic bytes and decoder), size and dimensions before it is kept; answers an id;
* ``POST /api/run``: ``{"model", "compare", "attack", "eps", "test_index" | "upload_id"}``: the image converted
  to each model's input (grey/RGB, resized), its prediction and class probabilities, the attack's adversarial
  image, the amplified perturbation, the prediction after, and for a hybrid the classical and quantum branch
  probabilities and the fusion weight — for the model and the comparison model side by side.

Every field is validated before any compute, with an error naming the field and the allowed values. The page
binds to 127.0.0.1 by default; bound to any other address it refuses to start unless ``QSHIELD_APP_USER`` and
``QSHIELD_APP_PASSWORD`` are set, and then every request needs HTTP basic authentication (also on localhost when
they are set). The password is never printed or logged.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import logging
import os
import secrets
import threading
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request  # module level: FastAPI reads the handlers' annotations from module globals
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from qshield.attacks import ATTACKS, get_preset
from qshield.attacks import check_eps

from ._probe import (
    LoadedModel,
    ModelLookupError,
    amplify,
    attack_images,
    inspect_batch,
    open_model,
    partner_of,
    png_bytes,
    registry_choices,
    resolve_ref,
    test_data,
)
from ..tracking import existing_store, resolve_tracking_uri

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("static") / "index.html"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
USER_ENV, PASSWORD_ENV = "QSHIELD_APP_USER", "QSHIELD_APP_PASSWORD"
#: largest upload accepted (bytes)
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
#: largest width/height of an uploaded image (pixels), and the smallest
MAX_SIDE, MIN_SIDE = 4096, 8
ALLOWED_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}
_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
#: how many test images the page offers, how many models and uploads the server keeps in memory
N_TEST_IMAGES, MODEL_CACHE, UPLOAD_CACHE = 12, 6, 32
#: display size of images on the page (pixels, nearest-neighbour enlargement)
DISPLAY_PX = 112


class AppConfigError(ValueError):
    """The app cannot start as configured (e.g. exposed beyond localhost without credentials)."""


class InputError(ValueError):
    """A request field is invalid; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------------------------------------------
# exposure and authentication


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def credentials_for(host: str, environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """The basic-auth credentials from ``QSHIELD_APP_USER`` / ``QSHIELD_APP_PASSWORD`` (None when neither is set).

    Raises:
        AppConfigError: only one of the two is set, or ``host`` is not a loopback address and they are not set.
    """
    env = os.environ if environ is None else environ
    user, password = env.get(USER_ENV) or "", env.get(PASSWORD_ENV) or ""
    if bool(user) != bool(password):
        raise AppConfigError(f"set both {USER_ENV} and {PASSWORD_ENV}, or neither")
    if user:
        return user, password
    if not is_loopback(host):
        raise AppConfigError(
            f"--host {host} exposes the app beyond this machine; refusing to start without authentication: set "
            f"{USER_ENV} and {PASSWORD_ENV} (HTTP basic auth; use TLS in front of it), or bind to 127.0.0.1"
        )
    return None


def redact(uri: str) -> str:
    """A URI with any password replaced by ``***`` (safe to print)."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparsable URI>"
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ----------------------------------------------------------------------------------------------------------------
# uploads


@dataclass(frozen=True)
class Upload:
    """A validated uploaded image (kept at most 512 px per side; converted per model at run time)."""

    image: Any  # PIL.Image.Image, mode "L" or "RGB"
    format: str
    width: int
    height: int
    size_bytes: int


def validate_upload(data: bytes, content_type: str | None = None) -> Upload:
    """Check an uploaded file before anything is computed from it: size, type (magic bytes, then the decoder's
    own verdict), dimensions, decodability.

    Raises:
        InputError: with HTTP status 413 (too large), 415 (not PNG/JPEG) or 400 (empty, undecodable, bad size).
    """
    from PIL import Image, UnidentifiedImageError

    allowed = f"allowed: {' or '.join(ALLOWED_TYPES)} images up to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB"
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(f"file: {len(data) / 1024 / 1024:.1f} MB is larger than the limit; {allowed}", 413)
    if not data:
        raise InputError(f"file: empty; {allowed}")
    kind = next((k for magic, k in _MAGIC.items() if data.startswith(magic)), None)
    if kind is None:
        said = f" (sent as {content_type})" if content_type else ""
        raise InputError(f"file: not a PNG or JPEG image{said}; {allowed}", 415)
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ALLOWED_TYPES:
                raise InputError(f"file: decoded as {im.format}, not PNG or JPEG; {allowed}", 415)
            width, height = im.size
            if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
                raise InputError(f"file: {width}x{height} pixels; allowed: width and height in {MIN_SIDE}..{MAX_SIDE}")
            im.load()
            grey = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            image = im.convert("L" if grey else "RGB")
            fmt = str(im.format)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"file: the {kind} image cannot be decoded ({type(exc).__name__}); {allowed}") from None
    image.thumbnail((512, 512))
    return Upload(image, fmt, width, height, len(data))


def to_model_input(image: Any, shape: tuple[int, int, int]) -> torch.Tensor:
    """A PIL image as the model's input ``[1, C, H, W]`` in [0, 1]: grey or RGB as the model takes, resized."""
    from PIL import Image

    c, h, w = shape
    converted = image.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BOX)
    arr = np.asarray(converted, dtype=np.float32) / 255.0
    arr = arr[None] if c == 1 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))[None]


# ----------------------------------------------------------------------------------------------------------------
# the application state


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _scale(shape: tuple[int, int, int]) -> int:
    return max(1, DISPLAY_PX // max(shape[1], shape[2]))


class AppState:
    """Models (by resolved version) and uploads kept in memory, bounded; one computation at a time."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.models: OrderedDict[str, tuple[LoadedModel, Any]] = OrderedDict()
        self.uploads: OrderedDict[str, Upload] = OrderedDict()
        self.lock = threading.Lock()

    def model(self, uri: Any, field: str = "model") -> tuple[LoadedModel, Any]:
        """The loaded model and its test data for ``uri`` (an alias is resolved on every call: it may move)."""
        if not isinstance(uri, str) or not uri:
            raise InputError(f"{field}: missing; allowed values: a registry URI from /api/models")
        try:
            ref = resolve_ref(self.client, uri)
        except ModelLookupError as exc:
            raise InputError(f"{field}: {exc}") from None
        key = ref.resolved
        if key in self.models:
            self.models.move_to_end(key)
            loaded, bundle = self.models[key]
            return LoadedModel(ref, loaded.model, loaded.config, loaded.params, loaded.space, loaded.files), bundle
        loaded = open_model(ref, self.tracking_uri)
        bundle = test_data(loaded.space)
        self.models[key] = (loaded, bundle)
        while len(self.models) > MODEL_CACHE:
            self.models.popitem(last=False)
        return loaded, bundle

    def add_upload(self, upload: Upload) -> str:
        token = secrets.token_urlsafe(12)
        self.uploads[token] = upload
        while len(self.uploads) > UPLOAD_CACHE:
            self.uploads.popitem(last=False)
        return token


def _class_name(names: tuple[str, ...], k: int) -> str:
    return names[k] if 0 <= k < len(names) else str(k)


def _outcome(loaded: LoadedModel, images: torch.Tensor, which: int = 0) -> dict[str, Any]:
    seen = inspect_batch(loaded.model, images)
    probs = [float(p) for p in seen.probs[which]]
    pred = int(seen.pred[which])
    out: dict[str, Any] = {"pred": pred, "pred_name": _class_name(loaded.class_names, pred), "probs": probs,
                           "confidence": probs[pred]}
    if seen.p_classical is not None:
        out["branches"] = {"p_classical": [float(v) for v in seen.p_classical[which]],
                           "p_quantum": [float(v) for v in seen.p_quantum[which]],  # type: ignore[index]
                           "fusion_weight": float(seen.fusion_weight[which])}  # type: ignore[index]
    return out


def run_one(loaded: LoadedModel, image: torch.Tensor, label: int | None, attack: str, eps: float | None,
            seed: int = 0) -> dict[str, Any]:
    """Predict, attack (untargeted, away from ``label``, or from the clean prediction when there is no label),
    predict again; the images as PNG data URIs."""
    clean = _outcome(loaded, image)
    target = clean["pred"] if label is None else int(label)
    config = loaded.attack_config(attack, eps if get_preset(attack).uses_eps else None)
    adv = attack_images(loaded.model, image, torch.tensor([target]), config, seed=seed)
    after = _outcome(loaded, adv)
    delta, factor = amplify(adv[0] - image[0])
    scale = _scale(loaded.input_shape)
    return {
        "model": loaded.ref.label, "uri": loaded.ref.uri, "arch": loaded.arch, "hybrid": loaded.is_hybrid,
        "input_shape": list(loaded.input_shape), "class_names": list(loaded.class_names),
        "attack": config.name, "eps": config.eps, "params": {k: v for k, v in config.params.items()},
        "label": label, "attacked_away_from": target, "clean": clean, "adversarial": after,
        # fooled: right (or, for an upload, the model's own answer) before the attack and different after it
        "misclassified_clean": label is not None and clean["pred"] != label,
        "flipped": clean["pred"] == target and after["pred"] != target,
        "linf": float((adv - image).abs().max()), "amplification": factor,
        "images": {"clean": _data_uri(png_bytes(image[0], scale=scale)),
                   "adversarial": _data_uri(png_bytes(adv[0], scale=scale)),
                   "perturbation": _data_uri(png_bytes(delta, scale=scale))},
    }


def _parse_eps(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"eps: {value!r} is not a number; allowed values: a number in [0, 1]") from None
    try:
        return check_eps(value)
    except ValueError as exc:
        raise InputError(f"eps: {exc}") from None


def _parse_attack(value: Any) -> str:
    try:
        return get_preset(value).name
    except ValueError as exc:
        raise InputError(f"attack: {exc}") from None


def handle_run(state: AppState, body: Any) -> dict[str, Any]:
    """``POST /api/run`` (see the module docstring); every field is checked before any model is run."""
    if not isinstance(body, dict):
        raise InputError("body: expected a JSON object with model, attack, eps and test_index or upload_id")
    unknown = sorted(set(body) - {"model", "compare", "attack", "eps", "test_index", "upload_id"})
    if unknown:
        raise InputError(f"{unknown[0]}: unknown field; allowed fields: model, compare, attack, eps, test_index, "
                         "upload_id")
    attack = _parse_attack(body.get("attack"))
    eps = _parse_eps(body.get("eps"))
    if ATTACKS[attack].uses_eps and eps is None:
        raise InputError(f"eps: missing; attack {attack!r} needs a number in [0, 1]")
    has_index, has_upload = body.get("test_index") is not None, bool(body.get("upload_id"))
    if has_index == has_upload:
        raise InputError("image: give exactly one of test_index (a test image) or upload_id (an uploaded image)")
    loaded, bundle = state.model(body.get("model"))
    compare = None
    if body.get("compare"):
        compare, _ = state.model(body["compare"], "compare")
        if compare.dataset != loaded.dataset and has_index:
            raise InputError(f"compare: {compare.ref.label} was trained on {compare.dataset}, the model on "
                             f"{loaded.dataset}; allowed: a model of the same dataset")
    images, labels = bundle.test.tensors
    if has_index:
        index = body["test_index"]
        n = min(N_TEST_IMAGES, len(labels))
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise InputError(f"test_index: {index!r}; allowed values: an integer in 0..{n - 1}")
        image, label = images[index:index + 1], int(labels[index])
        source: dict[str, Any] = {"kind": "test image", "index": index, "label": label,
                                  "label_name": _class_name(loaded.class_names, label)}
        inputs = {id(loaded): image}
        if compare is not None:
            inputs[id(compare)] = image if compare.input_shape == loaded.input_shape else None
            if inputs[id(compare)] is None:
                raise InputError(f"compare: {compare.ref.label} takes {compare.input_shape}, the test image is "
                                 f"{loaded.input_shape}; allowed: a model with the same input shape")
    else:
        upload = state.uploads.get(str(body["upload_id"]))
        if upload is None:
            raise InputError("upload_id: unknown or expired; upload the image again")
        label = None
        source = {"kind": "upload", "format": upload.format, "width": upload.width, "height": upload.height,
                  "label": None}
        inputs = {id(loaded): to_model_input(upload.image, loaded.input_shape)}
        if compare is not None:
            inputs[id(compare)] = to_model_input(upload.image, compare.input_shape)
    with state.lock:
        result = {"source": source, "attack": attack, "eps": eps,
                  "model": run_one(loaded, inputs[id(loaded)], label, attack, eps)}
        if compare is not None:
            result["compare"] = run_one(compare, inputs[id(compare)], label, attack, eps)
    return result


def handle_test_images(state: AppState, model: Any) -> dict[str, Any]:
    loaded, bundle = state.model(model)
    images, labels = bundle.test.tensors
    scale = max(1, 56 // max(loaded.input_shape[1:]))
    partner = partner_of(state.client, loaded.ref)
    return {
        "model": loaded.ref.label, "uri": loaded.ref.uri, "arch": loaded.arch, "hybrid": loaded.is_hybrid,
        "dataset": loaded.dataset, "input_shape": list(loaded.input_shape), "class_names": list(loaded.class_names),
        "threat_eps": loaded.space.threat_eps(),
        "strongest_attack": state.client.get_run(loaded.ref.run_id).data.tags.get("qshield.strongest_attack"),
        "partner": None if partner is None else {"uri": partner.ref.uri, "label": f"{partner.role}: "
                                                 f"{partner.ref.label} (trial {partner.trial_id}, {partner.arch})"},
        "images": [{"index": i, "label": int(labels[i]), "label_name": _class_name(loaded.class_names, int(labels[i])),
                    "png": _data_uri(png_bytes(images[i], scale=scale))}
                   for i in range(min(N_TEST_IMAGES, len(labels)))],
    }


def handle_models(state: AppState) -> dict[str, Any]:
    return {
        "models": [{"uri": r.uri, "label": r.label if r.uri.endswith(f"/{r.version}") else f"{r.uri[len('models:/'):]}"
                    f" → v{r.version}"} for r in registry_choices(state.client)],
        "attacks": [{"name": p.name, "title": p.title, "uses_eps": p.uses_eps, "norm": p.norm.value,
                     "white_box": p.white_box} for p in ATTACKS.values()],
        "max_upload_bytes": MAX_UPLOAD_BYTES, "allowed_types": list(ALLOWED_TYPES.values()),
    }


# ----------------------------------------------------------------------------------------------------------------
# FastAPI


def create_app(tracking_uri: str | None = None, *, credentials: tuple[str, str] | None = None) -> FastAPI:
    """The FastAPI application over the registry at ``tracking_uri``; with ``credentials`` every request needs
    HTTP basic authentication with them."""
    state = AppState(resolve_tracking_uri(tracking_uri))
    app = FastAPI(title="qshield", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.qshield = state

    if credentials is not None:
        user, password = (c.encode() for c in credentials)

        @app.middleware("http")
        async def basic_auth(request: Request, call_next: Any) -> Any:
            header = request.headers.get("authorization", "")
            ok = False
            if header.lower().startswith("basic "):
                try:
                    given_user, _, given_password = base64.b64decode(header[6:].strip(), validate=True).partition(b":")
                except (binascii.Error, ValueError):
                    given_user, given_password = b"", b""
                ok = secrets.compare_digest(given_user, user) & secrets.compare_digest(given_password, password)
            if not ok:
                return Response("authentication required", status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="qshield", charset="UTF-8"'})
            return await call_next(request)

    def error(exc: Exception) -> JSONResponse:
        status = exc.status if isinstance(exc, InputError) else 400
        return JSONResponse({"error": str(exc)}, status_code=status)

    async def guarded(fn: Any, *args: Any) -> Any:
        try:
            return JSONResponse(await run_in_threadpool(fn, *args))
        except InputError as exc:
            return error(exc)
        except Exception as exc:  # noqa: BLE001 - the page shows what went wrong; the server keeps running
            log.exception("request failed")
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline'; "
                                       "script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff"})

    @app.get("/api/models")
    async def models() -> Any:
        return await guarded(handle_models, state)

    @app.get("/api/test-images")
    async def test_images(model: str = "") -> Any:
        return await guarded(handle_test_images, state, model)

    @app.post("/api/upload")
    async def upload(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
            return error(InputError(f"file: {int(declared) / 1024 / 1024:.1f} MB is larger than the limit; allowed: "
                                    f"PNG or JPEG images up to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB", 413))
        data = bytearray()
        async for chunk in request.stream():
            data.extend(chunk)
            if len(data) > MAX_UPLOAD_BYTES:
                return error(InputError(f"file: larger than the limit; allowed: PNG or JPEG images up to "
                                        f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB", 413))
        try:
            checked = validate_upload(bytes(data), request.headers.get("content-type"))
        except InputError as exc:
            return error(exc)
        token = state.add_upload(checked)
        preview = checked.image.copy()
        preview.thumbnail((112, 112))
        buf = io.BytesIO()
        preview.save(buf, format="PNG")
        return JSONResponse({"upload_id": token, "format": checked.format, "width": checked.width,
                             "height": checked.height, "bytes": checked.size_bytes,
                             "preview": _data_uri(buf.getvalue())})

    @app.post("/api/run")
    async def run(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return error(InputError("body: not JSON; expected an object with model, attack, eps and test_index or "
                                    "upload_id"))
        return await guarded(handle_run, state, body)

    return app


def serve(tracking_uri: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Start the app with uvicorn (blocking). Raises :class:`AppConfigError` before binding when exposed without
    credentials."""
    import uvicorn

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise AppConfigError(f"--port {port!r}; allowed values: an integer in 0..65535")
    credentials = credentials_for(host)
    uri = existing_store(tracking_uri)  # the app reads: a mistyped path must not become an empty store
    app = create_app(uri, credentials=credentials)
    shown = f"[{host}]" if ":" in host else host
    auth = f"basic auth as user {credentials[0]!r}" if credentials else "no authentication (local only)"
    print(f"qshield app: http://{shown}:{port}  (registry at {redact(uri)}; {auth})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


__all__ = [
    "ALLOWED_TYPES", "AppConfigError", "InputError", "MAX_UPLOAD_BYTES", "Upload", "create_app", "credentials_for",
    "handle_run", "is_loopback", "redact", "serve", "to_model_input", "validate_upload",
]
