"""``qshield app``: the web page over a real registry (tests/_card_registry.py), served by uvicorn on a free
localhost port and driven by a real headless Chromium (Debian's chromium + chromium-driver, through selenium).

Besides the browser, the JSON API is checked against independent computations (the registered weights run here)
and the refusals are checked for their messages: uploads that are not PNG/JPEG, too large or undecodable, ε out
of range, unknown attacks, a host beyond localhost without credentials, requests without the credentials.

Screenshots go to ``$QSHIELD_SCREENSHOTS`` when set (docs/images/ was made that way), else to a temporary folder.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

pytest.importorskip("mlflow")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from PIL import Image

from orchestrator.views import (
    MAX_UPLOAD_BYTES,
    AppConfigError,
    InputError,
    create_app,
    credentials_for,
    redact,
    to_model_input,
    validate_upload,
)
from orchestrator.cli import main
from orchestrator.tracking import load_registered
from qshield.attacks import ATTACKS
from qshield.data import load_dataset
from qshield.models import HybridModel

from ._card_registry import MODEL_NAME, SPACE

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1300,1500")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """The app under uvicorn in a thread, on a free localhost port."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def site(card_registry: dict[str, Any]) -> Iterator[str]:
    with _Server(create_app(card_registry["uri"])) as url:
        yield url


def _request(url: str, body: bytes | dict[str, Any] | None = None, *, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw[:1] == b"{" else raw.decode()


def _png(width: int, height: int, colour: tuple[int, int, int] = (200, 100, 50)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def _test_split() -> tuple[torch.Tensor, torch.Tensor]:
    bundle = load_dataset("digits", seed=SPACE["seed"], limit_train=SPACE["limit_train"],
                          limit_test=SPACE["limit_test"], progress=False)
    return bundle.test.tensors


def _hybrid_uri(reg: dict[str, Any]) -> str:
    from mlflow import MlflowClient

    run_id = reg["runs"]["hybrid"].info.run_id
    version = next(v for v in MlflowClient(reg["uri"]).search_model_versions(f"name = '{MODEL_NAME}'")
                   if v.run_id == run_id)
    return f"models:/{MODEL_NAME}/{version.version}"


# ----------------------------------------------------------------------------------------------------------------
# exposure, authentication, uploads (no browser)


def test_the_app_is_local_unless_credentials_are_set(capsys: pytest.CaptureFixture[str]) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert credentials_for(host, {}) is None
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.org"):
        with pytest.raises(AppConfigError, match="QSHIELD_APP_USER and QSHIELD_APP_PASSWORD"):
            credentials_for(host, {})
    assert credentials_for("0.0.0.0", {"QSHIELD_APP_USER": "ana", "QSHIELD_APP_PASSWORD": "pw"}) == ("ana", "pw")
    with pytest.raises(AppConfigError, match="set both"):
        credentials_for("127.0.0.1", {"QSHIELD_APP_USER": "ana"})
    # the command refuses before binding anything
    with pytest.MonkeyPatch.context() as mp:
        for key in ("QSHIELD_APP_USER", "QSHIELD_APP_PASSWORD"):
            mp.delenv(key, raising=False)
        assert main(["app", "--host", "0.0.0.0", "--port", str(_free_port())]) == 2
    assert "refusing to start without authentication" in capsys.readouterr().err
    assert redact("postgresql://mlflow:s3cret@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"


def test_basic_auth_guards_every_request_when_configured(card_registry: dict[str, Any]) -> None:
    password = "correct horse battery staple"
    with _Server(create_app(card_registry["uri"], credentials=("ana", password))) as url:
        status, _ = _request(url + "/")
        assert status == 401
        bad = base64.b64encode(b"ana:wrong").decode()
        assert _request(url + "/api/models", headers={"Authorization": f"Basic {bad}"})[0] == 401
        good = base64.b64encode(f"ana:{password}".encode()).decode()
        status, body = _request(url + "/api/models", headers={"Authorization": f"Basic {good}"})
        assert status == 200 and password not in json.dumps(body)


def test_the_app_command_serves_the_page_and_never_prints_the_password(card_registry: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    import subprocess
    import sys

    port, password = _free_port(), "s3cret-sentinel-4f1c"
    env = {**os.environ, "QSHIELD_APP_USER": "ana", "QSHIELD_APP_PASSWORD": password, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "app", "--tracking-uri", card_registry["uri"],
                                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                status, _ = _request(url + "/")
                break
            except OSError:
                assert time.monotonic() < deadline, "qshield app did not answer within 120 s"
                time.sleep(0.5)
        assert status == 401
        auth = base64.b64encode(f"ana:{password}".encode()).decode()
        status, page = _request(url + "/", headers={"Authorization": f"Basic {auth}"})
        assert status == 200 and 'id="run"' in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert f"qshield app: http://127.0.0.1:{port}" in text and "basic auth as user 'ana'" in text
    assert password not in text


def test_uploads_are_validated_before_any_compute() -> None:
    with pytest.raises(InputError, match="not a PNG or JPEG image.*allowed: PNG or JPEG images up to 2 MB") as err:
        validate_upload(b"%PDF-1.7 this is not an image", "application/pdf")
    assert err.value.status == 415
    gif = io.BytesIO()
    Image.new("L", (16, 16)).save(gif, format="GIF")
    with pytest.raises(InputError, match="not a PNG or JPEG"):
        validate_upload(gif.getvalue(), "image/gif")
    with pytest.raises(InputError, match="larger than the limit") as err:
        validate_upload(b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_BYTES), "image/png")
    assert err.value.status == 413
    with pytest.raises(InputError, match="cannot be decoded"):
        validate_upload(_png(32, 32)[:60], "image/png")
    with pytest.raises(InputError, match=r"4x4 pixels; allowed: width and height in 8\.\.4096"):
        validate_upload(_png(4, 4), "image/png")
    with pytest.raises(InputError, match="empty"):
        validate_upload(b"", "image/png")
    # a valid colour PNG becomes the model's grey 8x8 input: ITU-R 601 luma of (200, 100, 50) = 124 everywhere
    upload = validate_upload(_png(64, 48), "image/png")
    assert (upload.format, upload.width, upload.height) == ("PNG", 64, 48)
    x = to_model_input(upload.image, (1, 8, 8))
    assert x.shape == (1, 1, 8, 8) and torch.allclose(x, torch.full_like(x, 124 / 255))
    jpeg = io.BytesIO()
    Image.new("L", (20, 30), 255).save(jpeg, format="JPEG")
    rgb = to_model_input(validate_upload(jpeg.getvalue(), "image/jpeg").image, (3, 16, 16))
    assert rgb.shape == (1, 3, 16, 16) and float(rgb.min()) > 0.95


def test_run_api_answers_with_the_models_own_outputs(card_registry: dict[str, Any], site: str) -> None:
    reg = card_registry
    hybrid = _hybrid_uri(reg)
    status, listing = _request(site + "/api/models")
    assert status == 200
    offered = {m["uri"] for m in listing["models"]}
    assert {f"models:/{MODEL_NAME}@champion", f"models:/{MODEL_NAME}@challenger", hybrid} <= offered
    assert [a["name"] for a in listing["attacks"]] == list(ATTACKS)
    status, images = _request(site + f"/api/test-images?model={hybrid}")
    assert status == 200 and images["hybrid"] and images["partner"]["label"].startswith("classical control")
    status, body = _request(site + "/api/run", {"model": hybrid, "compare": images["partner"]["uri"], "attack": "pgd",
                                                "eps": 0.2, "test_index": 3})
    assert status == 200, body
    x, y = _test_split()
    model, _, _ = load_registered(hybrid, reg["uri"])
    assert isinstance(model, HybridModel)
    with torch.no_grad():
        out = model.branch_outputs(x[3:4])
    probs = torch.softmax(out.log_probs, 1)[0].numpy()
    result = body["model"]
    assert body["source"]["label"] == int(y[3])
    assert result["clean"]["pred"] == int(probs.argmax()) and np.allclose(result["clean"]["probs"], probs, atol=1e-6)
    assert np.allclose(result["clean"]["branches"]["p_classical"], out.log_p_c.exp()[0].numpy(), atol=1e-6)
    assert np.allclose(result["clean"]["branches"]["p_quantum"], out.log_p_q.exp()[0].numpy(), atol=1e-6)
    assert result["clean"]["branches"]["fusion_weight"] == pytest.approx(float(out.weight.reshape(-1)[0]), abs=1e-6)
    assert result["linf"] <= 0.2 + 1e-6 and result["eps"] == 0.2
    assert result["params"]["alpha"] * result["params"]["steps"] >= 0.2  # the step size reaches ε
    assert body["compare"]["arch"] == "cnn" and "branches" not in body["compare"]["clean"]
    # refusals name the field and the allowed values, before any compute
    for bad, pattern in (({"eps": 2.0}, "eps: .*allowed values: a number in \\[0, 1\\]"),
                         ({"eps": "lots"}, "eps: 'lots' is not a number"),
                         ({"attack": "laser"}, "attack: .*allowed values: 'fgsm', 'pgd'"),
                         ({"test_index": 99}, "test_index: 99; allowed values: an integer in 0\\.\\.11"),
                         ({"model": "models:/nope@champion"}, f"model: .*allowed values: '{MODEL_NAME}'"),
                         ({"upload_id": "x", "test_index": None}, "upload_id: unknown or expired")):
        request = {"model": hybrid, "attack": "pgd", "eps": 0.1, "test_index": 0, **bad}
        status, answer = _request(site + "/api/run", request)
        assert status == 400 and re.search(pattern, answer["error"]), answer


# ----------------------------------------------------------------------------------------------------------------
# the page in a real browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed here (.ci/run installs them with "
                    "apt-get install -y chromium chromium-driver where it can)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="qshield-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _screenshots() -> Path:
    path = Path(os.environ.get("QSHIELD_SCREENSHOTS") or tempfile.mkdtemp(prefix="qshield-shots-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wait(driver: Any, condition: Any, timeout: float = 120) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_page_runs_an_attack_in_a_real_browser(card_registry: dict[str, Any], site: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    reg = card_registry
    hybrid = _hybrid_uri(reg)
    browser.get(site + "/")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#images button[data-test-index]"))
    Select(browser.find_element(By.ID, "model")).select_by_value(hybrid)
    _wait(browser, lambda d: "hybrid" in d.find_element(By.ID, "model-info").text)
    # the sweep's classical control is offered, and chosen, as the comparison
    compare = Select(browser.find_element(By.ID, "compare")).first_selected_option
    assert compare.text.startswith("classical control")
    browser.find_element(By.CSS_SELECTOR, "#images button[data-test-index='1']").click()
    Select(browser.find_element(By.ID, "attack")).select_by_value("fgsm")
    eps = browser.find_element(By.ID, "eps")
    eps.clear()
    eps.send_keys("0.2")
    browser.find_element(By.ID, "run").click()
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#result .panel")) == 2)
    panels = browser.find_elements(By.CSS_SELECTOR, "#result .panel")
    text = panels[0].text
    # what the page shows is the model's own prediction on that test image
    x, _ = _test_split()
    model, _, _ = load_registered(hybrid, reg["uri"])
    with torch.no_grad():
        pred = int(model(x[1:2]).argmax(1))
    assert f"Prediction: {pred} (" in text and "after attack:" in text
    assert "adversarial (fgsm, ε = 51.0/255)" in text and "hybrid branches" in text and "fusion weight" in text
    assert "Prediction:" in panels[1].text and "(cnn)" in panels[1].text
    images = panels[0].find_elements(By.CSS_SELECTOR, ".pics img")
    assert len(images) == 3 and all(i.get_attribute("src").startswith("data:image/png;base64,") for i in images)
    assert "Done: fgsm on test image #1" in browser.find_element(By.ID, "message").text
    browser.save_screenshot(str(_screenshots() / "app.png"))


def test_page_refuses_bad_uploads_with_a_clear_message(site: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(site + "/")
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#images button[data-test-index]"))
    upload = browser.find_element(By.ID, "upload")
    message = lambda d: d.find_element(By.ID, "upload-message").text  # noqa: E731

    text_file = tmp_path / "notes.png"  # the name says PNG; the content does not
    text_file.write_text("these are my notes, not a picture\n")
    upload.send_keys(str(text_file))
    _wait(browser, lambda d: "refused" in message(d))
    assert "not a PNG or JPEG image" in message(browser)
    assert "allowed: PNG or JPEG images up to 2 MB" in message(browser)

    big = tmp_path / "big.png"
    big.write_bytes(_png(64, 64) + os.urandom(MAX_UPLOAD_BYTES))
    upload.clear()
    upload.send_keys(str(big))
    _wait(browser, lambda d: "larger than the limit" in message(d))
    assert "refused" in message(browser)

    good = tmp_path / "digit.png"
    Image.fromarray(np.kron(np.eye(8, dtype=np.uint8) * 255, np.ones((4, 4), np.uint8))).save(good)
    upload.clear()
    upload.send_keys(str(good))
    _wait(browser, lambda d: "uploaded digit.png: 32×32 PNG" in message(d))
    browser.find_element(By.ID, "run").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#result .panel"))
    assert "uploaded PNG 32×32" in browser.find_element(By.ID, "message").text


def test_card_opens_offline_in_the_browser(card_registry: dict[str, Any], browser: Any) -> None:
    from mlflow import MlflowClient
    from selenium.webdriver.common.by import By

    reg = card_registry
    run_id = reg["selection"].run_id
    local = Path(MlflowClient(reg["uri"]).download_artifacts(run_id, "card", str(reg["tmp"] / "browser-card")))
    browser.get((local / "index.html").as_uri())
    assert browser.title.startswith("Robustness card")
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.set_window_size(1300, min(height, 5000))  # the whole card in one picture
    try:
        browser.save_screenshot(str(_screenshots() / "card.png"))
    finally:
        browser.set_window_size(1300, 1500)
