"""The robustness card of a registered version, made from a real sweep's records (tests/_card_registry.py).

Assertions compare the card with independent sources: the trial run's logged metrics and artifacts (read with
MlflowClient), the registered weights run here on the stored gallery images, the dataset loaded here, the parent
run's ``quantum_gain.json`` for the comparison model.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient

from orchestrator.views import CARD_TAG, build_card, make_card
from orchestrator.cli import main
from orchestrator.tracking import load_registered
from qshield.data import load_dataset
from qshield.evaluation import evaluate_attack
from qshield.models import HybridModel

from ._card_registry import MODEL_NAME, SPACE


def _download_card(reg: dict[str, Any], run_id: str, dst: str) -> Path:
    client = MlflowClient(reg["uri"])
    return Path(client.download_artifacts(run_id, "card", str(reg["tmp"] / dst)))


def _ci(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.3f} [{metrics[key + '_ci_low']:.3f}, {metrics[key + '_ci_high']:.3f}]"


def _cell(page: str, attr: str, value: str) -> str:
    """Text of the first element carrying ``attr="value"`` (its direct text, tags stripped)."""
    match = re.search(rf'<(\w+)[^>]*\b{attr}="{re.escape(value)}"[^>]*>(.*?)</\1>', page, re.S)
    assert match, f"no element with {attr}={value!r}"
    return re.sub(r"<[^>]+>", " ", match.group(2))


def _test_split() -> tuple[torch.Tensor, torch.Tensor]:
    bundle = load_dataset("digits", seed=SPACE["seed"], limit_train=SPACE["limit_train"],
                          limit_test=SPACE["limit_test"], progress=False)
    return bundle.test.tensors


def test_select_logs_the_champions_card_with_the_recorded_numbers(card_registry: dict[str, Any]) -> None:
    reg = card_registry
    sel = reg["selection"]
    client = MlflowClient(reg["uri"])
    version = client.get_model_version(MODEL_NAME, sel.version)
    assert sel.card == version.tags[CARD_TAG] == f"runs:/{sel.run_id}/card/index.html"
    names = {Path(a.path).name for a in client.list_artifacts(sel.run_id, "card")}
    assert {"index.html", "asr_vs_eps.png", "gallery_model.png", "gallery_partner.png", "card.json",
            "gallery.npz"} <= names
    card_dir = _download_card(reg, sel.run_id, "champion")
    page = (card_dir / "index.html").read_text()
    run = client.get_run(sel.run_id)
    m = run.data.metrics
    # headline: the run's logged metrics with their intervals
    for key in ("accuracy", "robust_accuracy", "asr"):
        assert _cell(page, "data-metric", key).strip() == _ci(m, key)
    assert f"{m['adversary_cost'] * 255:.1f}/255" in _cell(page, "data-metric", "adversary_cost")
    # the per-attack table: every attack the trial logged, with its ASR and robust accuracy and cost
    for name in [a for a in SPACE["attacks"]["names"]]:
        row = _cell(page, "data-attack", name)
        assert f"{m[f'attack/{name}/asr']:.3f} [{m[f'attack/{name}/asr_ci_low']:.3f}" in row
        assert f"{m[f'attack/{name}/robust_accuracy']:.3f}" in row
        assert f"{m[f'attack/{name}/queries_per_example']:.1f}" in row
    # the masking verdict: each recorded check with its numbers
    masking = json.loads(Path(client.download_artifacts(sel.run_id, "masking_diagnostics.json",
                                                        str(reg["tmp"] / "mask"))).read_text())
    for check in masking["checks"]:
        text = _cell(page, "data-check", check["name"])
        assert ("passed" if check["passed"] else "FAILED") in text
        assert html.escape(check["detail"], quote=True) in page
    # the configuration: every searched and fixed parameter of the trial
    for key, value in run.data.params.items():
        assert f"<th>{key}</th>" in page, key
    # self-contained: no script, no external fetch; the pictures are the logged PNG files, embedded
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="(?!data:image/png;base64,)', page)
    embedded = [base64.b64decode(s) for s in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert (card_dir / "asr_vs_eps.png").read_bytes() in embedded
    assert (card_dir / "gallery_model.png").read_bytes() in embedded
    assert (card_dir / "gallery_partner.png").read_bytes() in embedded
    hybrid_side = "model" if run.data.params["arch"] == "hybrid" else "partner"  # its branches get their own figure
    assert (card_dir / f"branches_{hybrid_side}.png").read_bytes() in embedded
    # the card's own data equals what the run logged
    data = json.loads((card_dir / "card.json").read_text())
    assert data["model"]["metrics"]["accuracy"] == pytest.approx(m["accuracy"])
    assert data["model"]["run_id"] == sel.run_id


def test_gallery_predictions_are_the_models_on_the_stored_images(card_registry: dict[str, Any]) -> None:
    reg = card_registry
    sel = reg["selection"]
    card_dir = _download_card(reg, sel.run_id, "gallery")
    data = json.loads((card_dir / "card.json").read_text())
    arrays = np.load(card_dir / "gallery.npz", allow_pickle=False)
    page = (card_dir / "index.html").read_text()
    test_x, test_y = _test_split()
    for gallery, key, uri in ((data["galleries"][0], "model", f"models:/{MODEL_NAME}/{sel.version}"),
                              (data["galleries"][1], "partner", data["partner"]["uri"])):
        model, _, _ = load_registered(uri, reg["uri"])
        clean, adv = torch.from_numpy(arrays[f"{key}_clean"]), torch.from_numpy(arrays[f"{key}_adv"])
        idx = gallery["indices"]
        assert len(idx) >= 3
        # the clean images are the trial's test images at those positions, with their true labels
        assert torch.equal(clean, test_x[idx]) and gallery["labels"] == test_y[idx].tolist()
        with torch.no_grad():
            before, after = model(clean).argmax(1).tolist(), model(adv).argmax(1).tolist()
        assert gallery["clean_pred"] == before and gallery["adv_pred"] == after
        # both galleries: the champion's strongest recorded attack, inside [0, 1] and its ε-ball
        champion_run = MlflowClient(reg["uri"]).get_run(sel.run_id)
        assert gallery["attack"] == champion_run.data.tags["qshield.strongest_attack"].split("#")[0]
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
        assert float((adv - clean).abs().amax()) <= gallery["eps"] + 1e-6
        if isinstance(model, HybridModel):  # branch probabilities and fusion weight, from the model itself
            with torch.no_grad():
                out = model.branch_outputs(clean)
            assert np.allclose(gallery["p_classical"], out.log_p_c.exp().numpy(), atol=1e-6)
            assert np.allclose(gallery["p_quantum"], out.log_p_q.exp().numpy(), atol=1e-6)
            assert np.allclose(gallery["fusion_weight"], out.weight.expand(len(idx)).numpy(), atol=1e-6)
        else:
            assert gallery["p_classical"] is None
    # the model's gallery images are ones it classifies correctly; the page shows the same before/after
    model_gallery = data["galleries"][0]
    assert model_gallery["clean_pred"] == model_gallery["labels"]
    shown_after = [int(v) for v in re.findall(r'data-after="(\d+)"', page)]
    assert shown_after[:len(model_gallery["adv_pred"])] == model_gallery["adv_pred"]


def test_the_comparison_model_is_the_sweeps_recorded_pair(card_registry: dict[str, Any]) -> None:
    """Champion and challenger are the two trials here; each card shows the other: a hybrid's partner is the
    recorded classical control, a classical model's partner the recorded best hybrid."""
    reg = card_registry
    gain = reg["quantum_gain"]
    data = json.loads((_download_card(reg, reg["selection"].run_id, "pair") / "card.json").read_text())
    own_arch = data["model"]["arch"]
    other = gain["hybrid_trial"] if own_arch == "cnn" else gain["control_trial"]
    other_run = next(r for r in reg["runs"].values() if r.data.tags["qshield.trial_id"] == other)
    assert data["partner"]["run_id"] == other_run.info.run_id
    assert data["partner"]["role"] == ("best hybrid" if own_arch == "cnn" else "classical control")
    assert data["partner"]["metrics"]["robust_accuracy"] == pytest.approx(other_run.data.metrics["robust_accuracy"])


def test_asr_curves_are_measured_from_the_model(card_registry: dict[str, Any]) -> None:
    reg = card_registry
    data = json.loads((_download_card(reg, reg["selection"].run_id, "curves") / "card.json").read_text())
    model, _, _ = load_registered(f"models:/{MODEL_NAME}/{reg['selection'].version}", reg["uri"])
    x, y = (t[:SPACE["attacks"]["n_eval"]] for t in _test_split())
    curves = {c["label"]: c for c in data["curves"]}
    own = next(c for c in data["curves"] if c["attack"] == "pgd" and "recorded" not in c["label"]
               and not c["label"].startswith(data["partner"]["role"]))
    assert own["eps"][0] == 0.0 and own["asr"][0] == 0.0  # no budget, no success
    threat = SPACE["attacks"].get("eps") or 32 / 255
    k = own["eps"].index(pytest.approx(threat))
    # one point of the curve, measured independently with the library's single-attack evaluation
    alpha = 2.5 * threat / 3
    result = evaluate_attack(model, x, y, "pgd", eps=threat, steps=3, alpha=alpha, progress=False)
    assert own["asr"][k] == pytest.approx(result.asr)
    # the recorded PGD curve is the masking check's, as logged
    masking = json.loads(Path(MlflowClient(reg["uri"]).download_artifacts(
        reg["selection"].run_id, "masking_diagnostics.json", str(reg["tmp"] / "m2"))).read_text())
    recorded = next(c for label, c in curves.items() if "recorded" in label)
    shown = [(e, a) for e, a in zip(masking["eps_schedule"], masking["pgd_asr"]) if e <= max(own["eps"]) + 1e-9]
    assert len(shown) >= 2
    assert recorded["eps"] == pytest.approx([e for e, _ in shown])
    assert recorded["asr"] == pytest.approx([a for _, a in shown])


def test_card_command_for_a_hybrid_writes_offline_and_logs(card_registry: dict[str, Any], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    reg = card_registry
    hybrid_run = reg["runs"]["hybrid"]
    client = MlflowClient(reg["uri"])
    hybrid_version = next(v for v in client.search_model_versions(f"name = '{MODEL_NAME}'")
                          if v.run_id == hybrid_run.info.run_id)
    uri = f"models:/{MODEL_NAME}/{hybrid_version.version}"
    code = main(["card", uri, "--tracking-uri", reg["uri"], "--out", str(tmp_path / "card"), "--images", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"runs:/{hybrid_run.info.run_id}/card/index.html" in out
    page = (tmp_path / "card" / "index.html").read_text()
    assert "classical branch before → after" in page and "fusion weight w_c" in page
    data = json.loads((tmp_path / "card" / "card.json").read_text())
    assert data["partner"]["role"] == "classical control"
    assert data["partner"]["run_id"] == reg["runs"]["cnn"].info.run_id
    assert len(data["galleries"][0]["indices"]) <= 3 and data["galleries"][0]["p_classical"] is not None
    assert client.get_model_version(MODEL_NAME, hybrid_version.version).tags[CARD_TAG] == (
        f"runs:/{hybrid_run.info.run_id}/card/index.html")


def test_bad_card_requests_name_the_field(card_registry: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    reg = card_registry
    assert main(["card", "models:/nope@champion", "--tracking-uri", reg["uri"]]) == 1
    assert f"no registered model 'nope'; allowed values: '{MODEL_NAME}'" in capsys.readouterr().err
    assert main(["card", f"models:/{MODEL_NAME}@gold", "--tracking-uri", reg["uri"]]) == 1
    assert "no alias 'gold'; allowed values: 'challenger', 'champion'" in capsys.readouterr().err
    assert main(["card", f"models:/{MODEL_NAME}/99", "--tracking-uri", reg["uri"]]) == 1
    assert "no version '99'; allowed values: 1, 2" in capsys.readouterr().err
    assert main(["card", "runs:/abc/model", "--tracking-uri", reg["uri"]]) == 1
    assert "allowed values: models:/<name>@<alias>" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"n_images=0 is invalid; allowed values: an integer in 1\.\.32"):
        build_card(f"models:/{MODEL_NAME}@champion", reg["uri"], n_images=0)
    with pytest.raises(ValueError, match=r"out: missing"):
        make_card(f"models:/{MODEL_NAME}@champion", reg["uri"], log=False)


def test_a_failed_card_never_loses_the_registration(card_registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from orchestrator.views import _card as card_module
    from orchestrator.views import select_and_card

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("plotting backend unavailable")

    monkeypatch.setattr(card_module, "make_card", broken)
    reg = card_registry
    with caplog.at_level("WARNING", logger="orchestrator.views._card"):
        sel = select_and_card("cardtest", experiment="qshield-card", tracking_uri=reg["uri"],
                              model_name="qshield-cardtest-nocard", verify=False)
    client = MlflowClient(reg["uri"])
    assert client.get_model_version_by_alias("qshield-cardtest-nocard", "champion").version == sel.version
    assert sel.card is None
    tag = client.get_model_version("qshield-cardtest-nocard", sel.version).tags[CARD_TAG]
    assert tag == "failed: RuntimeError: plotting backend unavailable"
    assert "robustness card of models:/qshield-cardtest-nocard" in caplog.text and "registration stands" in caplog.text
