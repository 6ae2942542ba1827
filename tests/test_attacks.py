"""qshield.attacks: presets, ε resolution, errors, query counting, EOT, and every attack on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from qshield.attacks import (
    ATTACKS,
    DEFAULT_EPS,
    AttackConfig,
    EOTWrapper,
    Norm,
    QueryCounter,
    build_attack,
    get_preset,
)

from tests._digits import train_digits_mlp

# Small settings so that every attack runs in well under a second on 8x8 digits.
SMALL = {
    "fgsm": {},
    "pgd": {"steps": 5, "alpha": 8 / 255},
    "apgd": {"steps": 5},
    "vmifgsm": {"steps": 4, "N": 2, "alpha": 8 / 255},
    "cw": {"c": 1.0, "steps": 10, "binary_search_steps": 2},
    "deepfool": {"steps": 10},
    "onepixel": {"steps": 5, "popsize": 10},
    "square": {"n_queries": 100},
    "autoattack": {"steps": 3, "n_queries": 20, "n_target_classes": 2},
}




@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A trained MLP and 24 test images it classifies correctly."""
    model, x, y = train_digits_mlp()
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    idx = ok.nonzero().flatten()[:24]
    return model, x[idx], y[idx]


class _CountBackward(torch.autograd.Function):
    """Identity whose backward adds the batch size to a counter dict (independent of QueryCounter's hook)."""

    @staticmethod
    def forward(ctx, out, box):  # type: ignore[override]
        ctx.box = box
        return out.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        ctx.box["backward"] += grad.shape[0]
        return grad, None


class SelfCounting(nn.Module):
    """Counts its own forward examples (in forward) and backward examples (custom autograd Function)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.box = {"forward": 0, "backward": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.box["forward"] += x.shape[0]
        return _CountBackward.apply(self.model(x), self.box)


# ----------------------------------------------------------------------------------------------- registry


def test_registry_holds_the_eight_reference_attacks_and_autoattack():
    assert list(ATTACKS) == ["fgsm", "pgd", "apgd", "vmifgsm", "cw", "deepfool", "onepixel", "square", "autoattack"]
    for name, preset in ATTACKS.items():
        assert preset.name == name
        assert "eot_iter" in preset.param_names
    assert {n for n, p in ATTACKS.items() if p.uses_eps} == {"fgsm", "pgd", "apgd", "vmifgsm", "square", "autoattack"}
    assert {n for n, p in ATTACKS.items() if not p.white_box} == {"onepixel", "square"}


def test_default_eps_table():
    assert DEFAULT_EPS["mnist"] == DEFAULT_EPS["mnist5k"] == DEFAULT_EPS["digits"] == 32 / 255
    assert DEFAULT_EPS["organamnist"] == 8 / 255
    assert DEFAULT_EPS["cifar10"] == DEFAULT_EPS["cinic10"] == 2 / 255
    with pytest.raises(TypeError):
        DEFAULT_EPS["mnist"] = 0.5  # type: ignore[index]


def test_torchattacks_objects_carry_the_reference_hyperparameters(digits):
    model, _, _ = digits
    pgd = build_attack(model, "pgd", dataset="mnist", allow_unreachable=True)  # 2/255 x 10 < 32/255: opt in
    assert (pgd.eps, pgd.alpha, pgd.steps, pgd.random_start) == (32 / 255, 2 / 255, 10, True)
    apgd = build_attack(model, "apgd", dataset="organamnist")
    assert (apgd.eps, apgd.norm, apgd.loss, apgd.steps, apgd.n_restarts, apgd.thr_decr, apgd.eot_iter, apgd.seed) == (
        8 / 255,
        "Linf",
        "ce",
        10,
        1,
        0.75,
        1,
        0,
    )
    vmi = build_attack(model, "vmifgsm", dataset="cifar10")
    assert (vmi.eps, vmi.alpha, vmi.steps, vmi.decay, vmi.N, vmi.beta) == (2 / 255, 2 / 255, 10, 1.0, 5, 1.5)
    df = build_attack(model, "deepfool")
    assert (df.steps, df.overshoot) == (50, 0.05)
    op = build_attack(model, "onepixel")
    assert (op.pixels, op.steps, op.popsize) == (1, 10, 10)
    sq = build_attack(model, "square", eps=0.1)
    assert (sq.eps, sq.norm, sq.n_queries, sq.p_init, sq.loss, sq.n_restarts) == (0.1, "Linf", 500, 0.8, "margin", 1)
    cw = build_attack(model, "cw", dataset="mnist")
    assert (cw.initial_const, cw.kappa, cw.steps, cw.lr, cw.binary_search_steps) == (0.01, 0.0, 5, 0.05, 10)
    assert build_attack(model, "cw", dataset="cifar10").binary_search_steps == 8


def test_eps_resolution_order(digits):
    model, _, _ = digits
    assert build_attack(model, "fgsm", dataset="cifar10").eps == DEFAULT_EPS["cifar10"]
    assert build_attack(model, "fgsm", eps=0.3, dataset="cifar10").eps == 0.3
    assert build_attack(model, AttackConfig("fgsm", eps=0.2), dataset="mnist").eps == 0.2
    assert build_attack(model, AttackConfig("fgsm", eps=0.2), eps=0.25).eps == 0.25
    # Attacks without an ε budget need neither eps nor dataset, and ignore eps.
    assert AttackConfig("deepfool", eps=0.3).resolve().eps is None
    build_attack(model, "deepfool")


def test_config_resolve_fills_every_parameter():
    cfg = AttackConfig("PGD", params={"steps": 4}).resolve("organamnist")
    assert cfg.name == "pgd" and cfg.eps == DEFAULT_EPS["organamnist"]
    assert cfg.params == {"alpha": 2 / 255, "steps": 4, "random_start": True, "eot_iter": 1,
                          "allow_unreachable": False}
    assert hash(cfg) == hash(AttackConfig("pgd", DEFAULT_EPS["organamnist"], dict(cfg.params)))
    assert cfg.to_dict()["params"]["steps"] == 4 and cfg.reaches_eps


@pytest.mark.parametrize("name", [n for n, p in ATTACKS.items() if p.reach is not None])
def test_an_attack_that_cannot_reach_its_eps_is_refused_unless_opted_in(name):
    # the reference's alpha = 2/255 with 10 steps reaches 20/255: enough for OrganAMNIST's 8/255 (kept) ...
    assert AttackConfig(name).resolve("organamnist").params["alpha"] == 2 / 255
    # ... not for MNIST's 32/255: without an explicit alpha, Madry's 2.5 * eps / steps is used
    auto = AttackConfig(name).resolve("mnist")
    assert auto.params["alpha"] == pytest.approx(2.5 * (32 / 255) / 10) and auto.reaches_eps
    assert AttackConfig(name, params={"steps": 40}).resolve("mnist").params["alpha"] == 2 / 255  # 80/255 reach
    # an explicit alpha that cannot reach eps is refused, naming the fields and the fixes
    with pytest.raises(ValueError, match=rf"{name}: alpha=.* x steps=10 .* cannot reach eps=.*32/255.*allow_unreachable"):
        AttackConfig(name, params={"alpha": 2 / 255}).resolve("mnist")
    with pytest.raises(ValueError, match="cannot reach"):
        AttackConfig(name, 0.1, {"alpha": 0.01, "steps": 9}).resolve()
    assert AttackConfig(name, 0.1, {"alpha": 0.01, "steps": 10}).resolve().reaches_eps  # exactly reaches
    # opting in keeps the paper's weak setting and marks it
    weak = AttackConfig(name, params={"allow_unreachable": True}).resolve("mnist")
    assert weak.params["alpha"] == 2 / 255 and not weak.reaches_eps
    with pytest.raises(ValueError, match="allow_unreachable=1.*allowed values: a boolean"):
        AttackConfig(name, params={"allow_unreachable": 1})


# ------------------------------------------------------------------------------------------------- errors


def test_unknown_attack_lists_the_names(digits):
    model, _, _ = digits
    with pytest.raises(ValueError, match="attack='bim'.*'fgsm'.*'pgd'.*'square'"):
        build_attack(model, "bim", eps=0.1)
    with pytest.raises(ValueError, match="allowed values"):
        AttackConfig(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("eps", [-0.01, 1.5, math.nan, math.inf, True, "lots", "8/0"])
def test_bad_eps_is_rejected(digits, eps):
    model, _, _ = digits
    with pytest.raises(ValueError, match=r"eps=.*\[0, 1\]"):
        build_attack(model, "pgd", eps=eps)
    with pytest.raises(ValueError, match=r"eps="):
        AttackConfig("fgsm", eps=eps)


def test_eps_written_as_a_fraction_is_read_as_one():
    assert AttackConfig("pgd", eps="8/255").eps == pytest.approx(8 / 255)
    assert AttackConfig("pgd", eps="0.1").eps == pytest.approx(0.1)


def test_unknown_override_lists_accepted_keys(digits):
    model, _, _ = digits
    with pytest.raises(
        ValueError, match="pgd: unknown parameter.*'stepz'.*accepted keys: alpha, steps, random_start, eot_iter"
    ):
        build_attack(model, "pgd", eps=0.1, stepz=3)


@pytest.mark.parametrize(
    "name, override, pattern",
    [
        ("pgd", {"steps": 0}, r"steps=0 is out of range; allowed values: an integer >= 1"),
        ("pgd", {"steps": 2.5}, r"steps=2.5 is invalid"),
        ("pgd", {"random_start": 1}, r"random_start=1 is invalid; allowed values: a boolean"),
        ("apgd", {"loss": "hinge"}, r"loss='hinge' is invalid; allowed values: 'ce', 'dlr'"),
        ("square", {"p_init": 1.5}, r"p_init=1.5 is out of range"),
        ("fgsm", {"eot_iter": 0}, r"eot_iter=0 is out of range"),
    ],
)
def test_bad_override_values(digits, name, override, pattern):
    model, _, _ = digits
    with pytest.raises(ValueError, match=pattern):
        build_attack(model, name, eps=0.1, **override)


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd", "vmifgsm", "square"])
def test_eps_attacks_refuse_to_guess(digits, name):
    model, _, _ = digits
    with pytest.raises(ValueError, match=f"attack='{name}' needs eps.*eps=None and dataset=None"):
        build_attack(model, name)


def test_unknown_dataset_lists_known_ones(digits):
    model, _, _ = digits
    with pytest.raises(ValueError, match="dataset='imagenet'.*'mnist'.*'cifar10'"):
        build_attack(model, "pgd", dataset="imagenet")


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        build_attack(lambda x: x, "fgsm", eps=0.1)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ attacks on a real model


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_changes_predictions_and_respects_its_threat_model(digits, name):
    model, x, y = digits
    attack = build_attack(model, name, dataset="digits", **SMALL[name])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        adv = attack(x, y).detach()
    assert adv.shape == x.shape
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    assert int(fooled.sum()) >= 1, f"{name} changed no prediction"
    preset = get_preset(name)
    if preset.norm is Norm.LINF:
        assert float((adv - x).abs().amax()) <= DEFAULT_EPS["digits"] + 1e-6
    if preset.norm is Norm.L0:
        changed_pixels = ((adv - x).abs() > 0).flatten(1).sum(1)
        assert int(changed_pixels.max()) <= SMALL[name].get("pixels", 1)
    assert not model.training


def test_cw_margin_is_correct_for_negative_outputs(digits):
    """torchattacks' CW margin is constant for all-negative outputs; ours is Z_y - max_{j!=y} Z_j."""
    model, x, y = digits
    log_probs = nn.Sequential(model, nn.LogSoftmax(dim=1))
    attack = build_attack(log_probs, "cw", **SMALL["cw"])
    with torch.no_grad():
        out = log_probs(x)
    expected = []
    for row, label in zip(out, y):
        others = [float(row[j]) for j in range(row.shape[0]) if j != int(label)]
        expected.append(max(float(row[label]) - max(others), 0.0) * attack.initial_const)
    assert torch.allclose(attack.f(out, y), torch.tensor(expected), atol=1e-6)
    adv = attack(x, y)
    with torch.no_grad():
        assert int((model(adv).argmax(1) != y).sum()) >= 1


def test_cw_binary_search_keeps_the_smallest_successful_perturbation(digits):
    model, x, y = digits
    adv = build_attack(model, "cw", c=1.0, steps=10, binary_search_steps=3)(x, y)
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    # Examples never fooled come back unchanged; fooled ones moved.
    assert torch.equal(adv[~fooled], x[~fooled])
    assert bool(((adv[fooled] - x[fooled]).flatten(1).norm(dim=1) > 0).all())


# -------------------------------------------------------------------------------------------- query counting


def test_query_counter_counts_batches_and_gradients():
    model = nn.Linear(3, 2)
    counter = QueryCounter(model)
    x = torch.rand(5, 3, requires_grad=True)
    out = counter(x)
    torch.autograd.grad(out.sum(), x)
    with torch.no_grad():
        counter(torch.rand(7, 3))
    assert (counter.forward_calls, counter.forward_examples) == (2, 12)
    assert (counter.backward_calls, counter.backward_examples) == (1, 5)
    cost = counter.cost(4)
    assert cost.forward_per_example == 12 / 4 and cost.backward_per_example == 5 / 4
    counter.reset()
    assert counter.cost(1).forward == 0 and math.isnan(counter.cost(0).forward_per_example)
    assert counter(x) is not None and counter.training == model.training


@pytest.mark.parametrize(
    "name, override, per_example",
    [
        ("fgsm", {}, 1),
        ("pgd", {"steps": 3, "alpha": 0.05}, 3),
        ("pgd", {"steps": 7, "random_start": False, "alpha": 0.05}, 7),
        ("pgd", {"steps": 2, "eot_iter": 3, "alpha": 0.05}, 6),  # torchattacks.EOTPGD
        ("fgsm", {"eot_iter": 4}, 4),  # EOTWrapper
        ("vmifgsm", {"steps": 2, "N": 3, "alpha": 0.05}, 2 * (1 + 3)),
    ],
)
def test_gradient_attack_query_counts_match_the_algorithm(digits, name, override, per_example):
    model, x, y = digits
    counter = QueryCounter(model)
    build_attack(counter, name, eps=0.1, **override)(x, y)
    assert counter.forward_examples == per_example * len(x)
    assert counter.backward_examples == per_example * len(x)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_query_counter_agrees_with_an_independent_count(digits, name):
    model, x, y = digits
    own = SelfCounting(model)
    counter = QueryCounter(own)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        build_attack(counter, name, dataset="digits", **SMALL[name])(x, y)
    assert counter.forward_examples == own.box["forward"] > 0
    assert counter.backward_examples == own.box["backward"]
    if not get_preset(name).white_box:
        assert counter.backward_examples == 0


# ---------------------------------------------------------------------------------------------------- EOT


class _NoisyScale(nn.Module):
    """out = W (s * x) with a random scalar s ~ U(0.5, 1.5) per call drawn from a private generator."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 0.5 + torch.rand((), generator=self.gen)
        return self.lin(s * x.flatten(1))


def test_eot_wrapper_averages_outputs_and_gradients():
    model = _NoisyScale(seed=3)
    x = torch.rand(2, 1, 2, 2, requires_grad=True)
    out = EOTWrapper(model, 5)(x)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    # Independent: replay the same 5 random scales.
    gen = torch.Generator().manual_seed(3)
    scales = [0.5 + torch.rand((), generator=gen) for _ in range(5)]
    w = model.lin.weight.detach()
    mean_s = sum(float(s) for s in scales) / 5
    expected_out = model.lin(mean_s * x.detach().flatten(1))
    expected_grad = (mean_s * w[0]).reshape(1, 1, 2, 2).expand_as(x)
    assert torch.allclose(out, expected_out, atol=1e-6)
    assert torch.allclose(grad, expected_grad, atol=1e-6)


def test_eot_wrapper_rejects_bad_iterations():
    with pytest.raises(ValueError, match="eot_iter=0.*integer >= 1"):
        EOTWrapper(nn.Linear(2, 2), 0)
