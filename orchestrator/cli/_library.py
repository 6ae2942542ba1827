"""``qshield train`` and ``qshield evaluate``: the library's work (one model, no sweep) as commands.

``add_library_commands(subparsers)`` registers both subcommands on the ``qshield`` parser
(:mod:`orchestrator.cli`). Ray and MLflow are not used here; the result files come from
:func:`qshield.evaluation.write_evaluation`.

``train`` loads a dataset, builds a model from flags mirroring :class:`~qshield.models.ModelConfig`, trains it
with flags mirroring :class:`~qshield.training.TrainConfig`, and writes the model file (``--out``) plus a
training record next to it (``<out>.json``: data selection, configs, per-epoch history, test accuracy) so that
``evaluate`` can rebuild the same test split.

``evaluate`` runs a list of attacks (:data:`~qshield.attacks.ATTACKS`; default the paper's eight) on one or more saved
models, adaptively for models that declare hidden parts (``--adaptive``), always with the gradient-masking
diagnostics, and writes to ``--out DIR``:

* ``results.csv`` / ``results.md``: one row per model × attack (ODR, ASR, robust accuracy, adaptive mode, attack
  seconds per example and in total, counted forward/backward queries per example, masking flag);
* ``diagnostics.csv`` / ``diagnostics.md``: every masking check per model, passed or not, with its numbers;
* ``asr_vs_eps.csv`` / ``asr_vs_eps.png``: PGD ASR against ε per model (the diagnostics' sweep).

Bad flags stop with an argparse error (exit status 2) naming the flag and the allowed values, before any data
is read or any model trained.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from qshield.attacks import ATTACKS, DEFAULT_EPS, PAPER_ATTACKS, Adaptive, AttackConfig
from qshield.data import DatasetFormatError, DatasetNotFoundError, available_datasets, dataset_spec
from qshield.models import Arch, Backbone, FusionMode, ModelConfig
from qshield.quantum import BACKENDS, Entanglement, Measurement, Noise
from qshield.training import TrainConfig, TrainMethod

from ..run import int_at_least

__all__ = [
    "add_library_commands",
    "record_path",
    "parse_eps",
    "RECORD_FORMAT",
]

logger = logging.getLogger(__name__)

#: Marker of the training-record JSON written next to a model file by ``qshield train``.
RECORD_FORMAT = "qshield-train-record"
#: Default masking-diagnostics settings shown in ``--help`` (see :class:`qshield.evaluation.MaskingConfig`).
_MASKING_EXAMPLES = 64
_MASKING_STEPS = 20
_MASKING_QUERIES = 300
_PLOT_EPS = ("1/255", "4/255", "16/255", "64/255", "1")


# ----------------------------------------------------------------------------------------------- argument types
def _values(enum_cls: Any) -> list[str]:
    return [m.value for m in enum_cls]


def parse_eps(text: str) -> float:
    """A budget on the [0, 1] pixel scale written as a number (``0.125``) or a fraction (``32/255``).

    Raises:
        argparse.ArgumentTypeError: not a number or fraction, or outside [0, 1].
    """
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; allowed values: a number or fraction in [0, 1], e.g. 0.125 or 32/255"
        ) from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range; allowed values: a number or fraction in [0, 1] (images are in [0, 1])"
        )
    return value


def _positive_eps(text: str) -> float:
    value = parse_eps(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; allowed values: a number or fraction in (0, 1]")
    return value



def _float_in(low: float, high: float, *, low_open: bool = False) -> Any:
    def parse(text: str) -> float:
        bracket = "(" if low_open else "["
        allowed = f"a number in {bracket}{low}, {high}]"
        try:
            value = parse_eps(text) if "/" in text else float(text)
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"invalid value {text!r}; allowed values: {allowed}") from None
        if math.isnan(value) or value < low or value > high or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; allowed values: {allowed}")
        return value

    parse.__name__ = "number"
    return parse


def _n_qubits(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; allowed values: 'auto' (max(2, ceil(log2 classes))) or an integer >= 2"
        ) from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; allowed values: 'auto' or an integer >= 2")
    return value


def _attack_param(text: str) -> tuple[str, str, Any]:
    """``ATTACK.PARAM=VALUE`` (value read as YAML: ``100``, ``0.5``, ``true``, ``ce``)."""
    key, sep, raw = text.partition("=")
    attack, dot, param = key.strip().partition(".")
    if not sep or not dot or not attack or not param:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; allowed values: ATTACK.PARAM=VALUE, e.g. square.n_queries=100"
        )
    attack = attack.lower()
    if attack not in ATTACKS:
        raise argparse.ArgumentTypeError(
            f"unknown attack {attack!r} in {text!r}; allowed values: {', '.join(ATTACKS)}"
        )
    if param not in ATTACKS[attack].param_names:
        raise argparse.ArgumentTypeError(
            f"unknown parameter {param!r} of {attack!r} in {text!r}; allowed values: "
            f"{', '.join(ATTACKS[attack].param_names)}"
        )
    return attack, param, yaml.safe_load(raw)


# ------------------------------------------------------------------------------------------------- parsers
def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs (default: cpu)"
    )
    parser.add_argument(
        "--threads", type=int_at_least(1), default=None,
        help="torch CPU threads for this process (default: torch's choice; 1 is often fastest on a busy machine)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (INFO level)")


def _add_data(parser: argparse.ArgumentParser, *, required: bool) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--dataset", choices=list(available_datasets()), required=required, default=None,
        help="dataset name" + ("" if required else " (default: the one in the models' training records)"),
    )
    group.add_argument(
        "--data-root", default=None,
        help="data root holding the dataset files (default: $QSHIELD_DATA, else ./data; unused by built-ins)",
    )
    return group


class _MovedToRerun(argparse.Action):
    """``train --from-run RUN_ID`` (before qshield 0.2) is ``qshield rerun RUN_ID`` now: say so while parsing, before
    argparse complains about the options a re-run does not need."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error(f"argument --from-run: re-running a recorded sweep trial is its own command now: "
                     f"`qshield rerun {values} [--tracking-uri URI] [--tolerance T] [--out FILE]`")


def _train_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-run", metavar="RUN_ID", action=_MovedToRerun, help="moved: use `qshield rerun RUN_ID`")
    data = _add_data(parser, required=True)
    data.add_argument("--test-fraction", type=_float_in(0.0, 1.0, low_open=True), default=0.2,
                      help="test share for datasets without an official split (default: 0.2)")
    data.add_argument("--balance", action="store_true",
                      help="subsample every class to the smallest class count, as the paper does")
    data.add_argument("--limit-train", type=int_at_least(1), default=None, help="at most this many training images")
    data.add_argument("--limit-test", type=int_at_least(1), default=None, help="at most this many test images")
    parser.add_argument("--seed", type=int_at_least(0), default=0,
                        help="seeds the data split, the model's initial weights and training (default: 0)")
    parser.add_argument("--out", required=True, type=Path,
                        help="model file to write (a training record is written to <out>.json)")

    model = parser.add_argument_group("model (see qshield.models.ModelConfig)")
    model.add_argument("--arch", choices=_values(Arch), default=Arch.HYBRID.value,
                       help="model family; reference_hybrid = the QShield reference code's hybrid with its flaws "
                       "(random projection per call, circuit outside the autograd graph) (default: hybrid)")
    model.add_argument("--backbone", choices=_values(Backbone), default=Backbone.CNN.value,
                       help="classical part of a hybrid (default: cnn)")
    model.add_argument("--n-qubits", type=_n_qubits, default=None,
                       help="qubits; 'auto' = max(2, ceil(log2 classes)) (default: auto)")
    model.add_argument("--depth", type=int_at_least(1), default=1, help="circuit layers (default: 1)")
    model.add_argument("--entanglement", choices=_values(Entanglement), default=Entanglement.LINEAR.value,
                       help="CNOT pattern of each layer (default: linear)")
    model.add_argument("--noise", choices=_values(Noise), default=Noise.NONE.value,
                       help="noise channel (default: none)")
    model.add_argument("--noise-strength", type=_float_in(0.0, 1.0), default=0.0,
                       help="noise probability p in [0, 1] (default: 0; the paper: 0.005)")
    model.add_argument("--readout-error", type=_float_in(0.0, 1.0), default=0.0,
                       help="readout bit-flip probability in [0, 1] (default: 0)")
    model.add_argument("--measurement", choices=_values(Measurement), default=Measurement.PROBS.value,
                       help="circuit output (default: probs)")
    model.add_argument("--backend", choices=list(BACKENDS), default="torch", help="circuit simulator (default: torch)")
    model.add_argument("--fixed-circuit", action="store_true",
                       help="no trainable circuit rotations (as the paper's released code)")
    model.add_argument("--fusion", choices=_values(FusionMode), default=FusionMode.GATED.value,
                       help="how the classical and quantum branches are combined (default: gated)")
    model.add_argument("--w-q", type=_float_in(0.0, 1.0), default=0.5,
                       help="quantum fusion weight w_q in [0, 1], w_c = 1 - w_q (default: 0.5)")
    model.add_argument("--pretrained-path", default=None, help="local ResNet-18 state-dict file (never downloaded)")

    tr = parser.add_argument_group("training (see qshield.training.TrainConfig)")
    tr.add_argument("--epochs", type=int_at_least(1), default=10, help="epochs (default: 10, as the paper)")
    tr.add_argument("--lr", type=_float_in(0.0, math.inf, low_open=True), default=1e-3,
                    help="Adam learning rate (default: 1e-3)")
    tr.add_argument("--weight-decay", type=_float_in(0.0, math.inf), default=1e-4,
                    help="Adam weight decay (default: 1e-4)")
    tr.add_argument("--batch-size", type=int_at_least(1), default=128, help="batch size (default: 128)")
    tr.add_argument("--method", choices=_values(TrainMethod), default=TrainMethod.STANDARD.value,
                    help="standard, PGD adversarial training or Quantum Patches (default: standard)")
    tr.add_argument("--limit-batches", type=int_at_least(1), default=None,
                    help="stop each epoch after this many batches")
    tr.add_argument("--no-shuffle", action="store_true", help="keep the training order fixed")
    tr.add_argument("--num-workers", type=int_at_least(0), default=0, help="DataLoader workers (default: 0)")
    tr.add_argument("--pgd-eps", type=parse_eps, default=None,
                    help="pgd_at: Linf radius, e.g. 32/255 (required with --method pgd_at)")
    tr.add_argument("--pgd-alpha", type=parse_eps, default=2 / 255, help="pgd_at: step size (default: 2/255)")
    tr.add_argument("--pgd-steps", type=int_at_least(1), default=10, help="pgd_at: steps (default: 10)")
    tr.add_argument("--no-pgd-random-start", action="store_true", help="pgd_at: start PGD at the clean image")
    tr.add_argument("--patches-mix-ratio", type=_float_in(0.0, 1.0), default=0.5,
                    help="quantum_patches: share of each batch replaced by augmented copies (default: 0.5)")
    tr.add_argument("--patches-strength", type=_float_in(0.0, 1.0), default=0.5,
                    help="quantum_patches: modulation strength (default: 0.5)")
    tr.add_argument("--patches-entanglement", choices=_values(Entanglement), default=Entanglement.LINEAR.value,
                    help="quantum_patches: CNOT pattern of the random circuits (default: linear)")
    _add_common(parser)


def _evaluate_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", type=Path, help="model files written by 'qshield train'")
    parser.add_argument("--out", required=True, type=Path, help="directory for the tables and the plot")
    parser.add_argument(
        "--attacks", nargs="+", choices=list(ATTACKS), default=list(PAPER_ATTACKS), metavar="ATTACK",
        help=f"attacks to run (default: the paper's eight, {' '.join(PAPER_ATTACKS)}); allowed values: "
        f"{', '.join(ATTACKS)} (autoattack: the standard AutoAttack ensemble, costly)",
    )
    parser.add_argument(
        "--eps", type=parse_eps, default=None,
        help="Linf budget for the attacks that have one, e.g. 32/255 (default: the dataset's: "
        + ", ".join(f"{k} {round(v * 255)}/255" for k, v in DEFAULT_EPS.items()) + ")",
    )
    parser.add_argument("--n-examples", type=int_at_least(1), default=500,
                        help="test images evaluated, stratified by class; only correctly classified ones are "
                        "attacked (default: 500)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=128,
                        help="images per attack call (default: 128)")
    parser.add_argument("--set", dest="attack_params", type=_attack_param, action="append", default=[],
                        metavar="ATTACK.PARAM=VALUE", help="override an attack parameter, e.g. square.n_queries=100")
    parser.add_argument("--attack-seed", type=int_at_least(0), default=0, help="seed of the attacks (default: 0)")
    parser.add_argument(
        "--adaptive", choices=[m.value for m in Adaptive], default=Adaptive.AUTO.value,
        help="attack mode: auto (BPDA / EOT / transfer for models that declare hidden parts, e.g. reference_hybrid; "
        "plain models are attacked directly), off (the naive attacker, as the paper), bpda, transfer (default: auto)",
    )
    data = _add_data(parser, required=False)
    data.add_argument("--seed", type=int_at_least(0), default=None,
                      help="data-split seed (default: the models' training seed; another seed would let the test "
                      "split overlap the training data of datasets split by seed)")
    masking = parser.add_argument_group("gradient-masking diagnostics (always run)")
    masking.add_argument("--masking-examples", type=int_at_least(1), default=_MASKING_EXAMPLES,
                         help=f"correctly classified images checked (default: {_MASKING_EXAMPLES})")
    masking.add_argument("--masking-steps", type=int_at_least(1), default=_MASKING_STEPS,
                         help=f"PGD steps at every ε of the sweep (default: {_MASKING_STEPS})")
    masking.add_argument("--masking-queries", type=int_at_least(1), default=_MASKING_QUERIES,
                         help=f"Square queries of the white-box vs black-box check (default: {_MASKING_QUERIES})")
    masking.add_argument("--plot-eps", nargs="+", type=_positive_eps, default=[parse_eps(e) for e in _PLOT_EPS],
                         metavar="EPS", help="increasing ε values of the PGD sweep (the plot); the last one is the "
                         f"'large ε' that must reach 95%% ASR (default: {' '.join(_PLOT_EPS)})")
    _add_common(parser)


def add_library_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train`` and ``evaluate`` on ``subparsers``; each sets ``func(args) -> int`` (exit status)."""
    train_p = subparsers.add_parser(
        "train", help="train a model on a dataset and save it",
        description="Train a DNN, CNN, ResNet-18, hybrid quantum-classical model or the QShield reference code's "
        "hybrid (--arch reference_hybrid) and save it (plus <out>.json).",
    )
    _train_parser(train_p)
    train_p.set_defaults(func=_run_train, _parser=train_p)
    eval_p = subparsers.add_parser(
        "evaluate", help="attack saved models; write results tables and an ASR-vs-eps plot",
        description="Run adversarial attacks and the gradient-masking diagnostics on saved models.",
    )
    _evaluate_parser(eval_p)
    eval_p.set_defaults(func=_run_evaluate, _parser=eval_p)


def record_path(model_path: str | os.PathLike[str]) -> Path:
    """Where ``qshield train`` writes the training record of ``model_path``: ``<model_path>.json``."""
    path = Path(model_path)
    return path.with_name(path.name + ".json")


def _setup(args: argparse.Namespace) -> None:
    """Logging level, torch threads, device check (argparse error when CUDA is asked for but absent)."""
    import torch

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.device == "cuda" and not torch.cuda.is_available():
        args._parser.error("argument --device: 'cuda' asked for but no CUDA device is available; allowed values: cpu")
    if args.threads is not None:
        torch.set_num_threads(args.threads)


def _fail(args: argparse.Namespace, err: Exception) -> int:
    """Report a data error (missing or corrupt files) without a traceback; exit status 1."""
    sys.stderr.write(f"{args._parser.prog}: error: {err}\n")
    return 1


# ------------------------------------------------------------------------------------------------- train
def _configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """Model and training configs from the flags; argparse error (exit 2) on an invalid combination."""
    spec = dataset_spec(args.dataset)
    if args.method == TrainMethod.PGD_AT.value and args.pgd_eps is None:
        args._parser.error(
            "argument --pgd-eps is required with --method pgd_at; allowed values: a number or fraction in [0, 1], "
            "e.g. 32/255 (the reference's MNIST budget)"
        )
    try:
        model_config = ModelConfig(
            arch=args.arch,
            backbone=args.backbone,
            in_channels=spec.in_channels,
            image_size=spec.image_size,
            num_classes=spec.num_classes,
            n_qubits=args.n_qubits,
            depth=args.depth,
            entanglement=args.entanglement,
            noise=args.noise,
            noise_strength=args.noise_strength,
            readout_error=args.readout_error,
            measurement=args.measurement,
            backend=args.backend,
            quantum_trainable=not args.fixed_circuit,
            fusion=args.fusion,
            fusion_weights=(1.0 - args.w_q, args.w_q),
            pretrained_path=args.pretrained_path,
        )
    except ValueError as err:
        args._parser.error(f"invalid model flags: {err}")
    try:
        train_config = TrainConfig(
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            batch_size=args.batch_size,
            seed=args.seed,
            method=args.method,
            shuffle=not args.no_shuffle,
            limit_batches=args.limit_batches,
            num_workers=args.num_workers,
            pgd_eps=args.pgd_eps,
            pgd_alpha=args.pgd_alpha,
            pgd_steps=args.pgd_steps,
            pgd_random_start=not args.no_pgd_random_start,
            patches_mix_ratio=args.patches_mix_ratio,
            patches_strength=args.patches_strength,
            patches_entanglement=args.patches_entanglement,
        )
    except ValueError as err:
        args._parser.error(f"invalid training flags: {err}")
    if args.pretrained_path is not None and not os.path.isfile(args.pretrained_path):
        args._parser.error(f"argument --pretrained-path: {args.pretrained_path!r} is not a file")
    return model_config, train_config


def _run_train(args: argparse.Namespace) -> int:
    _setup(args)
    model_config, train_config = _configs(args)
    out: Path = args.out
    if out.is_dir():
        args._parser.error(f"argument --out: {str(out)!r} is a directory; allowed values: a file path")

    from qshield.data import load_dataset
    from qshield.models import build_model, save_model
    from qshield.training import evaluate_dataset, train

    data_args = {
        "seed": args.seed,
        "test_fraction": args.test_fraction,
        "balance": args.balance,
        "limit_train": args.limit_train,
        "limit_test": args.limit_test,
    }
    try:
        bundle = load_dataset(args.dataset, args.data_root, progress=not args.no_progress, **data_args)
    except (DatasetNotFoundError, DatasetFormatError) as err:
        return _fail(args, err)
    logger.info("loaded %r", bundle)
    model = build_model(model_config, seed=args.seed)
    start = time.perf_counter()
    history = train(model, bundle.train, train_config, progress=not args.no_progress, device=args.device)
    train_seconds = time.perf_counter() - start
    test = evaluate_dataset(model, bundle.test, batch_size=args.batch_size, device=args.device)

    out.parent.mkdir(parents=True, exist_ok=True)
    model.cpu()
    save_model(model, model_config, out)
    record = {
        "format": RECORD_FORMAT,
        "version": 1,
        "model_file": out.name,
        "dataset": bundle.name,
        "data": data_args,
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
        "history": history.epochs,
        "train_seconds": train_seconds,
        "test": {"n": len(bundle.test), **test},
    }
    record_path(out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(
        f"trained {model_config.arch.value} on {bundle.name} ({len(bundle.train)} train images, "
        f"{len(history)} epochs, {train_seconds:.1f} s): test accuracy {100 * test['accuracy']:.2f}% "
        f"on {len(bundle.test)} images\nwrote {out} and {record_path(out)}\n"
    )
    return 0


# ---------------------------------------------------------------------------------------------- evaluate
def _read_record(args: argparse.Namespace, path: Path) -> dict[str, Any] | None:
    rec = record_path(path)
    if not rec.is_file():
        return None
    try:
        data = json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        args._parser.error(f"argument models: cannot read the training record {str(rec)!r}: {err}")
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        args._parser.error(f"argument models: {str(rec)!r} is not a qshield training record")
    return data


def _model_names(paths: Sequence[Path]) -> list[str]:
    """Table names: the file stems, made unique with the parent folder or an index where they collide."""
    names = [p.stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names, start=1)]
    return names


def _data_selection(args: argparse.Namespace, records: list[dict[str, Any] | None]) -> tuple[str, dict[str, Any]]:
    """Dataset name and ``load_dataset`` arguments for the test images, agreeing with the training records."""
    parser = args._parser
    known = [(p, r) for p, r in zip(args.models, records) if r is not None]
    datasets = {r["dataset"] for _, r in known}
    if args.dataset is None:
        if not known or len(known) < len(records):
            missing = [str(p) for p, r in zip(args.models, records) if r is None]
            parser.error(
                f"argument --dataset is required: no training record (<model>.json) for {', '.join(missing)}; "
                f"allowed values: {', '.join(map(repr, available_datasets()))}"
            )
        if len(datasets) > 1:
            parser.error(f"the models were trained on different datasets {sorted(datasets)}; evaluate them separately")
        dataset = datasets.pop()
    else:
        dataset = args.dataset
        for path, r in known:
            if r["dataset"] != dataset:
                parser.error(
                    f"argument --dataset: {dataset!r} but {str(path)} was trained on {r['dataset']!r}; "
                    f"allowed values: {r['dataset']!r}"
                )
    spec = dataset_spec(dataset)
    selection = {"seed": 0, "test_fraction": 0.2, "balance": False}
    if known:
        first = known[0][1]["data"]
        selection = {k: first[k] for k in selection}
        if not spec.official_split:
            for path, r in known[1:]:
                other = {k: r["data"][k] for k in ("seed", "test_fraction")}
                if other != {k: selection[k] for k in other}:
                    parser.error(
                        f"the models were trained on different splits of {dataset!r} ({str(known[0][0])}: "
                        f"{ {k: selection[k] for k in other} }, {str(path)}: {other}); evaluate them separately"
                    )
    if args.seed is not None:
        if known and not spec.official_split and args.seed != selection["seed"]:
            parser.error(
                f"argument --seed: {args.seed} differs from the split seed {selection['seed']} the models were "
                f"trained with; the test split of {dataset!r} (split by seed) would overlap their training data; "
                f"allowed values: {selection['seed']} (or omit --seed)"
            )
        selection["seed"] = args.seed
    return dataset, selection


def _run_evaluate(args: argparse.Namespace) -> int:
    _setup(args)
    parser = args._parser
    for path in args.models:
        if not path.is_file():
            parser.error(f"argument models: {str(path)!r} is not a file")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"argument --out: {str(args.out)!r} exists and is not a directory")
    plot_eps = tuple(args.plot_eps)
    if any(b <= a for a, b in zip(plot_eps, plot_eps[1:])):
        parser.error(f"argument --plot-eps: {list(plot_eps)} is not strictly increasing; allowed values: increasing "
                     "numbers in (0, 1]")
    records = [_read_record(args, p) for p in args.models]
    dataset, selection = _data_selection(args, records)
    eps = args.eps if args.eps is not None else DEFAULT_EPS.get(dataset)
    if eps is None:
        parser.error(f"argument --eps is required: dataset {dataset!r} has no default ε")
    params: dict[str, dict[str, Any]] = {}
    for attack, key, value in args.attack_params:
        params.setdefault(attack, {})[key] = value
    unused = [name for name in params if name not in args.attacks]
    if unused:  # as a search space refuses settings for an attack it does not run
        parser.error(f"argument --set: settings given for an attack that is not evaluated: {', '.join(unused)}; "
                     f"allowed values: the attacks of --attacks ({', '.join(args.attacks)})")
    try:
        attacks = [AttackConfig(name, eps if ATTACKS[name].uses_eps else None, params.get(name, {})).resolve(dataset)
                   for name in args.attacks]
    except ValueError as err:
        parser.error(f"argument --set: {err}")

    from qshield.evaluation import MaskingConfig

    try:
        masking = MaskingConfig(
            n_examples=args.masking_examples,
            eps=eps,
            eps_schedule=plot_eps,
            steps=args.masking_steps,
            square_queries=args.masking_queries,
            seed=args.attack_seed,
            batch_size=args.batch_size,
        )
    except ValueError as err:
        parser.error(f"invalid masking flags: {err}")

    from qshield.models import UnsafeCheckpointError, load_model

    spec = dataset_spec(dataset)
    models = []
    for path in args.models:
        try:
            model, config = load_model(path, map_location=args.device)
        except (UnsafeCheckpointError, ValueError) as err:
            parser.error(f"argument models: {err}")
        expected = (spec.in_channels, spec.image_size, spec.image_size, spec.num_classes)
        got = (*config.input_shape, config.num_classes)
        if got != expected:
            parser.error(
                f"argument models: {str(path)} takes [C, H, W] = {list(config.input_shape)} with "
                f"{config.num_classes} classes but {dataset!r} has {list(expected[:3])} with {expected[3]} classes"
            )
        models.append(model)

    from qshield.data import load_dataset

    try:
        bundle = load_dataset(dataset, args.data_root, limit_test=args.n_examples, progress=not args.no_progress,
                              **selection)
    except (DatasetNotFoundError, DatasetFormatError) as err:
        return _fail(args, err)
    images, labels = bundle.test.tensors
    names = _model_names(args.models)
    reports = _evaluate_models(args, models, names, images, labels, attacks, dataset, masking)
    from qshield.evaluation import write_evaluation

    paths = write_evaluation(reports, args.out)
    table = paths["results_md"].read_text(encoding="utf-8")
    sys.stdout.write(table + "\n" + "".join(f"wrote {p}\n" for p in paths.values()))
    return 0


def _evaluate_models(
    args: argparse.Namespace,
    models: list[Any],
    names: list[str],
    images: Any,
    labels: Any,
    attacks: list[AttackConfig],
    dataset: str,
    masking: Any,
) -> list[Any]:
    from tqdm.auto import tqdm

    from qshield.evaluation import evaluate

    reports = []
    for model, name in tqdm(list(zip(models, names)), desc="models", disable=args.no_progress or len(models) == 1):
        reports.append(
            evaluate(
                model,
                images,
                labels,
                attacks,
                dataset=dataset,
                batch_size=args.batch_size,
                progress=not args.no_progress,
                diagnostics=True,
                masking=masking,
                seed=args.attack_seed,
                model_name=name,
                adaptive=args.adaptive,
            )
        )
    return reports
