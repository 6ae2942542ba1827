"""Tests for ``qshield train`` / ``qshield evaluate`` (orchestrator.cli), run in-process on sklearn digits."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from orchestrator.cli import main
from orchestrator.cli._library import add_library_commands, parse_eps, record_path
from qshield.data import load_dataset
from qshield.evaluation import CHECK_NAMES, TABLE_COLUMNS
from qshield.models import load_model

DIGITS_EPS = 32 / 255  # qshield.attacks.DEFAULT_EPS["digits"], the reference's MNIST budget
QUICK_MASKING = ["--masking-examples", "8", "--masking-steps", "3", "--masking-queries", "20"]



def _train(tmp: Path, name: str, *flags: str) -> Path:
    out = tmp / f"{name}.pt"
    rc = main(["train", "--dataset", "digits", "--epochs", "2", "--lr", "3e-3", "--limit-train", "400",
               "--limit-test", "120", "--batch-size", "32", "--out", str(out), "--no-progress", *flags])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("models")
    return {
        "cnn": _train(tmp, "cnn", "--arch", "cnn"),
        "hyb": _train(tmp, "hyb", "--arch", "hybrid", "--entanglement", "star", "--noise", "mixed",
                      "--noise-strength", "0.005", "--fixed-circuit", "--fusion", "gated", "--n-qubits", "4",
                      "--seed", "0"),
    }


@pytest.fixture(scope="module")
def evaluated(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    rc = main(["evaluate", str(trained["cnn"]), str(trained["hyb"]), "--attacks", "fgsm", "pgd",
               "--n-examples", "40", "--out", str(out), "--no-progress", *QUICK_MASKING])
    assert rc == 0
    return out


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return int((model(x).argmax(dim=1) == y).sum()) / len(y)


# ------------------------------------------------------------------------------------------------ train
def test_train_writes_a_loadable_model_and_a_truthful_record(trained: dict[str, Path]) -> None:
    path = trained["cnn"]
    record = json.loads(record_path(path).read_text())
    assert record["dataset"] == "digits"
    assert record["data"] == {"seed": 0, "test_fraction": 0.2, "balance": False, "limit_train": 400,
                              "limit_test": 120}
    assert [m["samples"] for m in record["history"]] == [400, 400]
    assert record["train_config"]["epochs"] == 2 and record["train_config"]["lr"] == 3e-3
    model, config = load_model(path)
    assert config.arch.value == "cnn" and config.image_size == 8 and config.num_classes == 10
    # the recorded test accuracy is the model's accuracy on the same test split, recomputed here
    bundle = load_dataset("digits", seed=0, limit_train=400, limit_test=120, progress=False)
    x, y = bundle.test.tensors
    assert record["test"]["n"] == 120
    assert record["test"]["accuracy"] == pytest.approx(_accuracy(model, x, y), abs=1e-9)


def test_train_flags_reach_the_model_config(trained: dict[str, Path]) -> None:
    _, config = load_model(trained["hyb"])
    assert config.arch.value == "hybrid" and config.backbone.value == "cnn"
    assert config.entanglement.value == "star" and config.noise.value == "mixed"
    assert config.noise_strength == 0.005 and config.n_qubits == 4 and config.depth == 1
    assert config.quantum_trainable is False and config.fusion.value == "gated"
    assert config.fusion_weights == (0.5, 0.5)


def test_w_q_sets_both_fusion_weights(tmp_path: Path) -> None:
    out = _train(tmp_path, "fixed", "--arch", "hybrid", "--fusion", "fixed", "--w-q", "0.25", "--limit-batches", "1")
    _, config = load_model(out)
    assert config.fusion.value == "fixed" and config.fusion_weights == (0.75, 0.25)


# --------------------------------------------------------------------------------------------- evaluate
def test_evaluate_writes_every_output_file(evaluated: Path) -> None:
    for name in ("results.csv", "results.md", "diagnostics.csv", "diagnostics.md", "asr_vs_eps.csv",
                 "asr_vs_eps.png"):
        assert (evaluated / name).is_file(), name
    assert (evaluated / "asr_vs_eps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_table_has_one_row_per_model_and_attack(evaluated: Path) -> None:
    df = pd.read_csv(evaluated / "results.csv")
    assert list(df.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert {"attack_seconds", "queries_per_example"} <= set(df.columns)
    assert list(zip(df["model"], df["attack"])) == [
        ("cnn", "fgsm"), ("cnn", "pgd"), ("cnn", "worst-case"), ("hyb", "fgsm"), ("hyb", "pgd"), ("hyb", "worst-case")
    ]
    assert (df["n_total"] == 40).all() and (df["dataset"] == "digits").all()
    assert df["eps"].to_numpy() == pytest.approx([DIGITS_EPS] * 6)
    # counted queries: FGSM = 1 forward + 1 backward, PGD (10 steps) = 10 + 10 per example; worst case: the suite
    assert df["queries_per_example"].to_numpy() == pytest.approx([2, 20, 22, 2, 20, 22])
    assert df["attack_seconds"].to_numpy() == pytest.approx((df["seconds_per_example"] * df["n_attacked"]).to_numpy())
    # the worst case is never better than the weakest row of its model
    for model in ("cnn", "hyb"):
        rows = df[df["model"] == model].set_index("attack")
        assert rows.loc["worst-case", "robust_accuracy"] <= rows.loc[["fgsm", "pgd"], "robust_accuracy"].min()
    markdown = (evaluated / "results.md").read_text()
    for model in ("cnn", "hyb"):
        assert sum(line.startswith(f"| {model} |") for line in markdown.splitlines()) == 3


def test_odr_and_fgsm_asr_match_an_independent_computation(trained: dict[str, Path], evaluated: Path) -> None:
    df = pd.read_csv(evaluated / "results.csv").set_index(["model", "attack"])
    bundle = load_dataset("digits", seed=0, limit_test=40, progress=False)
    x, y = bundle.test.tensors
    for name in ("cnn", "hyb"):
        model, _ = load_model(trained[name])
        with torch.no_grad():
            correct = model(x).argmax(dim=1) == y
        row = df.loc[(name, "fgsm")]
        assert row["odr"] == pytest.approx(int(correct.sum()) / len(y), abs=1e-12)
        assert row["n_attacked"] == int(correct.sum())
        # FGSM by hand: one signed-gradient step of the cross-entropy, clipped to [0, 1]
        xa = x[correct].clone().requires_grad_(True)
        loss = F.cross_entropy(model(xa), y[correct])
        (grad,) = torch.autograd.grad(loss, xa)
        adv = (xa.detach() + DIGITS_EPS * grad.sign()).clamp(0, 1)
        with torch.no_grad():
            fooled = model(adv).argmax(dim=1) != y[correct]
        assert row["asr"] == pytest.approx(int(fooled.sum()) / len(fooled), abs=1e-12)
        assert row["robust_accuracy"] == pytest.approx(int((~fooled).sum()) / len(y), abs=1e-12)


def test_diagnostics_and_curve_files(evaluated: Path) -> None:
    diag = pd.read_csv(evaluated / "diagnostics.csv")
    for model in ("cnn", "hyb"):
        assert list(diag.loc[diag["model"] == model, "check"]) == list(CHECK_NAMES)
    results = pd.read_csv(evaluated / "results.csv")
    for model, group in diag.groupby("model"):
        trustworthy = bool(group["passed"].all())
        assert (results.loc[results["model"] == model, "trustworthy"] == trustworthy).all()
    curves = pd.read_csv(evaluated / "asr_vs_eps.csv")
    default_eps = [1 / 255, 4 / 255, 16 / 255, 64 / 255, 1.0]
    for model in ("cnn", "hyb"):
        part = curves[curves["model"] == model]
        assert part["eps"].to_numpy() == pytest.approx(default_eps)
        assert ((part["asr"] >= 0) & (part["asr"] <= 1)).all()


def test_evaluate_set_overrides_an_attack_parameter(trained: dict[str, Path], tmp_path: Path) -> None:
    rc = main(["evaluate", str(trained["cnn"]), "--attacks", "pgd", "--set", "pgd.steps=3", "--eps", "8/255",
               "--n-examples", "20", "--out", str(tmp_path), "--no-progress", *QUICK_MASKING])
    assert rc == 0
    row = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert row["eps"] == pytest.approx(8 / 255)
    assert row["forward_per_example"] == pytest.approx(3) and row["backward_per_example"] == pytest.approx(3)


# ------------------------------------------------------------------------------------------------ errors
def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


TRAIN = ["train", "--dataset", "digits", "--epochs", "1"]


@pytest.mark.parametrize(
    ("flags", "must_contain"),
    [
        (["--entanglement", "ring2"], ["--entanglement", "'linear'", "'star'", "'full'"]),
        (["--noise", "loud"], ["--noise", "'mixed'"]),
        (["--fusion", "avg"], ["--fusion", "'gated'", "'learned'", "'fixed'"]),
        (["--arch", "vit"], ["--arch", "'hybrid'"]),
        (["--backend", "qiskit"], ["--backend", "'torch'"]),
        (["--noise-strength", "2"], ["--noise-strength", "[0.0, 1.0]"]),
        (["--w-q", "-0.1"], ["--w-q", "[0.0, 1.0]"]),
        (["--n-qubits", "1"], ["--n-qubits", "'auto'"]),
        (["--epochs", "0"], ["--epochs", ">= 1"]),
        (["--method", "pgd_at"], ["--pgd-eps", "32/255"]),
        (["--pgd-eps", "300/255", "--method", "pgd_at"], ["--pgd-eps", "[0, 1]"]),
        (["--arch", "hybrid", "--n-qubits", "2"], ["n_qubits=2", "num_classes=10"]),
    ],
)
def test_bad_train_flags_fail_before_training(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], must_contain: list[str]
) -> None:
    out = tmp_path / "m.pt"
    err = _error(capsys, [*TRAIN, "--out", str(out), *flags])
    for text in must_contain:
        assert text in err
    assert not out.exists()


def test_unknown_dataset_lists_the_datasets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _error(capsys, ["train", "--dataset", "imagenet", "--out", str(tmp_path / "m.pt")])
    assert "--dataset" in err and "'mnist5k'" in err and "'digits'" in err


def test_missing_dataset_files_exit_1_with_the_place_looked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc = main(["train", "--dataset", "mnist", "--data-root", str(tmp_path), "--arch", "dnn",
               "--out", str(tmp_path / "m.pt"), "--no-progress"])
    assert rc == 1
    assert str(tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    ("flags", "must_contain"),
    [
        (["--attacks", "fgsm", "carlini"], ["--attacks", "'fgsm'", "'square'", "'deepfool'"]),
        (["--eps", "2"], ["--eps", "[0, 1]"]),
        (["--eps", "abc"], ["--eps", "32/255"]),
        (["--set", "square.nope=3"], ["--set", "n_queries"]),
        (["--set", "pgd.steps=0"], ["--set", "steps=0"]),
        (["--n-examples", "0"], ["--n-examples", ">= 1"]),
        (["--plot-eps", "0.5", "0.1"], ["--plot-eps", "increasing"]),
        (["--dataset", "mnist5k"], ["--dataset", "'digits'"]),
        (["--seed", "3"], ["--seed", "overlap"]),
    ],
)
def test_bad_evaluate_flags(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path], tmp_path: Path, flags: list[str],
    must_contain: list[str],
) -> None:
    err = _error(capsys, ["evaluate", str(trained["cnn"]), "--out", str(tmp_path / "o"), *flags])
    for text in must_contain:
        assert text in err
    assert not (tmp_path / "o").exists()


def test_evaluate_missing_model_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _error(capsys, ["evaluate", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")])
    assert "none.pt" in err and "not a file" in err


def test_evaluate_needs_dataset_without_record(
    capsys: pytest.CaptureFixture[str], trained: dict[str, Path], tmp_path: Path
) -> None:
    bare = tmp_path / "bare.pt"
    bare.write_bytes(trained["cnn"].read_bytes())  # a model file without its training record
    err = _error(capsys, ["evaluate", str(bare), "--out", str(tmp_path / "o")])
    assert "--dataset is required" in err and "'digits'" in err


def test_parse_eps() -> None:
    assert parse_eps("32/255") == pytest.approx(32 / 255)
    assert parse_eps("0.25") == 0.25
    for bad in ("1.5", "-1/255", "nan", "x", "1/0"):
        with pytest.raises(argparse.ArgumentTypeError, match="allowed values"):
            parse_eps(bad)


# ------------------------------------------------------------------------------------ wiring
def test_add_library_commands_on_an_application_parser() -> None:
    parser = argparse.ArgumentParser(prog="app")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sweep")  # the application's own command stays
    add_library_commands(sub)
    args = parser.parse_args(["train", "--dataset", "digits", "--out", "m.pt"])
    assert callable(args.func) and args.arch == "hybrid" and args.epochs == 10 and args.lr == 1e-3
    args = parser.parse_args(["evaluate", "a.pt", "b.pt", "--out", "d"])
    assert callable(args.func) and args.attacks == ["fgsm", "pgd", "apgd", "vmifgsm", "cw", "deepfool",
                                                    "onepixel", "square"]
    assert math.isclose(args.plot_eps[-1], 1.0) and args.models == [Path("a.pt"), Path("b.pt")]


def test_python_dash_m_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "train", "--dataset", "digits", "--fusion", "sum",
                           "--out", "x.pt"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "--fusion" in proc.stderr and "'gated'" in proc.stderr


def test_an_unreachable_tracking_server_is_one_line_after_the_retries(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tracking server that refuses connections: ``qshield select`` ends with one line naming the server and the
    attempts (exit 1), no traceback. qshield's own backoff is skipped here and MLflow's HTTP retries are off, so
    the test takes no time; the defaults are checked below."""
    import socket

    import orchestrator.tracking._tracker as tracker_module
    from orchestrator.cli import main

    with socket.socket() as s:  # a port nothing listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(tracker_module.time, "sleep", lambda s: None)
    assert main(["select", "--sweep", "s", "--tracking-uri", f"http://127.0.0.1:{port}", "--no-card"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: MLflow at http://127.0.0.1:{port} failed to ") and "after 6 attempt(s)" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_mlflow_http_retries_default_to_two_and_a_users_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from orchestrator.run import mlflow_client_defaults

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    mlflow_client_defaults()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    mlflow_client_defaults()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "7"
