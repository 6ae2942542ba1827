"""Adaptive attacks for models that hide part of their computation: BPDA, EOT and transfer, chosen from what the
model declares (Athalye, Carlini, Wagner 2018, "Obfuscated Gradients Give a False Sense of Security",
arXiv:1802.00420; Tramèr, Carlini, Brendel, Madry 2020, "On Adaptive Attacks to Adversarial Example Defenses",
arXiv:2002.08347).

**The protocol.** Any ``nn.Module`` may declare what an attacker cannot see through its autograd graph, with up to
three optional methods (a model without them declares nothing, the default):

* ``hidden_parts() -> HiddenParts``: whether the forward pass is randomised (fresh randomness per call) and
  whether part of it is non-differentiable (computed outside the autograd graph: ``.detach()``, NumPy, a simulator
  without gradients), with a one-line description;
* ``surrogate() -> nn.Module``: a differentiable stand-in with the same outputs (e.g. the same model with the
  hidden branch computed in the graph), whose gradient BPDA uses;
* ``classical_twin() -> nn.Module``: a classical classifier close to the model (e.g. its own backbone) that a
  transfer attack crafts on.

:func:`declare_hidden` adds the three to a model written without them.

**The modes** (:class:`AdaptiveMode`): where the attack reads its gradient (:class:`GradientSource`) and how many
passes EOT averages:

* ``direct``: the model's own autograd gradient (the naive attacker);
* ``bpda``: Backward Pass Differentiable Approximation. :class:`BPDAWrapper` returns the defended model's output
  but routes the gradient through the surrogate (``out.detach() + s - s.detach()``), so every torchattacks
  white-box attack runs unchanged and decides success on the defended model. It is written here because
  torchattacks and the project's other dependencies have no BPDA (it is a pattern, not a library class); it is a
  few lines. Both passes of one call see the same random numbers (the torch RNG state is replayed for the
  surrogate), so for a faithful surrogate the gradient is the exact gradient of the random function drawn;
* ``transfer``: the adversarial examples are crafted on the classical twin and scored on the defended model;
* EOT (``eot_iter > 1``): ``qshield.attacks`` already averages ``eot_iter`` gradients (torchattacks' own EOT for
  APGD/PGD, :class:`~qshield.attacks.EOTWrapper` otherwise); here only the number is chosen.

:func:`resolve_adaptive` picks the mode of one attack. ``adaptive="auto"`` (the default everywhere): a white-box
attack on a model declaring a non-differentiable part uses BPDA (transfer when it declares a twin but no
surrogate); every attack on a model declaring randomness runs with EOT (:data:`AUTO_EOT_ITER` passes unless the
attack's ``eot_iter`` is already > 1). ``"off"`` is the naive attacker; ``"bpda"`` / ``"transfer"`` force that
source for the white-box attacks. A model declaring nothing gets ``direct`` in every mode but the forced ones, so
plain models behave exactly as before.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from ._config import AttackConfig

__all__ = [
    "AUTO_EOT_ITER",
    "NOTHING_HIDDEN",
    "Adaptive",
    "AdaptiveMode",
    "BPDAWrapper",
    "DeclaredModel",
    "GradientSource",
    "HiddenParts",
    "classical_twin_of",
    "declare_hidden",
    "hidden_parts",
    "resolve_adaptive",
    "surrogate_of",
]

#: EOT passes used for a model that declares randomness when the attack itself asks for none (``eot_iter=1``).
#: The masking diagnostics check that this is enough (ASR at k vs 2k passes, ``deterministic_or_eot``).
AUTO_EOT_ITER = 8


@dataclass(frozen=True)
class HiddenParts:
    """What a model hides from an attacker that reads its autograd graph.

    Attributes:
        randomized: the forward pass draws fresh randomness on every call (two identical calls differ), so a
            gradient or a score read once is one sample; attacks need EOT.
        non_differentiable: part of the output is computed outside the autograd graph; the autograd gradient is
            not the gradient of the function (gradient masking); white-box attacks need BPDA or transfer.
        description: one line saying what is hidden, for reports.
    """

    randomized: bool = False
    non_differentiable: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        for name in ("randomized", "non_differentiable"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed values: True, False")
        if not isinstance(self.description, str):
            raise ValueError(f"description={self.description!r} is invalid; allowed values: a string")

    @property
    def any(self) -> bool:
        """True when something is hidden."""
        return self.randomized or self.non_differentiable

    @property
    def label(self) -> str:
        """``randomized``, ``non-differentiable``, both joined by ``+``, or ``nothing``."""
        parts = [n for n, on in (("randomized", self.randomized), ("non-differentiable", self.non_differentiable))
                 if on]
        return "+".join(parts) or "nothing"


#: What a model that declares nothing hides.
NOTHING_HIDDEN = HiddenParts()


def _optional_method(model: nn.Module, name: str) -> Callable[[], object] | None:
    fn = getattr(model, name, None)
    return fn if callable(fn) else None


def hidden_parts(model: nn.Module) -> HiddenParts:
    """The :class:`HiddenParts` a model declares through ``model.hidden_parts()``; nothing hidden without it."""
    fn = _optional_method(model, "hidden_parts")
    if fn is None:
        return NOTHING_HIDDEN
    parts = fn()
    if not isinstance(parts, HiddenParts):
        raise TypeError(f"{type(model).__name__}.hidden_parts() must return a HiddenParts, got {type(parts).__name__}")
    return parts


def _module_from(model: nn.Module, name: str) -> nn.Module | None:
    fn = _optional_method(model, name)
    if fn is None:
        return None
    out = fn()
    if out is not None and not isinstance(out, nn.Module):
        raise TypeError(f"{type(model).__name__}.{name}() must return an nn.Module or None, got {type(out).__name__}")
    return out


def surrogate_of(model: nn.Module) -> nn.Module | None:
    """The differentiable surrogate a model declares through ``model.surrogate()``, or None."""
    return _module_from(model, "surrogate")


def classical_twin_of(model: nn.Module) -> nn.Module | None:
    """The classical twin a model declares through ``model.classical_twin()``, or None."""
    return _module_from(model, "classical_twin")


class DeclaredModel(nn.Module):
    """A model plus the adaptive-attack protocol it lacks (built by :func:`declare_hidden`).

    ``forward(x)`` is ``model(x)``; ``hidden_parts()``, ``surrogate()`` and ``classical_twin()`` return what was
    given. The wrapper copies the model's train/eval mode.
    """

    def __init__(
        self,
        model: nn.Module,
        parts: HiddenParts,
        surrogate: nn.Module | None = None,
        twin: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self._parts = parts
        # Kept outside the module tree (a surrogate usually shares the model's parameters): not in state_dict.
        object.__setattr__(self, "_surrogate", surrogate)
        object.__setattr__(self, "_twin", twin)
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def hidden_parts(self) -> HiddenParts:
        return self._parts

    def surrogate(self) -> nn.Module | None:
        return self._surrogate

    def classical_twin(self) -> nn.Module | None:
        return self._twin


def declare_hidden(
    model: nn.Module,
    parts: HiddenParts,
    *,
    surrogate: nn.Module | None = None,
    twin: nn.Module | None = None,
) -> DeclaredModel:
    """Declare what ``model`` hides (and optionally a differentiable surrogate and a classical twin) so that the
    evaluation attacks it adaptively; for models written without the protocol.

    Raises:
        ValueError: ``parts`` is not a :class:`HiddenParts`, or a surrogate / twin is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(parts, HiddenParts):
        raise ValueError(f"parts={parts!r} is invalid; allowed values: a HiddenParts")
    for name, value in (("surrogate", surrogate), ("twin", twin)):
        if value is not None and not isinstance(value, nn.Module):
            raise ValueError(f"{name} must be a torch.nn.Module or None, got {type(value).__name__}")
    return DeclaredModel(model, parts, surrogate, twin)


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class BPDAWrapper(nn.Module):
    """Forward: the defended model's output; backward: the surrogate's gradient (BPDA, Athalye et al. 2018).

    ``forward(x) = defended(x).detach() + s(x) - s(x).detach()`` with ``s = surrogate``: the value is the defended
    model's (so every attack decides success on the defended model), the gradient is the surrogate's. The torch
    RNG state (CPU, and the input's CUDA device) is replayed before the surrogate pass, so a randomised model and
    its surrogate draw the same random numbers in one call. Mode is copied from the defended model.

    Args:
        model: the defended model.
        surrogate: a differentiable approximation of it (same output shape and meaning).
    """

    def __init__(self, model: nn.Module, surrogate: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.surrogate = surrogate
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = _rng_state(x.device)
        out = self.model(x)
        after = _rng_state(x.device)
        _set_rng_state(state, x.device)
        approx = self.surrogate(x)
        _set_rng_state(after, x.device)
        if approx.shape != out.shape:
            raise RuntimeError(
                f"BPDA surrogate returned shape {tuple(approx.shape)} but the model returns {tuple(out.shape)}"
            )
        return out.detach() + (approx - approx.detach())


class GradientSource(str, enum.Enum):
    """Where a white-box attack reads its gradient."""

    DIRECT = "direct"
    BPDA = "bpda"
    TRANSFER = "transfer"


class Adaptive(str, enum.Enum):
    """How the attack mode is chosen: ``auto`` from the model's declaration, ``off`` (the naive attacker), or a
    forced gradient source (``bpda``, ``transfer``) for the white-box attacks."""

    AUTO = "auto"
    OFF = "off"
    BPDA = "bpda"
    TRANSFER = "transfer"

    @classmethod
    def parse(cls, value: object) -> Adaptive:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower()) if isinstance(value, str) else cls(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"adaptive={value!r} is invalid; allowed values: {allowed}") from None


@dataclass(frozen=True)
class AdaptiveMode:
    """How one attack is run: its gradient source and EOT passes.

    Attributes:
        source: ``direct``, ``bpda`` or ``transfer`` (:class:`GradientSource`).
        eot_iter: passes averaged per gradient / score (1 = no EOT).
        surrogate: the BPDA surrogate (``source == bpda``).
        twin: the model crafted on (``source == transfer``).
    """

    source: GradientSource = GradientSource.DIRECT
    eot_iter: int = 1
    surrogate: nn.Module | None = None
    twin: nn.Module | None = None

    @property
    def label(self) -> str:
        """``none``, ``eot(k)``, ``bpda``, ``bpda+eot(k)``, ``transfer``, ``transfer+eot(k)``: what produced a row."""
        parts = [] if self.source is GradientSource.DIRECT else [self.source.value]
        if self.eot_iter > 1:
            parts.append(f"eot({self.eot_iter})")
        return "+".join(parts) or "none"

    def attack_model(self, model: nn.Module) -> nn.Module:
        """The module the attack reads (before EOT): the model, its BPDA wrapper, or the twin."""
        if self.source is GradientSource.BPDA:
            assert self.surrogate is not None
            return BPDAWrapper(model, self.surrogate)
        if self.source is GradientSource.TRANSFER:
            assert self.twin is not None
            return self.twin
        return model


def mode_label(source: str, eot_iter: int) -> str:
    """The :attr:`AdaptiveMode.label` of a source name and EOT count (for reports built from stored values)."""
    return AdaptiveMode(GradientSource(source), eot_iter).label


def resolve_adaptive(
    model: nn.Module, config: AttackConfig, adaptive: Adaptive | str = Adaptive.AUTO
) -> tuple[AttackConfig, AdaptiveMode]:
    """Choose how ``config`` attacks ``model`` (module docstring); returns the config with the EOT passes used and the
    mode.

    Raises:
        ValueError: ``adaptive`` is not one of ``auto``, ``off``, ``bpda``, ``transfer``; or ``bpda`` /
            ``transfer`` is forced on a model that declares no surrogate / twin. Nothing is computed.
    """
    choice = Adaptive.parse(adaptive)
    preset = config.preset
    params = preset.defaults()
    params.update(config.params)
    eot = int(params["eot_iter"])
    if choice is Adaptive.OFF:
        return config, AdaptiveMode(GradientSource.DIRECT, eot)
    parts = hidden_parts(model)
    surrogate = surrogate_of(model)
    twin = classical_twin_of(model)
    source = GradientSource.DIRECT
    if choice is Adaptive.BPDA:
        if surrogate is None:
            raise ValueError(
                f"adaptive='bpda' needs a differentiable surrogate but {type(model).__name__} declares none; "
                "allowed values: 'auto', 'off', or give one with qshield.attacks.declare_hidden(..., surrogate=...)"
            )
        source = GradientSource.BPDA if preset.white_box else GradientSource.DIRECT
    elif choice is Adaptive.TRANSFER:
        if twin is None:
            raise ValueError(
                f"adaptive='transfer' needs a classical twin but {type(model).__name__} declares none; "
                "allowed values: 'auto', 'off', or give one with qshield.attacks.declare_hidden(..., twin=...)"
            )
        source = GradientSource.TRANSFER if preset.white_box else GradientSource.DIRECT
    elif preset.white_box and parts.non_differentiable:
        if surrogate is not None:
            source = GradientSource.BPDA
        elif twin is not None:
            source = GradientSource.TRANSFER
    if source is GradientSource.TRANSFER:
        randomized = hidden_parts(twin).randomized  # type: ignore[arg-type]
    else:
        randomized = parts.randomized
    if eot == 1 and randomized and choice is not Adaptive.OFF:
        eot = AUTO_EOT_ITER
    if source is GradientSource.TRANSFER and not randomized:
        eot = 1  # averaging a deterministic twin changes nothing
    if eot != int(params["eot_iter"]):
        config = config.with_overrides(eot_iter=eot)
    return config, AdaptiveMode(
        source,
        eot,
        surrogate if source is GradientSource.BPDA else None,
        twin if source is GradientSource.TRANSFER else None,
    )
