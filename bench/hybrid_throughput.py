"""Benchmark: hybrid training throughput (samples/s) at a large batch, on CUDA and on the CPU, in one run.

The paper's MNIST hybrid on our stack (``SmallCNN`` features -> learned angle map -> 4 qubits, depth 1, full
entanglement, mixed noise p=0.005 as an exact density matrix, trainable rotations, gated fusion) and, for
reference, the same CNN alone, trained with :func:`qshield.training.train` — the loop a sweep trial runs: batches
drawn from a CPU dataset and moved to the device step by step, Adam lr 1e-3, the per-step loss check — on
MNIST-shaped data (``mnist5k``'s 4,000 real 28x28 digits, repeated to ``--samples``; the content does not change
the speed), batch ``--batch-size`` (default 1024).

Per device: one warm-up epoch of 3 batches per model (kernels, allocator, one-off imports), then ``--repeats``
timed epochs per model, the order alternating; throughput = samples / epoch time (``train``'s ``epoch_time_s``,
after a CUDA synchronize), median over the repeats. The CPU runs fewer samples (``--cpu-samples``): throughput is
per sample, and a CPU epoch of the full set would take minutes.

Writes its section of ``docs/benchmarks.md`` (``hybrid_throughput``) unless ``--no-write``::

    python -m bench.hybrid_throughput [--devices cuda,cpu] [--batch-size 1024] [--samples 65536]
                                      [--cpu-samples 8192] [--repeats 3] [--threads N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

import torch
from torch.utils.data import TensorDataset

from bench.quantum_layer import DOC, ROOT, _cpu_name, write_section

SECTION = "hybrid_throughput"


def configs() -> dict[str, object]:
    from qshield.models import ModelConfig

    return {
        "hybrid (4 qubits, mixed noise p=0.005)": ModelConfig(
            arch="hybrid", backbone="cnn", n_qubits=4, depth=1, entanglement="full", noise="mixed",
            noise_strength=0.005, fusion="gated", quantum_trainable=True),
        "CNN alone": ModelConfig(arch="cnn"),
    }


def dataset(samples: int) -> TensorDataset:
    """``mnist5k``'s training images and labels (28x28, grey), repeated to ``samples``."""
    from qshield.data import load_dataset

    x, y = load_dataset("mnist5k", seed=0, progress=False).train.tensors
    reps = -(-samples // len(y))
    return TensorDataset(x.repeat(reps, 1, 1, 1)[:samples].contiguous(), y.repeat(reps)[:samples].contiguous())


def epoch_seconds(config: object, data: TensorDataset, batch_size: int, device: str, limit: int | None = None) -> float:
    from qshield.models import build_model
    from qshield.training import TrainConfig, train

    model = build_model(config, seed=0)
    tc = TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3, weight_decay=1e-4, seed=0, limit_batches=limit)
    history = train(model, data, tc, progress=False, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return float(history.last["epoch_time_s"])


def run(devices: list[str], batch_size: int, samples: int, cpu_samples: int, repeats: int) -> dict:
    cfgs = configs()
    out: dict = {"batch_size": batch_size, "repeats": repeats, "rows": [], "load": [os.getloadavg()[0]]}
    for device in devices:
        n = samples if device.startswith("cuda") else cpu_samples
        data = dataset(n)
        for cfg in cfgs.values():
            epoch_seconds(cfg, data, batch_size, device, limit=3)
        names = list(cfgs)
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(repeats):
            for name in (names if r % 2 == 0 else names[::-1]):
                t = epoch_seconds(cfgs[name], data, batch_size, device)
                times[name].append(t)
                print(f"{device} repeat {r + 1}/{repeats}: {name} {n / t:.0f} samples/s ({t:.2f} s)", flush=True)
        for name in names:
            out["rows"].append({"device": device, "model": name, "samples": n,
                                "rates": [n / t for t in times[name]]})
    out["load"].append(os.getloadavg()[0])
    return out


def render(res: dict) -> str:
    devices = list(dict.fromkeys(r["device"] for r in res["rows"]))
    gpu = ""
    if any(d.startswith("cuda") for d in devices):
        props = torch.cuda.get_device_properties(0)
        gpu = f" with {props.name} ({props.total_memory / 1024**3:.0f} GiB), CUDA {torch.version.cuda}"
    lines = [
        f"## Hybrid training throughput (samples/s), {' vs '.join(d.upper() for d in devices)}",
        "",
        (f"Measured by `python -m bench.hybrid_throughput --devices {','.join(devices)} --batch-size "
         f"{res['batch_size']}` on {platform.machine()} ({_cpu_name()}, {os.cpu_count()} cores, torch threads: "
         f"{torch.get_num_threads()}){gpu}; Python {platform.python_version()}, torch {torch.__version__}. "
         f"`qshield.training.train` on MNIST-shaped data (mnist5k's real 28x28 digits, repeated), batch "
         f"{res['batch_size']}, Adam; {res['repeats']} timed epochs per model and device, order alternating; "
         f"median samples/s. 1-min load average {res['load'][0]:.1f} before, {res['load'][1]:.1f} after."),
        "",
        "| device | model | samples per epoch | samples/s (median) | all repeats |",
        "|---|---|---|---|---|",
    ]
    median = {}
    for row in res["rows"]:
        m = statistics.median(row["rates"])
        median[(row["device"], row["model"])] = m
        lines.append(f"| {row['device']} | {row['model']} | {row['samples']} | {m:,.0f} | "
                     f"{', '.join(f'{v:,.0f}' for v in row['rates'])} |")
    hybrid, cnn = list(configs())
    notes = []
    for device in devices:
        notes.append(f"on {device} the hybrid trains at {median[(device, hybrid)] / median[(device, cnn)]:.2f}x the "
                     "CNN's rate")
    cuda = next((d for d in devices if d.startswith("cuda")), None)
    if cuda and "cpu" in devices:
        notes.append(f"the hybrid on {cuda} is {median[(cuda, hybrid)] / median[('cpu', hybrid)]:.1f}x its CPU rate")
    lines += ["", "Ratios: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hybrid_throughput", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="cuda,cpu", help="comma-separated, from cuda, cpu (default cuda,cpu)")
    parser.add_argument("--batch-size", type=int, default=1024, help="batch size (default 1024)")
    parser.add_argument("--samples", type=int, default=65536, help="samples per epoch on CUDA (default 65536)")
    parser.add_argument("--cpu-samples", type=int, default=8192, help="samples per epoch on the CPU (default 8192)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per model and device (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    bad = [d for d in devices if d not in ("cuda", "cpu")]
    if not devices or bad:
        parser.error(f"argument --devices: {args.devices!r}; allowed values: cuda, cpu (comma-separated)")
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("argument --devices: cuda asked for but no CUDA device is available; allowed values: cpu")
    for name in ("batch_size", "samples", "cpu_samples", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"argument --{name.replace('_', '-')}: {getattr(args, name)}; allowed values: >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    res = run(devices, args.batch_size, args.samples, args.cpu_samples, args.repeats)
    text = render(res)
    print(text)
    if not args.no_write:
        write_section(text, SECTION)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
