"""The ``qshield`` command: ``sweep``, ``select``, ``demo`` (the application) and ``train``, ``evaluate`` (the
library's commands, from :mod:`qshield.cli`; ``train`` gains ``--from-run RUN_ID`` here, see
:mod:`orchestrator.rerun`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .run import add_sweep_arguments, run_from_args
from .scoring import Rule

ROOT = Path(__file__).resolve().parents[1]
DEMO_SPACE = ROOT / "search_spaces" / "mnist5k-demo.yaml"


def _weights(text: str) -> dict[str, float]:
    try:
        return {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weights={text!r}: expected metric=weight pairs, e.g. accuracy=1,asr=2") from None


def cmd_select(args: argparse.Namespace) -> int:
    from .registry import SelectionError, select_champion

    from .run import describe_selection

    try:
        sel = select_champion(args.sweep, model_name=args.model_name, rule=args.rule, weights=args.weights,
                              primary=args.primary, accuracy_floor=args.accuracy_floor, experiment=args.experiment,
                              tracking_uri=args.tracking_uri, verify=not args.no_verify)
    except (SelectionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(describe_selection(sel))
    print("objectives: " + ", ".join(f"{k}={v:.4f}" for k, v in sel.objectives.items()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking)
    tracking = os.environ["MLFLOW_TRACKING_URI"]
    print(f"qshield demo: a real sweep of {DEMO_SPACE.name} on local Ray; results in {workdir}", flush=True)
    sweep_args = argparse.Namespace(
        space=str(DEMO_SPACE), name=None, storage_path=str(workdir / "ray_results"), tracking_uri=tracking,
        experiment="qshield-demo", num_samples=args.num_samples, num_cpus=None, select="space",
        model_name="qshield-demo",
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
    parser = argparse.ArgumentParser(prog="qshield", description="Hybrid quantum-classical classifiers: "
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
                   help="for robust_floor: eligible trials are at most F below the best clean accuracy (default 0.02)")
    p.add_argument("--weights", type=_weights, help="for --rule weighted: metric=weight pairs, e.g. accuracy=1,asr=1")
    p.add_argument("--primary", help="for --rule constrained_best: the objective to maximise/minimise first")
    p.add_argument("--model-name", help="registered model name (default: qshield-<sweep>)")
    p.add_argument("--experiment", default="qshield", help="MLflow experiment (default: qshield)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--no-verify", action="store_true", help="skip reloading and re-evaluating the champion")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("demo", help="the offline demo: a real small sweep on mnist5k, local Ray, sqlite MLflow")
    p.add_argument("--workdir", default="qshield-demo", help="where results go (default: ./qshield-demo)")
    p.add_argument("--num-samples", type=int, help="override the demo's trial count")
    p.set_defaults(func=cmd_demo)

    try:
        from qshield.cli import add_library_commands
    except ImportError:  # pragma: no cover - the library CLI is part of the package
        pass
    else:
        add_library_commands(sub)
        from .rerun import add_from_run_arguments

        add_from_run_arguments(sub.choices["train"])  # qshield train --from-run RUN_ID: re-run a sweep trial exactly
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
