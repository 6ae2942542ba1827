"""``qshield rerun RUN_ID``: re-run one recorded sweep trial exactly and compare it with its record
(:func:`orchestrator.tracking.rerun_from_run`). Exit status 0 when everything matches, 1 when something differs,
2 for a bad run id or store (refused before anything runs)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed values: a number >= 0") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; allowed values: a number >= 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed values: an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; allowed values: an integer >= 1")
    return value


def add_rerun_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rerun`` on the ``qshield`` parser."""
    p = subparsers.add_parser(
        "rerun", help="re-run a recorded sweep trial exactly and compare with its record (reads MLflow)",
        description="Re-run the MLflow trial run RUN_ID from its recorded parameters and space, on the CPU, and print "
                    "recorded vs re-run for every per-epoch metric, every final metric and the weights.",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="the trial's MLflow run id")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--tolerance", type=_non_negative, default=0.0,
                   help="largest accepted absolute difference (default: 0, bit-identical)")
    p.add_argument("--out", type=Path, help="also write the re-run model to this file")
    p.add_argument("--threads", type=_positive_int, help="torch threads (default: the trial's resources.cpus)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_rerun, _parser=p)


def run_rerun(args: argparse.Namespace) -> int:
    from qshield.data import DatasetFormatError, DatasetNotFoundError

    from ..tracking import RerunError, rerun_from_run

    parser: argparse.ArgumentParser = args._parser
    if args.out is not None and args.out.is_dir():
        parser.error(f"argument --out: {str(args.out)!r} is a directory; allowed values: a file path")
    if args.no_progress:
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # this command's own process only
    try:
        result = rerun_from_run(args.run_id, tracking_uri=args.tracking_uri, tolerance=args.tolerance,
                                threads=args.threads, out=args.out, progress=not args.no_progress)
    except RerunError as exc:
        parser.error(str(exc))
    except (DatasetNotFoundError, DatasetFormatError) as exc:
        sys.stderr.write(f"{parser.prog}: error: {exc}\n")
        return 1
    sys.stdout.write(result.format() + "\n")
    if args.out is not None:
        sys.stdout.write(f"wrote the re-run model to {args.out}\n")
    return 0 if result.reproduced else 1
