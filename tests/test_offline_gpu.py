"""``scripts/offline-gpu.sh``: the GPU check's environment on a GPU machine without network access.

Its download (``pip download`` in ``wheels``) needs a package registry: here a stand-in interpreter records it
instead, and the requirements it is given are checked. Everything after it runs for real: a real wheel
(built here, in the wheel format pip installs) is packed into an archive in parts, staged part by part, joined,
checked and installed by pip into a target folder, and a command then runs with that folder and the checkout on
its path. Damaged or missing parts and bad arguments are refused with a message naming what is wrong.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "offline-gpu.sh"


def norm(name: str) -> str:
    """A project name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(folder: Path, name: str, value: str) -> Path:
    """A pure-Python wheel holding module ``name`` with ``VALUE = value`` (PEP 427 layout, RECORD with hashes)."""
    dist = f"{name}-0.1.dist-info"
    files = {
        f"{name}.py": f"VALUE = {value!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: qshield-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "\n".join([*(_record_line(k, v) for k, v in files.items()), f"{dist}/RECORD,,"]) + "\n"
    path = folder / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, data in files.items():
            zf.writestr(key, data)
        zf.writestr(f"{dist}/RECORD", record)
    return path


def run(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "QSHIELD_WHEELHOUSE": str(tmp_path / "house"),
            "QSHIELD_SITE": str(tmp_path / "site"), "QSHIELD_OUT": str(tmp_path / "out")}


@pytest.fixture()
def packed(tmp_path: Path, env: dict[str, str]) -> Path:
    """Two wheels in DIR/all, packed into an archive of 3 parts."""
    folder = tmp_path / "wheels"
    (folder / "all").mkdir(parents=True)
    make_wheel(folder / "all", "qshield_offline_probe_a", "a" * 3000)
    make_wheel(folder / "all", "qshield_offline_probe_b", os.urandom(2000).hex())  # random: no part is empty
    out = run("pack", str(folder), "3", env=env)
    assert out.returncode == 0, out.stderr
    return folder


def test_parts_staged_one_by_one_are_joined_checked_installed_and_put_on_the_path(
        packed: Path, tmp_path: Path, env: dict[str, str]) -> None:
    parts = sorted(packed.glob("part-*"))
    assert [p.name for p in parts] == ["part-1", "part-2", "part-3"]
    sizes = [sum(f.stat().st_size for f in p.glob("wheels.tar.xz.part*")) for p in parts]
    assert max(sizes) - min(sizes) <= 2  # equal parts (split -n)
    for part in parts[:2]:
        assert run("stage", str(part), env=env).returncode == 0
    probe = ("import os, qshield_offline_probe_a as a, qshield_offline_probe_b as b; "
             "print(len(a.VALUE), len(b.VALUE), a.__file__); print(os.environ['PYTEST_ADDOPTS'])")
    early = run("check", "--", sys.executable, "-c", probe, env=env)
    assert early.returncode == 2
    assert "2 of the archive's 3 parts" in early.stderr and "stage the others first" in early.stderr
    done = run("check", str(parts[2]), "--", sys.executable, "-c", probe, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    count_a, count_b, where = lines[0].split()
    assert (count_a, count_b) == ("3000", "4000")
    assert Path(where).parent == tmp_path / "site"  # installed by pip into the target folder, imported from there
    assert "--ignore=tests/test_k8s.py" in lines[1]
    assert "environment ok" in done.stderr
    assert (tmp_path / "out" / "benchmarks.md").read_bytes() == (ROOT / "docs" / "benchmarks.md").read_bytes()
    assert not list((tmp_path / "house").glob("wheels.tar.xz*"))  # the archive is gone once unpacked


def test_a_damaged_part_is_refused_before_anything_is_installed(packed: Path, tmp_path: Path,
                                                                env: dict[str, str]) -> None:
    piece = next((packed / "part-2").glob("wheels.tar.xz.part*"))
    data = bytearray(piece.read_bytes())
    data[len(data) // 2] ^= 0xFF
    piece.write_bytes(bytes(data))
    out = run("check", *(str(p) for p in sorted(packed.glob("part-*"))), "--", "true", env=env)
    assert out.returncode == 2
    assert "sha256 is not its manifest's" in out.stderr
    assert not (tmp_path / "site").exists()


def test_a_command_failing_in_the_environment_fails_the_check(packed: Path, env: dict[str, str]) -> None:
    out = run("check", *(str(p) for p in sorted(packed.glob("part-*"))), "--", sys.executable, "-c",
              "raise SystemExit(5)", env=env)
    assert out.returncode == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wheels", "DIR", "--parts", "0"], "--parts '0': expected a whole number from 1 to 99"),
        (["wheels", "DIR", "--parts", "100"], "--parts '100': expected a whole number from 1 to 99"),
        (["wheels", "DIR"], "--have FILE is required"),
        (["wheels", "DIR", "--python", "312"], "--python '312': expected 3.N"),
        (["wheels", "DIR", "--parts"], "--parts needs a value"),
        (["wheels", "DIR", "--have", "/nonexistent/have.txt"], "--have '/nonexistent/have.txt': no such file"),
        (["wheels", "DIR", "--fast"], "unknown argument '--fast' (allowed: --have FILE, --python X.Y, --parts N)"),
        (["pack", "DIR", "2"], "has no folder all/ of wheels"),
        (["stage", "/nonexistent/folder"], "'/nonexistent/folder' is not a folder of wheels"),
        (["check"], "no wheels in"),
    ],
)
def test_bad_arguments_are_refused_with_the_field_and_the_allowed_values(
        args: list[str], message: str, tmp_path: Path, env: dict[str, str]) -> None:
    args = [str(tmp_path / "dl") if a == "DIR" else a for a in args]
    out = run(*args, env=env)
    assert out.returncode == 2
    assert message in out.stderr
    assert not (tmp_path / "dl" / "all").exists() or not any((tmp_path / "dl" / "all").iterdir())


def test_unknown_subcommand_prints_the_usage() -> None:
    out = subprocess.run(["bash", str(SCRIPT), "upload"], capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert "offline-gpu.sh wheels DIR" in out.stdout and "offline-gpu.sh check" in out.stdout


def test_what_the_check_leaves_out_exists() -> None:
    """The packages left out are locked ones (a name that left the lock would silently skip nothing) and the test
    modules left out of the check's pytest run exist and hold no GPU test."""
    text = SCRIPT.read_text()
    names = re.search(r'NOT_FOR_GPU_CHECK="([^"]*)"', text).group(1).split()
    locked = {norm(line.split("==")[0]) for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert names and {norm(n) for n in names} <= locked, sorted({norm(n) for n in names} - locked)
    ignored = re.search(r'IGNORED_TESTS="([^"]*)"', text).group(1).split()
    for module in ignored:
        source = (ROOT / module).read_text()
        assert "mark.gpu" not in source and "pytestmark" not in source


def test_wheels_asks_pip_for_the_locked_packages_the_target_lacks_and_the_check_imports(
        tmp_path: Path, env: dict[str, str]) -> None:
    """A stand-in for the interpreter records ``pip download`` (no registry here) and runs everything else."""
    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\n"
                    'if [ "$1 $2 $3" = "-m pip download" ]; then printf "%s\\n" "$@" > "$0.args"; exit 0; fi\n'
                    f'exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    have = tmp_path / "have.txt"
    have.write_text("numpy==1.26.4\nray==2.60.0\nMLflow @ file:///wheels/mlflow.whl\nPyYAML\n")
    locked = {line.split("==")[0]: line.split("==")[1]
              for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    out = run("wheels", "dl", "--have", str(have), "--python", "3.12", env={**env, "PYTHON": str(fake)}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    asked = [line.split("==")[0] for line in (tmp_path / "dl" / "requirements.txt").read_text().splitlines()]
    skipped = re.search(r'NOT_FOR_GPU_CHECK="([^"]*)"', SCRIPT.read_text()).group(1).split()
    expected = [n for n in locked if norm(n) not in {"numpy", "ray", "mlflow", "pyyaml"} | {norm(k) for k in skipped}]
    assert asked == expected
    assert "pennylane" in asked and "torchattacks" in asked
    if locked["numpy"] != "1.26.4":
        assert f"the target has numpy 1.26.4, the lock pins {locked['numpy']}" in out.stderr
    assert "the target has ray" not in out.stderr  # the same version: nothing to say
    args = (tmp_path / "python.args").read_text().split()
    assert args[args.index("--python-version") + 1] == "3.12" and "--only-binary=:all:" in args
    assert args[args.index("-r") + 1] == str(tmp_path / "dl" / "requirements.txt")  # relative DIR: from the cwd


def test_loose_wheels_from_a_relative_folder_and_a_wheelhouse_left_from_another_download(
        tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "all").mkdir()
    make_wheel(tmp_path / "all", "qshield_offline_probe_c", "one")
    probe = ["--", sys.executable, "-c", "import qshield_offline_probe_c as c; print(c.VALUE)"]
    out = run("check", "all", *probe, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "one"
    (tmp_path / "newer").mkdir()
    newer = make_wheel(tmp_path / "newer", "qshield_offline_probe_c", "two")
    newer.rename(newer.with_name("qshield_offline_probe_c-0.2-py3-none-any.whl"))
    out = run("check", "newer", *probe, env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert "holds two versions of: qshield-offline-probe-c" in out.stderr
