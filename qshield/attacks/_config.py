"""``AttackConfig``: one attack with its ε and hyper-parameter overrides, validated on construction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from qshield.schema import Config, EpsOrNone

from ._preset import AttackPreset
from ._registry import check_dataset, get_preset, resolve_eps

__all__ = ["MADRY_STEP_RATIO", "AttackConfig"]

#: Step size of an iterative attack as a multiple of ``eps / steps`` when the preset's own cannot reach ε
#: (Madry et al. 2018 use 2.5 so that the attack can cross the ball and come back).
MADRY_STEP_RATIO = 2.5


def _attack_name(value: Any) -> str:
    return get_preset(value).name  # ValueError listing the registered names


def _mapping(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"params={value!r} is invalid; allowed values: a mapping of parameter names")
    return dict(value)


class AttackConfig(Config):
    """A named attack, its ε and its overrides of the preset's defaults.

    Attributes:
        name: a key of :data:`~qshield.attacks.ATTACKS` (stored lower case).
        eps: Linf budget on the [0, 1] pixel scale, or None (then the dataset's default is used when the
            attack is built; attacks without ε ignore it).
        params: overrides of the preset's parameters (only keys the preset accepts); values are converted to
            the parameter's type.

    Construction fails with ``ValueError`` on an unknown name (listing the names), an ε outside [0, 1], or an
    unknown / invalid parameter (listing the accepted keys and values); nothing is computed before that.
    """

    name: Annotated[str, BeforeValidator(_attack_name)]
    eps: EpsOrNone = None
    params: Annotated[dict[str, Any], BeforeValidator(_mapping)] = Field(default_factory=dict)

    def __init__(self, name: Any = None, eps: Any = None, params: Any = None, **data: Any) -> None:
        # positional (name, eps, params) as well as keywords, as the attacks are usually written
        super().__init__(name=name, eps=eps, params=params, **data)

    @model_validator(mode="after")
    def _preset_params(self) -> AttackConfig:
        object.__setattr__(self, "params", self.preset.validate_params(dict(self.params)))
        return self

    def __hash__(self) -> int:
        return hash((self.name, self.eps, tuple(sorted(self.params.items()))))

    @property
    def preset(self) -> AttackPreset:
        """The registered preset of :attr:`name`."""
        return get_preset(self.name)

    def resolve(self, dataset: str | None = None) -> AttackConfig:
        """A copy with ε fixed and every parameter filled in (preset defaults, dataset defaults, overrides).

        ``eps`` becomes the explicit value or the dataset's default for attacks with an ε budget (``ValueError``
        when neither is known) and None for attacks without one.

        Step size of iterative attacks (PGD, VMI-FGSM): when ``alpha`` is not given, the preset's (the QShield
        reference's 2/255) is used where ``alpha * steps`` reaches ε, else Madry et al.'s ``2.5 * eps / steps``
        (e.g. MNIST's 32/255 with 10 steps: 8/255; the reference's 20/255 reach would leave a third of the ball
        unexplored). An explicit ``alpha`` that cannot reach ε is refused with a ``ValueError`` naming the
        fields, unless the config opts in with ``allow_unreachable=True`` (reproducing a paper's setting; then
        :attr:`reaches_eps` is False and every report labels the row).
        """
        preset = self.preset
        dataset = check_dataset(dataset)
        params = preset.defaults(dataset)
        params.update(self.params)
        eps = resolve_eps(preset, self.eps, dataset)
        if preset.reach is not None and not preset.reaches(eps, params) and not params.get("allow_unreachable"):
            assert eps is not None
            steps = int(params["steps"])
            if "alpha" not in self.params:
                params["alpha"] = min(1.0, MADRY_STEP_RATIO * eps / steps)
            else:
                raise ValueError(
                    f"{self.name}: alpha={params['alpha']:.6g} x steps={steps} = {preset.reach(params):.6g} cannot "
                    f"reach eps={eps:.6g} ({eps * 255:.4g}/255): the attack stays inside a smaller ball and "
                    f"understates the threat model; allowed values: alpha >= eps/steps = {eps / steps:.6g} (e.g. "
                    f"alpha={MADRY_STEP_RATIO * eps / steps:.6g} = 2.5*eps/steps, Madry et al.) or more steps, or "
                    f"allow_unreachable=True to reproduce a paper's setting (the row is labelled)"
                )
        return AttackConfig(self.name, eps, params)

    @property
    def reaches_eps(self) -> bool:
        """False when this (resolved) config's ``alpha * steps`` is below its ε (see :meth:`resolve`)."""
        preset = self.preset
        params = preset.defaults()
        params.update(self.params)
        return preset.reaches(self.eps, params)

    def with_overrides(self, eps: float | None = None, **params: Any) -> AttackConfig:
        """A copy with ``eps`` (when given) and ``params`` replacing this config's values."""
        merged = dict(self.params)
        merged.update(params)
        return AttackConfig(self.name, self.eps if eps is None else eps, merged)

    @property
    def label(self) -> str:
        """Short text for tables, e.g. ``pgd(eps=0.0314)`` or ``cw``."""
        return self.name if self.eps is None else f"{self.name}(eps={self.eps:.4g})"

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{"name", "eps", "params"}`` (for logging to MLflow / YAML)."""
        return {"name": self.name, "eps": self.eps, "params": dict(self.params)}
