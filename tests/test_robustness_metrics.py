"""Robustness numbers as the field defines them: per-example worst case over the suite, Wilson and Newcombe
intervals, the smallest flipping ε (an adversary cost that measures the model), near-chance models flagged,
iterative attacks that cannot reach their ε refused or labelled."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from qshield.attacks import AttackConfig
from qshield.evaluation import (
    CHANCE_MARGIN,
    MaskingConfig,
    MinEpsConfig,
    difference_interval,
    evaluate,
    render_markdown,
    wilson_interval,
    worst_case,
)
from qshield.training import TrainConfig, train

from tests._digits import train_digits_mlp

Z95 = 1.959963984540054


def _wilson(k: int, n: int) -> tuple[float, float]:
    """Closed-form Wilson interval (independent of the library's SciPy call)."""
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return (centre - half, centre + half)


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = train_digits_mlp()
    return model, x[:120], y[:120]


# ----------------------------------------------------------------------------------------------- intervals


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (57, 200), (1, 1)])
def test_wilson_interval_matches_the_closed_form(k, n):
    assert wilson_interval(k, n) == pytest.approx(_wilson(k, n), abs=1e-12)
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_interval_rejects_bad_counts():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    for bad in ((-1, 5), (6, 5), (1.5, 5), (True, 5)):
        with pytest.raises(ValueError, match="allowed values"):
            wilson_interval(*bad)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 5, confidence=1.0)


def test_difference_interval_reproduces_newcombes_worked_example():
    # Newcombe (1998), Stat. Med. 17:873, Table II example (a): 56/70 - 48/80, method 10 -> 0.0524 to 0.3339
    d, lo, hi = difference_interval(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    assert all(math.isnan(v) for v in difference_interval(1, 2, 0, 0))


# ----------------------------------------------------------------------------------------------- worst case


def test_worst_case_counts_an_image_robust_only_if_no_attack_fools_it():
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    clean = torch.tensor([0, 1, 2, 3, 4, 0])  # image 5 is wrong clean: never attacked, never robust
    a = torch.tensor([9, 1, 2, 3, 4, 0])  # fools image 0
    b = torch.tensor([9, 9, 2, 3, 4, 0])  # fools images 0 and 1
    c = torch.tensor([0, 1, 9, 3, 4, 0])  # fools image 2 alone
    wc = worst_case(clean, labels, [("a", a), ("b", b), ("c", c)])
    assert (wc.n_total, wc.n_attacked, wc.n_robust) == (6, 5, 2)  # images 3 and 4
    assert wc.robust_accuracy == 2 / 6 and wc.asr == 3 / 5
    assert dict(wc.fooled_by) == {"a": 1, "b": 2, "c": 1}
    assert dict(wc.only_fooled_by) == {"a": 0, "b": 1, "c": 1}
    assert wc.strongest_attack == "b"
    assert wc.robust_accuracy_ci == pytest.approx(_wilson(2, 6)) and wc.asr_ci == pytest.approx(_wilson(3, 5))
    # a repeated attack name stays distinguishable
    assert worst_case(clean, labels, [("a", a), ("a", c)]).attacks == ("a", "a#1")


def test_evaluate_reports_the_worst_case_over_the_suite(digits):
    model, x, y = digits
    suite = [AttackConfig("fgsm", 0.1), AttackConfig("pgd", 0.1, {"alpha": 0.025, "steps": 8}),
             AttackConfig("square", 0.1, {"n_queries": 50})]
    report = evaluate(model, x, y, suite, diagnostics=False, progress=False)
    wc = report.worst_case
    assert wc is not None and wc.attacks == ("fgsm", "pgd", "square")
    assert wc.n_attacked == report.results[0].n_attacked
    assert wc.robust_accuracy <= min(r.robust_accuracy for r in report.results)
    assert wc.asr >= max(r.asr for r in report.results)
    assert dict(wc.fooled_by) == {r.attack: r.n_fooled for r in report.results}
    assert wc.strongest_attack == max(report.results, key=lambda r: r.n_fooled).attack
    # the union of what each attack fools is at most the sum, at least the largest
    fooled = wc.n_attacked - wc.n_robust
    assert max(wc.fooled_by.values()) <= fooled <= sum(wc.fooled_by.values())


# ----------------------------------------------------------------------------------------------- minimal ε


class _Linear2(nn.Module):
    """Two-class linear model with logits (w·x + b, 0): the smallest L∞ perturbation that flips x is
    |w·x + b| / ||w||_1 (moving every pixel by ε along -sign(w) changes the margin by ε ||w||_1)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_minimal_eps_finds_the_analytic_boundary_of_a_linear_model():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=gen)
    x = 0.5 + 0.02 * torch.randn(30, 1, 4, 4, generator=gen)  # near mid-grey: the [0, 1] box never binds
    model = _Linear2(w, b=0.0)
    margin = x.flatten(1) @ w
    y = (margin <= 0).long()  # label = the model's own prediction: every image is attacked
    config = MinEpsConfig(eps_max=0.5, rounds=10, steps=10)
    report = evaluate(model, x, y, [AttackConfig("fgsm", 0.01)], diagnostics=False, progress=False, min_eps=config)
    flips = report.min_eps
    exact = (margin.abs() / w.abs().sum()).tolist()
    assert flips is not None and len(flips.values) == 30 and flips.n_censored == 0
    for found, true in zip(flips.values, exact, strict=True):
        assert true - 1e-6 <= found <= true + flips.resolution + 1e-6
    assert flips.median == pytest.approx(sorted(flips.values)[14] / 2 + sorted(flips.values)[15] / 2)


def test_an_image_not_flipped_at_eps_max_is_censored_at_eps_max():
    w = torch.ones(16)
    x = torch.full((4, 1, 4, 4), 0.9)  # margin 14.4: needs eps 0.9 to flip, beyond eps_max
    model = _Linear2(w, b=0.0)
    report = evaluate(model, x, torch.zeros(4, dtype=torch.long), [AttackConfig("fgsm", 0.01)], diagnostics=False,
                      progress=False, min_eps=MinEpsConfig(eps_max=0.2, rounds=3, steps=5))
    assert report.min_eps.n_censored == 4 and report.min_eps.values == (0.2,) * 4 and report.min_eps.median == 0.2


def test_bad_min_eps_settings_are_refused_before_compute():
    for kwargs, field in (({"eps_max": 0.0}, "eps_max"), ({"rounds": 0}, "rounds"), ({"steps": 1.5}, "steps"),
                          ({"step_ratio": 0.5}, "step_ratio"), ({"params": {"bogus": 1}}, "bogus")):
        with pytest.raises(ValueError, match=field):
            MinEpsConfig(**kwargs)


def test_same_configuration_different_robustness_gives_different_adversary_costs(digits):
    """Two MLPs of one architecture, attack suite and budget: standard vs PGD-adversarially trained. The queries
    an attack spends per example are set by the attack (equal for both); the smallest flipping ε measures the
    model (larger for the adversarially trained one)."""
    _, x, y = digits
    data = TensorDataset(x, y)

    def fit(method: str) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        train(model, data, TrainConfig(epochs=40, lr=1e-2, batch_size=40, seed=0, method=method, pgd_eps=0.1,
                                       pgd_alpha=0.025, pgd_steps=5), progress=False)
        return model.eval()

    suite = [AttackConfig("pgd", 0.1, {"alpha": 0.025, "steps": 10})]
    config = MinEpsConfig(eps_max=1.0, rounds=7, steps=10)
    plain = evaluate(fit("standard"), x, y, suite, diagnostics=False, progress=False, min_eps=config)
    robust = evaluate(fit("pgd_at"), x, y, suite, diagnostics=False, progress=False, min_eps=config)
    assert plain.results[0].forward_per_example == robust.results[0].forward_per_example == 10.0
    assert robust.min_eps.median > plain.min_eps.median + 2 * plain.min_eps.resolution


# ----------------------------------------------------------------------------------------------- guards


class _Constant(nn.Module):
    """Always predicts class 0 (with a gradient path, so every diagnostic can run)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lin(x.flatten(1)) * 1e-3
        return out + torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 10) * 5.0


def test_a_model_near_chance_is_never_trustworthy(digits):
    _, x, y = digits
    fast = MaskingConfig(n_examples=8, steps=5, square_queries=20, eps=0.1)
    report = evaluate(_Constant(), x, y, [AttackConfig("fgsm", 0.1)], progress=False, masking=fast)
    assert report.num_classes == 10 and report.chance == pytest.approx(0.1)
    assert report.odr_ci[0] <= report.chance + CHANCE_MARGIN
    assert report.near_chance and not report.trustworthy and "NEAR CHANCE" in report.flag
    assert "⚠" in render_markdown(report)
    model, _, _ = digits  # the trained MLP is far from chance
    good = evaluate(model, x, y, [AttackConfig("fgsm", 0.1)], progress=False, masking=fast)
    assert not good.near_chance and "NEAR CHANCE" not in good.flag


def test_an_unreachable_attack_runs_only_when_opted_in_and_is_labelled(digits):
    model, x, y = digits
    with pytest.raises(ValueError, match="pgd: alpha=.*cannot reach eps"):
        evaluate(model, x, y, [AttackConfig("pgd", 0.3, {"alpha": 0.01, "steps": 5})], progress=False)
    with pytest.raises(ValueError, match="vmifgsm: alpha=.*cannot reach eps"):
        evaluate(model, x, y, ["fgsm", AttackConfig("vmifgsm", 0.3, {"alpha": 0.01})], eps=0.3, progress=False)
    weak = AttackConfig("pgd", 0.3, {"alpha": 0.01, "steps": 5, "allow_unreachable": True})
    report = evaluate(model, x, y, [weak], diagnostics=False, progress=False)
    assert report.results[0].reaches_eps is False
    text = render_markdown(report)
    assert "pgd †" in text and "cannot reach its ε" in text


def test_a_report_whose_attacks_all_fall_short_of_eps_is_not_trustworthy(digits):
    """An attack held short of its ε may find fewer adversarial images than the threat model allows: a worst case
    built only from such attacks is flagged; beside an attack that reaches ε it is only noted (†)."""
    model, x, y = digits
    fast = MaskingConfig(n_examples=8, steps=5, square_queries=20, eps=0.3)
    weak = AttackConfig("pgd", 0.3, {"alpha": 0.01, "steps": 5, "allow_unreachable": True})
    alone = evaluate(model, x, y, [weak], progress=False, masking=fast)
    assert alone.unreachable == ("pgd",) and not alone.reaches_eps
    assert not alone.trustworthy and "NO ATTACK REACHES ε: pgd" in alone.flag
    assert not alone.row_trustworthy(alone.results[0])
    both = evaluate(model, x, y, [AttackConfig("fgsm", 0.3), weak], progress=False, masking=fast)
    assert both.unreachable == ("pgd",) and both.reaches_eps
    assert both.flag.endswith("(† pgd cannot reach ε)") and "NO ATTACK REACHES" not in both.flag
    # otherwise judged as before: diagnostics passed and not near chance
    assert both.trustworthy == (both.diagnostics.passed and not both.near_chance)
