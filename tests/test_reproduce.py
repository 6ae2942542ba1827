"""Tests for experiments.reproduce: a tiny run of the reproduction code path on sklearn digits."""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qshield.attacks import ATTACKS, DEFAULT_EPS, AttackConfig, HiddenParts
from qshield.data import load_dataset
from qshield.evaluation import (
    CHECK_NAMES,
    TABLE_COLUMNS,
    AttackResult,
    CheckResult,
    EvaluationReport,
    MaskingConfig,
    MaskingDiagnostics,
    difference_interval,
)
from experiments.reproduce import (
    ADAPTIVE_ATTACKS,
    MODEL_NAMES,
    REFERENCE_NAME,
    PAPER_MNIST_ASR,
    PAPER_MNIST_ODR,
    Reproduction,
    ReproductionConfig,
    TrainedModel,
    asr_comparison,
    main,
    model_config,
    render_reproduction,
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
    paths = write_reproduction(rep, tmp_path / "repro.md", command="python -m experiments.reproduce --tiny",
                               plot=tmp_path / "repro.png", csv=tmp_path / "repro.csv")
    doc = paths["doc"].read_text()
    assert "python -m experiments.reproduce --tiny" in doc
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


# ---------------------------------------------------------------------------------------- the document, pinned
#: Recorded renderings of :func:`_synthetic_reproduction` (see :func:`test_document_is_the_recorded_rendering`).
RECORDED = Path(__file__).parent / "data"

#: ASR (%) of each model and attack in the synthetic run (Ref-Full: its naive rows).
_SYNTHETIC_ASR = {
    "DNN": (70, 55, 85, 40, 80, 60, 2, 70),
    "CNN": (50, 50, 60, 38, 40, 75, 3, 30),
    "None": (45, 48, 62, 30, 20, 70, 1, 12),
    "Linear": (40, 38, 70, 25, 18, 68, 1, 8),
    "Star": (35, 30, 71, 22, 10, 72, 0, 9),
    "Full": (30, 28, 72, 18, 12, 74, 1, 6),
    REFERENCE_NAME: (20, 30, 58, 20, 42, 70, 1, 10),
}
#: ASR (%) of the reference hybrid's adaptive rows: fgsm and square survive the adaptive attacker, pgd only the naive
#: one sees a reduction, apgd only the adaptive one, cw neither (every verdict of the claims section).
_SYNTHETIC_ADAPTIVE_ASR = {"fgsm": 30, "pgd": 45, "apgd": 40, "cw": 41, "square": 12}


def _synthetic_reproduction(variant: str) -> tuple[Reproduction, dict[str, str | None]]:
    """A :class:`Reproduction` made of fixed numbers (no training, no attack) and the arguments to render it.

    ``full``: the default protocol (six models, eight attacks, the reference hybrid naive and adaptive) with a model
    whose diagnostics did not run, one failing a check, the reference hybrid's naive rows flagged and one adaptive
    row without EOT. ``small``: two models, two attacks, 2 epochs, no reference hybrid, everything passing, no plot or
    CSV.
    """
    if variant == "full":
        config = ReproductionConfig()
    else:
        config = ReproductionConfig(
            dataset="digits", models=("CNN", "Linear"), attacks=("fgsm", "square"), epochs=2, n_examples=40,
            examples_by_attack={"square": 12}, masking=MaskingConfig(n_examples=8, steps=3, square_queries=20),
            reference=False,
        )
    eps = config.resolved_eps
    hidden = HiddenParts(randomized=True, non_differentiable=True, description="a random projection per call")
    order = ("fgsm", "pgd", "apgd", "vmifgsm", "cw", "deepfool", "onepixel", "square")

    def result(i: int, attack: str, n_total: int, pct: float, adaptive: str = "none", eot: int = 1):
        n_attacked = n_total - 1 - (i + order.index(attack)) % 4
        n_fooled = round(pct * n_attacked / 100)
        params = {"eot_iter": eot} if eot > 1 else {}
        return AttackResult(
            attack=attack, eps=eps if ATTACKS[attack].uses_eps else None, odr=n_attacked / n_total,
            asr=n_fooled / n_attacked, robust_accuracy=(n_attacked - n_fooled) / n_total, n_total=n_total,
            n_attacked=n_attacked, seconds_per_example=0.0125 * (i + 1) * (order.index(attack) + 1),
            forward_per_example=10.0 * (i + 1), backward_per_example=5.0 * order.index(attack), n_fooled=n_fooled,
            config=AttackConfig(attack, params=params), reaches_eps=attack not in ("pgd", "vmifgsm"), adaptive=adaptive,
        )

    def diagnostics(i: int, failed: tuple[str, ...] = (), mode: str = "none", masking: MaskingConfig | None = None,
                    hides: HiddenParts = HiddenParts()):
        masking = masking or config.masking
        checks = tuple(CheckResult(name, name not in failed, f"detail {k} of check {name} (model {i})")
                       for k, name in enumerate(CHECK_NAMES))
        schedule = masking.eps_schedule
        return MaskingDiagnostics(
            checks=checks, n_examples=masking.n_examples, eps=eps, eps_schedule=schedule,
            pgd_asr=tuple(min(1.0, (k + 1) / len(schedule) - 0.01 * i) for k in range(len(schedule))),
            pgd_asr_at_eps=0.5 + 0.01 * i, square_asr_at_eps=0.3 + 0.01 * i, zero_grad_fraction=0.001 * i,
            grad_finite=True, randomized=hides.randomized, config=masking, adaptive=mode,
            eot_iter=8 if "eot" in mode else 1, hidden=hides,
        )

    names = [*config.models, *([REFERENCE_NAME] if config.reference else [])]
    trained, reports = [], []
    for i, name in enumerate(names):
        results = tuple(result(i, a, config.examples_for(a), _SYNTHETIC_ASR[name][order.index(a)])
                        for a in config.attacks)
        failed = {"Star": ("whitebox_beats_blackbox",),
                  REFERENCE_NAME: ("gradients_match_finite_differences", "deterministic_or_eot")}.get(name, ())
        hides = hidden if name == REFERENCE_NAME else HiddenParts()
        reports.append(EvaluationReport(
            model=name, dataset=config.dataset, odr=results[0].odr, n_total=results[0].n_total, results=results,
            diagnostics=None if name == "DNN" else diagnostics(i, failed, hides=hides), num_classes=10, hidden=hides,
        ))
        trained.append(TrainedModel(
            name=name, config=model_config(name, config.dataset), model=nn.Linear(8 * (i + 1), 10), history=(),
            train_seconds=12.25 * (i + 1), test_accuracy=(900 + 13 * i) / 1000, n_test=1000,
            eval_seconds=30.5 * (i + 1),
        ))
    adaptive_reports = []
    if config.reference:
        i = len(names) - 1
        rows = []
        for a in config.adaptive_attacks:
            if a == "square":  # a black-box row without EOT on a randomised model: flagged
                rows.append(result(i, a, config.adaptive_examples_for(a), _SYNTHETIC_ADAPTIVE_ASR[a]))
            else:
                rows.append(result(i, a, config.adaptive_examples_for(a), _SYNTHETIC_ADAPTIVE_ASR[a],
                                   adaptive="bpda+eot(8)", eot=8))
        adaptive_reports.append(EvaluationReport(
            model=f"{REFERENCE_NAME} (adaptive)", dataset=config.dataset, odr=rows[0].odr, n_total=rows[0].n_total,
            results=tuple(rows),
            diagnostics=diagnostics(i, mode="bpda+eot(8)", masking=config.adaptive_masking, hides=hidden),
            num_classes=10, hidden=hidden,
        ))
    environment = {
        "machine": "x86_64, Synthetic CPU @ 2.0GHz, 2 cores", "device": "cpu", "torch_threads": "1",
        "python": "3.12.0", "torch": "2.13.0+cpu", "torchattacks": "3.5.1", "date": "2026-01-02 03:04 UTC",
        "load_average": "1.5",
    }
    rep = Reproduction(config, tuple(trained), tuple(reports), n_train=4000 if variant == "full" else 400,
                       test_indices={}, seconds=754.0, environment=environment,
                       adaptive_reports=tuple(adaptive_reports), adaptive_seconds=321.0 if config.reference else 0.0)
    if variant == "full":
        names = {"plot_name": "reproduction_asr_vs_eps.png", "csv_name": "reproduction_results.csv"}
    else:
        names = {"plot_name": None, "csv_name": None}
    return rep, {"command": "python -m experiments.reproduce --no-progress", **names}


@pytest.mark.parametrize("variant", ["full", "small"])
def test_document_is_the_recorded_rendering(variant: str) -> None:
    """The whole Markdown of a fixed :class:`Reproduction`, byte for byte, against a recorded rendering.

    ``tests/data/reproduction_{full,small}.md`` were rendered by ``qshield/reproduce.py`` as of d3706c0 (before it
    moved to ``experiments/reproduce/`` and its text into templates); since then only the generated-by comment and
    the command passed in changed, to name ``python -m experiments.reproduce``. Any other change to the document
    shows up here as a diff. After a deliberate change of the document (or of the library's tables it embeds),
    re-record them with this renderer and review the diff.
    """
    rep, kwargs = _synthetic_reproduction(variant)
    text = render_reproduction(rep, **kwargs)
    recorded = (RECORDED / f"reproduction_{variant}.md").read_text(encoding="utf-8")
    if text != recorded:
        diff = "".join(difflib.unified_diff(recorded.splitlines(True), text.splitlines(True), "recorded", "now"))
        pytest.fail(f"the rendered document differs from tests/data/reproduction_{variant}.md:\n{diff}")


def test_a_template_and_its_values_must_match() -> None:
    """A placeholder without a value, or a value without a placeholder, is refused (never printed as ``${...}``)."""
    from string import Template

    from experiments.reproduce._render import _fill

    assert _fill(Template("ε = ${eps}, $n images"), eps="32/255", n=3) == "ε = 32/255, 3 images"
    with pytest.raises(ValueError, match=r"without a value \['n'\], without a placeholder \[\]"):
        _fill(Template("ε = ${eps}, $n images"), eps="32/255")
    with pytest.raises(ValueError, match=r"without a value \[\], without a placeholder \['seed'\]"):
        _fill(Template("ε = ${eps}"), eps="32/255", seed=0)
