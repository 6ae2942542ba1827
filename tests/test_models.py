"""Tests for qshield.models: shapes, gradients through the quantum branch, fusion arithmetic, configs, save/load."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from qshield.models import (
    DNN,
    FUSIONS,
    GatedFusion,
    HybridModel,
    ModelConfig,
    ResNet18,
    SmallCNN,
    UnsafeCheckpointError,
    build_model,
    get_fusion,
    load_model,
    resnet18,
    save_model,
)
from qshield.models._resnet import _ResNet18Trunk
from qshield.models.fusion import branch_statistics

SHAPES = [(1, 28), (3, 32), (1, 8)]



def _x(channels: int, size: int, batch: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _hybrid(**kw: object) -> HybridModel:
    cfg = ModelConfig(**{"arch": "hybrid", "image_size": 8, "num_classes": 10, **kw})  # type: ignore[arg-type]
    model = build_model(cfg, seed=0)
    assert isinstance(model, HybridModel)
    return model


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("arch,backbone", [("dnn", "cnn"), ("cnn", "cnn"), ("resnet18", "cnn"),
                                           ("hybrid", "cnn"), ("hybrid", "resnet18")])
def test_output_shapes(arch: str, backbone: str, channels: int, size: int) -> None:
    cfg = ModelConfig(arch=arch, backbone=backbone, in_channels=channels, image_size=size, num_classes=7)
    model = build_model(cfg, seed=0).eval()
    with torch.no_grad():
        out = model(_x(channels, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    if arch == "hybrid":  # log-probabilities of a distribution
        torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(2), atol=1e-5, rtol=0)
        assert (out <= 1e-6).all()


def test_dnn_matches_the_paper_layouts() -> None:
    def linear_shapes(model: DNN) -> list[tuple[int, int]]:
        return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]

    # paper: 784-512-256-128-C (28x28 grey) and 3072-1024-512-256-128-C (32x32x3)
    assert linear_shapes(DNN(1, 28, 10)) == [(784, 512), (512, 256), (256, 128), (128, 10)]
    assert linear_shapes(DNN(3, 32, 10)) == [(3072, 1024), (1024, 512), (512, 256), (256, 128), (128, 10)]
    assert linear_shapes(DNN(1, 8, 10)) == [(64, 128), (128, 10)]
    kinds = [type(m) for m in DNN(1, 28, 10).features]
    assert kinds.count(nn.BatchNorm1d) == 3 and kinds.count(nn.Dropout) == 3
    assert all(m.p == 0.2 for m in DNN(1, 28, 10).modules() if isinstance(m, nn.Dropout))


def test_classifier_rejects_bad_input_before_compute() -> None:
    model = SmallCNN(1, 10)
    with pytest.raises(ValueError, match="in_channels=1"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        model(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="28x28"):
        DNN(1, 28, 10)(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="in_channels=1"):
        _hybrid()(torch.rand(2, 3, 8, 8))


# ---------------------------------------------------------------- ResNet-18
def test_resnet_stems() -> None:
    small = resnet18(1, 10, small_input=True)
    assert isinstance(small, ResNet18)
    assert small.body.conv1.kernel_size == (3, 3) and small.body.conv1.stride == (1, 1)
    assert small.body.conv1.in_channels == 1 and isinstance(small.body.maxpool, nn.Identity)
    big = resnet18(3, 10, small_input=False)
    assert big.body.conv1.kernel_size == (7, 7) and big.body.conv1.stride == (2, 2)
    assert isinstance(big.body.maxpool, nn.MaxPool2d)
    assert sum(p.numel() for p in big.body.parameters()) == 11689512 - (512 * 1000 + 1000)  # resnet18 minus fc


def test_resnet_pretrained_from_local_file(tmp_path) -> None:
    torch.manual_seed(1)
    src = _ResNet18Trunk()  # same state-dict layout as torchvision's resnet18
    path = tmp_path / "resnet18.pt"
    torch.save(src.state_dict(), path)
    rgb = src.conv1.weight.detach()

    grey = resnet18(1, 10, pretrained_path=str(path), small_input=False)
    torch.testing.assert_close(grey.body.conv1.weight, rgb.mean(dim=1, keepdim=True))
    torch.testing.assert_close(grey.body.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    torch.testing.assert_close(grey.body.bn1.running_var, src.bn1.running_var)
    small = resnet18(1, 10, pretrained_path=str(path), small_input=True)
    torch.testing.assert_close(small.body.conv1.weight, rgb.mean(dim=1, keepdim=True)[:, :, 2:5, 2:5])
    rgb_model = resnet18(3, 10, pretrained_path=str(path), small_input=False)
    torch.testing.assert_close(rgb_model.body.conv1.weight, rgb)

    with pytest.raises(ValueError, match="pretrained_path"):
        resnet18(1, 10, pretrained_path=str(tmp_path / "missing.pt"))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="not a torchvision ResNet-18"):
        resnet18(1, 10, pretrained_path=str(tmp_path / "wrong.pt"))


def test_builtin_resnet_matches_torchvision_layout() -> None:
    try:
        from torchvision.models import resnet18 as tv_resnet18
    except Exception as err:  # noqa: BLE001 - a torchvision built for another torch raises RuntimeError
        pytest.skip(f"torchvision not importable here: {err}")
    ours = {k: v.shape for k, v in _ResNet18Trunk().state_dict().items()}
    theirs = {k: v.shape for k, v in tv_resnet18(weights=None).state_dict().items()}
    assert ours == theirs


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("fusion", ["fixed", "learned", "gated"])
def test_gradients_reach_circuit_weights_angle_map_and_input(fusion: str) -> None:
    model = _hybrid(fusion=fusion)
    x = _x(1, 8, batch=4).requires_grad_(True)
    y = torch.arange(4)
    torch.nn.functional.nll_loss(model(x), y).backward()
    for name in ("quantum.weights", "angle_map.weight", "backbone.classifier.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_input_gradient_through_quantum_branch_alone_matches_finite_differences() -> None:
    # w_c = 0: the output is the quantum branch alone, so its input gradient is purely the circuit's.
    model = _hybrid(fusion="fixed", fusion_weights=(0.0, 1.0)).double().eval()
    x = _x(1, 8, batch=1, dtype=torch.float64).requires_grad_(True)
    out = model.branch_outputs(x)
    torch.testing.assert_close(out.log_probs, out.log_p_q)
    assert torch.autograd.gradcheck(lambda inp: model(inp), (x,), eps=1e-6, atol=1e-5)
    grad = torch.autograd.grad(model(x)[0, 3], x)[0]
    assert grad.abs().sum() > 0


def test_quantum_branch_changes_the_input_gradient() -> None:
    model = _hybrid(fusion="fixed", fusion_weights=(0.5, 0.5)).eval()
    x = _x(1, 8, batch=2).requires_grad_(True)
    g_fused = torch.autograd.grad(model(x)[:, 1].sum(), x)[0]
    # the classical branch alone (same backbone)
    g_classical = torch.autograd.grad(torch.log_softmax(model.backbone(x), 1)[:, 1].sum(), x)[0]
    g_quantum = torch.autograd.grad(model.branch_outputs(x).log_p_q[:, 1].sum(), x)[0]
    assert g_quantum.abs().sum() > 0
    assert not torch.allclose(g_fused, g_classical, atol=1e-6)


def test_angle_map_is_deterministic_and_bounded() -> None:
    model = _hybrid().eval()
    x = _x(1, 8, batch=3)
    with torch.no_grad():
        a, b = model.branch_outputs(x), model.branch_outputs(x)
    assert torch.equal(a.angles, b.angles) and torch.equal(a.log_probs, b.log_probs)
    assert a.angles.shape == (3, 3 * model.quantum.spec.n_qubits)
    assert (a.angles.abs() < math.pi).all()
    with torch.no_grad():
        expected = math.pi * torch.tanh(model.angle_map(model.backbone.forward_features(x)))
    torch.testing.assert_close(a.angles, expected)


# ---------------------------------------------------------------- fusion arithmetic
def test_fixed_fusion_matches_manual_computation() -> None:
    model = _hybrid(fusion="fixed", fusion_weights=(0.3, 0.9)).eval()
    x = _x(1, 8, batch=4)
    with torch.no_grad():
        fused = model(x).exp()
        p_c = torch.softmax(model.backbone(x), dim=1)
        q = model.quantum(math.pi * torch.tanh(model.angle_map(model.backbone.forward_features(x))))
        p_q = q[:, :10] / q[:, :10].sum(dim=1, keepdim=True)  # truncate to C basis states, renormalise
    expected = (0.3 * p_c + 0.9 * p_q) / 1.2
    torch.testing.assert_close(fused, expected, atol=1e-6, rtol=1e-5)
    assert not any(p.requires_grad for p in model.fusion.parameters())


def test_expval_measurement_uses_a_linear_head() -> None:
    model = _hybrid(measurement="expval", fusion="fixed", fusion_weights=(0.0, 1.0)).eval()
    x = _x(1, 8, batch=3)
    with torch.no_grad():
        out = model.branch_outputs(x)
        expected = torch.log_softmax(model.class_head.linear(out.quantum), dim=1)
    assert out.quantum.shape == (3, model.quantum.spec.n_qubits)
    torch.testing.assert_close(out.log_probs, expected)


def test_gated_alpha_in_open_interval_and_amplitude_formula() -> None:
    model = _hybrid(fusion="gated").eval()
    x = _x(1, 8, batch=5)
    with torch.no_grad():
        out = model.branch_outputs(x)
    alpha = out.weight
    assert ((alpha > 0) & (alpha < 1)).all()
    p_c, p_q = out.log_p_c.exp(), out.log_p_q.exp()
    amp = alpha[:, None] * p_c.sqrt() + torch.sqrt(1 - alpha[:, None] ** 2) * p_q.sqrt()
    expected = amp**2 / (amp**2).sum(dim=1, keepdim=True)
    torch.testing.assert_close(out.log_probs.exp(), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.log_probs.exp().sum(dim=1), torch.ones(5), atol=1e-6, rtol=0)
    # saturated gate: alpha stays strictly inside (0, 1) and the output stays finite
    gate: GatedFusion = model.fusion  # type: ignore[assignment]
    for bias in (1e4, -1e4):
        with torch.no_grad():
            gate.gate[-1].bias.fill_(bias)
            sat = model.branch_outputs(x)
        assert ((sat.weight > 0) & (sat.weight < 1)).all()
        assert torch.isfinite(sat.log_probs).all()
        torch.testing.assert_close(sat.log_probs.exp().sum(dim=1), torch.ones(5), atol=1e-5, rtol=0)


def test_gate_statistics_against_scipy() -> None:
    g = torch.Generator().manual_seed(3)
    p_c = torch.softmax(torch.randn(4, 10, generator=g, dtype=torch.float64), 1)
    p_q = torch.softmax(torch.randn(4, 10, generator=g, dtype=torch.float64), 1)
    got = branch_statistics(p_c, p_q).numpy()
    a, b = p_c.numpy(), p_q.numpy()
    for i in range(4):
        expected = [np.std(a[i]), a[i].max(), stats.kurtosis(a[i]), np.std(b[i]), b[i].max(), stats.kurtosis(b[i]),
                    np.corrcoef(a[i], b[i])[0, 1]]
        np.testing.assert_allclose(got[i], expected, rtol=1e-6, atol=1e-9)


def test_learned_fusion_weights_receive_gradients() -> None:
    model = _hybrid(fusion="learned", fusion_weights=(0.25, 0.75))
    logits = model.fusion.logits
    torch.testing.assert_close(torch.softmax(logits.detach(), 0), torch.tensor([0.25, 0.75]))
    x = _x(1, 8, batch=4)
    torch.nn.functional.nll_loss(model(x), torch.tensor([0, 1, 2, 3])).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model.branch_outputs(x)
        w = torch.softmax(logits, 0)
    torch.testing.assert_close(out.log_probs.exp(), w[0] * out.log_p_c.exp() + w[1] * out.log_p_q.exp())


def test_fusion_registry() -> None:
    assert set(FUSIONS) == {"fixed", "learned", "gated"}
    assert get_fusion("GATED") is GatedFusion
    with pytest.raises(ValueError, match="fusion='mean'.*'fixed', 'learned', 'gated'"):
        get_fusion("mean")


# ---------------------------------------------------------------- config
def test_config_defaults_and_round_trip() -> None:
    for c in range(2, 40):
        assert ModelConfig(num_classes=c).n_qubits == max(2, (c - 1).bit_length())
    cfg = ModelConfig(arch="hybrid", backbone="resnet18", in_channels=3, image_size=32, num_classes=10,
                      entanglement="full", noise="mixed", noise_strength=0.005, fusion="learned",
                      fusion_weights=(0.2, 0.8), depth=2)
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON types only
    assert ModelConfig.from_dict(d) == cfg
    as_strings = {k: str(v) for k, v in d.items()}  # how MLflow gives params back
    assert ModelConfig.from_dict(as_strings) == cfg
    assert cfg.replace(depth=3).depth == 3 and cfg.depth == 2


@pytest.mark.parametrize(
    "changes,pattern",
    [
        ({"arch": "vit"}, r"arch='vit'.*'dnn', 'cnn', 'resnet18', 'hybrid'"),
        ({"backbone": "dnn"}, r"backbone='dnn'.*'cnn', 'resnet18'"),
        ({"fusion": "sum"}, r"fusion='sum'.*'fixed', 'learned', 'gated'"),
        ({"entanglement": "grid"}, r"entanglement='grid'.*'linear'"),
        ({"measurement": "sample"}, r"measurement='sample'.*'probs', 'expval'"),
        ({"backend": "cirq"}, r"backend='cirq'.*'torch'"),
        ({"in_channels": 0}, r"in_channels=0"),
        ({"num_classes": True}, r"num_classes=True"),
        ({"image_size": 2.5}, r"image_size=2.5"),
        ({"noise_strength": 2.0}, r"noise_strength=2.0 is out of range; allowed values: a number in \[0, 1\]"),
        ({"n_qubits": 2, "num_classes": 10}, r"n_qubits=2 gives 4 basis states < num_classes=10"),
        ({"n_qubits": 40}, r"n_qubits=40"),
        ({"fusion_weights": (0, 0)}, r"fusion_weights"),
        ({"fusion_weights": (-1, 1)}, r"fusion_weights=\[-1, 1\] must be two finite numbers"),
        ({"fusion_weights": (1, 2, 3)}, r"fusion_weights"),
        ({"pretrained_path": "w.pt", "arch": "cnn"}, r"pretrained_path='w.pt'.*arch='resnet18'"),
        ({"quantum_trainable": "maybe"}, r"quantum_trainable='maybe'"),
    ],
)
def test_config_rejects_bad_values(changes: dict[str, object], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        ModelConfig(**changes)  # type: ignore[arg-type]


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['qubits'\]; allowed fields: arch"):
        ModelConfig.from_dict({"arch": "cnn", "qubits": 4})
    with pytest.raises(ValueError, match="mapping"):
        ModelConfig.from_dict([("arch", "cnn")])  # type: ignore[arg-type]


def test_build_model_seed_is_reproducible_and_leaves_global_rng() -> None:
    cfg = ModelConfig(arch="hybrid", image_size=8)
    before = torch.get_rng_state()
    a, b, c = build_model(cfg, seed=5), build_model(cfg, seed=5), build_model(cfg, seed=6)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert isinstance(build_model(cfg.to_dict(), seed=0), HybridModel)
    with pytest.raises(ValueError, match="config must be"):
        build_model("hybrid")  # type: ignore[arg-type]


# ---------------------------------------------------------------- save / load
@pytest.mark.parametrize("arch,fusion", [("hybrid", "gated"), ("hybrid", "learned"), ("cnn", "gated")])
def test_save_load_round_trip(tmp_path, arch: str, fusion: str) -> None:
    cfg = ModelConfig(arch=arch, image_size=8, fusion=fusion, noise="depolarizing", noise_strength=0.01)
    model = build_model(cfg, seed=3)
    # move away from the seeded initial weights so a loader that rebuilt from the seed would be caught
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.train()
    torch.nn.functional.nll_loss(torch.log_softmax(model(_x(1, 8, 8)), 1), torch.arange(8)).backward()  # BN stats
    model.eval()
    path = tmp_path / "model.pt"
    save_model(model, cfg, path)
    loaded, loaded_cfg = load_model(path)
    assert loaded_cfg == cfg and not loaded.training
    x = _x(1, 8, batch=4, seed=9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_save_refuses_mismatched_config(tmp_path) -> None:
    model = build_model(ModelConfig(arch="cnn", image_size=8), seed=0)
    with pytest.raises(ValueError, match="does not describe this model"):
        save_model(model, ModelConfig(arch="dnn", image_size=8), tmp_path / "m.pt")


class _Payload:
    """An object whose unpickling would create a file: a checkpoint must never run it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[override]
        return (open, (self.marker, "w"))


def test_pickled_payload_is_refused(tmp_path) -> None:
    marker = tmp_path / "was_executed"
    cfg = ModelConfig(arch="cnn", image_size=8)
    state = dict(build_model(cfg, seed=0).state_dict())
    path = tmp_path / "evil.pt"
    torch.save({"format": "qshield-model", "version": 1, "config": json.dumps(cfg.to_dict()),
                "state_dict": state, "extra": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="pickled Python objects") as info:
        load_model(path)
    assert isinstance(info.value, ValueError)
    assert not marker.exists()
    # a pickled pretrained file is refused the same way
    torch.save({"conv1.weight": _Payload(str(marker))}, tmp_path / "evil_resnet.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        resnet18(1, 10, pretrained_path=str(tmp_path / "evil_resnet.pt"))
    assert not marker.exists()


def test_load_rejects_other_files(tmp_path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a qshield model file"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a file"):
        load_model(os.fspath(tmp_path / "nothing.pt"))
