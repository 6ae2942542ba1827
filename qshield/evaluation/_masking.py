"""Gradient-masking diagnostics: evidence that a robustness number is not an artefact of the attack failing.

A defence that hides or breaks gradients looks robust to gradient attacks and falls to adaptive ones (Athalye,
Carlini, Wagner 2018, arXiv:1802.00420; Carlini et al. 2019, "On Evaluating Adversarial Robustness",
arXiv:1902.06705; Tramèr et al. 2020, arXiv:2002.08347). The QShield reference computes its quantum branch
through ``.detach().numpy()`` with a random projection per call, exactly such a case. The principle behind every
check: **a number is trustworthy only if the strongest applicable attack was run and shown to work**. The checks
run on a small random subset of correctly classified images, with the attacks in the evaluation's adaptive mode
(:func:`qshield.attacks.resolve_adaptive`: BPDA / EOT / transfer for a model that declares hidden parts under
``adaptive="auto"``; ``"off"`` checks the naive attacker).

**Thresholds come from confidence intervals**, never from fixed points: each check states a null hypothesis
(what an honest, working attack would show) and fails only when the data contradict it at the configured
confidence (default 95%), using :func:`~qshield.evaluation.wilson_interval` for one rate and Newcombe's interval
:func:`~qshield.evaluation.difference_interval` for the difference of two. With ``n`` images the intervals have
half-widths of about ``1/sqrt(n)``; more images make every check sharper.

``asr_monotonic_in_eps``
    PGD's ASR over an increasing ε schedule (every ε reachable: step ``step_ratio * ε / steps``). Fails when for
    some ``ε_i < ε_j`` the interval of ``ASR(ε_i) - ASR(ε_j)`` lies entirely above 0 (a larger ball does
    significantly worse).
``asr_at_large_eps``
    At the largest ε of the schedule (default 1.0: unbounded on [0, 1] images) PGD should fool essentially every
    image. Fails when the upper end of the Wilson interval of its ASR is below ``min_asr_at_max_eps`` (0.99).
``whitebox_beats_blackbox``
    White-box PGD vs black-box Square at the evaluation ε (both with the mode's EOT). Fails when the interval of
    ``ASR(Square) - ASR(PGD)`` lies entirely above 0: the gradient misleads more than random search does.
``input_gradients``
    The input gradient of the cross-entropy loss (through the module the attack reads) exists and is finite, and
    the fraction of images whose gradient is exactly zero is not significantly above ``max_zero_grad_fraction``
    (fails when the lower end of its Wilson interval exceeds it).
``gradients_match_finite_differences``
    The gradient the attack reads is the gradient of the function it is scored on. For each image, a random
    output direction ``u`` and a random unit input direction ``v``: the autograd directional derivative of
    ``u·f`` along ``v`` is compared with central finite differences at steps ``h`` and ``2h`` (``fd_step``),
    at the image with every pixel jittered by up to ``10 h`` and kept ``10 h`` inside [0, 1] (so the function is
    differentiable there almost surely: max-pooling over a flat region is not, its one-sided derivatives
    differ), on a float64 copy of the model (float32, with a 10x step, when it
    cannot run in float64). Every evaluation replays the same random numbers (common random numbers), so
    randomised models are compared draw for draw. An image mismatches when
    ``|AD - FD_h| > fd_rel_tolerance * max(|AD|, |FD_h|) + 4 |FD_h - FD_2h| + rounding``: the second term is the
    finite-difference error estimated from the two steps (kinks, curvature), the last the float rounding bound.
    Fails when the lower end of the Wilson interval of the mismatch fraction exceeds
    ``max_gradient_mismatch_fraction``. Catches partial masking that leaves a gradient: a branch computed without
    gradients, straight-through tricks, randomness the gradient does not see. Not applicable to a transfer
    attack (its gradient is another model's by design).
``outputs_not_probabilities``
    The model returns logits or log-probabilities, not probabilities (cross-entropy on probabilities flattens the
    loss surface; auto-attack's ``check_range_output``).
``deterministic_or_eot``
    Two identical forward passes agree (and nothing randomised is declared); or the model is randomised, EOT is
    used (``eot_iter = k > 1``) and **shown to converge**: PGD with ``2k`` passes is not significantly stronger
    than with ``k`` (the interval of ``ASR(2k) - ASR(k)`` reaches 0) at the evaluation ε and at the sweep's most
    informative ε (ASR nearest 50%). A randomised model with ``k = 1`` fails.
``surrogate_vs_direct``
    The gradient source the evaluation uses is the strongest applicable one: PGD from every other source the
    model offers (its own gradient; BPDA through its declared surrogate; transfer from its declared classical
    twin) is run at the same two ε, and the check fails when one of them is significantly stronger (its
    difference interval lies above 0). The naive attacker on a masked model fails it; BPDA with a poor surrogate
    fails it against the direct gradient. Passes as not applicable when the model offers no other source.

PGD here uses ``steps`` steps of size ``alpha = step_ratio * eps / steps`` from a random start, so every ε of the
schedule is reachable (the reference's fixed α = 2/255 cannot leave a 20/255 ball in 10 steps).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn
from pydantic import BeforeValidator
from tqdm.auto import tqdm

from qshield.attacks import (
    NOTHING_HIDDEN,
    Adaptive,
    AttackConfig,
    GradientSource,
    HiddenParts,
    classical_twin_of,
    hidden_parts,
    resolve_adaptive,
    surrogate_of,
)
from qshield.attacks import check_eps, model_device
from qshield.schema import Config, Eps, EpsOrNone, Probability, integer, number, validate_value

from ._core import check_data, eval_mode, isolated_rng, predict, run_attack
from ._metrics import CONFIDENCE, difference_interval, wilson_interval
from ._results import AsrCurve

__all__ = [
    "CHECK_NAMES",
    "CheckResult",
    "MaskingConfig",
    "MaskingDiagnostics",
    "check_gradient_masking",
    "judge_attack_checks",
    "judge_eot_convergence",
    "judge_gradient_sources",
]

MONOTONIC = "asr_monotonic_in_eps"
LARGE_EPS = "asr_at_large_eps"
WHITEBOX = "whitebox_beats_blackbox"
GRADIENTS = "input_gradients"
FINITE_DIFF = "gradients_match_finite_differences"
LOGITS = "outputs_not_probabilities"
RANDOMNESS = "deterministic_or_eot"
SOURCES = "surrogate_vs_direct"
#: The finite-difference step is this many times ``MaskingConfig.fd_step`` when the model cannot run in float64
#: (float32 rounding would swamp a float64-sized step).
FLOAT32_FD_STEP_FACTOR = 10.0
#: The finite-difference check runs at the image jittered by up to this many steps per pixel (module docstring).
FD_JITTER_STEPS = 10.0
#: The checks, in the order they are reported.
CHECK_NAMES = (MONOTONIC, LARGE_EPS, WHITEBOX, GRADIENTS, FINITE_DIFF, LOGITS, RANDOMNESS, SOURCES)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is invalid; allowed values: an integer >= 1")
    return value


def _increasing(value: Any) -> tuple[float, ...]:
    """The ε schedule: numbers in (0, 1] (ε rule of :data:`qshield.schema.Eps`), strictly increasing."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"eps_schedule={value!r} is invalid; allowed values: numbers in (0, 1], strictly increasing")
    try:
        schedule = tuple(float(validate_value(Eps, e, "eps_schedule")) for e in value)
    except ValueError:
        schedule = ()
    if not schedule or any(e <= 0 for e in schedule):
        raise ValueError(f"eps_schedule={value!r} is invalid; allowed values: numbers in (0, 1]")
    if any(b <= a for a, b in itertools.pairwise(schedule)):
        raise ValueError(f"eps_schedule={value!r} must be strictly increasing")
    return schedule


class MaskingConfig(Config):
    """Settings of :func:`check_gradient_masking` (defaults: 64 images, seconds for a small CNN).

    Attributes:
        n_examples: correctly classified images checked (a random subset; fewer if fewer are correct).
        eps: ε of the white-box vs black-box comparison; None: the evaluation's ε.
        eps_schedule: increasing ε values in (0, 1] for the monotonicity check; its last value is the
            "large ε" of ``asr_at_large_eps``.
        steps: PGD steps at every ε.
        step_ratio: PGD step size as ``step_ratio * eps / steps``.
        square_queries: query budget of the Square attack.
        min_asr_at_max_eps: the ASR an unbounded PGD should reach (null value of ``asr_at_large_eps``).
        max_zero_grad_fraction: tolerated share of images with an all-zero input gradient (null value).
        max_gradient_mismatch_fraction: tolerated share of images whose gradient disagrees with finite
            differences (null value).
        fd_step: L2 length ``h`` of the finite-difference step on the [0, 1] pixel scale; the check runs on a
            float64 copy of the model (10x this step when the model cannot run in float64).
        fd_rel_tolerance: relative disagreement between autograd and finite differences that counts as a mismatch.
        confidence: confidence level of every interval (default 0.95).
        eot_iter: EOT passes of the diagnostics' attacks; None: the evaluation's choice (the adaptive mode's, i.e.
            :data:`~qshield.attacks.AUTO_EOT_ITER` for a model that declares randomness, else 1). A randomised model
            checked with 1 fails ``deterministic_or_eot``.
        seed: seed of the subset draw, of the attacks' randomness and of the finite-difference directions.
        batch_size: images per attack call.
    """

    n_examples: integer(1) = 64
    eps: EpsOrNone = None
    eps_schedule: Annotated[tuple[float, ...], BeforeValidator(_increasing)] = (
        1 / 255, 4 / 255, 16 / 255, 64 / 255, 1.0)
    steps: integer(1) = 20
    step_ratio: number(0.0, lo_open=True) = 2.5
    square_queries: integer(1) = 300
    min_asr_at_max_eps: Probability = 0.99
    max_zero_grad_fraction: Probability = 0.05
    max_gradient_mismatch_fraction: Probability = 0.05
    fd_step: number(0.0, 0.01, lo_open=True) = 1e-4
    fd_rel_tolerance: number(0.0, lo_open=True) = 0.1
    confidence: number(0.0, 1.0, lo_open=True, hi_open=True) = CONFIDENCE
    eot_iter: integer(1, nullable=True) = None
    seed: integer(0) = 0
    batch_size: integer(1) = 128


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
        randomized: two identical forward passes disagreed, or the model declares randomness.
        outputs_are_probabilities: every output row is in [0, 1] and sums to 1.
        config: the settings used.
        adaptive: how the diagnostics' PGD ran (:attr:`~qshield.attacks.AdaptiveMode.label`, e.g. ``bpda+eot(8)``).
        eot_iter: EOT passes of the diagnostics' attacks.
        hidden: what the model declares it hides (:class:`~qshield.attacks.HiddenParts`).
        gradient_mismatch_fraction: share of images whose gradient disagrees with finite differences (NaN when not
            measured).
        eot_asr: ``{"k": ASR, "2k": ASR}`` of the EOT convergence run at the evaluation ε (empty when not run).
        source_asr: PGD ASR at the evaluation ε per gradient source run (``direct``, ``bpda``, ``transfer``), the
            mode's own included (empty when PGD could not run).

    ``dataclasses.asdict`` of it is plain data (how the orchestrator logs it).
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
    adaptive: str = "none"
    eot_iter: int = 1
    hidden: HiddenParts = NOTHING_HIDDEN
    gradient_mismatch_fraction: float = math.nan
    eot_asr: dict[str, float] = field(default_factory=dict)
    source_asr: dict[str, float] = field(default_factory=dict)

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


# ---------------------------------------------------------------------------------------------------- rules


def _pct(x: float) -> str:
    return "nan" if math.isnan(x) else f"{100 * x:.1f}%"


def _ci(low: float, high: float) -> str:
    return f"[{_pct(low)}, {_pct(high)}]"


def _count(name: str, value: object, n: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= n:
        raise ValueError(f"{name}={value!r} is invalid; allowed values: an integer in 0..n={n}")
    return value


def judge_attack_checks(
    pgd_fooled: Sequence[int],
    pgd_at_eps: int,
    square_at_eps: int,
    n: int,
    eps: float,
    config: MaskingConfig,
) -> tuple[CheckResult, CheckResult, CheckResult]:
    """Decide the three attack-based checks from measured counts (rules in the module docstring).

    Args:
        pgd_fooled: images PGD fooled at each ε of ``config.eps_schedule`` (of ``n``).
        pgd_at_eps: images PGD fooled at the comparison ε.
        square_at_eps: images Square fooled at the comparison ε.
        n: images attacked (the same ``n`` for every run).
        eps: the comparison ε (for the message).
        config: null values and the confidence level.

    Returns:
        ``(asr_monotonic_in_eps, asr_at_large_eps, whitebox_beats_blackbox)``.
    """
    _positive_int("n", n)
    if len(pgd_fooled) != len(config.eps_schedule):
        raise ValueError(f"pgd_fooled has {len(pgd_fooled)} values for an eps_schedule of {len(config.eps_schedule)}")
    counts = [_count(f"pgd_fooled[{i}]", k, n) for i, k in enumerate(pgd_fooled)]
    pgd_at_eps = _count("pgd_at_eps", pgd_at_eps, n)
    square_at_eps = _count("square_at_eps", square_at_eps, n)
    conf = config.confidence
    level = f"{100 * conf:g}%"
    curve = ", ".join(f"{e:.4g}:{k / n:.3f}" for e, k in zip(config.eps_schedule, counts))
    worst: tuple[float, float, float, float, float] | None = None  # (low, d, high, eps_i, eps_j)
    for (i, ki), (j, kj) in itertools.combinations(enumerate(counts), 2):
        d, low, high = difference_interval(ki, n, kj, n, conf)
        if worst is None or low > worst[0]:
            worst = (low, d, high, config.eps_schedule[i], config.eps_schedule[j])
    if worst is None:
        mono = CheckResult(MONOTONIC, True, f"PGD ASR by eps [{curve}]; a single ε: nothing to compare")
    else:
        low, d, high, ei, ej = worst
        mono = CheckResult(
            MONOTONIC,
            not low > 0,
            f"PGD ASR by eps [{curve}]; largest drop ASR(eps={ei:.4g}) - ASR(eps={ej:.4g}) = {d:+.3f}, {level} "
            f"Newcombe CI {_ci(low, high)} (fails when the CI lies above 0)",
        )
    lo, hi = wilson_interval(counts[-1], n, conf)
    large = CheckResult(
        LARGE_EPS,
        not hi < config.min_asr_at_max_eps,
        f"PGD ASR {counts[-1] / n:.3f} at eps={config.eps_schedule[-1]:.4g}, {level} Wilson CI {_ci(lo, hi)} "
        f"(fails when the CI lies below {config.min_asr_at_max_eps:.3f})",
    )
    d, low, high = difference_interval(square_at_eps, n, pgd_at_eps, n, conf)
    white = CheckResult(
        WHITEBOX,
        not low > 0,
        f"at eps={eps:.4g}: Square ASR {square_at_eps / n:.3f} - PGD ASR {pgd_at_eps / n:.3f} = {d:+.3f}, {level} "
        f"Newcombe CI {_ci(low, high)} (fails when the CI lies above 0)",
    )
    return mono, large, white


def _exceeds(name: str, k: int, n: int, bound: float, conf: float, what: str) -> CheckResult:
    """Fails when the Wilson interval of ``k / n`` lies entirely above ``bound``."""
    lo, hi = wilson_interval(k, n, conf)
    return CheckResult(
        name,
        not lo > bound,
        f"{what} {k}/{n} = {k / n:.3f}, {100 * conf:g}% Wilson CI {_ci(lo, hi)} (fails when the CI lies above "
        f"{bound:.3f})",
    )


# ------------------------------------------------------------------------------------------------ machinery


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
    device = model_device(model)
    with isolated_rng(config.seed, device):
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
    with torch.enable_grad(), isolated_rng(config.seed, x.device):
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
    zero_mask = grad.flatten(1).abs().amax(dim=1) == 0
    n_zero, n = int(zero_mask.sum()), len(zero_mask)
    rule = _exceeds(GRADIENTS, n_zero, n, config.max_zero_grad_fraction, config.confidence, "all-zero gradients")
    passed = finite and rule.passed
    detail = f"finite={finite}; " + rule.detail
    return CheckResult(GRADIENTS, passed, detail), True, n_zero / n, finite


def _float64_copy(module: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor, str]:
    """A float64 deep copy of ``module`` and ``x`` (rounding far below any gradient effect), or the originals in
    float32 when the module cannot run in float64 (the reason is returned)."""
    try:
        double = copy.deepcopy(module).double()
        with torch.no_grad():
            double(x[:1].double())
        return double, x.double(), "float64"
    except (RuntimeError, TypeError, ValueError, AttributeError, NotImplementedError) as exc:
        reason = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        return module, x, f"float32 (the model does not run in float64: {reason})"


def _finite_difference_check(
    grad_model: nn.Module, x: torch.Tensor, n_classes: int, config: MaskingConfig
) -> tuple[CheckResult, float]:
    """Autograd vs finite-difference directional derivatives under common random numbers (module docstring)."""
    seed, device = config.seed, x.device
    gen = torch.Generator().manual_seed(config.seed + 1)
    model, x, precision = _float64_copy(grad_model, x)
    h = config.fd_step if x.dtype == torch.float64 else FLOAT32_FD_STEP_FACTOR * config.fd_step
    # A point near the image where the function is differentiable almost surely: pixels jittered by up to
    # J = 10 h (breaks the ties of max-pooling over flat image regions, where the one-sided derivatives differ)
    # and moved into [J, 1 - J], so x0 +- 2h v stays in [0, 1] (|v_i| <= |v|_2 = 1).
    jitter = FD_JITTER_STEPS * h
    noise = torch.rand(x.shape, generator=gen, dtype=torch.float64).to(x) * 2 - 1
    x0 = (x * (1 - 4 * jitter) + 2 * jitter + jitter * noise).detach()
    v = torch.randn(x0.shape, generator=gen, dtype=torch.float64).to(x0)
    v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (x0.ndim - 1)))
    u = torch.randn(len(x0), n_classes, generator=gen, dtype=torch.float64).to(device=device)

    def value(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), isolated_rng(seed, device):
            return model(inputs).double()

    xg = x0.clone().requires_grad_(True)
    with torch.enable_grad(), isolated_rng(seed, device):
        out = model(xg)
        s = (u.to(out.dtype) * out).sum()
        grad = torch.autograd.grad(s, xg, allow_unused=True)[0] if s.requires_grad else None
    if grad is None:
        return CheckResult(FINITE_DIFF, False, "no input gradient to compare (the output is not differentiable)"), 1.0
    ad = (grad.double() * v.double()).flatten(1).sum(dim=1)
    if not torch.equal(value(x0), value(x0)):
        return (
            CheckResult(
                FINITE_DIFF,
                False,
                "the model's randomness is not reproduced by seeding torch and numpy, so its gradient cannot be "
                "checked against its function (and an attack's gradient is one of many functions)",
            ),
            1.0,
        )
    fd = {}
    eps_machine = torch.finfo(out.dtype).eps
    rounding = torch.zeros(len(x0), dtype=torch.float64, device=device)
    for t in (h, 2 * h):
        plus, minus = value(x0 + t * v), value(x0 - t * v)
        fd[t] = ((u * plus).sum(dim=1) - (u * minus).sum(dim=1)) / (2 * t)
        if t == h:
            rounding = 8 * eps_machine * (u.abs() * (plus.abs() + minus.abs())).sum(dim=1) / (2 * t)
    fd_h, fd_2h = fd[h], fd[2 * h]
    tolerance = config.fd_rel_tolerance * torch.maximum(ad.abs(), fd_h.abs()) + 4 * (fd_h - fd_2h).abs() + rounding
    mismatch = ~torch.isfinite(ad) | ((ad - fd_h).abs() > tolerance)
    k, n = int(mismatch.sum()), len(mismatch)
    rule = _exceeds(FINITE_DIFF, k, n, config.max_gradient_mismatch_fraction, config.confidence,
                    "gradients disagreeing with finite differences")
    finite = torch.isfinite(ad)
    rel = ((ad - fd_h).abs() / torch.maximum(ad.abs(), fd_h.abs()).clamp_min(1e-300))[finite]
    median = float(rel.median()) if len(rel) else math.nan
    detail = (f"{precision}, step {h:.3g}: median relative difference {median:.3g} (tolerance "
              f"{config.fd_rel_tolerance:g}); " + rule.detail)
    return CheckResult(FINITE_DIFF, rule.passed, detail), k / n


def _pgd(eps: float, config: MaskingConfig, eot_iter: int) -> AttackConfig:
    alpha = min(1.0, config.step_ratio * eps / config.steps)
    return AttackConfig(
        "pgd", eps, {"alpha": alpha, "steps": config.steps, "random_start": True, "eot_iter": eot_iter}
    ).resolve()


def check_gradient_masking(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float | None = None,
    config: MaskingConfig | None = None,
    clean_predictions: torch.Tensor | None = None,
    progress: bool = False,
    adaptive: Adaptive | str = Adaptive.AUTO,
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
        adaptive: the attack mode checked (``auto``, ``off``, ``bpda``, ``transfer``; see
            :func:`qshield.attacks.resolve_adaptive`); use the evaluation's.

    Returns:
        :class:`MaskingDiagnostics`; ``.passed`` is False when any check fails or when no image is classified
        correctly (nothing can be checked).
    """
    config = config or MaskingConfig()
    if not isinstance(config, MaskingConfig):
        raise ValueError(f"config must be a MaskingConfig, got {type(config).__name__}")
    adaptive = Adaptive.parse(adaptive)
    comparison_eps = config.eps if config.eps is not None else check_eps(eps)
    if comparison_eps is None:
        raise ValueError("eps=None: the white-box vs black-box check needs an ε; pass eps= or MaskingConfig(eps=...)")
    images, labels = check_data(images, labels)
    if clean_predictions is not None and clean_predictions.shape != labels.shape:
        raise ValueError(
            f"clean_predictions has shape {tuple(clean_predictions.shape)}; allowed values: shape {tuple(labels.shape)}"
        )
    hidden = hidden_parts(model)
    # The mode of the diagnostics' PGD (and its EOT), resolved like the evaluation's (raises on a bad forced mode).
    _, mode = resolve_adaptive(model, _pgd(comparison_eps, config, config.eot_iter or 1), adaptive)
    eot = mode.eot_iter  # config.eot_iter, or the mode's automatic choice (declared randomness under "auto")
    device = model_device(model)
    with eval_mode(model):
        idx = _select(model, images, labels, clean_predictions, config)
        n = len(idx)
        if n == 0:
            checks = tuple(CheckResult(name, False, "not run: no correctly classified image") for name in CHECK_NAMES)
            return MaskingDiagnostics(checks, 0, comparison_eps, config.eps_schedule, config=config,
                                      adaptive=mode.label, eot_iter=eot, hidden=hidden)
        x, y = images[idx], labels[idx]
        xd, yd = x.to(device), y.to(device)

        with torch.no_grad():
            out1 = model(xd)
            out2 = model(xd)
        randomized = hidden.randomized or not torch.allclose(out1, out2, rtol=1e-5, atol=1e-6)
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
        grad_model = mode.attack_model(model)
        grad_check, has_grad, zero_fraction, finite = _gradient_check(grad_model, xd, yd, config)
        if mode.source is GradientSource.TRANSFER:
            fd_check = CheckResult(FINITE_DIFF, True, "not applicable: a transfer attack reads the classical twin's "
                                   "gradient by design")
            mismatch = math.nan
        elif not (has_grad and finite):
            fd_check = CheckResult(FINITE_DIFF, False, "not run: " + grad_check.detail)
            mismatch = 1.0
        else:
            fd_check, mismatch = _finite_difference_check(grad_model, xd, int(out1.shape[1]), config)

        clean_sub = y.clone()  # the subset is correctly classified by construction

        def pgd_run(eps_value: float, source: str | None, eot_iter: int, bar: tqdm) -> int:
            """Images fooled by PGD at ``eps_value`` from ``source`` (None: the mode's) with ``eot_iter`` passes."""
            cfg = _pgd(eps_value, config, eot_iter)
            how = adaptive if source is None else {"direct": Adaptive.OFF, "bpda": Adaptive.BPDA,
                                                   "transfer": Adaptive.TRANSFER}[source]
            result, _ = run_attack(model, x, y, clean_sub, cfg, batch_size=config.batch_size, seed=config.seed,
                                   bar=bar, adaptive=how)
            return result.n_fooled

        pgd_asr: tuple[float, ...] = ()
        pgd_at_eps = square_at_eps = math.nan
        eot_asr: dict[str, float] = {}
        source_asr: dict[str, float] = {}
        if (has_grad and finite) or mode.source is GradientSource.TRANSFER:
            with tqdm(desc="masking checks", disable=not progress, leave=False) as bar:
                fooled = [pgd_run(e, None, eot, bar) for e in config.eps_schedule]
                if comparison_eps in config.eps_schedule:
                    k_eps = fooled[config.eps_schedule.index(comparison_eps)]
                else:
                    k_eps = pgd_run(comparison_eps, None, eot, bar)
                square = AttackConfig(
                    "square", comparison_eps, {"n_queries": config.square_queries, "seed": config.seed,
                                               "eot_iter": eot}
                ).resolve()
                sq_result, _ = run_attack(model, x, y, clean_sub, square, batch_size=config.batch_size,
                                          seed=config.seed, bar=bar, adaptive=Adaptive.OFF)
                k_square = sq_result.n_fooled
                mono, large, white = judge_attack_checks(fooled, k_eps, k_square, n, comparison_eps, config)
                pgd_asr = tuple(k / n for k in fooled)
                pgd_at_eps, square_at_eps = k_eps / n, k_square / n
                # the two ε of the comparisons: the evaluation's and the sweep's most informative one
                informative = min(range(len(fooled)), key=lambda i: (abs(fooled[i] / n - 0.5), i))
                check_eps_values = [(comparison_eps, k_eps)]
                if config.eps_schedule[informative] != comparison_eps:
                    check_eps_values.append((config.eps_schedule[informative], fooled[informative]))
                eot_runs = []
                if randomized and eot > 1:
                    eot_runs = [(e, k, pgd_run(e, None, 2 * eot, bar)) for e, k in check_eps_values]
                    eot_asr.update({"k": eot_runs[0][1] / n, "2k": eot_runs[0][2] / n})
                random_check = judge_eot_convergence(randomized, eot, eot_runs, n, config)
                own = mode.source.value
                others = [s for s in _offered_sources(model) if s != own]
                unusable: set[str] = set()

                def other_run(eps_value: float, source: str) -> int:
                    try:
                        return pgd_run(eps_value, source, eot, bar)
                    except RuntimeError:  # run_attack's "failed on this model": that source has no usable gradient
                        unusable.add(source)
                        return 0

                source_runs = [(e, k, {s: other_run(e, s) for s in others}) for e, k in check_eps_values]
                source_asr.update({own: k_eps / n, **{s: c / n for s, c in source_runs[0][2].items()}})
                sources_check = judge_gradient_sources(own, source_runs, n, config)
                if unusable:
                    note = "; ".join(f"{s}: no usable gradient, counted as fooling none" for s in sorted(unusable))
                    sources_check = CheckResult(SOURCES, sources_check.passed, f"{sources_check.detail}; {note}")
        else:
            why = "not run: no usable input gradient for PGD (" + grad_check.detail + ")"
            mono = CheckResult(MONOTONIC, False, why)
            large = CheckResult(LARGE_EPS, False, why)
            white = CheckResult(WHITEBOX, False, why)
            random_check = CheckResult(
                RANDOMNESS,
                not randomized,
                f"randomized={randomized}" + ("; EOT convergence " + why if randomized else ""),
            )
            sources_check = CheckResult(SOURCES, False, why)

    return MaskingDiagnostics(
        checks=(mono, large, white, grad_check, fd_check, logits_check, random_check, sources_check),
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
        adaptive=mode.label,
        eot_iter=eot,
        hidden=hidden,
        gradient_mismatch_fraction=mismatch,
        eot_asr=dict(eot_asr),
        source_asr=dict(source_asr),
    )


def _offered_sources(model: nn.Module) -> list[str]:
    """The gradient sources a model offers: always ``direct``; ``bpda`` with a surrogate; ``transfer`` with a twin."""
    offered = ["direct"]
    if surrogate_of(model) is not None:
        offered.append("bpda")
    if classical_twin_of(model) is not None:
        offered.append("transfer")
    return offered


def judge_eot_convergence(
    randomized: bool,
    eot_iter: int,
    runs: Sequence[tuple[float, int, int]],
    n: int,
    config: MaskingConfig,
) -> CheckResult:
    """Decide ``deterministic_or_eot`` (module docstring).

    Args:
        randomized: the model is randomised (found or declared).
        eot_iter: EOT passes ``k`` of the checked attacks.
        runs: per ε checked, ``(eps, fooled with k passes, fooled with 2k passes)`` (of ``n``); ignored when the
            model is deterministic or ``k == 1``.
        n: images attacked.
        config: the confidence level.
    """
    if not randomized:
        return CheckResult(RANDOMNESS, True, "deterministic: two identical forward passes agree and no randomness is "
                           "declared")
    if eot_iter == 1:
        return CheckResult(RANDOMNESS, False, "randomised model checked without EOT (eot_iter=1): every gradient and "
                           "score is one random draw; set eot_iter > 1 (or declare the randomness: HiddenParts)")
    if not runs:
        raise ValueError("runs is empty; allowed values: at least one (eps, fooled with k, fooled with 2k)")
    _positive_int("n", n)
    parts, passed = [], True
    for eps_value, k_single, k_double in runs:
        _count("fooled with k", k_single, n)
        _count("fooled with 2k", k_double, n)
        d, low, high = difference_interval(k_double, n, k_single, n, config.confidence)
        converged = not low > 0
        passed = passed and converged
        parts.append(
            f"eps={eps_value:.4g}: ASR with {2 * eot_iter} passes {k_double / n:.3f} vs {eot_iter} passes "
            f"{k_single / n:.3f}, difference {d:+.3f} CI {_ci(low, high)}" + ("" if converged else " NOT CONVERGED")
        )
    return CheckResult(RANDOMNESS, passed, f"randomised; EOT k={eot_iter}: " + "; ".join(parts)
                       + f" ({100 * config.confidence:g}% Newcombe CI; fails when doubling the passes is "
                       "significantly stronger)")


def judge_gradient_sources(
    own: str,
    runs: Sequence[tuple[float, int, Mapping[str, int]]],
    n: int,
    config: MaskingConfig,
) -> CheckResult:
    """Decide ``surrogate_vs_direct`` (module docstring).

    Args:
        own: the gradient source of the evaluation's mode (``direct``, ``bpda``, ``transfer``).
        runs: per ε checked, ``(eps, fooled by the mode's PGD, {other source: fooled by its PGD})`` (of ``n``).
        n: images attacked.
        config: the confidence level.
    """
    others = sorted({s for _, _, counts in runs for s in counts})
    if not others:
        return CheckResult(SOURCES, True, f"not applicable: the model offers no gradient source besides {own!r} "
                           "(no surrogate or classical twin declared)")
    _positive_int("n", n)
    passed, parts = True, []
    for eps_value, k_mode, counts in runs:
        _count(f"fooled by {own}", k_mode, n)
        for other, k in counts.items():
            _count(f"fooled by {other}", k, n)
            d, low, high = difference_interval(k, n, k_mode, n, config.confidence)
            significant = low > 0
            passed = passed and not significant
            parts.append(
                f"eps={eps_value:.4g}: {other} {k / n:.3f} vs {own} {k_mode / n:.3f}, difference {d:+.3f} CI "
                f"{_ci(low, high)}" + (" SIGNIFICANT" if significant else "")
            )
    return CheckResult(SOURCES, passed, f"PGD from {own} vs " + ", ".join(others) + ": " + "; ".join(parts)
                       + f" ({100 * config.confidence:g}% Newcombe CI; fails when another source is significantly "
                       "stronger)")
