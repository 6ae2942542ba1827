"""Gradient-masking diagnostics: cheap sanity checks that a robustness number is not an artefact.

A defence that only hides or breaks gradients looks robust to gradient attacks and falls to adaptive ones
(Athalye, Carlini, Wagner 2018, arXiv:1802.00420; Carlini et al. 2019, "On Evaluating Adversarial Robustness",
arXiv:1902.06705). The QShield reference computes its quantum branch through ``.detach().numpy()`` with a
random projection per call, exactly such a case. These checks, in the spirit of auto-attack's ``checks.py``,
run on a small random subset of correctly classified images:

``asr_monotonic_in_eps``
    PGD's ASR over an increasing ε schedule never drops by more than ``monotonic_tolerance``.
``asr_at_large_eps``
    At the largest ε of the schedule (default 1.0, i.e. unbounded on [0, 1] images) PGD reaches at least
    ``min_asr_at_max_eps`` (default 95 %).
``whitebox_beats_blackbox``
    White-box PGD is at least as successful as black-box Square at the evaluation ε (minus
    ``blackbox_tolerance``): a black-box attack winning means the gradients mislead.
``input_gradients``
    The input gradient of the cross-entropy loss exists, is finite, and is non-zero for all but
    ``max_zero_grad_fraction`` of the images.
``outputs_not_probabilities``
    The model returns logits or log-probabilities, not probabilities (cross-entropy on probabilities flattens
    the loss surface; auto-attack's ``check_range_output``).
``deterministic_or_eot``
    Two identical forward passes agree, or the evaluation uses EOT (``eot_iter > 1``) for a randomised model
    (auto-attack's ``check_randomized``).

PGD here uses ``steps`` steps of size ``alpha = step_ratio * eps / steps`` from a random start, so every ε of
the schedule is reachable (the reference's fixed α = 2/255 cannot leave a 20/255 ball in 10 steps).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from qshield.attacks import AttackConfig
from qshield.attacks._imports import model_device
from qshield.attacks._registry import check_eps

from ._core import check_batch_size, check_data, eval_mode, predict, run_attack
from ._results import AsrCurve

__all__ = [
    "CHECK_NAMES",
    "CheckResult",
    "MaskingConfig",
    "MaskingDiagnostics",
    "check_gradient_masking",
    "judge_attack_checks",
]

MONOTONIC = "asr_monotonic_in_eps"
LARGE_EPS = "asr_at_large_eps"
WHITEBOX = "whitebox_beats_blackbox"
GRADIENTS = "input_gradients"
LOGITS = "outputs_not_probabilities"
RANDOMNESS = "deterministic_or_eot"
#: The checks, in the order they are reported.
CHECK_NAMES = (MONOTONIC, LARGE_EPS, WHITEBOX, GRADIENTS, LOGITS, RANDOMNESS)


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}={value!r} is invalid; allowed values: a number in [0, 1]")
    return float(value)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid; allowed values: an integer >= 1")
    return value


@dataclass(frozen=True)
class MaskingConfig:
    """Settings of :func:`check_gradient_masking` (defaults: about 64 images, a few seconds for a small CNN).

    Attributes:
        n_examples: correctly classified images checked (a random subset; fewer if fewer are correct).
        eps: ε of the white-box vs black-box comparison; None: the evaluation's ε.
        eps_schedule: increasing ε values in (0, 1] for the monotonicity check; its last value is the
            "large ε" of ``asr_at_large_eps``.
        steps: PGD steps at every ε.
        step_ratio: PGD step size as ``step_ratio * eps / steps``.
        square_queries: query budget of the Square attack.
        monotonic_tolerance: largest allowed drop of ASR between consecutive ε.
        min_asr_at_max_eps: smallest acceptable PGD ASR at the largest ε.
        blackbox_tolerance: by how much Square's ASR may exceed PGD's.
        max_zero_grad_fraction: largest acceptable fraction of images with an all-zero input gradient.
        eot_iter: EOT passes used by the PGD runs (and counted as "EOT used" by ``deterministic_or_eot``).
        seed: seed of the subset draw and of the attacks' randomness.
        batch_size: images per attack call.
    """

    n_examples: int = 64
    eps: float | None = None
    eps_schedule: tuple[float, ...] = (1 / 255, 4 / 255, 16 / 255, 64 / 255, 1.0)
    steps: int = 20
    step_ratio: float = 2.5
    square_queries: int = 300
    monotonic_tolerance: float = 0.05
    min_asr_at_max_eps: float = 0.95
    blackbox_tolerance: float = 0.05
    max_zero_grad_fraction: float = 0.05
    eot_iter: int = 1
    seed: int = 0
    batch_size: int = 128

    def __post_init__(self) -> None:
        _positive_int("n_examples", self.n_examples)
        check_eps(self.eps)
        schedule = tuple(self.eps_schedule)
        if not schedule or any(check_eps(e) is None or e <= 0 for e in schedule):
            raise ValueError(f"eps_schedule={self.eps_schedule!r} is invalid; allowed values: numbers in (0, 1]")
        if any(b <= a for a, b in itertools.pairwise(schedule)):
            raise ValueError(f"eps_schedule={self.eps_schedule!r} must be strictly increasing")
        object.__setattr__(self, "eps_schedule", tuple(float(e) for e in schedule))
        _positive_int("steps", self.steps)
        if isinstance(self.step_ratio, bool) or not isinstance(self.step_ratio, (int, float)) or self.step_ratio <= 0:
            raise ValueError(f"step_ratio={self.step_ratio!r} is invalid; allowed values: a number > 0")
        _positive_int("square_queries", self.square_queries)
        for name in ("monotonic_tolerance", "min_asr_at_max_eps", "blackbox_tolerance", "max_zero_grad_fraction"):
            _fraction(name, getattr(self, name))
        _positive_int("eot_iter", self.eot_iter)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} is invalid; allowed values: an integer >= 0")
        check_batch_size(self.batch_size)


@dataclass(frozen=True)
class CheckResult:
    """One diagnostic: its name, whether it passed, and the numbers behind it in words."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class MaskingDiagnostics:
    """Outcome of :func:`check_gradient_masking`.

    Attributes:
        checks: one :class:`CheckResult` per check, in :data:`CHECK_NAMES` order.
        n_examples: correctly classified images the checks ran on.
        eps: ε of the white-box vs black-box comparison.
        eps_schedule: the ε values of the PGD sweep.
        pgd_asr: PGD ASR at each ε of the schedule (empty when PGD could not run).
        pgd_asr_at_eps: PGD ASR at ``eps`` (NaN when PGD could not run).
        square_asr_at_eps: Square ASR at ``eps`` (NaN when not run).
        zero_grad_fraction: fraction of images whose input gradient is identically zero (1.0 when there is
            no gradient at all).
        grad_finite: all input-gradient entries are finite (False when there is no gradient).
        randomized: two identical forward passes disagreed.
        outputs_are_probabilities: every output row is in [0, 1] and sums to 1.
    """

    checks: tuple[CheckResult, ...]
    n_examples: int
    eps: float
    eps_schedule: tuple[float, ...]
    pgd_asr: tuple[float, ...] = ()
    pgd_asr_at_eps: float = math.nan
    square_asr_at_eps: float = math.nan
    zero_grad_fraction: float = math.nan
    grad_finite: bool = False
    randomized: bool = False
    outputs_are_probabilities: bool = False
    config: MaskingConfig = field(default_factory=MaskingConfig)

    @property
    def passed(self) -> bool:
        """True when every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the failed checks."""
        return tuple(c.name for c in self.checks if not c.passed)

    def check(self, name: str) -> CheckResult:
        """The check called ``name``; ``KeyError`` listing the names on a miss."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check {name!r}; checks: {', '.join(c.name for c in self.checks)}")

    def asr_curve(self, label: str = "") -> AsrCurve:
        """The PGD ASR-vs-ε sweep as an :class:`AsrCurve` (empty when PGD could not run)."""
        eps = self.eps_schedule if self.pgd_asr else ()
        return AsrCurve(label, "pgd", eps, self.pgd_asr, self.n_examples)

    def summary(self) -> str:
        """One line per check: ``PASS``/``FAIL``, name, detail."""
        return "\n".join(f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks)


def _select(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    clean_pred: torch.Tensor | None,
    config: MaskingConfig,
) -> torch.Tensor:
    """Indices of up to ``n_examples`` correctly classified images, drawn at random with ``config.seed``."""
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(labels), generator=gen)
    if clean_pred is not None:
        correct = order[clean_pred[order] == labels[order]]
        return correct[: config.n_examples]
    chosen: list[torch.Tensor] = []
    found = 0
    chunk = max(2 * config.n_examples, config.batch_size)
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        pred = predict(model, images[idx], config.batch_size)
        good = idx[pred == labels[idx]]
        chosen.append(good)
        found += len(good)
        if found >= config.n_examples:
            break
    return torch.cat(chosen)[: config.n_examples]


def _gradient_check(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: MaskingConfig
) -> tuple[CheckResult, bool, float, bool]:
    """Input gradients of the summed CE loss; returns (check, has_gradient, zero_fraction, finite)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        if not loss.requires_grad:
            return (
                CheckResult(GRADIENTS, False, "the loss does not depend differentiably on the input (no graph)"),
                False,
                1.0,
                False,
            )
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    if grad is None:
        return (
            CheckResult(GRADIENTS, False, "the input is not used by the graph of the output (detached input)"),
            False,
            1.0,
            False,
        )
    finite = bool(torch.isfinite(grad).all())
    zero = float((grad.flatten(1).abs().amax(dim=1) == 0).float().mean())
    passed = finite and zero <= config.max_zero_grad_fraction
    detail = f"finite={finite}, zero-gradient fraction={zero:.3f} (allowed <= {config.max_zero_grad_fraction:.3f})"
    return CheckResult(GRADIENTS, passed, detail), True, zero, finite


def _pgd(eps: float, config: MaskingConfig) -> AttackConfig:
    alpha = min(1.0, config.step_ratio * eps / config.steps)
    return AttackConfig(
        "pgd", eps, {"alpha": alpha, "steps": config.steps, "random_start": True, "eot_iter": config.eot_iter}
    ).resolve()


def judge_attack_checks(
    pgd_asr: tuple[float, ...],
    pgd_at_eps: float,
    square_at_eps: float,
    eps: float,
    config: MaskingConfig,
) -> tuple[CheckResult, CheckResult, CheckResult]:
    """Decide the three attack-based checks from measured ASRs.

    Args:
        pgd_asr: PGD ASR at each ε of ``config.eps_schedule``.
        pgd_at_eps: PGD ASR at the comparison ε.
        square_at_eps: Square ASR at the comparison ε.
        eps: the comparison ε (for the message).
        config: thresholds.

    Returns:
        ``(asr_monotonic_in_eps, asr_at_large_eps, whitebox_beats_blackbox)``.
    """
    if len(pgd_asr) != len(config.eps_schedule):
        raise ValueError(f"pgd_asr has {len(pgd_asr)} values for an eps_schedule of {len(config.eps_schedule)}")
    drops = [a - b for a, b in itertools.pairwise(pgd_asr)]
    worst = max(drops, default=0.0)
    curve = ", ".join(f"{e:.4g}:{a:.3f}" for e, a in zip(config.eps_schedule, pgd_asr))
    mono = CheckResult(
        MONOTONIC,
        worst <= config.monotonic_tolerance,
        f"PGD ASR by eps [{curve}]; largest drop {max(worst, 0.0):.3f} (allowed <= {config.monotonic_tolerance:.3f})",
    )
    large = CheckResult(
        LARGE_EPS,
        pgd_asr[-1] >= config.min_asr_at_max_eps,
        f"PGD ASR {pgd_asr[-1]:.3f} at eps={config.eps_schedule[-1]:.4g} (required >= {config.min_asr_at_max_eps:.3f})",
    )
    white = CheckResult(
        WHITEBOX,
        pgd_at_eps >= square_at_eps - config.blackbox_tolerance,
        f"at eps={eps:.4g}: PGD ASR {pgd_at_eps:.3f} vs Square ASR {square_at_eps:.3f} "
        f"(Square may exceed PGD by <= {config.blackbox_tolerance:.3f})",
    )
    return mono, large, white


def check_gradient_masking(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float | None = None,
    config: MaskingConfig | None = None,
    clean_predictions: torch.Tensor | None = None,
    progress: bool = False,
) -> MaskingDiagnostics:
    """Run the gradient-masking checks (module docstring) on a small subset.

    Args:
        model: classifier ``[B, C, H, W] in [0, 1] -> logits or log-probabilities [B, C]``.
        images: test images ``[N, C, H, W]`` in [0, 1].
        labels: labels ``[N]``.
        eps: ε of the white-box vs black-box comparison (``config.eps`` wins when set); one of them is required.
        config: :class:`MaskingConfig` (defaults when None).
        clean_predictions: the model's clean predictions ``[N]`` if already computed (saves a pass).
        progress: show a tqdm bar over the attack runs.

    Returns:
        :class:`MaskingDiagnostics`; ``.passed`` is False when any check fails or when no image is classified
        correctly (nothing can be checked).
    """
    config = config or MaskingConfig()
    if not isinstance(config, MaskingConfig):
        raise ValueError(f"config must be a MaskingConfig, got {type(config).__name__}")
    comparison_eps = config.eps if config.eps is not None else check_eps(eps)
    if comparison_eps is None:
        raise ValueError("eps=None: the white-box vs black-box check needs an ε; pass eps= or MaskingConfig(eps=...)")
    images, labels = check_data(images, labels)
    if clean_predictions is not None and clean_predictions.shape != labels.shape:
        raise ValueError(
            f"clean_predictions has shape {tuple(clean_predictions.shape)}; allowed values: shape {tuple(labels.shape)}"
        )
    device = model_device(model)
    with eval_mode(model):
        idx = _select(model, images, labels, clean_predictions, config)
        n = len(idx)
        if n == 0:
            checks = tuple(CheckResult(name, False, "not run: no correctly classified image") for name in CHECK_NAMES)
            return MaskingDiagnostics(checks, 0, comparison_eps, config.eps_schedule, config=config)
        x, y = images[idx], labels[idx]
        xd, yd = x.to(device), y.to(device)

        with torch.no_grad():
            out1 = model(xd)
            out2 = model(xd)
        randomized = not torch.allclose(out1, out2, rtol=1e-5, atol=1e-6)
        is_prob = bool(((out1 >= 0) & (out1 <= 1)).all()) and bool(
            torch.allclose(out1.sum(dim=1), torch.ones_like(out1[:, 0]), atol=1e-4)
        )
        logits_check = CheckResult(
            LOGITS,
            not is_prob,
            "outputs are probabilities (rows in [0, 1] summing to 1); return logits or log-probabilities"
            if is_prob
            else "outputs are logits or log-probabilities",
        )
        random_check = CheckResult(
            RANDOMNESS,
            (not randomized) or config.eot_iter > 1,
            f"randomized={randomized}, eot_iter={config.eot_iter}"
            + (" (a randomised model needs EOT: eot_iter > 1)" if randomized and config.eot_iter == 1 else ""),
        )
        grad_check, has_grad, zero_fraction, finite = _gradient_check(model, xd, yd, config)

        pgd_asr: tuple[float, ...] = ()
        pgd_at_eps = square_at_eps = math.nan
        if has_grad and finite:
            runs = [_pgd(e, config) for e in config.eps_schedule]
            reuse = comparison_eps in config.eps_schedule  # PGD at the comparison ε is already in the sweep
            if not reuse:
                runs.append(_pgd(comparison_eps, config))
            square = AttackConfig("square", comparison_eps, {"n_queries": config.square_queries, "seed": config.seed})
            runs.append(square.resolve())
            clean_sub = y.clone()  # the subset is correctly classified by construction
            asrs = []
            with tqdm(total=len(runs) * n, desc="masking checks", disable=not progress, leave=False) as bar:
                for run in runs:
                    result, _ = run_attack(
                        model, x, y, clean_sub, run, batch_size=config.batch_size, seed=config.seed, bar=bar
                    )
                    asrs.append(result.asr)
            pgd_asr = tuple(asrs[: len(config.eps_schedule)])
            square_at_eps = asrs[-1]
            pgd_at_eps = pgd_asr[config.eps_schedule.index(comparison_eps)] if reuse else asrs[-2]
            mono, large, white = judge_attack_checks(pgd_asr, pgd_at_eps, square_at_eps, comparison_eps, config)
        else:
            why = "not run: no usable input gradient for PGD (" + grad_check.detail + ")"
            mono = CheckResult(MONOTONIC, False, why)
            large = CheckResult(LARGE_EPS, False, why)
            white = CheckResult(WHITEBOX, False, why)

    return MaskingDiagnostics(
        checks=(mono, large, white, grad_check, logits_check, random_check),
        n_examples=n,
        eps=comparison_eps,
        eps_schedule=config.eps_schedule,
        pgd_asr=pgd_asr,
        pgd_asr_at_eps=pgd_at_eps,
        square_asr_at_eps=square_at_eps,
        zero_grad_fraction=zero_fraction,
        grad_finite=finite,
        randomized=randomized,
        outputs_are_probabilities=is_prob,
        config=config,
    )
