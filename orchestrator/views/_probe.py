"""Look at one model of the registry: resolve it, load it safely with what its trial recorded, attack a few images.

Shared by the robustness card (:mod:`orchestrator.views`) and the web page (:mod:`orchestrator.views`):

* :func:`resolve_ref` turns ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or ``models:/<model_id>`` (a
  trial's LoggedModel, e.g. a sweep's classical control that was never registered) into the version, the trial
  run and the LoggedModel behind it, with an error naming what exists when it does not;
* :func:`open_model` loads the weights with :func:`orchestrator.tracking.load_registered`
  (``torch.load(weights_only=True)``) and the trial's recorded ``space.json`` (so the test data and the attacks
  are exactly the trial's);
* :func:`partner_of` finds the model the sweep compares it with: for a hybrid, the sweep's best classical control
  (``control_trial`` of the parent run's ``quantum_gain.json``); for a classical model, the sweep's best hybrid;
* :func:`attack_images` runs one attack of :data:`qshield.attacks.ATTACKS` (seeded, inside the ε-ball) and
  :func:`inspect_batch` reads a model's class probabilities and, for a hybrid, its classical and quantum branch
  probabilities and fusion weight (:meth:`qshield.models.HybridModel.branch_outputs`).
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from torch import nn

from qshield.attacks import AttackConfig, make_attack
from qshield.data import DatasetBundle, dataset_spec
from qshield.evaluation import isolated_rng
from qshield.models import HybridModel, ModelConfig, load_model

from ..space import SweepSpace
from ..trial import MODEL_FILE, read_trial_record
from ..tracking import PARENT, ROLE, SWEEP, TRIAL, SelectionError, load_registered, quote, resolve_tracking_uri

#: what a model URI may look like (error messages)
URI_FORMS = "models:/<name>@<alias>, models:/<name>/<version> or models:/<logged model id>"


class ModelLookupError(ValueError):
    """A model URI that names nothing in the registry (the message lists what exists)."""


@dataclass(frozen=True)
class ModelRef:
    """Where a model of the registry lives.

    Attributes:
        uri: the URI as asked (``models:/qshield-demo@champion``).
        resolved: a URI that stays put: ``models:/<name>/<version>``, or ``models:/<model_id>`` for a LoggedModel.
        run_id: the trial run that trained it (and that its card is logged to).
        name / version: the registered model and version; None for an unregistered LoggedModel.
        model_id: the LoggedModel's id (None when unknown).
        aliases: the version's aliases (``champion``, ``challenger``).
        download_uri: where the files are for an unregistered LoggedModel (its artifact location); None: ``resolved``.
    """

    uri: str
    resolved: str
    run_id: str
    name: str | None = None
    version: str | None = None
    model_id: str | None = None
    aliases: tuple[str, ...] = ()
    download_uri: str | None = None

    @property
    def label(self) -> str:
        """``qshield-demo v3 (@champion)`` or ``logged model m-…``."""
        if self.name is None:
            return f"logged model {self.model_id or self.resolved}"
        alias = f" (@{', @'.join(self.aliases)})" if self.aliases else ""
        return f"{self.name} v{self.version}{alias}"


def _registered_names(client: MlflowClient) -> str:
    names = sorted(m.name for m in client.search_registered_models())
    return ", ".join(map(repr, names)) or "none (register one with `qshield select`)"


def resolve_ref(client: MlflowClient, uri: str) -> ModelRef:
    """The :class:`ModelRef` of ``uri`` (see :data:`URI_FORMS`).

    Raises:
        ModelLookupError: a malformed URI, or a model, alias, version or LoggedModel that does not exist (the
            message names the field and the values that exist).
    """
    if not isinstance(uri, str) or not uri.startswith("models:/") or len(uri) <= len("models:/"):
        raise ModelLookupError(f"model={uri!r} is invalid; allowed values: {URI_FORMS}")
    head, _, rest = uri[len("models:/"):].partition("/")
    name, at, alias = head.partition("@")
    if not at and not rest:  # models:/<model_id>: a LoggedModel
        try:
            logged = client.get_logged_model(head)
        except MlflowException:
            raise ModelLookupError(f"model={uri!r}: no logged model {head!r} and no version given; allowed values: "
                                   f"{URI_FORMS} (registered models: {_registered_names(client)})") from None
        return ModelRef(uri, f"models:/{logged.model_id}", str(logged.source_run_id), model_id=str(logged.model_id),
                        download_uri=str(logged.artifact_location))
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        raise ModelLookupError(f"model={uri!r}: no registered model {name!r}; allowed values: "
                               f"{_registered_names(client)}") from None
    aliases = dict(getattr(registered, "aliases", {}) or {})
    if at:
        if alias not in aliases:
            raise ModelLookupError(f"model={uri!r}: registered model {name!r} has no alias {alias!r}; allowed values: "
                                   f"{', '.join(map(repr, sorted(aliases))) or 'none (set one with `qshield select`)'}")
        version = str(aliases[alias])
    else:
        version = rest.strip("/")
    try:
        mv = client.get_model_version(name, version)
    except MlflowException:
        versions = sorted((str(v.version) for v in client.search_model_versions(f"name = '{quote(name)}'")), key=int)
        raise ModelLookupError(f"model={uri!r}: registered model {name!r} has no version {version!r}; allowed values: "
                               f"{', '.join(versions) or 'none'}") from None
    own_aliases = tuple(sorted(a for a, v in aliases.items() if str(v) == str(mv.version)))
    return ModelRef(uri, f"models:/{name}/{mv.version}", str(mv.run_id), name, str(mv.version),
                    getattr(mv, "model_id", None), own_aliases)


def registry_choices(client: MlflowClient) -> list[ModelRef]:
    """Every alias and version of every registered model, aliases first (what the web page offers)."""
    out: list[ModelRef] = []
    for registered in sorted(client.search_registered_models(), key=lambda m: m.name):
        aliases = dict(getattr(registered, "aliases", {}) or {})
        versions = sorted(client.search_model_versions(f"name = '{quote(registered.name)}'"),
                          key=lambda v: int(v.version))
        by_version = {str(v.version): v for v in versions}
        for alias, version in sorted(aliases.items(), key=lambda kv: (kv[0] != "champion", kv[0])):
            mv = by_version.get(str(version))
            if mv is not None:
                out.append(ModelRef(f"models:/{registered.name}@{alias}", f"models:/{registered.name}/{mv.version}",
                                    str(mv.run_id), registered.name, str(mv.version), getattr(mv, "model_id", None),
                                    (alias,)))
        for mv in versions:
            own = tuple(sorted(a for a, v in aliases.items() if str(v) == str(mv.version)))
            out.append(ModelRef(f"models:/{registered.name}/{mv.version}", f"models:/{registered.name}/{mv.version}",
                                str(mv.run_id), registered.name, str(mv.version), getattr(mv, "model_id", None), own))
    return out


@dataclass
class LoadedModel:
    """A model of the registry with what its trial recorded: weights, config, trial parameters and sweep space."""

    ref: ModelRef
    model: nn.Module
    config: ModelConfig
    params: dict[str, Any]
    space: SweepSpace
    files: Path

    @property
    def is_hybrid(self) -> bool:
        return isinstance(self.model, HybridModel)

    @property
    def arch(self) -> str:
        return str(getattr(self.config.arch, "value", self.config.arch))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images the model takes."""
        return tuple(int(v) for v in self.config.input_shape)  # type: ignore[return-value]

    @property
    def dataset(self) -> str:
        return self.space.dataset.value

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(dataset_spec(self.dataset).class_names)

    def attack_config(self, name: str, eps: float | None = None) -> AttackConfig:
        """Attack ``name`` with the trial's own settings (ε and overrides from the space) or ``eps`` instead,
        resolved for the dataset: step sizes that can reach ε (:meth:`qshield.attacks.AttackConfig.resolve`)."""
        from ..trial import space_attacks

        own = {c.name: c for c in space_attacks(self.space)}
        base = own.get(name) or AttackConfig(name)
        if eps is not None:
            base = AttackConfig(base.name, eps, {k: v for k, v in base.params.items() if k != "alpha"})
        return base.resolve(self.dataset)


def open_model(ref: ModelRef, tracking_uri: str | None = None) -> LoadedModel:
    """Download and load ``ref`` (safe ``torch.load``) with its recorded ``params.json`` and ``space.json``."""
    _, params, files = load_registered(ref.download_uri or ref.resolved, resolve_tracking_uri(tracking_uri))
    model, config = load_model(files / MODEL_FILE)
    try:
        params, space = read_trial_record(files, source=ref.uri)
    except ValueError as exc:
        raise SelectionError(str(exc)) from None
    return LoadedModel(ref, model.eval(), config, params, space, files)


def test_data(space: SweepSpace) -> DatasetBundle:
    """The trial's data, exactly as it was split and limited (built-in datasets load offline)."""
    from ..trial import load_trial_data

    return load_trial_data(space)


@dataclass(frozen=True)
class Partner:
    """The model a sweep compares another with: its best classical control, or its best hybrid."""

    ref: ModelRef
    role: str  # "classical control" or "best hybrid"
    trial_id: str
    arch: str


def partner_of(client: MlflowClient, ref: ModelRef) -> Partner | None:
    """The sweep's comparison model for ``ref`` (None when its sweep has none, or it is that model itself).

    The sweep's parent run (``mlflow.parentRunId`` of the trial run) records in ``quantum_gain.json`` its best
    hybrid (``hybrid_trial``) and best classical control (``control_trial``), each the pick of the sweep's rule
    among its kind. A hybrid is compared with the control, a classical model with the best hybrid; the partner's
    model is the LoggedModel of that trial's run (registered or not).
    """
    run = client.get_run(ref.run_id)
    parent_id = run.data.tags.get(PARENT)
    sweep = run.data.tags.get(SWEEP)
    own_trial = run.data.tags.get(TRIAL)
    if not parent_id or not sweep:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(parent_id, "quantum_gain.json", tmp)
        except (MlflowException, OSError):
            return None
        gain = json.loads(Path(path).read_text())
    if not gain.get("available"):
        return None
    from ..runtime import CLASSICAL_ARCHS

    own_arch = str(run.data.params.get("arch", ""))
    if own_arch in CLASSICAL_ARCHS:
        trial, role, arch = gain.get("hybrid_trial"), "best hybrid", gain.get("hybrid_arch", "hybrid")
    else:
        trial, role, arch = gain.get("control_trial"), "classical control", gain.get("control_arch", "")
    if not trial or trial == own_trial:
        return None
    found = client.search_runs(
        [run.info.experiment_id],
        filter_string=(f"tags.`{ROLE}` = 'trial' and tags.`{SWEEP}` = '{quote(sweep)}' and "
                       f"tags.`{TRIAL}` = '{quote(trial)}'"),
        max_results=1,
    )
    if not found or not found[0].data.tags.get("qshield.model_id"):
        return None
    run_id = found[0].info.run_id
    versions = sorted(client.search_model_versions(f"run_id = '{quote(run_id)}'"),
                      key=lambda v: (v.name, int(v.version)))
    # the registered version when there is one (its label says so), else the trial's LoggedModel
    uri = (f"models:/{versions[0].name}/{versions[0].version}" if versions
           else f"models:/{found[0].data.tags['qshield.model_id']}")
    return Partner(resolve_ref(client, uri), role, str(trial), str(arch))


def attack_images(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AttackConfig, *,
                  seed: int = 0) -> torch.Tensor:
    """Adversarial versions of ``images [N, C, H, W]`` (untargeted, away from ``labels``) by the resolved
    ``config``, seeded; each stays in [0, 1] and, for an L∞ attack, inside its ε-ball (checked)."""
    model.eval()
    attack = make_attack(model, config)
    with isolated_rng(seed, images.device):
        adv = attack(images, labels).detach().clamp(0.0, 1.0)
    if config.eps is not None and config.preset.norm.value == "linf":
        dist = float((adv - images).abs().amax()) if adv.numel() else 0.0
        if dist > config.eps + 1e-5:
            raise RuntimeError(f"attack {config.name!r} left its ε-ball: {dist:.6g} > eps={config.eps:.6g}")
    return adv


@dataclass(frozen=True)
class Inspection:
    """What a model says about a batch: class probabilities ``[N, K]`` and predictions ``[N]``; for a hybrid, the
    classical and quantum branch probabilities ``[N, K]`` and the fusion weight ``[N]`` (the classical share:
    ``w_c`` for fixed/learned fusion, the gate ``alpha(x)`` for gated fusion)."""

    probs: np.ndarray
    pred: np.ndarray
    p_classical: np.ndarray | None = None
    p_quantum: np.ndarray | None = None
    fusion_weight: np.ndarray | None = None


@torch.no_grad()
def inspect_batch(model: nn.Module, images: torch.Tensor) -> Inspection:
    """Run ``model`` on ``images`` (eval mode) and read its probabilities (and a hybrid's branches)."""
    model.eval()
    if isinstance(model, HybridModel):
        out = model.branch_outputs(images)
        probs = torch.softmax(out.log_probs, dim=1)
        return Inspection(probs.numpy(), probs.argmax(dim=1).numpy(), out.log_p_c.exp().numpy(),
                          out.log_p_q.exp().numpy(), out.weight.reshape(-1).expand(len(images)).numpy().copy())
    probs = torch.softmax(model(images), dim=1)
    return Inspection(probs.numpy(), probs.argmax(dim=1).numpy())


def amplify(perturbation: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A perturbation ``adv - clean`` made visible: ``0.5 + k·δ`` with ``k = 0.5 / max|δ|`` (grey = unchanged,
    lighter = brighter pixels); returns the image in [0, 1] and the amplification ``k`` (1 when δ = 0)."""
    peak = float(perturbation.abs().max()) if perturbation.numel() else 0.0
    factor = 0.5 / peak if peak > 0 else 1.0
    return (0.5 + factor * perturbation).clamp(0.0, 1.0), factor


def png_bytes(image: torch.Tensor | np.ndarray, *, scale: int = 1) -> bytes:
    """A ``[C, H, W]`` image in [0, 1] (C = 1 or 3) as PNG bytes, enlarged ``scale`` times (nearest neighbour)."""
    from PIL import Image

    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    pil = Image.fromarray(arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0)))
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
