"""Gradient-masking diagnostics: plain models PASS and masked ones FAIL, in each of three seeds; thresholds from
confidence intervals; the finite-difference, EOT-convergence and gradient-source checks; per-row flags."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qshield.attacks import AttackConfig, HiddenParts, declare_hidden
from qshield.evaluation import (
    CHECK_NAMES,
    MaskingConfig,
    check_gradient_masking,
    difference_interval,
    evaluate,
    evaluate_attack,
    judge_attack_checks,
    judge_eot_convergence,
    judge_gradient_sources,
    render_markdown,
    wilson_interval,
)

from tests._digits import train_digits_mlp
from tests._masked import (
    DecoyGradient,
    DetachedBranch,
    Undeclared,
    train_reference_hybrid,
    train_small_cnn,
    train_tiny_hybrid,
)

CFG = MaskingConfig(n_examples=24, steps=10, square_queries=100)
EPS = 32 / 255
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out digits (the victims train on the first 1400)."""
    _, x, y = train_digits_mlp()
    return x[1400:1700], y[1400:1700]


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = train_digits_mlp()
    return model, x[:200], y[:200]


@pytest.fixture(scope="module")
def victims() -> dict[str, nn.Module]:
    mlp, x, y = train_digits_mlp()
    hybrid = train_tiny_hybrid(x, y)
    reference = train_reference_hybrid(x, y)
    return {
        "mlp": mlp,
        "hybrid": hybrid,
        "cnn": train_small_cnn(x, y),
        "detached": DetachedBranch(hybrid),
        "decoy": DecoyGradient(mlp),
        "reference": reference,
    }


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


def _seeded(seed: int, **changes: object) -> MaskingConfig:
    return MaskingConfig(**{**CFG.__dict__, "seed": seed, **changes})


# ------------------------------------------------------------------------------- plain pass, masked fail, 3 seeds


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", ["mlp", "hybrid", "cnn"])
def test_plain_models_pass_every_check_in_every_seed(victims, data, name, seed):
    x, y = data
    diag = check_gradient_masking(victims[name], x, y, eps=EPS, config=_seeded(seed))
    assert diag.passed, diag.summary()
    assert tuple(c.name for c in diag.checks) == CHECK_NAMES
    assert diag.adaptive == "none" and not diag.randomized and diag.grad_finite
    assert diag.gradient_mismatch_fraction == 0.0  # autograd agrees with finite differences on every image


MASKED = {
    # model builder, adaptive mode, config changes, a check that must be among the failures
    "quantise": (lambda v: Wrap(v["mlp"], "quantise"), "auto", {}, "input_gradients"),
    "detach": (lambda v: Wrap(v["mlp"], "detach"), "auto", {}, "input_gradients"),
    "nan_grad": (lambda v: Wrap(v["mlp"], "nan_grad"), "auto", {}, "input_gradients"),
    "softmax": (lambda v: Wrap(v["mlp"], "softmax"), "auto", {}, "outputs_not_probabilities"),
    "noisy": (lambda v: Wrap(v["mlp"], "noisy"), "auto", {}, "deterministic_or_eot"),
    "detached-branch hybrid": (lambda v: v["detached"], "auto", {}, "gradients_match_finite_differences"),
    "decoy gradient": (lambda v: v["decoy"], "auto", {}, "gradients_match_finite_differences"),
    # the reference hybrid attacked the naive way (no BPDA, no EOT), as the paper did
    "reference, naive": (lambda v: v["reference"], "off", {}, "gradients_match_finite_differences"),
    # a reconstruction of it written outside qshield (declares nothing), even with EOT configured
    "reference, undeclared, eot 4": (lambda v: Undeclared(v["reference"]), "auto", {"eot_iter": 4},
                                     "gradients_match_finite_differences"),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(MASKED))
def test_masked_models_are_flagged_in_every_seed(victims, data, name, seed):
    build, adaptive, changes, expected = MASKED[name]
    x, y = data
    diag = check_gradient_masking(build(victims), x, y, eps=EPS, config=_seeded(seed, **changes), adaptive=adaptive)
    assert not diag.passed
    assert expected in diag.failed, diag.summary()


def test_the_partially_masked_hybrid_is_caught_with_margin(victims, data):
    """The detached-branch hybrid passes every attack-based check (its classical gradient still works), but its
    gradient disagrees with its function on most images, far beyond the tolerated 5%."""
    x, y = data
    diag = check_gradient_masking(victims["detached"], x, y, eps=EPS, config=CFG)
    assert diag.failed == ("gradients_match_finite_differences",)
    k = round(diag.gradient_mismatch_fraction * diag.n_examples)
    low, _ = wilson_interval(k, diag.n_examples)
    assert low > 3 * CFG.max_gradient_mismatch_fraction
    # the same network with its branch in the graph matches finite differences to float64 precision
    exact = check_gradient_masking(victims["hybrid"], x, y, eps=EPS, config=CFG)
    assert exact.gradient_mismatch_fraction == 0.0
    assert "median relative difference" in exact.check("gradients_match_finite_differences").detail


def test_detached_input_fails_and_pgd_cannot_run(digits):
    model, x, y = digits
    diag = check_gradient_masking(Wrap(model, "detach"), x, y, eps=EPS, config=CFG)
    assert set(diag.failed) >= {"input_gradients", "asr_monotonic_in_eps", "asr_at_large_eps",
                                "whitebox_beats_blackbox", "gradients_match_finite_differences"}
    assert diag.pgd_asr == () and math.isnan(diag.pgd_asr_at_eps)
    assert "detached" in diag.check("input_gradients").detail
    with pytest.raises(RuntimeError, match="attack 'pgd' failed on this model.*masks gradients"):
        evaluate_attack(Wrap(model, "detach"), x[:20], y[:20], "pgd", eps=EPS, alpha=EPS / 4)


def test_quantised_input_loses_to_the_black_box_significantly(digits):
    model, x, y = digits
    diag = check_gradient_masking(Wrap(model, "quantise"), x, y, eps=EPS, config=CFG)
    assert diag.zero_grad_fraction == 1.0
    n = diag.n_examples
    _, low, _ = difference_interval(round(diag.square_asr_at_eps * n), n, round(diag.pgd_asr_at_eps * n), n)
    assert low > 0 and not diag.check("whitebox_beats_blackbox").passed


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
    assert diag.source_asr == {"direct": diag.pgd_asr[0]}


# ------------------------------------------------------------------------------------------- randomness and EOT


def test_randomised_model_needs_eot_and_eot_must_converge(digits):
    model, x, y = digits
    noisy = Wrap(model, "noisy")
    without = check_gradient_masking(noisy, x, y, eps=EPS, config=CFG)
    assert without.randomized and without.eot_iter == 1
    assert without.failed == ("deterministic_or_eot",) and "without EOT" in without.check("deterministic_or_eot").detail
    cfg = MaskingConfig(n_examples=16, eps_schedule=(0.1, 1.0), steps=5, square_queries=50, eot_iter=8)
    with_eot = check_gradient_masking(noisy, x, y, eps=EPS, config=cfg)
    check = with_eot.check("deterministic_or_eot")
    assert check.passed and "16 passes" in check.detail and "8 passes" in check.detail
    assert set(with_eot.eot_asr) == {"k", "2k"} and with_eot.adaptive == "eot(8)"


@pytest.mark.parametrize(
    "k_single, k_double, converged",
    [(20, 21, True), (12, 14, True), (8, 20, False), (0, 12, False), (24, 24, True)],
)
def test_eot_convergence_rule_uses_the_newcombe_interval(k_single, k_double, converged):
    n = 24
    check = judge_eot_convergence(True, 4, [(0.1, k_single, k_double)], n, CFG)
    _, low, _ = difference_interval(k_double, n, k_single, n)
    assert check.passed == (low <= 0) == converged
    assert judge_eot_convergence(False, 1, [], n, CFG).passed  # deterministic: nothing to converge
    assert not judge_eot_convergence(True, 1, [], n, CFG).passed  # randomised without EOT
    with pytest.raises(ValueError, match="fooled with 2k=25"):
        judge_eot_convergence(True, 4, [(0.1, 3, 25)], n, CFG)


# -------------------------------------------------------------------------------------------- gradient sources


def test_the_naive_attack_on_a_decoy_gradient_loses_to_bpda(victims, data):
    """A model whose gradient is a decoy's, declaring the real network as its surrogate: attacked naively, BPDA
    beats the direct gradient beyond its interval; attacked adaptively (BPDA, the default), every check passes."""
    x, y = data
    declared = declare_hidden(victims["decoy"], HiddenParts(non_differentiable=True, description="decoy gradient"),
                              surrogate=victims["mlp"])
    naive = check_gradient_masking(declared, x, y, eps=EPS, config=CFG, adaptive="off")
    assert {"surrogate_vs_direct", "gradients_match_finite_differences"} <= set(naive.failed)
    n = naive.n_examples
    _, low, _ = difference_interval(round(naive.source_asr["bpda"] * n), n, round(naive.source_asr["direct"] * n), n)
    assert low > 0 and "SIGNIFICANT" in naive.check("surrogate_vs_direct").detail
    adaptive = check_gradient_masking(declared, x, y, eps=EPS, config=CFG)
    assert adaptive.adaptive == "bpda" and adaptive.passed, adaptive.summary()


def test_the_reference_hybrid_is_checked_with_bpda_and_eot_by_default(victims, data):
    x, y = data
    cfg = MaskingConfig(n_examples=16, eps_schedule=(4 / 255, 1.0), steps=5, square_queries=30, eot_iter=2)
    diag = check_gradient_masking(victims["reference"], x, y, eps=EPS, config=cfg)
    assert diag.adaptive == "bpda+eot(2)" and diag.hidden.randomized and diag.hidden.non_differentiable
    # the surrogate's gradient is the gradient of the function drawn (common random numbers)
    assert diag.check("gradients_match_finite_differences").passed
    assert set(diag.source_asr) == {"bpda", "direct", "transfer"}
    assert "EOT k=2" in diag.check("deterministic_or_eot").detail
    logged = json.loads(json.dumps(dataclasses.asdict(diag), default=str))  # what the orchestrator logs
    assert logged["hidden"]["randomized"] and set(logged["source_asr"]) == {"bpda", "direct", "transfer"}


@pytest.mark.parametrize(
    "own, k_own, others, passed",
    [("direct", 10, {"bpda": 12}, True), ("direct", 6, {"bpda": 20}, False), ("bpda", 20, {"direct": 6}, True),
     ("bpda", 3, {"direct": 18, "transfer": 4}, False)],
)
def test_gradient_source_rule_uses_the_newcombe_interval(own, k_own, others, passed):
    n = 24
    check = judge_gradient_sources(own, [(0.1, k_own, others)], n, CFG)
    independent = all(difference_interval(k, n, k_own, n)[1] <= 0 for k in others.values())
    assert check.passed == independent == passed
    assert judge_gradient_sources("direct", [(0.1, 5, {})], n, CFG).passed  # nothing else offered


# ------------------------------------------------------------------------------------------ rules and reports


@pytest.mark.parametrize(
    "fooled, pgd_at_eps, square_at_eps, expected",
    [
        ((2, 12, 22, 24), 12, 7, (True, True, True)),
        ((2, 12, 10, 24), 12, 14, (True, True, True)),  # dips and gaps inside the intervals
        ((2, 20, 4, 24), 20, 4, (False, True, True)),  # ASR falls significantly as ε grows
        ((2, 12, 22, 19), 12, 7, (True, False, True)),  # unbounded PGD significantly below 99 %
        ((2, 4, 8, 24), 4, 18, (True, True, False)),  # black box significantly beats white box
    ],
)
def test_attack_check_rules_come_from_confidence_intervals(fooled, pgd_at_eps, square_at_eps, expected):
    n = 24
    cfg = MaskingConfig(eps_schedule=(0.01, 0.05, 0.1, 1.0))
    mono, large, white = judge_attack_checks(fooled, pgd_at_eps, square_at_eps, n, 0.05, cfg)
    independent = (
        all(difference_interval(a, n, b, n)[1] <= 0 for a, b in itertools.combinations(fooled, 2)),
        wilson_interval(fooled[-1], n)[1] >= cfg.min_asr_at_max_eps,
        difference_interval(square_at_eps, n, pgd_at_eps, n)[1] <= 0,
    )
    assert (mono.passed, large.passed, white.passed) == independent == expected
    assert (mono.name, large.name, white.name) == CHECK_NAMES[:3]
    with pytest.raises(ValueError, match="pgd_fooled has 2 values"):
        judge_attack_checks((1, 2), 1, 1, n, 0.05, cfg)
    with pytest.raises(ValueError, match=r"square_at_eps=30 is invalid; allowed values: an integer in 0..n=24"):
        judge_attack_checks(fooled, 1, 30, n, 0.05, cfg)


def test_a_black_box_row_of_a_randomised_model_without_eot_is_flagged(digits):
    model, x, y = digits
    noisy = Wrap(model, "noisy")
    cfg = MaskingConfig(n_examples=16, eps_schedule=(0.1, 1.0), steps=5, square_queries=50, eot_iter=4)
    # the diagnostics run with EOT and pass; the evaluation's Square row without EOT is still flagged
    report = evaluate(noisy, x[:60], y[:60], [_square(1)], dataset="digits", masking=cfg, progress=False)
    with_eot = evaluate(noisy, x[:60], y[:60], [_square(4)], dataset="digits", masking=cfg, progress=False)
    (plain,) = report.results
    assert report.diagnostics.passed and report.randomized
    assert report.row_flags(plain) == ("no EOT",) and not report.row_trustworthy(plain)
    assert not report.trustworthy and "NOT ADAPTIVE: square (no EOT)" in report.flag
    (eot_row,) = with_eot.results
    assert eot_row.adaptive == "eot(4)" and with_eot.row_flags(eot_row) == () and with_eot.trustworthy
    table = render_markdown(report)
    assert "⚠" in table and "EOT for a randomised model" in table


def _square(eot: int) -> AttackConfig:
    return AttackConfig("square", params={"n_queries": 50, "eot_iter": eot})


def test_report_of_a_masked_model_is_flagged(digits):
    model, x, y = digits
    report = evaluate(Wrap(model, "quantise"), x[:60], y[:60], ["fgsm"], dataset="digits", masking=CFG,
                      progress=False, model_name="quantised")
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
        ({"eps_schedule": (0.5, 2.0)}, r"eps_schedule=\(0.5, 2.0\) is invalid; allowed values: numbers in \(0, 1\]"),
        ({"min_asr_at_max_eps": 1.5}, "min_asr_at_max_eps=1.5"),
        ({"max_gradient_mismatch_fraction": -0.1}, "max_gradient_mismatch_fraction=-0.1"),
        ({"fd_step": 0.5}, r"fd_step=0.5 is out of range; allowed values: a number in \(0, 0.01\]"),
        ({"fd_rel_tolerance": 0}, "fd_rel_tolerance=0"),
        ({"confidence": 1.0}, r"confidence=1.0 is out of range; allowed values: a number in \(0, 1\)"),
        ({"eot_iter": 0}, "eot_iter=0"),
        ({"step_ratio": 0}, "step_ratio=0"),
        ({"eps": -1.0}, "eps=-1.0"),
    ],
)
def test_masking_config_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        MaskingConfig(**kwargs)


def test_check_needs_an_eps_and_a_known_mode(digits):
    model, x, y = digits
    with pytest.raises(ValueError, match="needs an ε"):
        check_gradient_masking(model, x, y)
    with pytest.raises(ValueError, match="clean_predictions"):
        check_gradient_masking(model, x, y, eps=EPS, clean_predictions=y[:3])
    with pytest.raises(ValueError, match=r"adaptive='bpdaa' is invalid; allowed values: 'auto', 'off'"):
        check_gradient_masking(model, x, y, eps=EPS, adaptive="bpdaa")
    with pytest.raises(ValueError, match="adaptive='bpda' needs a differentiable surrogate"):
        check_gradient_masking(model, x, y, eps=EPS, adaptive="bpda")
