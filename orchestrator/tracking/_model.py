"""A trial's model as a real MLflow Model: logged with MLflow 3's model API, loadable by MLflow's own tools.

:func:`log_trial_model` logs the model directory a trial wrote (``model.pt`` weights + config, ``params.json``,
``space.json``, ``metrics.json``, ``input_example.npy``) as a ``pyfunc`` model *from code*
(:mod:`orchestrator.pyfunc_classifier`): a ``LoggedModel`` linked to the trial's run, with a tensor signature
``[N, C, H, W] float32 -> [N, classes] float32`` and two real test images as input example. Its files sit in
the model's ``artifacts/`` folder, so ``models:/<name>@champion`` gives MLflow users
``mlflow.pyfunc.load_model(...).predict(images)`` and ``mlflow models serve -m ... --env-manager local``, and
qshield's own tools the weights (:func:`orchestrator.tracking.load_registered`).

MLflow reads the tracking and registry URIs from process-wide state in places that take no URI argument (the
fluent ``log_model``, and the registry store resolving a ``models:/<model_id>`` source when a version is
created or loaded); :func:`use_tracking_uri` sets both for the duration of a call and restores them after.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

#: The code MLflow runs to load the model.
PYFUNC_CODE = Path(__file__).with_name("pyfunc_classifier.py")
#: Files of a trial's model directory that travel with the MLflow model (key: name in ``context.artifacts``).
MODEL_FILES = {
    "weights": "model.pt",
    "params": "params.json",
    "space": "space.json",
    "metrics": "metrics.json",
    "input_example": "input_example.npy",
}
#: Name of the logged model inside its run (``runs:/<run>/model`` in the UI's run view).
MODEL_NAME = "model"


def pip_requirements() -> list[str]:
    """What a fresh environment needs to load the model: qshield and its pinned torch/numpy/mlflow."""
    out = []
    for pkg in ("qshield", "torch", "numpy", "mlflow"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:  # pragma: no cover - qshield runs from a checkout without metadata
            out.append(pkg)
    return out


@contextlib.contextmanager
def use_tracking_uri(tracking_uri: str, registry_uri: str | None = None) -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs set to these inside the block and put back after,
    including "not set" (then ``$MLFLOW_TRACKING_URI`` keeps working). ``registry_uri`` default:
    ``$MLFLOW_REGISTRY_URI``, else the tracking URI.

    MLflow has no public way to read whether a URI was set explicitly, so the previous values are read from
    the two module globals its own ``_use_tracking_uri`` context manager saves; ``set_tracking_uri`` and
    ``set_registry_uri`` also write (or, for None, delete) ``$MLFLOW_TRACKING_URI`` / ``$MLFLOW_REGISTRY_URI``, so
    both variables are put back as they were too.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    before = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri or env["MLFLOW_REGISTRY_URI"] or tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _fluent_run(tracking_uri: str, run_id: str) -> Iterator[None]:
    """MLflow's fluent API pointed at ``tracking_uri`` and run ``run_id`` inside the block."""
    import mlflow

    with use_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        yield


def signature_for(input_shape: tuple[int, ...], num_classes: int) -> Any:
    """``[-1, C, H, W] float32 -> [-1, num_classes] float32`` as an MLflow tensor signature."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *input_shape))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


class UntrustedModelError(RuntimeError):
    """A downloaded model would run code other than qshield's own pyfunc file (or unpickle a Python object)."""


def load_checked_pyfunc(local_dir: str | os.PathLike[str]) -> Any:
    """``mlflow.pyfunc.load_model`` on a downloaded qshield model, only after checking that loading it runs
    nothing but qshield's own code: MLflow's code-model loader, and a model code file byte-identical to
    :data:`PYFUNC_CODE` (a tampered artifact store cannot make the registry's verification execute its code).

    Raises:
        UntrustedModelError: another loader (e.g. a cloudpickled ``python_model``) or different code.
    """
    import hashlib

    import mlflow
    import yaml

    local = Path(local_dir)
    meta = yaml.safe_load((local / "MLmodel").read_text())
    pyfunc = (meta or {}).get("flavors", {}).get("python_function", {})
    if pyfunc.get("loader_module") != "mlflow.pyfunc.loaders.code_model" or pyfunc.get("python_model"):
        raise UntrustedModelError(f"{local} is not a qshield model from code (loader "
                                  f"{pyfunc.get('loader_module')!r}); refusing to load it")
    code = local / PYFUNC_CODE.name
    digest = hashlib.sha256(code.read_bytes()).hexdigest() if code.is_file() else None
    if digest != hashlib.sha256(PYFUNC_CODE.read_bytes()).hexdigest():
        raise UntrustedModelError(f"{code} differs from qshield's {PYFUNC_CODE.name}; refusing to run it")
    return mlflow.pyfunc.load_model(str(local))


def log_trial_model(tracking_uri: str, run_id: str, model_dir: str | os.PathLike[str], step: int = 0) -> str:
    """Log ``model_dir`` (written by a trial) as the pyfunc model of run ``run_id``; returns its ``model_id``.
    ``step``: the run's metrics logged at this step are linked to the model too (MLflow's model view and
    ``mlflow.search_logged_models`` show and filter by them); a trial passes the step of its final metrics.

    Raises:
        FileNotFoundError: a file of :data:`MODEL_FILES` is missing from ``model_dir``.
    """
    import mlflow

    from qshield.models import load_model

    model_dir = Path(model_dir)
    missing = [name for name in MODEL_FILES.values() if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{model_dir} lacks {', '.join(missing)}; it was not written by a qshield trial")
    _, config = load_model(model_dir / MODEL_FILES["weights"])
    example = np.load(model_dir / MODEL_FILES["input_example"], allow_pickle=False).astype(np.float32)
    with _fluent_run(tracking_uri, run_id), warnings.catch_warnings():
        # the signature is given explicitly (a tensor schema); MLflow's advice to add type hints to predict()
        # instead would replace it with one inferred from Python types
        warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(PYFUNC_CODE),
            artifacts={key: str(model_dir / name) for key, name in MODEL_FILES.items()},
            signature=signature_for(tuple(config.input_shape), int(config.num_classes)),
            input_example=example,
            pip_requirements=pip_requirements(),
            tags={"qshield.arch": str(getattr(config.arch, "value", config.arch))},
            step=step,
        )
    return str(info.model_id)
