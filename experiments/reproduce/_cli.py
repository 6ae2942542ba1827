"""Reproduce the QShield paper's MNIST experiment on the offline ``mnist5k`` data and write ``docs/reproduction.md``.

The command line of :mod:`experiments.reproduce` (:func:`build_parser`, :func:`main`); ``__main__.py`` runs it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from qshield.attacks import ATTACKS
from qshield.data import available_datasets
from qshield.evaluation import MaskingConfig

from ._render import write_reproduction
from ._run import DEFAULT_EXAMPLES_BY_ATTACK, MODEL_NAMES, REFERENCE_NAME, ReproductionConfig, run_reproduction

__all__ = ["build_parser", "main"]


def _attack_count(text: str) -> tuple[str, int]:
    name, sep, count = text.partition("=")
    if not sep or name not in ATTACKS:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; allowed values: ATTACK=N with ATTACK one of {', '.join(ATTACKS)}"
        )
    try:
        n = int(count)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed values: N an integer >= 1")
    return name, n


def _int_min(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed values: an integer >= {minimum}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``python -m experiments.reproduce``."""
    d = ReproductionConfig()
    p = argparse.ArgumentParser(prog="python -m experiments.reproduce", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/reproduction.md"), help="document to write")
    p.add_argument("--plot", type=Path, default=None, help="ASR-vs-ε PNG (default: <out stem>_asr_vs_eps.png)")
    p.add_argument("--csv", type=Path, default=None, help="results CSV (default: <out stem>_results.csv)")
    p.add_argument("--dataset", choices=list(available_datasets()), default=d.dataset, help="default: mnist5k")
    p.add_argument("--data-root", default=None, help="data root (unused by the built-ins)")
    p.add_argument("--models", nargs="+", choices=list(MODEL_NAMES), default=list(d.models), metavar="MODEL",
                   help=f"models (default: all); allowed values: {', '.join(MODEL_NAMES)}")
    p.add_argument("--attacks", nargs="+", choices=list(ATTACKS), default=list(d.attacks), metavar="ATTACK",
                   help=f"attacks (default: the paper's eight); allowed values: {', '.join(ATTACKS)}")
    p.add_argument("--epochs", type=_int_min(1), default=d.epochs, help=f"training epochs (default: {d.epochs})")
    p.add_argument("--limit-train", type=_int_min(1), default=None, help="at most this many training images")
    p.add_argument("--n-examples", type=_int_min(1), default=d.n_examples,
                   help=f"test images per attack (default: {d.n_examples})")
    p.add_argument("--examples", type=_attack_count, action="append", default=None, metavar="ATTACK=N",
                   help="fewer images for one attack; default: "
                   + " ".join(f"{k}={v}" for k, v in DEFAULT_EXAMPLES_BY_ATTACK.items()))
    p.add_argument("--masking-examples", type=_int_min(1), default=d.masking.n_examples,
                   help=f"images of the masking diagnostics (default: {d.masking.n_examples})")
    p.add_argument("--masking-steps", type=_int_min(1), default=d.masking.steps,
                   help=f"PGD steps of the diagnostics (default: {d.masking.steps})")
    p.add_argument("--masking-queries", type=_int_min(1), default=d.masking.square_queries,
                   help=f"Square queries of the diagnostics (default: {d.masking.square_queries})")
    p.add_argument("--no-reference", action="store_true",
                   help=f"skip the reference code's hybrid ({REFERENCE_NAME}: naive and adaptive evaluation)")
    p.add_argument("--seed", type=_int_min(0), default=d.seed, help="seed (default: 0)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    p.add_argument("--threads", type=_int_min(1), default=1,
                   help="torch CPU threads (default: 1, much faster than 2 on a busy 2-core machine)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the reproduction and write the document; returns 0."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: no CUDA device is available; allowed values: cpu")
    examples = dict(DEFAULT_EXAMPLES_BY_ATTACK) if args.examples is None else dict(args.examples)
    try:
        config = ReproductionConfig(
            dataset=args.dataset, data_root=args.data_root, models=tuple(args.models), attacks=tuple(args.attacks),
            epochs=args.epochs, limit_train=args.limit_train, seed=args.seed, n_examples=args.n_examples,
            examples_by_attack=examples, device=args.device, reference=not args.no_reference,
            masking=MaskingConfig(n_examples=args.masking_examples, steps=args.masking_steps,
                                  square_queries=args.masking_queries, seed=args.seed),
        )
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    stem = args.out.with_suffix("")
    plot = args.plot or stem.with_name(stem.name + "_asr_vs_eps.png")
    csv = args.csv or stem.with_name(stem.name + "_results.csv")
    rep = run_reproduction(config, progress=not args.no_progress)
    command = "python -m experiments.reproduce" + (" " + shlex.join(argv) if argv else "")
    paths = write_reproduction(rep, args.out, command=command, plot=plot, csv=csv)
    sys.stdout.write("".join(f"wrote {p}\n" for p in paths.values()) + f"run took {rep.seconds / 60:.1f} min\n")
    return 0
