"""``build_attack``: a ready torchattacks object from a name (or config), ε / dataset and overrides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from ._adaptive import Adaptive, resolve_adaptive
from ._config import AttackConfig
from ._eot import EOTWrapper
from ._preset import EotMode

if TYPE_CHECKING:  # pragma: no cover
    import torchattacks

__all__ = ["build_attack", "make_attack"]


def build_attack(
    model: nn.Module,
    name: str | AttackConfig,
    *,
    eps: float | None = None,
    dataset: str | None = None,
    adaptive: Adaptive | str = Adaptive.AUTO,
    **overrides: Any,
) -> torchattacks.Attack:
    """Build the torchattacks attack ``name`` on ``model`` with the QShield reference's defaults.

    Args:
        model: classifier ``images [B, C, H, W] in [0, 1] -> logits or log-probabilities [B, C]``.
        name: a key of :data:`~qshield.attacks.ATTACKS` (``fgsm``, ``pgd``, ``apgd``, ``vmifgsm``, ``cw``,
            ``deepfool``, ``onepixel``, ``square``) or an :class:`AttackConfig` (whose ε and params are the
            starting point; ``eps`` and ``overrides`` given here win).
        eps: Linf budget in [0, 1]. Attacks with an ε budget take, in order: this value, the config's, the
            dataset's default (:data:`~qshield.attacks.DEFAULT_EPS`); with none of them it is a
            ``ValueError`` (ε is never guessed). Ignored by ``cw``, ``deepfool`` and ``onepixel``.
        dataset: dataset name for the default ε and dataset-specific defaults (C&W binary-search steps).
        adaptive: ``auto`` (default: BPDA / transfer / EOT as the model declares hidden parts, see
            :func:`~qshield.attacks.resolve_adaptive`; nothing changes for a model that declares none), ``off``
            (the naive attacker), ``bpda`` or ``transfer``.
        **overrides: preset parameters to change (e.g. ``steps=20``, ``n_queries=100``, ``eot_iter=8``).

    Returns:
        A ``torchattacks.Attack``; call it as ``attack(images, labels) -> adversarial images``. With
        ``eot_iter > 1`` the model is wrapped in :class:`~qshield.attacks.EOTWrapper` unless the attack averages
        gradients itself (APGD; PGD becomes ``torchattacks.EOTPGD``).

    Raises:
        ValueError: unknown attack, ε outside [0, 1], unknown dataset, unknown or invalid override, or an ε
            attack with neither ε nor dataset; all before anything is built.
        TypeError: ``model`` is not a ``torch.nn.Module``.
    """
    base = name if isinstance(name, AttackConfig) else AttackConfig(name)
    config = base.with_overrides(eps=eps, **overrides).resolve(dataset)
    return make_attack(model, config, adaptive=adaptive)


def make_attack(
    model: nn.Module, config: AttackConfig, *, adaptive: Adaptive | str = Adaptive.AUTO
) -> torchattacks.Attack:
    """Build the attack of a config whose parameters are complete (see :meth:`AttackConfig.resolve`).

    With ``adaptive`` other than ``off`` the attack reads the module :func:`~qshield.attacks.resolve_adaptive`
    chooses (the model, its :class:`~qshield.attacks.BPDAWrapper`, or its classical twin) with the EOT passes it
    chooses; ``off`` builds exactly ``config`` on ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config, mode = resolve_adaptive(model, config, adaptive)
    model = mode.attack_model(model)
    preset = config.preset
    params = preset.defaults()
    params.update(config.params)
    if preset.uses_eps and config.eps is None:
        raise ValueError(f"attack={config.name!r} needs eps; resolve the config with a dataset or pass eps=")
    if preset.eot is EotMode.WRAP and params["eot_iter"] > 1:
        model = EOTWrapper(model, params["eot_iter"])
    return preset.factory(model, config.eps, params)
