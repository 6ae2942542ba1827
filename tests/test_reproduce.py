"""Tests for qshield.reproduce: a tiny run of the reproduction code path on sklearn digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from qshield.attacks import DEFAULT_EPS
from qshield.data import load_dataset
from qshield.evaluation import CHECK_NAMES, TABLE_COLUMNS, MaskingConfig, difference_interval
from qshield.reproduce import (
    ADAPTIVE_ATTACKS,
    MODEL_NAMES,
    REFERENCE_NAME,
    PAPER_MNIST_ASR,
    PAPER_MNIST_ODR,
    ReproductionConfig,
    asr_comparison,
    main,
    model_config,
    run_reproduction,
    write_reproduction,
)

TINY = {
    "dataset": "digits",
    "models": ("CNN", "Linear"),
    "attacks": ("fgsm", "square"),
    "epochs": 2,
    "lr": 3e-3,
    "batch_size": 32,
    "limit_train": 400,
    "n_examples": 40,
    "examples_by_attack": {"square": 12},
    "masking": MaskingConfig(n_examples=8, steps=3, square_queries=20),
    "reference": False,
}
TINY_MASKING = MaskingConfig(n_examples=8, eps_schedule=(16 / 255, 1.0), steps=3, square_queries=10)
#: the reference hybrid next to the CNN, naive and adaptive, one attack: the smallest run of that code path
TINY_REF = {**TINY, "models": ("CNN",), "attacks": ("fgsm",), "examples_by_attack": {}, "epochs": 3,
            "reference": True, "adaptive_attacks": ("fgsm",), "adaptive_examples": {"fgsm": 40},
            "masking": TINY_MASKING, "adaptive_masking": TINY_MASKING}



@pytest.fixture(scope="module")
def rep():
    return run_reproduction(ReproductionConfig(**TINY), progress=False)


@pytest.fixture(scope="module")
def rep_ref():
    return run_reproduction(ReproductionConfig(**TINY_REF), progress=False)


@pytest.fixture(scope="module")
def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The test split the run uses, loaded here from the documented protocol (seed 0, balanced)."""
    bundle = load_dataset("digits", seed=0, balance=True, limit_train=400, progress=False)
    return bundle.test.tensors


def test_structure_models_by_attacks(rep) -> None:
    assert [r.model for r in rep.reports] == ["CNN", "Linear"]
    assert [t.name for t in rep.trained] == ["CNN", "Linear"]
    for report in rep.reports:
        assert [r.attack for r in report.results] == ["fgsm", "square"]
        assert [r.n_total for r in report.results] == [40, 12]
        assert report.diagnostics is not None
        assert [c.name for c in report.diagnostics.checks] == list(CHECK_NAMES)
        assert report.result("fgsm").eps == pytest.approx(DEFAULT_EPS["digits"])
    table = rep.table()
    assert list(table.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert list(zip(table["model"], table["attack"])) == [
        ("CNN", "fgsm"), ("CNN", "square"), ("Linear", "fgsm"), ("Linear", "square")
    ]
    assert rep.n_train == 400
    assert all(len(t.history) == 2 for t in rep.trained)


def test_attacked_subsets_are_nested_and_stratified(rep, test_split) -> None:
    _, labels = test_split
    big, small = rep.test_indices["fgsm"], rep.test_indices["square"]
    assert len(big) == 40 and len(small) == 12 and len(set(big.tolist())) == 40
    assert set(small.tolist()) <= set(big.tolist())
    counts = np.bincount(labels[big].numpy(), minlength=10)
    assert counts.max() - counts.min() <= 1  # 40 images over 10 balanced classes: 4 each


def test_odr_and_fgsm_asr_recomputed_independently(rep, test_split) -> None:
    x_all, y_all = test_split
    eps = DEFAULT_EPS["digits"]
    for trained, report in zip(rep.trained, rep.reports):
        model = trained.model.eval()
        with torch.no_grad():
            assert trained.test_accuracy == pytest.approx(int((model(x_all).argmax(1) == y_all).sum()) / len(y_all))
        idx = rep.test_indices["fgsm"]
        x, y = x_all[idx], y_all[idx]
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        fgsm = report.result("fgsm")
        assert fgsm.odr == pytest.approx(int(correct.sum()) / len(y), abs=1e-12)
        assert fgsm.n_attacked == int(correct.sum())
        xa = x[correct].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), y[correct]), xa)
        with torch.no_grad():
            fooled = model((xa + eps * grad.sign()).clamp(0, 1)).argmax(1) != y[correct]
        assert fgsm.asr == pytest.approx(int(fooled.sum()) / len(fooled), abs=1e-12)
        # Square's ODR is over its own 12 images
        sq_idx = rep.test_indices["square"]
        with torch.no_grad():
            sq_correct = int((model(x_all[sq_idx]).argmax(1) == y_all[sq_idx]).sum())
        assert report.result("square").n_attacked == sq_correct


def test_comparison_carries_the_papers_numbers(rep) -> None:
    cmp = asr_comparison(rep)
    assert list(cmp["model"]) == ["CNN", "Linear"]
    for _, row in cmp.iterrows():
        for attack in ("fgsm", "square"):
            assert row[f"{attack}_paper"] == PAPER_MNIST_ASR[row["model"]][attack]
            ours = rep.reports[list(cmp["model"]).index(row["model"])].result(attack).asr
            assert row[f"{attack}_ours"] == pytest.approx(100 * ours)


def test_written_document_plot_and_csv(rep, tmp_path: Path) -> None:
    paths = write_reproduction(rep, tmp_path / "repro.md", command="python -m qshield.reproduce --tiny",
                               plot=tmp_path / "repro.png", csv=tmp_path / "repro.csv")
    doc = paths["doc"].read_text()
    assert "python -m qshield.reproduce --tiny" in doc
    assert "![PGD ASR vs ε per model](repro.png)" in doc and "(repro.csv)" in doc
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    csv = pd.read_csv(paths["csv"])
    assert len(csv) == 4 and set(csv["model"]) == {"CNN", "Linear"}
    # the ASR table shows ours / paper for each cell, the paper's value to one decimal
    cnn_line = next(line for line in doc.splitlines() if line.startswith("| CNN |") and " / " in line)
    ours = 100 * rep.reports[0].result("fgsm").asr
    assert f"{ours:.1f}" in cnn_line and f"/ {PAPER_MNIST_ASR['CNN']['fgsm']:.1f}" in cnn_line
    odr = f"{100 * rep.trained[1].test_accuracy:.2f} | {PAPER_MNIST_ODR['Linear']:.2f}"
    assert any(line.startswith("| Linear |") and odr in line for line in doc.splitlines())
    for check in CHECK_NAMES:
        assert check in doc
    assert ("⚠" in doc.split("## ASR")[1].split("## Full")[0]) == (not all(r.trustworthy for r in rep.reports))


def test_protocol_model_configs() -> None:
    for name in ("None", "Linear", "Star", "Full"):
        cfg = model_config(name)
        assert cfg.arch.value == "hybrid" and cfg.backbone.value == "cnn"
        assert cfg.entanglement.value == name.lower()
        assert (cfg.n_qubits, cfg.depth, cfg.noise.value, cfg.noise_strength) == (4, 1, "mixed", 0.005)
        assert cfg.fusion.value == "gated" and cfg.quantum_trainable is False
        assert cfg.input_shape == (1, 28, 28) and cfg.num_classes == 10
    assert model_config("DNN").arch.value == "dnn" and model_config("CNN", "digits").image_size == 8
    with pytest.raises(ValueError, match="model='ResNet'.*'DNN'"):
        model_config("ResNet")


def test_reference_hybrid_is_evaluated_naively_and_adaptively(rep_ref) -> None:
    assert [r.model for r in rep_ref.reports] == ["CNN", REFERENCE_NAME]
    assert [t.config.arch.value for t in rep_ref.trained] == ["cnn", "reference_hybrid"]
    naive, (adaptive,) = rep_ref.report(REFERENCE_NAME), rep_ref.adaptive_reports
    assert adaptive.model == f"{REFERENCE_NAME} (adaptive)"
    assert naive.result("fgsm").adaptive == "none" and adaptive.result("fgsm").adaptive == "bpda+eot(8)"
    assert naive.row_flags(naive.result("fgsm")) == ("no EOT", "no BPDA/transfer") and not naive.trustworthy
    assert "deterministic_or_eot" in naive.diagnostics.failed  # the naive evaluation is flagged
    assert adaptive.diagnostics.adaptive == "bpda+eot(8)"
    assert adaptive.row_flags(adaptive.result("fgsm")) == ()
    table = rep_ref.table()
    assert list(table.loc[table["attack"] == "fgsm", "model"]) == ["CNN", REFERENCE_NAME, adaptive.model]


def test_reference_section_differences_are_recomputed_from_the_counts(rep_ref, tmp_path: Path) -> None:
    doc = write_reproduction(rep_ref, tmp_path / "r.md", command="x")["doc"].read_text()
    section = doc.split("## The paper's claims measured on the paper's own model")[1].split("## What this run")[0]
    cnn, ref, ad = (rep_ref.report("CNN").result("fgsm"), rep_ref.report(REFERENCE_NAME).result("fgsm"),
                    rep_ref.adaptive_reports[0].result("fgsm"))
    row = next(line for line in section.splitlines() if line.startswith("| FGSM |"))
    for r in (ref, ad):
        d, lo, hi = difference_interval(r.n_fooled, r.n_attacked, cnn.n_fooled, cnn.n_attacked)
        assert f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]" in row
    paper = PAPER_MNIST_ASR
    assert f"{paper['CNN']['fgsm']:.1f} → {paper['Full']['fgsm']:.1f}" in row
    assert "### Verdict per claim" in section and "* **FGSM**:" in section
    assert "| naive | none |" in section and "| adaptive | bpda+eot(8) |" in section


def test_reference_protocol_config() -> None:
    cfg = model_config(REFERENCE_NAME)
    assert cfg.arch.value == "reference_hybrid" and cfg.entanglement.value == "full"
    assert (cfg.n_qubits, cfg.noise.value, cfg.noise_strength, cfg.quantum_trainable) == (4, "mixed", 0.005, False)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"models": ("CNN", "ViT")}, r"models=.*allowed values: distinct names from DNN, CNN, None"),
        ({"attacks": ("fgsm", "zoo")}, r"attacks=.*allowed values: distinct names from fgsm, pgd"),
        ({"epochs": 0}, r"epochs=0 .*>= 1"),
        ({"examples_by_attack": {"boom": 3}}, r"attack 'boom'; allowed values: fgsm"),
        ({"examples_by_attack": {"cw": 0}}, r"examples_by_attack\['cw'\]=0"),
        ({"dataset": "svhn"}, r"dataset='svhn' is invalid; allowed values: .*'mnist5k'"),
        ({"eps": 2.0}, r"eps=2.0 is invalid; allowed values: a number in \[0, 1\]"),
        ({"device": "tpu"}, r"device='tpu'"),
        ({"reference": True, "adaptive_attacks": ("cw",)}, r"adaptive_attacks=\('cw',\) is invalid; allowed values: "
         r"distinct names from the attacks evaluated \(fgsm, square\)"),
        ({"adaptive_examples": {"fgsm": 0}}, r"adaptive_examples\['fgsm'\]=0"),
    ],
)
def test_bad_config_is_refused(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ReproductionConfig(**{**TINY, **change})


def test_default_protocol_is_the_papers() -> None:
    cfg = ReproductionConfig()
    assert cfg.models == MODEL_NAMES and cfg.dataset == "mnist5k" and cfg.balance
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size) == (1e-3, 1e-4, 128)
    assert cfg.resolved_eps == pytest.approx(32 / 255)
    assert cfg.attacks == ("fgsm", "pgd", "apgd", "vmifgsm", "cw", "deepfool", "onepixel", "square")
    assert cfg.reference and cfg.adaptive_attacks == ADAPTIVE_ATTACKS
    assert cfg.examples_for("pgd") == cfg.n_examples and cfg.examples_for("deepfool") < cfg.n_examples


def test_command_line_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, text in ((["--models", "CNN", "GPT"], "'DNN'"), (["--examples", "cw=0"], "--examples"),
                       (["--attacks", "nope"], "'square'")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert text in capsys.readouterr().err
