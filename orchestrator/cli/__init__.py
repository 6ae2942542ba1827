"""The ``qshield`` command: ``sweep``, ``select``, ``demo``, ``card``, ``app`` (sweeps and their champions),
``train``, ``evaluate`` (one model: :mod:`orchestrator.cli._library`) and ``rerun`` (a recorded trial again:
:mod:`orchestrator.cli._rerun`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..run import (
    ArgumentParser,
    add_sweep_arguments,
    experiment_name,
    mlflow_client_defaults,
    model_name,
    positive_int,
    run_from_args,
)
from ..scoring import Rule
from ._library import add_library_commands
from ._rerun import add_rerun_command

#: the shipped space `qshield demo` runs (inside the package, so an installed wheel finds it from any folder)
DEMO_SPACE = "mnist5k-demo"


def _weights(text: str) -> dict[str, float]:
    try:
        return {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weights={text!r}: expected metric=weight pairs, e.g. accuracy=1,asr=2") from None


def cmd_select(args: argparse.Namespace) -> int:
    from ..run import describe_selection
    from ..tracking import SelectionError
    from ..tracking import existing_store
    from ..views import select_and_card

    existing_store(args.tracking_uri)  # a bad store is bad input (exit 2, from main), not a failed selection
    try:
        sel = select_and_card(args.sweep, card=not args.no_card, model_name=args.model_name, rule=args.rule,
                              weights=args.weights, primary=args.primary, accuracy_floor=args.accuracy_floor,
                              experiment=args.experiment, tracking_uri=args.tracking_uri, verify=not args.no_verify,
                              allow_flagged=args.allow_flagged)
    except (SelectionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(describe_selection(sel))
    print("objectives: " + ", ".join(f"{k}={v:.4f}" for k, v in sel.objectives.items()))
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from ..tracking import SelectionError
    from ..tracking import existing_store
    from ..views import make_card

    existing_store(args.tracking_uri)  # a bad store is bad input (exit 2, from main), not a failed card
    try:
        result = make_card(args.model, args.tracking_uri, out=args.out, log=not args.no_log, n_images=args.images,
                           seed=args.seed)
    except (SelectionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result.artifact_uri:
        print(f"robustness card logged: {result.artifact_uri} (MLflow UI: the run's artifacts, card/index.html)")
    if result.directory is not None:
        print(f"robustness card written: {result.directory / 'index.html'}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from ..views import AppConfigError, serve

    try:
        serve(args.tracking_uri, host=args.host, port=args.port)
    except AppConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).absolute()
    if workdir.exists() and not workdir.is_dir():
        print(f"error: --workdir {args.workdir} is a file; allowed values: a folder (new or one a demo made)",
              file=sys.stderr)
        return 2
    workdir.mkdir(parents=True, exist_ok=True)
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking)
    tracking = os.environ["MLFLOW_TRACKING_URI"]
    print(f"qshield demo: a real sweep of the shipped space {DEMO_SPACE!r} on local Ray; results in {workdir}",
          flush=True)
    sweep_args = argparse.Namespace(
        space=DEMO_SPACE, name=None, storage_path=str(workdir / "ray_results"), tracking_uri=tracking,
        experiment="qshield-demo", num_samples=args.num_samples, num_cpus=None, select="space",
        model_name="qshield-demo", allow_flagged=False,
    )
    code = run_from_args(sweep_args)
    if code == 2:  # refused before anything ran (bad input, or the demo already running: issue 15)
        return code
    print()
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    print("Open the MLflow UI on these results:")
    print(f"  {mlflow_cli} ui --backend-store-uri {tracking} --port 5000")
    print("  then browse http://127.0.0.1:5000 (experiment 'qshield-demo'; the champion is under Models)")
    print("Use the champion with MLflow's own tools:")
    print(f"  MLFLOW_TRACKING_URI={tracking} python -c \"import mlflow, numpy as np; "
          "m = mlflow.pyfunc.load_model('models:/qshield-demo@champion'); "
          "print(m.predict(np.zeros((1, 1, 28, 28), np.float32)))\"")
    print(f"  MLFLOW_TRACKING_URI={tracking} {mlflow_cli} models serve -m models:/qshield-demo@champion "
          "--env-manager local --port 5001")
    optuna_db = workdir / "optuna.db"
    if optuna_db.exists():
        print(f"The Optuna study: optuna-dashboard sqlite:///{optuna_db}  (study 'mnist5k-demo'), or "
              f"optuna.load_study(study_name='mnist5k-demo', storage='sqlite:///{optuna_db}')")
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="qshield", description="Hybrid quantum-classical classifiers: "
                            "train, attack, sweep on Ray Tune, register champions in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sweep", help="run or resume a multi-objective sweep (Ray Tune + Optuna, MLflow)")
    add_sweep_arguments(p)
    p.set_defaults(func=run_from_args)

    p = sub.add_parser("select", help="register a sweep's champion in the MLflow registry and verify it")
    p.add_argument("--sweep", required=True, help="sweep name")
    p.add_argument("--rule", choices=[r.value for r in Rule],
                   help="selection rule (default: the sweep space's `selection.rule`, robust_floor unless set)")
    p.add_argument("--accuracy-floor", type=float, metavar="F",
                   help="for robust_floor: eligible trials are at most F below the best clean accuracy (default: the "
                        "sweep space's `selection.accuracy_floor`, 0.02 unless set)")
    p.add_argument("--weights", type=_weights, help="for --rule weighted: metric=weight pairs, e.g. accuracy=1,asr=1")
    p.add_argument("--primary", help="for --rule constrained_best: the objective to maximise/minimise first")
    p.add_argument("--model-name", type=model_name, help="registered model name (default: qshield-<sweep>)")
    p.add_argument("--experiment", type=experiment_name, default="qshield", help="MLflow experiment (default: qshield)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--no-verify", action="store_true", help="skip reloading and re-evaluating the champion")
    p.add_argument("--no-card", action="store_true", help="do not make the champion's robustness card")
    p.add_argument("--allow-flagged", action="store_true",
                   help="when every trial is flagged (masking, near chance, not adaptive, no attack reaching its ε, "
                        "unchecked), choose among them anyway; the version is tagged qshield.trustworthy=false "
                        "(flagged trials are never chosen while an unflagged one exists)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("card", help="a registered model's robustness card (HTML + PNGs), logged to its run")
    p.add_argument("model", help="models:/<name>@<alias>, models:/<name>/<version> or models:/<logged model id>")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--out", help="also write the card into this folder (index.html opens offline)")
    p.add_argument("--no-log", action="store_true", help="do not log it to MLflow (needs --out)")
    p.add_argument("--images", type=int, default=6, help="test images in the gallery (default 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the gallery's choice and the attacks (default 0)")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("app", help="a web page over the registry: pick a model, an image and an attack")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other address "
                   "needs QSHIELD_APP_USER and QSHIELD_APP_PASSWORD: HTTP basic auth)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("demo", help="the offline demo: a real small sweep on mnist5k, local Ray, sqlite MLflow")
    p.add_argument("--workdir", default="qshield-demo", help="where results go (default: ./qshield-demo)")
    p.add_argument("--num-samples", type=positive_int, help="override the demo's trial count")
    p.set_defaults(func=cmd_demo)

    add_library_commands(sub)
    add_rerun_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.func in _SMALL_DOWNLOADS:
        # these commands download a model's few small files many times over (re-verification, card): MLflow's
        # per-download progress bar would print a line each; a user who wants them sets the variable to true
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # this command's own process only
    mlflow_client_defaults()
    from ..tracking import TrackingError, TrackingURIError

    try:
        return int(args.func(args))
    except TrackingURIError as exc:  # every command resolves its store first: refused before anything is written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrackingError as exc:  # the tracking server did not answer, after qshield's retries: one line, not a trace
        print(f"error: {exc}", file=sys.stderr)
        return 1


#: commands whose MLflow downloads are a model's small files (see :func:`main`)
_SMALL_DOWNLOADS = (run_from_args, cmd_select, cmd_card, cmd_demo)


if __name__ == "__main__":
    sys.exit(main())
