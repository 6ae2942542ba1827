"""Benchmark: one training epoch of the hybrid model against the same CNN alone, in the same run.

Both models train with :func:`qshield.training.train` on the same data (``mnist5k``: 4,000 training images,
28x28, batch 128, Adam lr 1e-3, wd 1e-4 — the paper's settings) for one epoch. The hybrid is the paper's MNIST
hybrid on our stack: the CNN's features -> learned angle map -> 4 qubits, depth 1, ``--entanglement`` (default
``full``, the costliest CNOT pattern), mixed noise p=0.005 (exact density matrix), trainable circuit rotations,
gated fusion; its backbone is the very CNN it is compared with (``SmallCNN``). Each repeat builds both models
from the same seed and times one epoch of each; the order alternates (CNN first on even repeats, hybrid first
on odd ones) so that drift in a shared machine's load hits both. Reported: the median epoch time of each, the
median of the per-repeat ratios (the verdict: each ratio compares two epochs run back to back, so slow changes
in the machine's load cancel), the ratio of the medians and the ratio of the fastest epochs.
Target (issue "Hybrid models ..."): hybrid <= 1.15x the CNN alone (the QShield paper: ~55x, from its
training+test times). Also measured: the quantum layer's own forward+backward per batch, and its share of a
hybrid step.

Writes the table to docs/benchmarks.md between ``<!-- bench:hybrid_epoch:begin -->`` and
``<!-- bench:hybrid_epoch:end -->`` unless --no-write (other sections of that file are left alone).

    python -m bench.hybrid_epoch [--repeats 5] [--threads 1] [--device cpu] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from qshield.data import load_dataset
from qshield.models import ModelConfig, build_model
from qshield.quantum import Entanglement
from qshield.training import TrainConfig, train

from bench.quantum_layer import DOC, ROOT, _cpu_name, write_section

SECTION = "hybrid_epoch"
TARGET = 1.15


def configs(entanglement: str) -> dict[str, ModelConfig]:
    """The CNN alone and the hybrid built on the same CNN (28x28 grey, 10 classes)."""
    cnn = ModelConfig(arch="cnn")
    hybrid = ModelConfig(
        arch="hybrid", backbone="cnn", n_qubits=4, depth=1, entanglement=entanglement, noise="mixed",
        noise_strength=0.005, fusion="gated", quantum_trainable=True,
    )
    return {"CNN": cnn, f"hybrid ({entanglement})": hybrid}


def epoch_seconds(config: ModelConfig, data: torch.utils.data.Dataset, train_config: TrainConfig, device: str) -> float:
    """Wall seconds of one training epoch (``train``'s own ``epoch_time_s``) of a freshly built model."""
    model = build_model(config, seed=0)
    history = train(model, data, train_config, progress=False, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    return float(history.last["epoch_time_s"])


def step_breakdown(cfgs: dict[str, ModelConfig], batch: int, device: str, repeats: int = 30) -> dict[str, float]:
    """Median seconds of one training step (forward, NLL, backward, Adam) of each model and of the hybrid's
    quantum layer alone (forward + backward on a batch of angles), measured round-robin on the same batch."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    steps = {}
    hybrid = None
    for name, cfg in cfgs.items():
        model = build_model(cfg, seed=0).to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            loss = torch.nn.functional.nll_loss(torch.log_softmax(model(x), dim=1), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[f"{name} step"] = step
        if cfg.arch.value == "hybrid":
            hybrid = model
    if hybrid is not None:
        angles = (torch.rand(batch, hybrid.quantum.spec.n_inputs, generator=g) * 6.28 - 3.14).to(device)

        def q_step() -> None:
            hybrid.quantum(angles.clone().requires_grad_(True)).sum().backward()

        steps["quantum layer fwd+bwd"] = q_step
    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        fn()  # warm-up
    for _ in range(repeats):
        for key, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(repeats: int, device: str, entanglement: str, batch_size: int) -> dict:
    bundle = load_dataset("mnist5k", seed=0, progress=False)
    data = bundle.train
    cfgs = configs(entanglement)
    names = list(cfgs)
    tc = TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3, weight_decay=1e-4, seed=0)
    for cfg in cfgs.values():  # warm-up: allocator, kernels, one-off imports
        epoch_seconds(cfg, data, tc.replace(limit_batches=2), device)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t = epoch_seconds(cfgs[name], data, tc, device)
            times[name].append(t)
            print(f"repeat {r + 1}/{repeats}: {name} {t:.2f} s", flush=True)
    load_after = os.getloadavg()
    steps = step_breakdown(cfgs, batch_size, device)
    return {"names": names, "times": times, "n_train": len(data), "batch_size": batch_size, "device": device,
            "load": (load_before[0], load_after[0]), "steps": steps}


def render(res: dict) -> str:
    cnn_name, hyb_name = res["names"]
    cnn, hyb = res["times"][cnn_name], res["times"][hyb_name]
    ratio = statistics.median(hyb) / statistics.median(cnn)
    ratio_min = min(hyb) / min(cnn)
    paired = statistics.median(h / c for h, c in zip(hyb, cnn))
    met = "yes" if paired <= TARGET else "NO"
    lines = [
        f"Measured by `python -m bench.hybrid_epoch` on {platform.machine()} ({_cpu_name()}, {os.cpu_count()} "
        f"cores, torch threads: {torch.get_num_threads()}), device `{res['device']}`, Python "
        f"{platform.python_version()}, torch {torch.__version__}. One epoch of `qshield.training.train` on "
        f"`mnist5k` ({res['n_train']} training images, 28x28), batch {res['batch_size']}, Adam lr 1e-3 wd 1e-4; "
        f"{len(cnn)} repeats, order alternating, fresh seeded models each time. Hybrid = the same `SmallCNN` + "
        "angle map + 4 qubits, depth 1, mixed noise p=0.005 (density matrix), trainable rotations, gated fusion. "
        f"1-min load average {res['load'][0]:.1f} before, {res['load'][1]:.1f} after (the machine is shared: "
        "absolute times vary with it, the interleaved ratio much less).",
        "",
        "| model | epoch (median) | min | max | all repeats (s) |",
        "|---|---|---|---|---|",
    ]
    for name in res["names"]:
        t = res["times"][name]
        lines.append(
            f"| {name} | {statistics.median(t):.2f} s | {min(t):.2f} s | {max(t):.2f} s | "
            f"{', '.join(f'{v:.2f}' for v in t)} |"
        )
    lines += [
        "",
        "| hybrid / CNN: median of per-repeat ratios (verdict) | ratio of medians | ratio of minima | target "
        "| met | paper (QShield, MNIST TTC) |",
        "|---|---|---|---|---|---|",
        f"| {paired:.3f}x | {ratio:.3f}x | {ratio_min:.3f}x | ≤{TARGET:.2f}x | {met} "
        "| ~55x (CNN 194.95 s, hybrids 10,784–13,050 s) |",
        "",
        f"Where the time goes — one training step on a batch of {res['batch_size']} (median of 30, round-robin): "
        + "; ".join(f"{k} {v * 1e3:.1f} ms" for k, v in res["steps"].items())
        + f". Step ratio hybrid / CNN: {res['steps'][hyb_name + ' step'] / res['steps'][cnn_name + ' step']:.3f}x; "
        f"the circuit is {100 * res['steps'].get('quantum layer fwd+bwd', 0.0) / res['steps'][hyb_name + ' step']:.1f}% "
        "of the hybrid step, the rest of the difference is the angle map, the class head and the gated fusion.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per model (default 5)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--entanglement", default="full", choices=[e.value for e in Entanglement],
                        help="CNOT pattern of the hybrid's circuit (default full)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default 128, as the paper)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"argument --repeats: {args.repeats} is out of range; allowed values: an integer >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error(f"argument --threads: {args.threads} is out of range; allowed values: an integer >= 1")
    if args.batch_size < 1:
        parser.error(f"argument --batch-size: {args.batch_size} is out of range; allowed values: an integer >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: no CUDA device is available; allowed values: cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    res = run(args.repeats, args.device, args.entanglement, args.batch_size)
    text = render(res)
    print(text)
    if not args.no_write:
        key = SECTION if args.device == "cpu" else f"{SECTION}_{args.device}"
        write_section(text, key)
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
