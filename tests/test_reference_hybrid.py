"""The QShield reference code's hybrid (``arch="reference_hybrid"``): its forward pass against an independent
re-computation from the documented facts, its randomness, the circuit outside the autograd graph, its declarations
and surrogate, config rules, saving, training, ``qshield train`` and the sweep spaces."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from qshield.attacks import classical_twin_of, hidden_parts, surrogate_of
from orchestrator.cli import main
from qshield.data import dataset_spec
from qshield.models import ModelConfig, ReferenceHybrid, build_model, load_model, save_model
from qshield.training import TrainConfig, evaluate_dataset, train

from tests import _qref
from tests._digits import train_digits_mlp

N_QUBITS = 4
NOISE_P = 0.005


def _config(**changes: object) -> ModelConfig:
    base = {"arch": "reference_hybrid", "backbone": "cnn", "in_channels": 1, "image_size": 8, "num_classes": 10,
            "noise": "mixed", "noise_strength": NOISE_P, "entanglement": "star"}
    return ModelConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def model() -> ReferenceHybrid:
    m = build_model(_config(), seed=0)
    assert isinstance(m, ReferenceHybrid)
    return m.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    _, x, _ = train_digits_mlp()
    return x[:6]


def _independent(model: ReferenceHybrid, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The reference's forward pass written from the documented facts (float64; circuit by tests/_qref's naive
    density-matrix simulator). Only the backbone and the gate MLP's weights are the model's."""
    logits = model.backbone(x).double()
    log_c = torch.log_softmax(logits, dim=1)
    c, k = 10, 3 * N_QUBITS
    torch.manual_seed(seed)  # the projection is the first draw of the forward pass (the backbone draws none)
    gauss = torch.randn(c, k).double().numpy()
    q, _ = np.linalg.qr(gauss)  # reduced: [C, min(C, 3n)] = [10, 10], then zero columns up to 3n = 12
    mapping = 0.1 * np.concatenate([q, np.zeros((c, k - q.shape[1]))], axis=1)
    z = logits.detach().numpy()
    u = (z - z.mean(axis=1, keepdims=True)) / (z.std(axis=1, ddof=1, keepdims=True) + 1e-8)
    angles = math.pi * np.tanh(u @ mapping)
    probs = np.stack([
        _qref.simulate(a, None, n=N_QUBITS, depth=1, ent="star", noise="mixed", p=NOISE_P, readout=0.0,
                       measurement="probs", trainable=False)
        for a in angles
    ])
    p_trunc = torch.tensor(probs[:, :c])  # a constant: the reference's circuit output carries no gradient

    def stats(v: torch.Tensor) -> list[torch.Tensor]:
        m, s = v.mean(1, keepdim=True), v.std(1, keepdim=True)
        return [s, v.max(1, keepdim=True).values, ((v - m) ** 4).mean(1, keepdim=True) / (s**4 + 1e-8)]

    log_q = torch.log(p_trunc.clamp_min(1e-8))
    c0, q0 = log_c - log_c.mean(1, keepdim=True), log_q - log_q.mean(1, keepdim=True)
    corr = (c0 * q0).sum(1, keepdim=True) / (c0.norm(dim=1, keepdim=True) * q0.norm(dim=1, keepdim=True) + 1e-8)
    features = torch.cat([*stats(log_c), *stats(log_q), corr], dim=1).float()
    alpha = model.gate(features).double()
    p_c = torch.softmax(logits, 1).clamp_min(1e-8)
    p_q = (p_trunc / (p_trunc.sum(1, keepdim=True) + 1e-8)).clamp_min(1e-8)
    amp = alpha * p_c.sqrt() + torch.sqrt(torch.clamp(1 - alpha**2, 1e-8, 1.0)) * p_q.sqrt()
    p = amp**2 / ((amp**2).sum(1, keepdim=True) + 1e-8)
    return torch.log(p.clamp_min(1e-8))


def test_forward_matches_an_independent_computation_of_the_reference(model, images):
    with torch.no_grad():
        torch.manual_seed(11)
        ours = model(images)
        expected = _independent(model, images, seed=11)
    assert ours.shape == (6, 10)
    assert torch.allclose(ours.double(), expected, atol=2e-4)
    assert torch.allclose(ours.exp().sum(1), torch.ones(6), atol=1e-4)  # log-probabilities


def test_the_gate_is_the_references_mlp(model):
    layers = [model.gate.inp, *[b["linear"] for b in model.gate.blocks], model.gate.out]
    assert [(m.in_features, m.out_features) for m in layers] == [(7, 128), (128, 128), (128, 128), (128, 1)]
    assert [b["norm"].num_features for b in model.gate.blocks] == [128, 128]
    assert model.quantum.weights is None and not model.quantum.spec.trainable  # no trainable circuit parameters


def test_it_is_randomised_and_reproducible_under_a_seed(model, images):
    with torch.no_grad():
        a, b = model(images), model(images)
        torch.manual_seed(3)
        c = model(images)
        torch.manual_seed(3)
        d = model(images)
    assert not torch.allclose(a, b) and torch.equal(c, d)


def test_the_circuit_is_outside_the_autograd_graph_and_the_surrogate_puts_it_back(model, images):
    x = images.clone().requires_grad_(True)
    torch.manual_seed(5)
    (grad,) = torch.autograd.grad(model(x)[:, 0].sum(), x)
    x2 = images.clone().requires_grad_(True)
    (frozen,) = torch.autograd.grad(_independent(model, x2, seed=5)[:, 0].sum(), x2)
    assert torch.allclose(grad, frozen, atol=1e-5)  # the gradient ignores the quantum branch
    surrogate = surrogate_of(model)
    x3 = images.clone().requires_grad_(True)
    torch.manual_seed(5)
    out = surrogate(x3)
    (sgrad,) = torch.autograd.grad(out[:, 0].sum(), x3)
    torch.manual_seed(5)
    with torch.no_grad():
        assert torch.equal(out.detach(), model(images))  # same function, same draw
    assert not torch.allclose(sgrad, grad, atol=1e-6)  # ... whose gradient sees the circuit


def test_its_reported_accuracy_is_reproducible_and_leaves_the_global_rng_alone(model):
    _, x, y = train_digits_mlp()
    data = torch.utils.data.TensorDataset(x[:200], y[:200])
    before = torch.get_rng_state()
    first = evaluate_dataset(model, data)
    assert torch.equal(torch.get_rng_state(), before)
    assert evaluate_dataset(model, data) == first  # a randomised model, yet the same accuracy every time
    assert evaluate_dataset(model, data, seed=1) != first


def test_it_declares_what_it_hides(model):
    parts = hidden_parts(model)
    assert parts.randomized and parts.non_differentiable and "outside the autograd graph" in parts.description
    assert classical_twin_of(model) is model.backbone
    assert hidden_parts(surrogate_of(model)).randomized and not hidden_parts(surrogate_of(model)).non_differentiable


def test_config_rules_and_round_trip(tmp_path: Path, model, images):
    cfg = _config(fusion="fixed", fusion_weights=(0.9, 0.1), quantum_trainable=True)
    assert (cfg.fusion.value, cfg.fusion_weights, cfg.quantum_trainable) == ("gated", (0.5, 0.5), False)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and cfg.is_hybrid
    with pytest.raises(ValueError, match="measurement='expval' with arch='reference_hybrid'; allowed values: 'probs'"):
        _config(measurement="expval")
    with pytest.raises(ValueError, match="n_qubits=3 gives 8 basis states < num_classes=10"):
        _config(n_qubits=3)
    save_model(model, _config(), tmp_path / "ref.pt")
    loaded, config = load_model(tmp_path / "ref.pt")
    assert config.arch.value == "reference_hybrid" and isinstance(loaded, ReferenceHybrid)
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(images)
        torch.manual_seed(1)
        b = loaded(images)
    assert torch.equal(a, b)


def test_resnet18_backbone():
    m = build_model(_config(backbone="resnet18", image_size=28), seed=0).eval()
    with torch.no_grad():
        out = m(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_training_reaches_the_gate_and_backbone_but_not_the_circuit(images):
    m = build_model(_config(), seed=0)
    _, x, y = train_digits_mlp()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ds = torch.utils.data.TensorDataset(x[:65], y[:65])  # 65 = 64 + a last batch of one sample
    history = train(m, ds, TrainConfig(epochs=1, batch_size=64, lr=1e-2), progress=False)
    assert history.epochs[-1]["samples"] == 65
    after = m.state_dict()
    assert not torch.equal(before["gate.inp.weight"], after["gate.inp.weight"])
    assert not torch.equal(before["backbone.classifier.weight"], after["backbone.classifier.weight"])
    assert not any(k.startswith("quantum.") for k in after if after[k].is_floating_point() and after[k].requires_grad)
    m.train()
    out = m(images[:1])  # a single sample in train mode: the gate's BatchNorm uses its running statistics
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    F.nll_loss(out, y[:1]).backward()


def test_qshield_train_builds_it(tmp_path: Path):
    out = tmp_path / "ref.pt"
    rc = main(["train", "--dataset", "digits", "--arch", "reference_hybrid", "--noise", "mixed", "--noise-strength",
               "0.005", "--epochs", "1", "--limit-train", "128", "--limit-test", "32", "--batch-size", "64", "--out",
               str(out), "--no-progress"])
    assert rc == 0
    _, config = load_model(out)
    assert config.arch.value == "reference_hybrid" and config.quantum_trainable is False
    quick = ["--attacks", "fgsm", "--n-examples", "24", "--no-progress", "--masking-examples", "8",
             "--masking-steps", "3", "--masking-queries", "10", "--plot-eps", "8/255", "1"]
    for mode, label in (("auto", "bpda+eot(8)"), ("off", "none")):
        assert main(["evaluate", str(out), "--out", str(tmp_path / mode), "--adaptive", mode, *quick]) == 0
        rows = pd.read_csv(tmp_path / mode / "results.csv")
        assert rows.loc[rows["attack"] == "fgsm", "adaptive"].item() == label
    naive = pd.read_csv(tmp_path / "off" / "results.csv")
    assert not naive["trustworthy"].any() and "no BPDA/transfer" in naive["masking"].iloc[0]


def test_sweep_space_searches_it_next_to_our_hybrid():
    from orchestrator.space import load_space
    from orchestrator.trial import model_config_from_params

    space = load_space("reference-vs-ours")
    archs = {a.value for a in space.parameters.arch.values}
    assert archs == {"hybrid", "reference_hybrid"}
    params = {name: d.values[0] if hasattr(d, "values") else getattr(d, "value", 0.5)
              for name, d in space.parameters.domains().items()}
    params["arch"] = "reference_hybrid"
    config = model_config_from_params(params, dataset_spec(space.dataset.value))
    assert config.arch.value == "reference_hybrid" and config.fusion.value == "gated"
