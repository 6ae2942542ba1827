"""Gradient-masking diagnostics: PASS on a plain model, FAIL on deliberately masked ones."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qshield.evaluation import (
    CHECK_NAMES,
    MaskingConfig,
    check_gradient_masking,
    evaluate,
    evaluate_attack,
    judge_attack_checks,
    render_markdown,
)

from tests._digits import train_digits_mlp

CFG = MaskingConfig(n_examples=24, steps=10, square_queries=100)
EPS = 32 / 255




@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = train_digits_mlp()
    return model, x[:200], y[:200]


class Wrap(nn.Module):
    """Applies ``fn`` around a model: the masked variants below."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "quantise":  # zero gradient almost everywhere
            return self.model(torch.round(x * 4) / 4)
        if self.kind == "detach":  # the reference's mistake: no gradient reaches the input
            return self.model(x.detach())
        if self.kind == "nan_grad":  # value unchanged, gradient NaN (0 * inf)
            return self.model(x + 0.0 * torch.sqrt(x - x))
        if self.kind == "softmax":  # probabilities instead of logits
            return F.softmax(self.model(x), dim=1)
        if self.kind == "noisy":  # randomised input transformation
            return self.model(x + 0.05 * torch.randn_like(x))
        raise AssertionError(self.kind)


def test_plain_model_passes_every_check(digits):
    model, x, y = digits
    diag = check_gradient_masking(model, x, y, eps=EPS, config=CFG)
    assert diag.passed, diag.summary()
    assert tuple(c.name for c in diag.checks) == CHECK_NAMES
    assert diag.n_examples == CFG.n_examples and diag.failed == ()
    assert len(diag.pgd_asr) == len(CFG.eps_schedule)
    assert diag.pgd_asr[-1] >= CFG.min_asr_at_max_eps
    assert diag.grad_finite and diag.zero_grad_fraction == 0.0
    assert not diag.randomized and not diag.outputs_are_probabilities
    curve = diag.asr_curve("mlp")
    assert curve.eps == CFG.eps_schedule and curve.asr == diag.pgd_asr and curve.label == "mlp"


def test_diagnostics_pgd_numbers_match_an_independent_run(digits):
    """The sweep's PGD ASR equals evaluate_attack on the same subset with the same settings."""
    model, x, y = digits
    cfg = MaskingConfig(n_examples=16, eps_schedule=(0.05, 0.2), steps=5, square_queries=50, seed=3)
    diag = check_gradient_masking(model, x, y, eps=0.05, config=cfg)
    gen = torch.Generator().manual_seed(3)
    order = torch.randperm(len(y), generator=gen)
    with torch.no_grad():
        pred = model(x[order]).argmax(1)
    subset = order[pred == y[order]][:16]
    for eps, asr in zip(cfg.eps_schedule, diag.pgd_asr):
        alpha = cfg.step_ratio * eps / cfg.steps
        ref = evaluate_attack(model, x[subset], y[subset], "pgd", eps=eps, alpha=alpha, steps=5, seed=3)
        assert ref.asr == asr
    assert diag.pgd_asr_at_eps == diag.pgd_asr[0]


def test_quantised_input_fails_gradient_and_blackbox_checks(digits):
    model, x, y = digits
    diag = check_gradient_masking(Wrap(model, "quantise"), x, y, eps=EPS, config=CFG)
    assert not diag.passed
    assert diag.zero_grad_fraction == 1.0
    assert not diag.check("input_gradients").passed
    # Black-box Square beats white-box PGD, whose gradients are all zero.
    assert diag.square_asr_at_eps > diag.pgd_asr_at_eps + CFG.blackbox_tolerance
    assert not diag.check("whitebox_beats_blackbox").passed


def test_detached_input_fails_and_pgd_cannot_run(digits):
    model, x, y = digits
    diag = check_gradient_masking(Wrap(model, "detach"), x, y, eps=EPS, config=CFG)
    assert set(diag.failed) >= {
        "input_gradients",
        "asr_monotonic_in_eps",
        "asr_at_large_eps",
        "whitebox_beats_blackbox",
    }
    assert diag.pgd_asr == () and math.isnan(diag.pgd_asr_at_eps)
    assert "detached" in diag.check("input_gradients").detail
    with pytest.raises(RuntimeError, match="attack 'pgd' failed on this model.*masks gradients"):
        evaluate_attack(Wrap(model, "detach"), x[:20], y[:20], "pgd", eps=EPS, alpha=EPS / 4)


def test_nan_gradients_fail(digits):
    model, x, y = digits
    diag = check_gradient_masking(Wrap(model, "nan_grad"), x, y, eps=EPS, config=CFG)
    assert not diag.grad_finite
    assert not diag.check("input_gradients").passed and not diag.passed


def test_probability_outputs_fail(digits):
    model, x, y = digits
    diag = check_gradient_masking(Wrap(model, "softmax"), x, y, eps=EPS, config=CFG)
    assert diag.outputs_are_probabilities
    assert not diag.check("outputs_not_probabilities").passed


def test_randomised_model_needs_eot(digits):
    model, x, y = digits
    noisy = Wrap(model, "noisy")
    without = check_gradient_masking(noisy, x, y, eps=EPS, config=CFG)
    assert without.randomized and not without.check("deterministic_or_eot").passed
    cfg = MaskingConfig(n_examples=16, eps_schedule=(0.1, 1.0), steps=5, square_queries=50, eot_iter=2)
    with_eot = check_gradient_masking(noisy, x, y, eps=EPS, config=cfg)
    assert with_eot.check("deterministic_or_eot").passed


def test_report_of_a_masked_model_is_flagged(digits):
    model, x, y = digits
    report = evaluate(
        Wrap(model, "quantise"),
        x[:60],
        y[:60],
        ["fgsm"],
        dataset="digits",
        masking=CFG,
        progress=False,
        model_name="quantised",
    )
    assert not report.trustworthy
    assert report.flag.startswith("MASKING: ") and "input_gradients" in report.flag
    assert "⚠" in render_markdown(report)


def test_no_correct_image_means_nothing_is_trusted(digits):
    model, x, _y = digits
    wrong = (model(x).argmax(1) + 1) % 10
    diag = check_gradient_masking(model, x, wrong.detach(), eps=EPS, config=CFG)
    assert diag.n_examples == 0 and not diag.passed and len(diag.failed) == len(CHECK_NAMES)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"n_examples": 0}, "n_examples=0"),
        ({"eps_schedule": ()}, "eps_schedule=()"),
        ({"eps_schedule": (0.1, 0.05)}, "strictly increasing"),
        ({"eps_schedule": (0.0, 0.5)}, r"\(0, 1\]"),
        ({"eps_schedule": (0.5, 2.0)}, r"eps=2.0 is out of range"),
        ({"monotonic_tolerance": -0.1}, "monotonic_tolerance=-0.1"),
        ({"min_asr_at_max_eps": 1.5}, "min_asr_at_max_eps=1.5"),
        ({"eot_iter": 0}, "eot_iter=0"),
        ({"step_ratio": 0}, "step_ratio=0"),
        ({"eps": -1.0}, "eps=-1.0"),
    ],
)
def test_masking_config_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        MaskingConfig(**kwargs)


def test_check_needs_an_eps(digits):
    model, x, y = digits
    with pytest.raises(ValueError, match="needs an ε"):
        check_gradient_masking(model, x, y)
    with pytest.raises(ValueError, match="clean_predictions"):
        check_gradient_masking(model, x, y, eps=EPS, clean_predictions=y[:3])


@pytest.mark.parametrize(
    "pgd_asr, pgd_at_eps, square_at_eps, expected",
    [
        ((0.1, 0.5, 0.9, 1.0), 0.5, 0.3, (True, True, True)),
        ((0.1, 0.5, 0.47, 1.0), 0.5, 0.54, (True, True, True)),  # dips and gaps inside the tolerances
        ((0.1, 0.6, 0.3, 1.0), 0.6, 0.3, (False, True, True)),  # ASR falls as ε grows
        ((0.1, 0.5, 0.9, 0.9), 0.5, 0.3, (True, False, True)),  # unbounded PGD stays below 95 %
        ((0.1, 0.2, 0.3, 1.0), 0.2, 0.6, (True, True, False)),  # black box beats white box
    ],
)
def test_attack_check_rules(pgd_asr, pgd_at_eps, square_at_eps, expected):
    cfg = MaskingConfig(eps_schedule=(0.01, 0.05, 0.1, 1.0))
    mono, large, white = judge_attack_checks(pgd_asr, pgd_at_eps, square_at_eps, 0.05, cfg)
    drops = [a - b for a, b in itertools.pairwise(pgd_asr)]
    independent = (
        all(d <= cfg.monotonic_tolerance for d in drops),
        pgd_asr[-1] >= cfg.min_asr_at_max_eps,
        pgd_at_eps + cfg.blackbox_tolerance >= square_at_eps,
    )
    assert (mono.passed, large.passed, white.passed) == independent == expected
    assert (mono.name, large.name, white.name) == CHECK_NAMES[:3]
    with pytest.raises(ValueError, match="pgd_asr has 2 values"):
        judge_attack_checks((0.1, 0.2), 0.1, 0.1, 0.05, cfg)
