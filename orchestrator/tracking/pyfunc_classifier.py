"""The MLflow ``pyfunc`` model of a qshield classifier, logged as *code* (MLflow's "models from code").

MLflow executes this file when it loads the model (``mlflow.pyfunc.load_model``, ``mlflow models serve``);
nothing is unpickled: the weights are read by :func:`qshield.models.load_model` with
``torch.load(weights_only=True)`` and a SHA-256 check. It needs only ``qshield`` (and its torch) installed where
the model is loaded, e.g. ``--env-manager local`` in the environment of the qshield wheel.

``predict(images)``: ``images`` is a float32 array ``[N, C, H, W]`` with pixels in [0, 1] (no normalisation,
the layout the model was trained on); the result is a float32 array ``[N, num_classes]`` of class
probabilities (softmax of the model's logits / log-probabilities), rows summing to 1.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import numpy as np


class QShieldClassifier(mlflow.pyfunc.PythonModel):
    """A trained qshield model behind MLflow's pyfunc interface (module docstring)."""

    def load_context(self, context: Any) -> None:
        from qshield.models import load_model

        self.model, self.config = load_model(context.artifacts["weights"], map_location="cpu")
        self.model.eval()
        self.input_shape = tuple(int(d) for d in self.config.input_shape)

    # ``np.ndarray``: a hint MLflow accepts without inferring a schema from it (the logged signature comes from the
    # input example, a tensor spec); an unhinted predict makes MLflow warn on every load and log.
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        import torch

        x = np.asarray(model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input)
        if x.ndim == len(self.input_shape):  # one image
            x = x[None]
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"images must have shape [N, {', '.join(map(str, self.input_shape))}] (float pixels in [0, 1]); "
                f"got {list(x.shape)}"
            )
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"images must be numbers in [0, 1]; got dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all() or x.min(initial=0.0) < 0.0 or x.max(initial=0.0) > 1.0:
            raise ValueError("images must be finite pixels in [0, 1] (no normalisation)")
        with torch.no_grad():
            scores = self.model(torch.from_numpy(np.ascontiguousarray(x)))
            return torch.softmax(scores, dim=1).numpy().astype(np.float32)


mlflow.models.set_model(QShieldClassifier())
