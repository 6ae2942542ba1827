"""Adaptive attacks: the hidden-parts protocol, the automatic choice of BPDA / EOT / transfer, the BPDA wrapper,
transfer scored on the defended model, counted cost, and the AutoAttack preset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qshield.attacks import (
    AUTO_EOT_ITER,
    AttackConfig,
    BPDAWrapper,
    HiddenParts,
    build_attack,
    declare_hidden,
    hidden_parts,
    resolve_adaptive,
)
from qshield.evaluation import evaluate, evaluate_attack

from tests._digits import train_digits_mlp
from tests._masked import DecoyGradient

EPS = 32 / 255


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = train_digits_mlp()
    return model, x[1400:1460], y[1400:1460]


class Noisy(nn.Module):
    """``model(x + 0.05 * N(0, 1))``: randomised, differentiable."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + 0.05 * torch.randn_like(x))


def _pgd(**params: object) -> AttackConfig:
    return AttackConfig("pgd", EPS, {"alpha": EPS / 4, "steps": 4, **params}).resolve()


# -------------------------------------------------------------------------------------------------- protocol


def test_a_model_declaring_nothing_is_attacked_directly(digits):
    model, _, _ = digits
    assert hidden_parts(model) == HiddenParts() and not hidden_parts(model).any
    for adaptive in ("auto", "off"):
        config, mode = resolve_adaptive(model, _pgd(), adaptive)
        assert mode.label == "none" and config == _pgd()
    with pytest.raises(ValueError, match="adaptive='bpda' needs a differentiable surrogate but Sequential declares"):
        resolve_adaptive(model, _pgd(), "bpda")
    with pytest.raises(ValueError, match="adaptive='transfer' needs a classical twin"):
        resolve_adaptive(model, _pgd(), "transfer")
    with pytest.raises(ValueError, match=r"adaptive='eot' is invalid; allowed values: 'auto', 'off', 'bpda', "):
        resolve_adaptive(model, _pgd(), "eot")


def test_declared_parts_choose_bpda_eot_and_transfer(digits):
    model, _, _ = digits
    both = declare_hidden(Noisy(model), HiddenParts(randomized=True, non_differentiable=True),
                          surrogate=Noisy(model), twin=model)
    square = AttackConfig("square", EPS).resolve()
    cases = [
        (both, _pgd(), "auto", "bpda+eot(8)", AUTO_EOT_ITER),
        (both, _pgd(eot_iter=3), "auto", "bpda+eot(3)", 3),  # an explicit EOT count is kept
        (both, square, "auto", "eot(8)", AUTO_EOT_ITER),  # black box: no gradient to replace, EOT only
        (both, _pgd(), "off", "none", 1),  # the naive attacker
        (both, _pgd(), "transfer", "transfer", 1),  # a deterministic twin needs no EOT
        (both, square, "transfer", "eot(8)", AUTO_EOT_ITER),
        (declare_hidden(model, HiddenParts(non_differentiable=True), twin=model), _pgd(), "auto", "transfer", 1),
        (declare_hidden(model, HiddenParts(non_differentiable=True)), _pgd(), "auto", "none", 1),  # nothing to use
    ]
    for victim, config, adaptive, label, eot in cases:
        resolved, mode = resolve_adaptive(victim, config, adaptive)
        assert mode.label == label, (config.name, adaptive)
        assert resolved.params["eot_iter"] == eot


def test_declarations_are_validated(digits):
    model, _, _ = digits
    with pytest.raises(ValueError, match="randomized='yes' is invalid; allowed values: True, False"):
        HiddenParts(randomized="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="parts=.* is invalid; allowed values: a HiddenParts"):
        declare_hidden(model, {"randomized": True})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="surrogate must be a torch.nn.Module or None, got function"):
        declare_hidden(model, HiddenParts(), surrogate=lambda x: x)  # type: ignore[arg-type]

    class Liar(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def hidden_parts(self) -> dict:
            return {"randomized": True}

    with pytest.raises(TypeError, match=r"Liar.hidden_parts\(\) must return a HiddenParts, got dict"):
        hidden_parts(Liar())
    declared = declare_hidden(model, HiddenParts(randomized=True), surrogate=model)
    assert set(declared.state_dict()) == {f"model.{k}" for k in model.state_dict()}  # the surrogate is not stored


# ------------------------------------------------------------------------------------------------------ BPDA


def test_bpda_returns_the_model_and_differentiates_the_surrogate(digits):
    mlp, x, _ = digits
    masked = DecoyGradient(mlp)  # value: the MLP's; gradient: a random decoy's
    bpda = BPDAWrapper(masked, mlp)
    xg = x.clone().requires_grad_(True)
    out = bpda(xg)
    assert torch.equal(out.detach(), masked(x).detach())
    u = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((u * out).sum(), xg)
    xs = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((u * mlp(xs)).sum(), xs)
    assert torch.allclose(grad, expected, atol=1e-6)
    xm = x.clone().requires_grad_(True)
    (decoy,) = torch.autograd.grad((u * masked(xm)).sum(), xm)
    assert not torch.allclose(decoy, expected, atol=1e-3)  # the direct gradient is the decoy's


def test_bpda_replays_the_random_numbers_for_the_surrogate(digits):
    model, x, _ = digits
    noisy = Noisy(model)
    bpda = BPDAWrapper(noisy, noisy)
    xg = x.clone().requires_grad_(True)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        out = bpda(xg)
        (grad,) = torch.autograd.grad(out.sum(), xg)
        after_bpda = torch.get_rng_state()
    with torch.random.fork_rng():
        torch.manual_seed(7)
        xs = x.clone().requires_grad_(True)
        same = noisy(xs)
        (expected,) = torch.autograd.grad(same.sum(), xs)
        after_one_call = torch.get_rng_state()
    assert torch.equal(out.detach(), same.detach()) and torch.allclose(grad, expected, atol=1e-6)
    assert torch.equal(after_bpda, after_one_call)  # the stream advances as for one call of the model


def test_bpda_attack_counts_one_query_per_call_and_scores_the_defended_model(digits):
    mlp, x, y = digits
    declared = declare_hidden(DecoyGradient(mlp), HiddenParts(non_differentiable=True), surrogate=mlp)
    result = evaluate_attack(declared, x, y, "pgd", eps=EPS, alpha=EPS / 4, steps=4)
    direct = evaluate_attack(declared, x, y, "pgd", eps=EPS, alpha=EPS / 4, steps=4, adaptive="off")
    plain = evaluate_attack(mlp, x, y, "pgd", eps=EPS, alpha=EPS / 4, steps=4)
    assert (result.adaptive, direct.adaptive) == ("bpda", "none")
    assert result.forward_per_example == result.backward_per_example == 4
    # same values and (through the surrogate) the same gradients as the plain MLP: the same adversarials
    assert result.n_fooled == plain.n_fooled and result.gradient_source == "bpda"
    assert direct.n_fooled < result.n_fooled  # the decoy gradient misleads the naive attacker


def test_transfer_is_crafted_on_the_twin_and_scored_on_the_defended_model(digits):
    mlp, x, y = digits
    defended = declare_hidden(DecoyGradient(mlp), HiddenParts(non_differentiable=True), twin=mlp)
    result = evaluate_attack(defended, x, y, "fgsm", eps=EPS)
    assert result.adaptive == "transfer" and result.gradient_source == "transfer"
    # independently: FGSM by hand on the twin, predictions of the defended model
    with torch.no_grad():
        correct = defended(x).argmax(1) == y
    xa = x[correct].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(mlp(xa), y[correct]), xa)
    adv = (xa.detach() + EPS * grad.sign()).clamp(0, 1)
    with torch.no_grad():
        fooled = int((defended(adv).argmax(1) != y[correct]).sum())
    assert result.n_attacked == int(correct.sum()) and result.n_fooled == fooled


def test_evaluation_rows_say_how_they_were_produced_and_unadapted_rows_are_flagged(digits):
    mlp, x, y = digits
    declared = declare_hidden(DecoyGradient(mlp), HiddenParts(non_differentiable=True), surrogate=mlp)
    attacks = ["fgsm", AttackConfig("square", params={"n_queries": 20})]
    adaptive = evaluate(declared, x, y, attacks, dataset="digits", diagnostics=False, progress=False)
    naive = evaluate(declared, x, y, attacks, dataset="digits", diagnostics=False, progress=False, adaptive="off")
    assert [r.adaptive for r in adaptive.results] == ["bpda", "none"]
    assert [adaptive.row_flags(r) for r in adaptive.results] == [(), ()]
    assert [naive.row_flags(r) for r in naive.results] == [("no BPDA/transfer",), ()]  # black box: nothing to do
    assert "NOT ADAPTIVE: fgsm (no BPDA/transfer)" in naive.flag
    table = naive.to_frame()
    assert list(table["adaptive"]) == ["none", "none", "none"] and not table["trustworthy"].any()


# ------------------------------------------------------------------------------------------------ AutoAttack


def test_autoattack_uses_the_standard_versions_parameters(digits):
    model, x, y = digits
    attack = build_attack(model, "autoattack", eps=8 / 255)
    apgd_ce, apgd_t, fab_t, square = attack._build(10).attacks
    assert (apgd_ce.steps, apgd_ce.n_restarts, apgd_ce.loss, apgd_ce.thr_decr, apgd_ce.eps) == (100, 1, "ce", 0.75,
                                                                                               8 / 255)
    assert (apgd_t.steps, apgd_t.n_restarts, apgd_t.n_target_classes) == (100, 1, 9)
    assert (fab_t.steps, fab_t.n_restarts, fab_t.multi_targeted, fab_t.n_target_classes) == (100, 1, True, 9)
    assert (square.n_queries, square.p_init, square.n_restarts, square.rescale_schedule) == (5000, 0.8, 1, False)
    assert all(a.seed == 0 for a in (apgd_ce, apgd_t, fab_t, square))
    # fewer classes than targets: every other class is a target
    assert attack._build(3).attacks[1].n_target_classes == 2


def test_autoattack_is_at_least_as_strong_as_its_first_member(digits):
    model, x, y = digits
    small = {"steps": 5, "n_queries": 30, "n_target_classes": 2}
    ensemble = evaluate_attack(model, x, y, "autoattack", eps=8 / 255, **small)
    apgd = evaluate_attack(model, x, y, "apgd", eps=8 / 255, steps=5, n_restarts=1, rho=0.75, loss="ce", seed=0)
    assert ensemble.n_attacked == apgd.n_attacked
    assert ensemble.n_fooled >= apgd.n_fooled
    assert ensemble.adaptive == "none" and ensemble.forward_per_example > apgd.forward_per_example


def test_a_hybrid_whose_circuit_runs_on_trajectories_declares_randomness_and_is_attacked_with_eot():
    """Quantum trajectories make each forward pass a fresh Monte-Carlo estimate: the hybrid says so, and every
    attack on it averages gradients (EOT); the same hybrid on the exact density matrix hides nothing."""
    from qshield.attacks import AUTO_EOT_ITER, AttackConfig, hidden_parts, resolve_adaptive
    from qshield.models import HybridModel, SmallCNN
    from qshield.quantum import QuantumLayer

    def hybrid(simulation: str) -> HybridModel:
        layer = QuantumLayer(4, 1, noise="mixed", noise_strength=0.1, measurement="expval", simulation=simulation,
                             n_trajectories=4, seed=0)
        return HybridModel(SmallCNN(1, 10), layer).eval()

    stochastic, exact = hybrid("trajectories"), hybrid("density_matrix")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert not torch.equal(stochastic(x), stochastic(x)) and torch.equal(exact(x), exact(x))
    assert hidden_parts(stochastic).randomized and not hidden_parts(stochastic).non_differentiable
    assert not hidden_parts(exact).randomized
    config = AttackConfig("pgd", 0.1, {"alpha": 0.02, "steps": 5}).resolve()
    _, mode = resolve_adaptive(stochastic, config)
    assert mode.eot_iter == AUTO_EOT_ITER
    assert resolve_adaptive(exact, config)[1].eot_iter == 1
