"""The GPU checks in one command (``bash scripts/dev.sh gpu-check``), for a machine with one CUDA GPU, ~10 minutes.

In order, each step's outcome and duration recorded:

1. ``pytest -m gpu``: the CUDA tests (torch backend and trajectories on CUDA against the CPU, a whole sweep trial
   on CUDA, Qulacs' GPU build where installed);
2. ``python bench/quantum_layer.py --device cuda``: our quantum layer on CUDA against the same on the CPU and
   against PennyLane (and Qulacs) — section ``quantum_layer_cuda``;
3. ``python -m bench.hybrid_throughput``: hybrid training throughput in samples/s (4 qubits, mixed noise, MNIST
   shape, batch 1024) on CUDA and on the CPU — section ``hybrid_throughput``;
4. ``python -m bench.gpu_sweep``: a 4-trial sweep with ``gpus: 0.25`` on the GPU — section ``gpu_sweep``.

Then a summary (GPU, driver, versions, each step's result) goes to section ``gpu_check`` of
``docs/benchmarks.md``. Without a CUDA device it says so and exits with status 2, writing nothing (no figure is
ever made up). Exit status 1 when a step failed (the others still run)::

    python -m bench.gpu_check [--threads N] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from bench.quantum_layer import DOC, ROOT, write_section

SECTION = "gpu_check"


def nvidia_smi() -> str:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi failed: {exc}"


def pytest_gpu() -> tuple[bool, str]:
    """``pytest -m gpu`` in a child process; (passed, pytest's summary line)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs"],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    sys.stdout.write(out.stdout[-6000:])
    sys.stderr.write(out.stderr[-3000:])
    lines = [line.strip("= ").strip() for line in out.stdout.splitlines() if line.strip()]
    summary = next((line for line in reversed(lines) if " in " in line and ("passed" in line or "failed" in line
                                                                            or "skipped" in line or "error" in line)),
                   lines[-1] if lines else "no output")
    # every gpu test skipped means CUDA was not usable to them: that is not a pass
    return out.returncode == 0 and "passed" in summary, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8),
                        help="torch CPU threads for the CPU side of the comparisons (default: cores, at most 8)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device is available here (torch "
              f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}; {nvidia_smi()}). It needs a machine "
              "with one NVIDIA GPU and a CUDA build of torch (docs/install.md); nothing was measured or written, "
              "and docs/benchmarks.md keeps saying the GPU figures are missing.", file=sys.stderr)
        return 2

    from bench import gpu_sweep, hybrid_throughput, quantum_layer

    write = [] if not args.no_write else ["--no-write"]
    threads = ["--threads", str(args.threads)]
    steps: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        ("pytest -m gpu", pytest_gpu),
        ("quantum layer: CUDA vs CPU vs PennyLane",
         lambda: (quantum_layer.main(["--device", "cuda", *threads, *write]) == 0, "section quantum_layer_cuda")),
        ("hybrid training throughput",
         lambda: (hybrid_throughput.main(["--devices", "cuda,cpu", *threads, *write]) == 0,
                  "section hybrid_throughput")),
        ("4-trial sweep with gpus: 0.25", lambda: (gpu_sweep.main(write) == 0, "section gpu_sweep")),
    ]
    results = []
    for label, step in steps:
        print(f"== gpu-check: {label}", flush=True)
        t0 = time.perf_counter()
        try:
            ok, detail = step()
        except Exception as exc:  # noqa: BLE001 - a failed step is reported and the others still run
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        results.append((label, ok, detail, time.perf_counter() - t0))
        print(f"== gpu-check: {label}: {'ok' if ok else 'FAILED'} ({detail})", flush=True)
    lines = [
        "## GPU checks (`bash scripts/dev.sh gpu-check`)",
        "",
        (f"`bash scripts/dev.sh gpu-check` (`python -m bench.gpu_check`) ran on "
         f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC: {nvidia_smi()}; {platform.machine()}, "
         f"{os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__} (CUDA "
         f"{torch.version.cuda}); CPU sides with {args.threads} torch threads."),
        "",
        "| step | result | detail | time (s) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {label} | {'ok' if ok else 'FAILED'} | {detail} | {seconds:.0f} |"
              for label, ok, detail, seconds in results]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(text, SECTION)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0 if all(ok for _, ok, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
