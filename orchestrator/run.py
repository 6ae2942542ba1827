"""``python -m orchestrator.run --space FILE``: the sweep entrypoint for ``ray job submit`` and KubeRay RayJobs.

    ray job submit --working-dir . -- python -m orchestrator.run --space mnist

``ray.init()`` attaches to the cluster in ``$RAY_ADDRESS`` (set by ``ray job submit`` and KubeRay) and starts a
local Ray otherwise. Restore-or-start by sweep name: re-running the same command (or a retried RayJob) resumes the
sweep from ``<storage_path>/<name>``; while another driver of the sweep runs, it exits 2 naming that driver
(:mod:`orchestrator.lease`). The MLflow tracking URI comes from ``--tracking-uri``,
``$MLFLOW_TRACKING_URI``, or ``sqlite:///mlflow.db`` in the working directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from .scoring import Rule

#: selection rules a user can name (``weighted`` needs ``qshield select --weights``)
RULES = [r.value for r in Rule if r is not Rule.WEIGHTED]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser without prefix matching: a mistyped ``--num-sample 3`` is an error, not silently
    ``--num-samples 3``. Sub-command parsers are of the parent's class, so they inherit it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def _mlflow_checked(validator: str) -> Any:
    """argparse type: the text, checked by MLflow's own name rule ``mlflow.utils.validation.<validator>`` (so a bad
    name is refused before a sweep runs, not by the registry after it)."""

    def check(text: str) -> str:
        from mlflow.exceptions import MlflowException
        from mlflow.utils import validation

        try:
            getattr(validation, validator)(text)
        except MlflowException as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        return text

    return check


#: argparse types of MLflow experiment and registered model names
experiment_name = _mlflow_checked("_validate_experiment_name")
model_name = _mlflow_checked("_validate_model_name")


def int_at_least(minimum: int) -> Any:
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid value {text!r}; allowed values: an integer >= {minimum}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; allowed values: an integer >= {minimum}")
        return value

    parse.__name__ = f"integer>={minimum}"
    return parse


positive_int = int_at_least(1)


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", required=True, metavar="FILE|NAME",
                        help="search-space YAML, or the name of a shipped space (mnist5k-demo, mnist, organamnist, "
                             "cifar10, ...: orchestrator/search_spaces/)")
    parser.add_argument("--name", help="sweep name (default: the space's name); the same name resumes the sweep")
    parser.add_argument("--storage-path", metavar="PATH_OR_URI",
                        help="where Tune keeps results and checkpoints (default: the space's storage_path, else ~/ray_results)")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--experiment", type=experiment_name, default="qshield",
                        help="MLflow experiment name (default: qshield)")
    parser.add_argument("--num-samples", type=positive_int, metavar="N", help="override the space's trial count")
    parser.add_argument("--num-cpus", type=positive_int, metavar="N",
                        help="CPUs of a local Ray (ignored when attaching to a cluster)")
    parser.add_argument("--select", nargs="?", const="space", choices=["space", *RULES],
                        help="after the sweep, register its champion (with the space's selection rule, or the one "
                             "named here)")
    parser.add_argument("--model-name", type=model_name,
                        help="registered model name for --select (default: qshield-<sweep>)")
    parser.add_argument("--allow-flagged", action="store_true",
                        help="for --select: when every trial is flagged (masking, near chance, ...), register the best "
                             "of them anyway, tagged qshield.trustworthy=false (see `qshield select --allow-flagged`)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m orchestrator.run", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweep_arguments(parser)
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    from .lease import LeaseLostError, SweepLeaseError
    from .runtime import SweepSetupError, format_summary, run_sweep
    from .space import SpaceError, load_space, replace_space
    from .tracking import TrackingError, TrackingURIError

    try:
        space = load_space(args.space)
        if args.num_samples is not None:
            space = replace_space(space, num_samples=args.num_samples)
    except SpaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_sweep(space, name=args.name, storage_path=args.storage_path, tracking_uri=args.tracking_uri,
                           experiment=args.experiment, num_cpus=args.num_cpus)
    except (SweepSetupError, SweepLeaseError, TrackingURIError, TrackingError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # refused (2), or the lease or the tracking server lost (1)
        return 1 if isinstance(exc, (LeaseLostError, TrackingError)) else 2
    print(format_summary(result))
    print(f"MLflow: {result.tracking_uri} (experiment {args.experiment!r}, parent run {result.parent_run_id})")
    if args.select:
        from .tracking import SelectionError
        from .views import select_and_card

        try:
            sel = select_and_card(result.name, model_name=args.model_name,
                                  rule=None if args.select == "space" else args.select,
                                  experiment=args.experiment, tracking_uri=result.tracking_uri,
                                  allow_flagged=args.allow_flagged)
        except SelectionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(describe_selection(sel))
    failed = sum(t.status == "error" for t in result.trials)
    return 0 if result.finished() and not failed else (1 if not result.finished() else 0)


def describe_selection(sel: object) -> str:
    """What ``select`` did, for the terminal: the registered URI, why it won, the challenger, the verification."""
    lines = [f"champion: models:/{sel.model_name}@champion = version {sel.version} (trial {sel.trial_id}, "
             f"run {sel.run_id}, rule {sel.rule})", f"  why: {sel.reason}"]
    if sel.challenger_version:
        lines.append(f"challenger: models:/{sel.model_name}@challenger = version {sel.challenger_version} "
                     f"({sel.challenger_reason})")
    if sel.verified:
        lines.append("  reloaded from the registry and re-evaluated: " + ", ".join(
            f"{k} logged {a:.4f} / now {b:.4f}" for k, (a, b) in sel.verified.items())
            + "; mlflow.pyfunc.load_model reproduces its probabilities")
    card = getattr(sel, "card", None)
    if card:
        lines.append(f"  robustness card: {card} (MLflow: the run's artifacts, card/index.html)")
    return "\n".join(lines)


def mlflow_client_defaults() -> None:
    """Defaults of this process's MLflow client (a user's own setting wins): MLflow's HTTP layer retries a failed
    request only twice (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=2``, its default is 7 with backoff up to minutes), since
    qshield retries every tracking and registry call itself (:func:`orchestrator.tracking.call_mlflow`): an
    unreachable server is reported in about a minute rather than after tens of minutes of nested retries."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mlflow_client_defaults()
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
