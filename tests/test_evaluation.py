"""qshield.evaluation: metrics, evaluate_attack / evaluate, counted cost, reports, plots, input errors."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from qshield.attacks import ATTACKS, AttackConfig
from qshield.evaluation import (
    TABLE_COLUMNS,
    AsrCurve,
    MaskingConfig,
    asr,
    asr_vs_eps,
    compare_with_paper,
    comparison_markdown,
    evaluate,
    evaluate_attack,
    odr,
    plot_asr_vs_eps,
    render_markdown,
    results_table,
    robust_accuracy,
    write_results,
)

from tests._digits import train_digits_mlp

FAST_MASKING = MaskingConfig(n_examples=24, steps=10, square_queries=100)
SMALL = {
    "fgsm": {},
    "pgd": {"steps": 4, "alpha": 8 / 255},  # 4 x 8/255 reaches the digits' 32/255
    "apgd": {"steps": 4},
    "vmifgsm": {"steps": 2, "N": 2, "alpha": 16 / 255},
    "cw": {"c": 1.0, "steps": 5, "binary_search_steps": 2},
    "deepfool": {"steps": 5},
    "onepixel": {"steps": 3, "popsize": 5},
    "square": {"n_queries": 50},
    "autoattack": {"steps": 3, "n_queries": 20, "n_target_classes": 2},
}




@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A trained MLP and 40 test images (mostly, not all, classified correctly)."""
    model, x, y = train_digits_mlp()
    with torch.no_grad():
        wrong = (model(x).argmax(1) != y).nonzero().flatten()
    idx = torch.cat([torch.arange(37), wrong[:3]])  # guarantee some clean errors
    return model, x[idx], y[idx]


class SelfCounting(nn.Module):
    """Counts the examples of every forward call and every gradient reaching its output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_examples = 0
        self.backward_examples = 0

    def _count(self, grad: torch.Tensor) -> torch.Tensor:
        self.backward_examples += grad.shape[0]
        return grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forward_examples += x.shape[0]
        out = self.model(x)
        return out * 1.0 if not out.requires_grad else _Tap.apply(out, self._count)


class _Tap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out, fn):  # type: ignore[override]
        ctx.fn = fn
        return out.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return ctx.fn(grad), None


class MeanThreshold(nn.Module):
    """Two classes: logits ``k * (mean(x) - 0.5) * [-1, 1]``; class 1 iff the mean pixel exceeds 0.5."""

    def __init__(self, k: float = 20.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(dim=1, keepdim=True) - 0.5
        return self.k * torch.cat([-m, m], dim=1)


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_on_a_lookup_of_predictions():
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    clean = torch.tensor([0, 1, 2, 3, 4, 5, 0, 0, 0, 9])  # 7 correct
    adv = torch.tensor([1, 1, 0, 3, 0, 5, 6, 7, 8, 0])  # fooled among correct: 0, 2, 4, 9
    correct = [c == t for c, t in zip(clean.tolist(), labels.tolist())]
    fooled = [ok and a != t for ok, a, t in zip(correct, adv.tolist(), labels.tolist())]
    survived = [ok and a == t for ok, a, t in zip(correct, adv.tolist(), labels.tolist())]
    assert odr(clean, labels) == sum(correct) / 10 == 0.7
    assert asr(clean, adv, labels) == sum(fooled) / sum(correct) == 4 / 7
    assert robust_accuracy(clean, adv, labels) == sum(survived) / 10 == 0.3
    # Adversarial labels of images that were not attacked do not matter.
    assert asr(clean, torch.where(torch.tensor(correct), adv, labels), labels) == asr(clean, adv, labels)


def test_metric_edge_cases_and_errors():
    y = torch.tensor([1, 1])
    assert math.isnan(asr(torch.tensor([0, 0]), torch.tensor([0, 0]), y))
    assert math.isnan(odr(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)))
    with pytest.raises(ValueError, match="same length"):
        odr(torch.tensor([1, 2, 3]), y)
    with pytest.raises(ValueError, match="adv_pred/labels"):
        asr(y, torch.tensor([[1, 1]]), y)


def test_evaluate_attack_on_a_hand_checked_model():
    """FGSM on MeanThreshold moves every pixel of a constant image by ε towards the other class."""
    values = [0.55, 0.7, 0.3, 0.45, 0.8, 0.2, 0.52, 0.05]
    labels = [1, 1, 0, 0, 0, 1, 1, 0]
    eps = 0.1
    images = torch.tensor(values).reshape(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    # Independent expectation from the rule.
    clean = [int(v > 0.5) for v in values]
    adv_values = [min(max(v - eps if t == 1 else v + eps, 0.0), 1.0) for v, t in zip(values, labels)]
    adv = [int(v > 0.5) for v in adv_values]
    correct = [c == t for c, t in zip(clean, labels)]
    fooled = [ok and a != t for ok, a, t in zip(correct, adv, labels)]
    expected_odr = sum(correct) / len(values)
    expected_asr = sum(fooled) / sum(correct)
    expected_robust = sum(ok and not f for ok, f in zip(correct, fooled)) / len(values)
    assert (expected_odr, expected_asr, expected_robust) == (6 / 8, 3 / 6, 3 / 8)  # checked by hand

    result = evaluate_attack(MeanThreshold(), images, torch.tensor(labels), "fgsm", eps=eps, batch_size=3)
    assert result.attack == "fgsm" and result.eps == eps
    assert result.odr == pytest.approx(expected_odr)
    assert result.asr == pytest.approx(expected_asr)
    assert result.robust_accuracy == pytest.approx(expected_robust)
    assert (result.n_total, result.n_attacked, result.n_fooled) == (8, sum(correct), sum(fooled))
    assert (result.forward_per_example, result.backward_per_example) == (1.0, 1.0)
    assert result.seconds_per_example >= 0 and math.isfinite(result.seconds_per_example)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_evaluate_attack_counts_match_an_independent_count(digits, name):
    model, x, y = digits
    own = SelfCounting(model)
    result = evaluate_attack(own, x, y, name, dataset="digits", batch_size=16, **SMALL[name])
    n, k = result.n_total, result.n_attacked
    assert 0 < k < n
    # The counting model also saw the clean pass (n) and the final check of the adversarials (k).
    assert result.forward_per_example == pytest.approx((own.forward_examples - n - k) / k)
    assert result.backward_per_example == pytest.approx(own.backward_examples / k)
    assert result.robust_accuracy <= result.odr
    assert result.robust_accuracy == pytest.approx(result.odr * (1 - result.asr))
    assert result.config is not None and result.config.name == name


def test_fgsm_and_pgd_cost_exactly_their_steps(digits):
    model, x, y = digits
    fgsm = evaluate_attack(model, x, y, "fgsm", eps=0.1)
    pgd = evaluate_attack(model, x, y, AttackConfig("pgd", 0.1, {"steps": 6, "alpha": 0.025}))
    assert (fgsm.forward_per_example, fgsm.backward_per_example) == (1.0, 1.0)
    assert (pgd.forward_per_example, pgd.backward_per_example) == (6.0, 6.0)
    # An explicit eps beats the config's own (as in build_attack); evaluate() uses eps only as a default.
    assert evaluate_attack(model, x, y, AttackConfig("fgsm", 0.2), eps=0.05).eps == 0.05


def test_attacks_are_seeded_and_leave_the_global_rng_alone(digits):
    model, x, y = digits
    state = torch.get_rng_state()
    a = evaluate_attack(model, x, y, "square", eps=0.1, n_queries=30, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    b = evaluate_attack(model, x, y, "square", eps=0.1, n_queries=30, seed=1)
    assert (a.asr, a.forward_per_example) == (b.asr, b.forward_per_example)


def test_model_mode_is_restored(digits):
    model, x, y = digits
    model.train()
    try:
        evaluate_attack(model, x, y, "fgsm", eps=0.1)
        assert model.training
    finally:
        model.eval()


# ----------------------------------------------------------------------------------------------- evaluate


def test_evaluate_builds_a_report(digits):
    model, x, y = digits
    attacks = [
        "fgsm",
        AttackConfig("pgd", params={"steps": 3, "alpha": 12 / 255}),
        AttackConfig("square", eps=0.2, params={"n_queries": 40}),
    ]
    report = evaluate(model, x, y, attacks, dataset="digits", masking=FAST_MASKING, progress=True, model_name="mlp")
    assert [r.attack for r in report.results] == ["fgsm", "pgd", "square"]
    assert report.result("fgsm").eps == pytest.approx(32 / 255)
    assert report.result("square").eps == 0.2  # a config's own ε wins
    single = evaluate_attack(model, x, y, "fgsm", dataset="digits")
    assert report.result("fgsm").asr == single.asr and report.odr == single.odr
    assert report.diagnostics is not None and report.trustworthy and report.flag == "ok"
    with pytest.raises(KeyError, match="deepfool"):
        report.result("deepfool")

    unchecked = evaluate(model, x, y, ["fgsm"], eps=0.1, diagnostics=False, progress=False)
    assert unchecked.diagnostics is None and not unchecked.trustworthy and unchecked.flag == "unchecked"


def test_results_table_csv_and_markdown(digits, tmp_path):
    model, x, y = digits
    good = evaluate(
        model, x, y, ["fgsm", "deepfool"], dataset="digits", masking=FAST_MASKING, progress=False, model_name="mlp"
    )
    bad = evaluate(
        _Quantised(model),
        x,
        y,
        ["fgsm"],
        dataset="digits",
        masking=FAST_MASKING,
        progress=False,
        model_name="quantised",
    )
    table = results_table([good, bad])
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert list(zip(table["model"], table["attack"])) == [
        ("mlp", "fgsm"), ("mlp", "deepfool"), ("mlp", "worst-case"), ("quantised", "fgsm"), ("quantised", "worst-case")
    ]
    assert table.loc[0, "asr"] == good.result("fgsm").asr
    assert math.isnan(table.loc[1, "eps"])
    assert list(table["trustworthy"]) == [True, True, True, False, False]
    assert table.loc[3, "masking"].startswith("MASKING: ")
    # the worst-case row: an image counts as robust only if neither fgsm nor deepfool fooled it
    wc = table.loc[2]
    assert wc["robust_accuracy"] <= min(table.loc[0, "robust_accuracy"], table.loc[1, "robust_accuracy"])
    assert wc["robust_accuracy"] == good.worst_case.robust_accuracy
    # every rate's interval is the Wilson score interval of its counts (closed form, computed here)
    for rate, k, n in (
        ("asr", good.result("fgsm").n_fooled, good.result("fgsm").n_attacked),
        ("robust_accuracy", good.worst_case.n_robust, good.worst_case.n_total),
    ):
        row = table.loc[0] if rate == "asr" else wc
        assert (row[f"{rate}_ci_low"], row[f"{rate}_ci_high"]) == pytest.approx(_wilson(k, n))
        assert row[f"{rate}_ci_low"] <= row[rate] <= row[f"{rate}_ci_high"]

    csv_path, md_path = write_results([good, bad], tmp_path / "out", stem="digits")
    back = pd.read_csv(csv_path)
    assert list(back.columns) == list(TABLE_COLUMNS)
    assert back["asr"].tolist() == pytest.approx(table["asr"].tolist())
    md = md_path.read_text(encoding="utf-8")
    assert md == render_markdown(table)
    lines = md.splitlines()
    mlp_rows = [l for l in lines if l.startswith("| mlp ")]
    bad_rows = [l for l in lines if l.startswith("| quantised ")]
    assert len(mlp_rows) == 3 and len(bad_rows) == 2
    assert all("⚠" not in l for l in mlp_rows) and bad_rows[0].count("⚠") == 3
    lo, hi = _wilson(good.result("fgsm").n_fooled, good.result("fgsm").n_attacked)
    asr_text = f"{100 * good.result('fgsm').asr:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert asr_text in mlp_rows[0] and "32/255" in mlp_rows[0]
    assert "**worst-case**" in mlp_rows[2]
    assert "gradient-masking diagnostics" in md
    with pytest.raises(ValueError, match="stem"):
        write_results(table, tmp_path, stem="a/b")


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval in closed form (Wilson 1927), independent of the library's SciPy call."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half, centre + half)


class _Quantised(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 4) / 4)


def test_asr_vs_eps_and_plot(digits, tmp_path):
    model, x, y = digits
    eps_values = [0.02, 0.1, 0.3]
    curve = asr_vs_eps(model, x, y, eps_values, attack="fgsm", label="mlp")
    independent = [evaluate_attack(model, x, y, "fgsm", eps=e).asr for e in eps_values]
    assert curve == AsrCurve("mlp", "fgsm", tuple(eps_values), tuple(independent), curve.n_attacked)
    other = AsrCurve("const", "fgsm", (0.1, 0.2), (0.5, 0.5), 10)
    png = tmp_path / "asr.png"
    drawn = plot_asr_vs_eps([curve, other], png, title="digits")
    assert drawn == (curve, other)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="eps values"):
        plot_asr_vs_eps(AsrCurve("x", "pgd", (0.1,), (0.1, 0.2), 1), png)
    with pytest.raises(ValueError, match="eps_values"):
        asr_vs_eps(model, x, y, [0.2, 0.1])
    with pytest.raises(ValueError, match="attack='deepfool' has no ε budget"):
        asr_vs_eps(model, x, y, [0.1], attack="deepfool")


def test_compare_with_paper(digits):
    model, x, y = digits
    pgd = AttackConfig("pgd", params={"alpha": 0.01})
    report = evaluate(model, x, y, ["fgsm", pgd], eps=0.1, diagnostics=False, progress=False, model_name="CNN")
    paper = {"CNN": {"fgsm": 47.29}}
    cmp = compare_with_paper(report, paper)
    assert list(cmp["attack"]) == ["fgsm", "pgd", "worst-case"]
    ours = 100 * report.result("fgsm").asr
    assert cmp.loc[0, "asr_ours_pct"] == pytest.approx(ours)
    assert cmp.loc[0, "delta_pct"] == pytest.approx(ours - 47.29)
    assert math.isnan(cmp.loc[1, "asr_paper_pct"])
    text = comparison_markdown(cmp)
    assert "47.29" in text and "⚠" in text  # diagnostics were not run
    with pytest.raises(ValueError, match="paper_asr"):
        compare_with_paper(report, {"CNN": 47.29})  # type: ignore[dict-item]


# ------------------------------------------------------------------------------------------------ errors


class _Refusing(nn.Module):
    """Fails the test if anything is computed."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model was called before the inputs were validated")


GOOD_X = torch.rand(4, 1, 2, 2)
GOOD_Y = torch.tensor([0, 1, 0, 1])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"images": GOOD_X * 2}, r"images has values in .*allowed values: \[0, 1\]"),
        ({"images": GOOD_X[0]}, r"images must be a floating tensor of shape \[N, C, H, W\]"),
        ({"images": GOOD_X.long()}, r"images must be a floating tensor"),
        ({"images": GOOD_X.masked_fill(GOOD_X > 0.5, math.nan)}, "NaN"),
        ({"labels": GOOD_Y[:3]}, "labels has 3 entries but images has 4"),
        ({"labels": GOOD_Y.float()}, r"labels must be an integer tensor of shape \[N\]"),
        ({"labels": -GOOD_Y}, "negative"),
        ({"attack": "bim"}, "attack='bim' does not exist"),
        ({"eps": 2.0}, r"eps=2.0 is out of range"),
        ({"attack": "pgd", "eps": None}, "needs eps"),
        ({"stepz": 1}, "accepted keys"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"dataset": "svhn"}, "dataset='svhn'"),
    ],
)
def test_evaluate_attack_rejects_bad_input_before_compute(kwargs, pattern):
    args = {"images": GOOD_X, "labels": GOOD_Y, "attack": "fgsm", "eps": 0.1}
    args.update(kwargs)
    model = _Refusing()
    with pytest.raises(ValueError, match=pattern):
        evaluate_attack(model, args.pop("images"), args.pop("labels"), args.pop("attack"), **args)


def test_evaluate_rejects_bad_input_before_compute():
    model = _Refusing()
    with pytest.raises(ValueError, match="attacks='fgsm' is invalid"):
        evaluate(model, GOOD_X, GOOD_Y, "fgsm", eps=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="diagnostics=True needs an ε"):
        evaluate(model, GOOD_X, GOOD_Y, ["deepfool"])
    with pytest.raises(ValueError, match="attack='square' needs eps"):
        evaluate(model, GOOD_X, GOOD_Y, ["deepfool", "square"], diagnostics=False)
    with pytest.raises(ValueError, match="masking must be a MaskingConfig"):
        evaluate(model, GOOD_X, GOOD_Y, ["fgsm"], eps=0.1, masking={"n_examples": 3})  # type: ignore[arg-type]


def test_label_outside_the_model_classes_is_rejected(digits):
    model, x, y = digits
    with pytest.raises(ValueError, match="labels has class 10 but the model outputs 10 classes"):
        evaluate_attack(model, x[:4], torch.tensor([0, 1, 10, 2]), "fgsm", eps=0.1)
    with pytest.raises(ValueError, match=r"model output must have shape \[B, C\]"):
        evaluate_attack(nn.Flatten(0), x[:4], y[:4], "fgsm", eps=0.1)
