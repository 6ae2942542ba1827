"""The package installs like one: a wheel built from the repository carries the shipped search spaces and the
model code MLflow loads, and, installed into a fresh virtual environment outside the repository, runs the
application from any folder — `qshield demo` included.

The fresh environment gets the wheel with ``pip install --no-deps`` and finds the (already installed, pinned)
third-party packages through a ``.pth`` line pointing at this test run's ``site-packages``: installing torch,
Ray and MLflow again would take minutes and the network; what is under test is qshield's own packaging.
"""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(out)], check=True, cwd=out, timeout=600)
    (path,) = out.glob("qshield-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A fresh venv with the wheel installed, run from an empty folder outside the repository."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_qshield_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "-q", "--disable-pip-version-check", str(wheel)], check=True, timeout=300)
    cwd = tmp_path_factory.mktemp("elsewhere")
    return {"venv": venv, "site": site, "cwd": cwd}


def _run(installed: dict[str, Path], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update({"PATH": f"{installed['venv'] / 'bin'}{os.pathsep}{env.get('PATH', '')}", "OMP_NUM_THREADS": "1"})
    return subprocess.run(list(args), cwd=installed["cwd"], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_the_wheel_carries_the_spaces_and_the_model_code_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("orchestrator/search_spaces/")}
    assert {p.name for p in (ROOT / "orchestrator" / "search_spaces").glob("*.yaml")} == shipped
    assert "orchestrator/tracking/pyfunc_classifier.py" in names
    assert "orchestrator/views/static/index.html" in names  # the page of `qshield app`
    assert any(n.startswith("qshield/quantum/") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "k8s/", "bench/", "docs/", "experiments/"))]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    for dependency in ("torch", "mlflow", "ray", "optuna", "medmnist", "pydantic", "pillow", "sqlalchemy"):
        assert any(line.lower().startswith(f"requires-dist: {dependency}") for line in requires), dependency


def _imports(path: Path) -> set[str]:
    """What a Python file imports, absolutely: ``import a.b`` gives ``a.b``; ``from a.b import c`` gives ``a.b`` and
    ``a.b.c`` (relative imports, inside one package, are left out)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return out


def _private(name: str) -> bool:
    return any(part.startswith("_") and not part.endswith("__") for part in name.split(".")[1:])


def test_the_library_never_imports_an_experiment_and_experiments_use_its_public_api() -> None:
    """The wheel's packages (library and application) stand without ``experiments/``, which is not shipped; an
    experiment uses the library like any user, through its public modules and names."""
    shipped = [p for folder in ("qshield", "orchestrator") for p in (ROOT / folder).rglob("*.py")]
    assert [f"{p.relative_to(ROOT)}: {m}" for p in shipped for m in sorted(_imports(p))
            if m.split(".")[0] == "experiments"] == []
    experiments = sorted((ROOT / "experiments").rglob("*.py"))
    used = {m for p in experiments for m in _imports(p) if m.split(".")[0] == "qshield"}
    assert {"qshield.evaluation", "qshield.models", "qshield.training"} <= used  # the scan sees the real imports
    assert [f"{p.relative_to(ROOT)}: {m}" for p in experiments for m in sorted(_imports(p))
            if m.split(".")[0] == "qshield" and _private(m)] == []
    assert _private("qshield.evaluation._masking") and _private("qshield.data._cifar10.X")
    assert not _private("qshield.evaluation.CHECK_NAMES") and not _private("qshield.__version__")


def test_the_installed_wheel_is_imported_not_the_checkout(installed: dict[str, Path]) -> None:
    code = "import qshield, orchestrator.space as s; print(qshield.__file__); print(s.load_space('mnist').name)"
    out = _run(installed, str(installed["venv"] / "bin" / "python"), "-c", code)
    assert out.returncode == 0, out.stderr
    location, name = out.stdout.split()
    assert Path(location).is_relative_to(installed["site"]) and name == "mnist-paper"
    help_text = _run(installed, "qshield", "--help")
    assert help_text.returncode == 0 and "demo" in help_text.stdout


@pytest.mark.slow
def test_qshield_demo_runs_from_any_folder_with_the_installed_wheel(installed: dict[str, Path]) -> None:
    """One trial of the shipped demo space (its first point: the classical control), champion registered from
    the folder the command runs in; everything it writes lands in its output folder. Then the wheel's
    ``qshield app`` serves its page over that registry."""
    out = _run(installed, "qshield", "demo", "--num-samples", "1", "--workdir", "out", timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "champion: models:/qshield-demo@champion = version 1" in out.stdout
    assert sorted(p.name for p in installed["cwd"].iterdir()) == ["out"]
    assert {"mlflow.db", "optuna.db", "mlartifacts", "ray_results"} <= {p.name for p in (installed["cwd"] / "out").iterdir()}

    # the installed wheel's `qshield app` serves its page and lists the champion the demo registered
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QSHIELD_APP_USER", "QSHIELD_APP_PASSWORD")}
    env["PATH"] = f"{installed['venv'] / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    log = installed["cwd"].parent / "app.log"
    with log.open("w") as f:
        app = subprocess.Popen(["qshield", "app", "--tracking-uri", "sqlite:///out/mlflow.db", "--port", str(port)],
                               cwd=installed["cwd"], env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert app.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
                    page = response.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, "qshield app did not answer within 120 s:\n" + log.read_text()
                time.sleep(0.5)
        assert 'id="run"' in page
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/models", timeout=60) as response:
            models = response.read().decode()
        assert "qshield-demo" in models and "champion" in models, models
    finally:
        app.terminate()
        app.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
