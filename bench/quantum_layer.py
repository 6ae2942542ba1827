"""Benchmark: QuantumLayer forward+backward time per sample, our torch backend against its peers, in one run.

Shapes (issue "Foundation and the quantum core"):
  * noisy:  4 qubits, depth 1, full entanglement, mixed noise p=0.005, batch 128
            torch (density matrix)  vs  PennyLane default.mixed  vs  Qulacs DensityMatrix
  * clean: 10 qubits, depth 4, ring entanglement, noiseless, batch 256
            torch (statevector)     vs  PennyLane default.qubit  vs  Qulacs statevector

Every backend runs the same QuantumLayer (same spec, same weights) and its outputs are checked to agree before
timing. Time = median over repeats of one forward + backward (loss = sum of outputs), divided by the batch size.
Our torch backend runs with its default ``method="auto"``; each of its paths (``schrodinger``, ``heisenberg``) is
also timed forced and printed as a per-path breakdown (not part of the table).

With ``--device cuda`` our backend runs on the GPU and, in the same run, on the CPU too (the CUDA vs CPU
speed-up), the peers on the CPU as always; a third shape with a batch of 4096 shows the GPU at a batch size it is
made for. That table goes to its own section (``quantum_layer_cuda``); the CPU table stays as it is.
Writes the table to docs/benchmarks.md (section between markers) unless --no-write.

    python bench/quantum_layer.py [--repeats 40] [--threads 1] [--device cuda] [--no-write]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from qshield.quantum import QuantumLayer, available_backends

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"

CASES = [
    dict(label="4q depth1 full mixed p=0.005, B=128", batch=128, peer="pennylane", peer_name="PennyLane default.mixed",
         target=30.0, layer=dict(n_qubits=4, depth=1, entanglement="full", noise="mixed", noise_strength=0.005)),
    dict(label="10q depth4 ring noiseless, B=256", batch=256, peer="pennylane", peer_name="PennyLane default.qubit",
         target=10.0, layer=dict(n_qubits=10, depth=4, entanglement="ring", noise="none")),
]


def time_step(layer: QuantumLayer, x: torch.Tensor, repeats: int, device: str) -> float:
    """Median seconds of one forward+backward over ``repeats`` runs (after one warm-up)."""

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        xi = x.detach().requires_grad_(True)
        layer(xi).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


#: the extra shape of a CUDA run (a batch the GPU is made for)
CUDA_CASES = [
    dict(label="4q depth1 full mixed p=0.005, B=4096", batch=4096, peer="pennylane",
         peer_name="PennyLane default.mixed",
         target=30.0, layer=dict(n_qubits=4, depth=1, entanglement="full", noise="mixed", noise_strength=0.005),
         skip=("qulacs",), peer_repeats=3),  # Qulacs loops over samples: ~9 s a step at this batch
]


def run(repeats: int, device: str, peer_repeats: int) -> list[dict]:
    rows = []
    backends = available_backends()
    for case in CASES + (CUDA_CASES if device != "cpu" else []):
        g = torch.Generator().manual_seed(0)
        n = case["layer"]["n_qubits"]
        x = (torch.rand(case["batch"], 3 * n, generator=g) * 6.28).float()
        ref = QuantumLayer(**case["layer"], backend="torch")
        results = {}
        outputs = {}
        for backend in ["torch", "pennylane", "qulacs"]:
            if backend not in backends or backend in case.get("skip", ()):
                continue
            layer = QuantumLayer(**case["layer"], backend=backend)
            layer.load_state_dict(ref.state_dict())
            dev = device if backend == "torch" else "cpu"
            layer = layer.to(dev)
            xb = x.to(dev)
            reps = repeats if backend == "torch" else min(peer_repeats, case.get("peer_repeats", peer_repeats))
            with torch.no_grad():
                outputs[backend] = layer(xb).cpu()
            results[backend] = time_step(layer, xb, reps, dev) / case["batch"]
        if device != "cpu":  # the same layer on the CPU, in the same run: what the GPU gains
            layer = QuantumLayer(**case["layer"], backend="torch")
            layer.load_state_dict(ref.state_dict())
            with torch.no_grad():
                outputs["torch (cpu)"] = layer(x).cpu()
            results["torch (cpu)"] = time_step(layer, x, max(3, repeats // 4), "cpu") / case["batch"]
        paths = {}
        for method in ["schrodinger", "heisenberg"]:
            layer = QuantumLayer(**case["layer"], backend="torch", backend_options={"method": method})
            layer.load_state_dict(ref.state_dict())
            layer = layer.to(device)
            with torch.no_grad():
                outputs[f"torch/{method}"] = layer(x.to(device)).cpu()
            paths[method] = time_step(layer, x.to(device), repeats, device) / case["batch"]
        for backend, out in outputs.items():
            err = (out - outputs["torch"]).abs().max().item()
            if err > 1e-4:
                raise RuntimeError(f"{backend} disagrees with torch by {err:.2e} on {case['label']}")
        rows.append({"case": case, "per_sample": results, "torch_paths": paths})
        print(f"{case['label']}: " + ", ".join(f"{b} {t * 1e6:.1f} us/sample" for b, t in results.items()), flush=True)
        chosen = ref.backend.choose_method(case["batch"]).value
        print(
            f"  torch paths (auto takes {chosen}): "
            + ", ".join(f"{m} {t * 1e6:.1f} us/sample" for m, t in paths.items()),
            flush=True,
        )
    return rows


def render(rows: list[dict], device: str) -> str:
    if device != "cpu":
        return render_gpu(rows, device)
    import pennylane
    import qulacs

    lines = [
        f"Measured by `python bench/quantum_layer.py` on {platform.machine()} with {torch.get_num_threads()} torch "
        f"threads ({_cpu_name()}), device `{device}` for our torch backend; peers on CPU. "
        f"Python {platform.python_version()}, torch {torch.__version__}, PennyLane {pennylane.__version__}, "
        f"Qulacs {qulacs.__version__}. Forward+backward (loss = sum of outputs), median, per sample, float32 input.",
        "",
        "| shape | ours (torch) | PennyLane | Qulacs | speed-up vs PennyLane | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row["per_sample"]
        case = row["case"]
        ours = r["torch"]
        pl = r.get("pennylane")
        ql = r.get("qulacs")
        ratio = pl / ours if pl else float("nan")
        lines.append(
            f"| {case['label']} | {ours * 1e6:.1f} µs | {_us(pl)} ({case['peer_name']}) | {_us(ql)} | "
            f"{ratio:.1f}x | ≥{case['target']:.0f}x | {'yes' if ratio >= case['target'] else 'NO'} |"
        )
    return "\n".join(lines)


def render_gpu(rows: list[dict], device: str) -> str:
    """The table of a ``--device cuda`` run: ours on the GPU, ours on the CPU, the peers (CPU)."""
    import pennylane
    import qulacs

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else device
    lines = [
        "## Quantum layer on CUDA vs the CPU vs PennyLane",
        "",
        f"Measured by `python bench/quantum_layer.py --device {device} --threads {torch.get_num_threads()}` on "
        f"{platform.machine()} ({_cpu_name()}) with {gpu}, CUDA {torch.version.cuda}; our torch backend on the GPU "
        f"and, in the same run, on the CPU with {torch.get_num_threads()} torch threads; peers on the CPU. "
        f"Python {platform.python_version()}, torch {torch.__version__}, PennyLane {pennylane.__version__}, "
        f"Qulacs {qulacs.__version__}. Forward+backward (loss = sum of outputs), median, per sample, float32 input; "
        "outputs checked to agree (1e-4) before timing.",
        "",
        ("| shape | ours (CUDA) | ours (CPU) | CUDA vs CPU | PennyLane | Qulacs | speed-up vs PennyLane | target "
         "| met |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row["per_sample"]
        case = row["case"]
        ours, cpu, pl = r["torch"], r.get("torch (cpu)"), r.get("pennylane")
        ratio = pl / ours if pl else float("nan")
        lines.append(
            f"| {case['label']} | {ours * 1e6:.2f} µs | {_us(cpu)} | {cpu / ours:.1f}x | {_us(pl)} "
            f"({case['peer_name']}) | {_us(r.get('qulacs'))} | {ratio:.1f}x | ≥{case['target']:.0f}x | "
            f"{'yes' if ratio >= case['target'] else 'NO'} |"
        )
    return "\n".join(lines)


def _us(t: float | None) -> str:
    return "n/a" if t is None else f"{t * 1e6:.1f} µs"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_section(text: str, section_key: str) -> None:
    """Replace the marked section ``section_key`` in docs/benchmarks.md (creating the file if needed)."""
    begin, end = f"<!-- bench:{section_key}:begin -->", f"<!-- bench:{section_key}:end -->"
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        doc = head + block + tail
    else:
        doc = doc.rstrip() + f"\n\n{block}\n"
    DOC.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=40, help="timed repeats for our backend (default 40)")
    parser.add_argument("--peer-repeats", type=int, default=7, help="timed repeats for the peers (default 7)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for every backend (default 1: stable figures on a shared 2-core box)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for our torch backend")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    rows = run(args.repeats, args.device, args.peer_repeats)
    text = render(rows, args.device)
    print(text)
    if not args.no_write:
        key = "quantum_layer" if args.device == "cpu" else f"quantum_layer_{args.device}"
        write_section(text, key)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
