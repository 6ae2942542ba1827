"""Tests for qshield.training: the loop on sklearn digits, determinism, errors, PGD-AT, Quantum Patches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from qshield.models import ModelConfig, build_model
from qshield.training import (
    METHODS,
    NonFiniteLossError,
    QuantumPatches,
    TrainConfig,
    TrainHistory,
    evaluate_dataset,
    get_method,
    random_rotations,
    train,
)
from tests._qref import simulate



@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits (shipped with scikit-learn, no download), scaled to [0, 1]."""
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    return x, torch.tensor(d.target, dtype=torch.long)


def _subset(digits, n: int, start: int = 0) -> TensorDataset:
    x, y = digits
    return TensorDataset(x[start : start + n], y[start : start + n])


def _model(arch: str = "cnn", seed: int = 0, **kw) -> nn.Module:
    return build_model(ModelConfig(arch=arch, image_size=8, num_classes=10, **kw), seed=seed)


def _no_time(history: TrainHistory) -> list[dict[str, float]]:
    return [{k: v for k, v in m.items() if k != "epoch_time_s"} for m in history.epochs]


# ---------------------------------------------------------------- the loop
@pytest.mark.parametrize("arch", ["cnn", "hybrid"])
def test_training_reduces_the_loss_on_digits(digits, arch: str) -> None:
    data = _subset(digits, 480)
    model = _model(arch)
    before = evaluate_dataset(model, data)
    history = train(model, data, TrainConfig(epochs=3, batch_size=32), progress=False)
    after = evaluate_dataset(model, data)
    assert after["loss"] < 0.6 * before["loss"]
    assert after["accuracy"] > before["accuracy"] + 0.3
    assert history.series("train_loss")[-1] < history.series("train_loss")[0]
    assert [m["epoch"] for m in history.epochs] == [1, 2, 3]
    assert all(m["samples"] == 480 for m in history.epochs)


def test_evaluate_dataset_matches_manual_nll(digits) -> None:
    data = _subset(digits, 50)
    model = _model("hybrid").eval()
    x, y = data.tensors
    with torch.no_grad():
        lp = torch.log_softmax(model(x), 1)
    got = evaluate_dataset(model, data, batch_size=16)
    assert got["loss"] == pytest.approx(float(-lp[torch.arange(50), y].mean()), rel=1e-5)
    assert got["accuracy"] == pytest.approx(float((lp.argmax(1) == y).float().mean()))
    assert (got["correct"], got["n"]) == (int((lp.argmax(1) == y).sum()), 50)


def test_nan_loss_raises_naming_epoch_and_step(digits) -> None:
    x, y = digits
    x = x[:16].clone()
    x[9, 0, 3, 3] = float("nan")  # sample 9 is in batch 3 (batch size 4, no shuffling)
    model = _model("cnn")
    with pytest.raises(NonFiniteLossError, match=r"nan at epoch 1, step 3") as info:
        train(model, TensorDataset(x, y[:16]), TrainConfig(epochs=2, batch_size=4, shuffle=False), progress=False)
    assert (info.value.epoch, info.value.step) == (1, 3) and math.isnan(info.value.loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step was not applied


@pytest.mark.parametrize("arch,method", [("cnn", "standard"), ("hybrid", "quantum_patches"), ("cnn", "pgd_at")])
def test_same_seed_gives_identical_weights_and_metrics(digits, arch: str, method: str) -> None:
    data, val = _subset(digits, 96), _subset(digits, 40, start=1000)
    cfg = TrainConfig(epochs=2, batch_size=32, method=method, pgd_eps=0.1, pgd_steps=2, seed=7)
    runs = []
    rng_before = torch.get_rng_state()
    for seed in (7, 7, 8):
        model = _model(arch)  # same initial weights every time
        history = train(model, data, cfg.replace(seed=seed), val_dataset=val, progress=False)
        runs.append((model.state_dict(), _no_time(history)))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's global RNG is untouched
    (s1, m1), (s2, m2), (s3, _m3) = runs
    assert all(torch.equal(s1[k], s2[k]) for k in s1) and m1 == m2
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_callback_receives_every_epoch_and_can_stop_training(digits) -> None:
    data, val = _subset(digits, 64), _subset(digits, 32, start=500)
    seen: list[tuple[int, dict[str, float]]] = []
    history = train(_model(), data, TrainConfig(epochs=3, batch_size=32), val_dataset=val,
                    callback=lambda e, m: seen.append((e, m)), progress=False)
    assert [e for e, _ in seen] == [1, 2, 3]
    assert [m for _, m in seen] == history.epochs
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_time_s"} <= set(seen[0][1])

    class Stop(Exception):
        pass

    calls = []

    def stop_after_two(epoch: int, metrics: dict[str, float]) -> None:
        calls.append(epoch)
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train(_model(), data, TrainConfig(epochs=5, batch_size=32), callback=stop_after_two, progress=False)
    assert calls == [1, 2]


def test_limit_batches(digits) -> None:
    history = train(_model(), _subset(digits, 200), TrainConfig(epochs=1, batch_size=16, limit_batches=3),
                    progress=False)
    assert history.last["samples"] == 48


def test_bad_inputs_are_rejected_before_training(digits) -> None:
    x, y = digits
    model = _model()
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\].*\[0, 12\]"):
        train(model, TensorDataset(x[:8], torch.tensor([0, 1, 2, 3, 4, 5, 6, 12])), TrainConfig(epochs=1),
              progress=False)
    with pytest.raises(ValueError, match="train_dataset is empty"):
        train(model, TensorDataset(x[:0], y[:0]), TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"inputs must lie in \[0, 1\]"):
        train(model, TensorDataset(x[:8] * 16, y[:8]), TrainConfig(epochs=1, method="quantum_patches"),
              progress=False)
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        train(model, TensorDataset(x[:8], y[:8].float()), TrainConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        train(model, TensorDataset(x[:8], y[:8]), {"epochs": 1, "learning_rate": 0.1}, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))


# ---------------------------------------------------------------- config
def test_train_config_defaults_round_trip_and_errors() -> None:
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.lr, cfg.weight_decay, cfg.batch_size) == (10, 1e-3, 1e-4, 128)  # the paper's
    custom = TrainConfig(method="pgd_at", pgd_eps=8 / 255, limit_batches=5)
    assert TrainConfig.from_dict(custom.to_dict()) == custom
    assert TrainConfig.from_dict({k: str(v) for k, v in custom.to_dict().items()}) == custom
    bad = [
        ({"method": "trades"}, r"method='trades'.*'standard', 'pgd_at', 'quantum_patches'"),
        ({"lr": -1}, r"lr=-1"),
        ({"epochs": 0}, r"epochs=0"),
        ({"batch_size": 1.5}, r"batch_size=1.5"),
        ({"method": "pgd_at"}, r"pgd_eps=None: method='pgd_at' needs"),
        ({"pgd_eps": 2.0}, r"pgd_eps=2.0"),
        ({"patches_mix_ratio": 1.5}, r"patches_mix_ratio=1.5"),
        ({"patches_entanglement": "grid"}, r"patches_entanglement='grid'"),
    ]
    for changes, pattern in bad:
        with pytest.raises(ValueError, match=pattern):
            TrainConfig(**changes)
    assert set(METHODS) == {"standard", "pgd_at", "quantum_patches"}
    with pytest.raises(ValueError, match="method='mixup' does not exist"):
        get_method("mixup")


# ---------------------------------------------------------------- PGD adversarial training
class _Recorder(nn.Module):
    """Wraps a model and records the inputs of its train-mode forward passes (the batches trained on)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_classes = model.num_classes
        self.train_inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.train_inputs.append(x.detach().clone())
        return self.model(x)


def test_pgd_at_trains_on_adversarial_examples_inside_the_eps_ball(digits) -> None:
    eps = 0.1
    data = _subset(digits, 16)
    model = _Recorder(_model("hybrid"))
    train(model, data, TrainConfig(epochs=1, batch_size=16, shuffle=False, method="pgd_at", pgd_eps=eps,
                                   pgd_alpha=0.05, pgd_steps=3), progress=False)
    (x_adv,) = model.train_inputs  # the attack itself runs in eval mode
    x = data.tensors[0]
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert (x_adv - x).abs().max() > eps / 2
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # the perturbation increases the loss of the model it was made for (checked on the starting weights)
    fresh = _model("hybrid").eval()
    with torch.no_grad():
        clean = nn.functional.nll_loss(torch.log_softmax(fresh(x), 1), data.tensors[1])
        adv = nn.functional.nll_loss(torch.log_softmax(fresh(x_adv), 1), data.tensors[1])
    assert adv > clean


# ---------------------------------------------------------------- Quantum Patches
def _reference_noise_map(images: np.ndarray, rotations: np.ndarray, entanglement: str) -> np.ndarray:
    """Naive per-patch reference: the NumPy simulator of the tests, min-max per channel, depth-to-space."""
    b, c, h, w = images.shape
    out = np.zeros((b, c, h, w))
    for i in range(b):
        for ch in range(c):
            z = np.zeros((4, h // 2, w // 2))
            for r in range(h // 2):
                for col in range(w // 2):
                    px = images[i, ch, 2 * r : 2 * r + 2, 2 * col : 2 * col + 2].reshape(4)
                    angles = np.concatenate([[np.pi * v, np.pi * v, 0.0] for v in px])
                    z[:, r, col] = simulate(angles, rotations, n=4, depth=1, ent=entanglement, noise="none", p=0.0,
                                            readout=0.0, measurement="expval")
            for k in range(4):
                span = z[k].max() - z[k].min()
                norm = (z[k] - z[k].min()) / span if span > 0 else np.zeros_like(z[k])
                out[i, ch, k // 2 :: 2, k % 2 :: 2] = norm
    return out


@pytest.mark.parametrize("entanglement", ["linear", "ring"])
def test_quantum_patches_match_a_naive_reference(entanglement: str) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 2, 4, 6, generator=g, dtype=torch.float64)
    rotations = random_rotations(torch.Generator().manual_seed(1), dtype=torch.float64)
    qp = QuantumPatches(strength=0.4, entanglement=entanglement)
    expected = _reference_noise_map(images.numpy(), rotations.numpy(), entanglement)
    np.testing.assert_allclose(qp.noise_map(images, rotations).numpy(), expected, atol=1e-10)
    z = qp.patch_expvals(images, rotations)
    assert z.shape == (2, 8, 2, 3) and z.abs().max() <= 1 + 1e-12


def test_quantum_patches_deterministic_shape_and_range() -> None:
    images = torch.rand(3, 1, 7, 7, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1  # odd size: padded
    qp = QuantumPatches(strength=0.5)
    a = qp(images, torch.Generator().manual_seed(42))
    b = qp(images, torch.Generator().manual_seed(42))
    c = qp(images, torch.Generator().manual_seed(43))
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    factor = a / images  # x' = x (1 - s + s N), N in [0, 1]
    assert factor.min() >= 0.5 - 1e-6 and factor.max() <= 1 + 1e-6 and factor.min() < 0.6
    rotations = random_rotations(torch.Generator().manual_seed(42))
    torch.testing.assert_close(a, images * (0.5 + 0.5 * qp.noise_map(images, rotations)))
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]"):
        qp(images * 3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="strength=1.5"):
        QuantumPatches(strength=1.5)


def test_quantum_patches_training_mixes_the_configured_share(digits) -> None:
    x, y = digits
    data = TensorDataset(x[:20] * 0.8 + 0.1, y[:20])  # no zero pixels, so every augmented row changes
    model = _Recorder(_model("cnn"))
    train(model, data, TrainConfig(epochs=1, batch_size=20, shuffle=False, method="quantum_patches",
                                   patches_mix_ratio=0.3), progress=False)
    (batch,) = model.train_inputs
    changed = (batch != data.tensors[0]).flatten(1).any(dim=1)
    assert int(changed.sum()) == 6  # round(0.3 * 20)
    assert batch.min() >= 0 and batch.max() <= 1
