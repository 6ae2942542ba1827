"""Bad input (issue 6, item 2): one table of bad inputs through the public entry points, each refused before
any compute with an error that names the field and what is allowed.

Entry points: search spaces (``load_space`` / ``parse_space``), ``QuantumLayer``, ``load_dataset``,
``build_attack`` / ``evaluate``, ``load_model``, ``run_trial``, the registry (``load_registered``,
``select_champion``) and the ``qshield`` command line (``orchestrator.cli.main``: ``sweep``, ``select``,
``train``, ``rerun``, ``evaluate``).

Every case states:

* the exception type (for the command line: the exit status, 2 for bad input, and the message on stderr);
* ``field``: text naming the offending key, argument, flag or file;
* ``allowed``: texts stating what is allowed (values, range, format, or what to do);
* ``guards``: the expensive functions that must not run (replaced by ones that fail the test if called):
  training steps, model building, data loading, attacks, circuit backends, a model's forward pass, Ray, the
  sweep driver, the trial runner;

and for every case the test checks that nothing was written: no file under the test's directory appeared or
changed, and (for cases that use MLflow) no run, registered model or version was created in the store.
The valid inputs the bad ones are derived from are checked to pass first (``test_the_valid_inputs_are_valid``),
so each refusal is caused by the one thing the case changes.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from orchestrator.tracking import SelectionError
from orchestrator.space import SpaceError, load_space, parse_space
from qshield.attacks import AttackConfig, build_attack
from qshield.data import DatasetFormatError, DatasetNotFoundError, load_dataset
from qshield.evaluation import evaluate
from qshield.models import ModelConfig, UnsafeCheckpointError, build_model, load_model, save_model
from qshield.quantum import QuantumLayer

# ----------------------------------------------------------------------------------------------------------
# valid inputs the bad ones are derived from

SPACE: dict[str, Any] = {
    "name": "bad-input",
    "dataset": "digits",
    "limit_train": 60,
    "limit_test": 20,
    "seed": 0,
    "parameters": {
        "arch": "hybrid",
        "backbone": "cnn",
        "n_qubits": 4,
        "depth": 1,
        "entanglement": {"choice": ["none", "linear"]},
        "noise": "depolarizing",
        "noise_strength": 0.05,
        "w_q": {"uniform": [0.1, 0.9]},
        "epochs": 1,
        "batch_size": 16,
    },
    "attacks": {"names": ["fgsm", "pgd"], "n_eval": 8, "diagnostics": False, "settings": {"pgd": {"steps": 2}}},
    "resources": {"cpus": 1, "gpus": 0},
    "num_samples": 1,
}
PARAMS: dict[str, Any] = {  # one trial's sampled parameters for SPACE
    "arch": "hybrid", "backbone": "cnn", "n_qubits": 4, "depth": 1, "entanglement": "linear",
    "noise": "depolarizing", "noise_strength": 0.05, "readout_error": 0.0, "measurement": "probs",
    "fusion": "gated", "w_q": 0.5, "backend": "torch", "lr": 1e-3, "weight_decay": 1e-4, "epochs": 1,
    "batch_size": 16, "method": "standard",
}
SMALL_CNN = ModelConfig(arch="cnn", in_channels=1, image_size=8, num_classes=10)
# bytes of one sample's 14-qubit density matrix in complex128: (2^14)^2 amplitudes x 16 bytes
DM14 = f"{16 * (2**14) ** 2 / 2**30:.1f} GiB"


def space(**changes: Any) -> dict[str, Any]:
    """SPACE with top-level keys (or ``"parameters.x"`` / ``"attacks.x"`` keys) replaced or, as None, removed."""
    out = copy.deepcopy(SPACE)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(leaf)
        else:
            node[leaf] = value
    return out


def organ_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny OrganAMNIST archive in the official layout (uint8 28x28 images, [N, 1] labels 0..10)."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (22, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(22).reshape(-1, 1) % 11,
        "val_images": rng.integers(0, 256, (11, 28, 28), dtype=np.uint8),
        "val_labels": np.arange(11).reshape(-1, 1),
        "test_images": rng.integers(0, 256, (11, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(11).reshape(-1, 1),
    }


# ----------------------------------------------------------------------------------------------------------
# the harness


@dataclass
class Ctx:
    tmp: Path
    store: dict[str, Any]
    capsys: pytest.CaptureFixture[str]


class CliExit(Exception):
    """``qshield ...`` ended with a non-zero status; the message is what it wrote to stderr."""

    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(stderr)
        self.code = code


def cli(ctx: Ctx, *argv: str) -> int:
    """Run ``qshield argv`` in-process; raise :class:`CliExit` unless it exits 0."""
    from orchestrator.cli import main

    ctx.capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    if code:
        raise CliExit(code, ctx.capsys.readouterr().err)
    return code


class NoForward(nn.Module):
    """A classifier whose forward pass fails the test: evaluation must refuse before computing anything."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model's forward pass ran: the bad input was not refused before compute")


#: name -> ("module[:Class]", attribute) of expensive functions that a refused input must never reach
GUARDS: dict[str, tuple[str, str]] = {
    "decode_images": ("qshield.data._base:ArraySplit", "read"),
    "digits_loader": ("qshield.data._digits:DigitsLoader", "load"),
    "model_build": ("qshield.models._io", "build_model"),
    "train": ("qshield.training", "train"),
    "trial.train": ("orchestrator.trial", "train"),
    "trial.build_model": ("orchestrator.trial", "build_model"),
    "trial.load_dataset": ("orchestrator.trial", "load_dataset"),
    "load_dataset": ("qshield.data", "load_dataset"),
    "evaluate": ("qshield.evaluation", "evaluate"),
    "make_attack": ("qshield.attacks._build", "make_attack"),
    "quantum_backend": ("qshield.quantum._layer", "get_backend"),
    "run_sweep": ("orchestrator.runtime", "run_sweep"),
    "init_ray": ("orchestrator.runtime._sweep", "init_ray"),
    "ray.init": ("ray", "init"),
    "run_trial": ("orchestrator.trial", "run_trial"),
    "select_champion": ("orchestrator.tracking", "select_champion"),
}


@dataclass(frozen=True)
class Case:
    id: str
    prepare: Callable[[Ctx], Callable[[], Any]]  # writes the case's files, returns the call to make
    error: type[BaseException]
    field: str
    allowed: tuple[str, ...]
    guards: tuple[str, ...] = ()
    exit_code: int | None = None  # command-line cases: the expected exit status
    uses_store: bool = False


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[Ctx], Callable[[], Any]]:
    """A case that needs no files: ``fn(*args, **kwargs)``."""
    return lambda ctx: lambda: fn(*args, **kwargs)


def space_file(text: str) -> Callable[[Ctx], Callable[[], Any]]:
    def prepare(ctx: Ctx) -> Callable[[], Any]:
        path = ctx.tmp / "space.yaml"
        path.write_text(text)
        return lambda: load_space(path)

    return prepare


def organ(**changes: Any) -> Callable[[Ctx], Callable[[], Any]]:
    """load_dataset('organamnist') on an archive with ``changes`` (arrays replaced, or None: key removed)."""

    def prepare(ctx: Ctx) -> Callable[[], Any]:
        arrays = {k: v for k, v in {**organ_arrays(), **changes}.items() if v is not None}
        root = ctx.tmp / "data"
        root.mkdir()
        np.savez(root / "organamnist.npz", **arrays)
        return lambda: load_dataset("organamnist", root, progress=False)

    return prepare


def truncated_npz(ctx: Ctx) -> Callable[[], Any]:
    root = ctx.tmp / "data"
    root.mkdir()
    np.savez(root / "organamnist.npz", **organ_arrays())
    data = (root / "organamnist.npz").read_bytes()
    (root / "organamnist.npz").write_bytes(data[: len(data) // 2])
    return lambda: load_dataset("organamnist", root, progress=False)


def model_file(kind: str) -> Callable[[Ctx], Path]:
    """Write a damaged or unsafe model file; returns its path."""

    def write(ctx: Ctx) -> Path:
        path = ctx.tmp / "model.pt"
        save_model(build_model(SMALL_CNN, seed=0), SMALL_CNN, path)
        data = bytearray(path.read_bytes())
        if kind == "truncated":
            path.write_bytes(bytes(data[: len(data) // 2]))
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "bitflip":  # inside the stored weights: the zip container does not notice
            for i in range(len(data) // 3, len(data) // 3 + 64):
                data[i] ^= 0xFF
            path.write_bytes(bytes(data))
        elif kind == "pickle":
            state = dict(build_model(SMALL_CNN, seed=0).state_dict())
            torch.save({"format": "qshield-model", "version": 1, "config": json.dumps(SMALL_CNN.to_dict()),
                        "state_dict": state, "extra": _Payload(str(ctx.tmp / "payload_ran"))}, path)
        elif kind == "foreign":
            torch.save({"weights": torch.zeros(3)}, path)
        return path

    return write


class _Payload:
    """Unpickling this creates a file (the security tests prove it is live): it must never be unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def load(kind: str) -> Callable[[Ctx], Callable[[], Any]]:
    def prepare(ctx: Ctx) -> Callable[[], Any]:
        path = model_file(kind)(ctx)
        return lambda: load_model(path)

    return prepare


def resume(kind: str, state: str = '{"epoch": 1}') -> Callable[[Ctx], Callable[[], Any]]:
    """run_trial resuming from a checkpoint directory whose model.pt (or trial_state.json) is damaged."""

    def prepare(ctx: Ctx) -> Callable[[], Any]:
        from orchestrator.trial import run_trial

        model_file(kind)(ctx)
        (ctx.tmp / "trial_state.json").write_text(state)
        return lambda: run_trial(PARAMS, parse_space(space(**{"parameters.epochs": 2})), lambda m, c: None,
                                 resume_from=ctx.tmp)

    return prepare


def trial(params: dict[str, Any] | None = None, **space_changes: Any) -> Callable[[Ctx], Callable[[], Any]]:
    def prepare(ctx: Ctx) -> Callable[[], Any]:
        from orchestrator.trial import run_trial

        sp = parse_space(space(**space_changes))
        return lambda: run_trial({**PARAMS, **(params or {})}, sp, lambda m, c: None)

    return prepare


def trial_on_organ(**changes: Any) -> Callable[[Ctx], Callable[[], Any]]:
    """run_trial on an OrganAMNIST data root whose archive has ``changes``."""

    def prepare(ctx: Ctx) -> Callable[[], Any]:
        from orchestrator.trial import run_trial

        organ(**changes)(ctx)
        sp = parse_space(space(dataset="organamnist", data_root=str(ctx.tmp / "data"), limit_train=None,
                               limit_test=None))
        return lambda: run_trial(PARAMS, sp, lambda m, c: None)

    return prepare


def qshield(*argv: str | Callable[[Ctx], str]) -> Callable[[Ctx], Callable[[], Any]]:
    """``qshield argv``; callables in argv are given the context (paths, run ids)."""

    def prepare(ctx: Ctx) -> Callable[[], Any]:
        args = [a(ctx) if callable(a) else a for a in argv]
        return lambda: cli(ctx, *args)

    return prepare


def written_space(**changes: Any) -> Callable[[Ctx], str]:
    def write(ctx: Ctx) -> str:
        path = ctx.tmp / "space.yaml"
        path.write_text(yaml.safe_dump(space(storage_path=str(ctx.tmp / "ray"), **changes)))
        return str(path)

    return write


def tmp(name: str) -> Callable[[Ctx], str]:
    return lambda ctx: str(ctx.tmp / name)


def store(key: str) -> Callable[[Ctx], str]:
    return lambda ctx: ctx.store[key]


def registered(uri: str) -> Callable[[Ctx], Callable[[], Any]]:
    def prepare(ctx: Ctx) -> Callable[[], Any]:
        from orchestrator.tracking import load_registered

        return lambda: load_registered(uri, tracking_uri=ctx.store["uri"])

    return prepare


def champion_of(sweep: str, experiment: str = "qshield") -> Callable[[Ctx], Callable[[], Any]]:
    def prepare(ctx: Ctx) -> Callable[[], Any]:
        from orchestrator.tracking import select_champion

        return lambda: select_champion(sweep, experiment=experiment, tracking_uri=ctx.store["uri"])

    return prepare


ALLOWED_ENTANGLEMENT = ("'none'", "'linear'", "'ring'", "'full'", "'star'", "'brick'")
ALLOWED_NOISE = ("'depolarizing'", "'amplitude_damping'", "'phase_damping'", "'mixed'")
ALLOWED_ATTACKS = ("'fgsm'", "'pgd'", "'apgd'", "'vmifgsm'", "'cw'", "'deepfool'", "'onepixel'", "'square'")
ALLOWED_BACKENDS = ("'torch'", "'qulacs'", "'pennylane'")
ALLOWED_DATASETS = ("'mnist'", "'cifar10'", "'organamnist'", "'cinic10'", "'mnist5k'", "'digits'")
NO_TRAINING = ("trial.train", "trial.build_model")
IMAGES = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2, 3])
NAN_IMAGES = IMAGES.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan")))

CASES: list[Case] = [
    # ---- search spaces: YAML and schema ------------------------------------------------------------------
    Case("space-malformed-yaml", space_file("name: x\ndataset: digits\nparameters: {arch: [hybrid\n"), SpaceError,
         "space.yaml:4", ("malformed YAML", "column")),
    Case("space-duplicate-key", space_file("name: x\nseed: 1\ndataset: digits\nseed: 2\n"), SpaceError,
         "space.yaml:4: seed", ("duplicate key", "first given on line 2")),
    Case("space-empty-file", space_file(""), SpaceError, "space.yaml", ("empty", "name and dataset")),
    Case("space-not-a-mapping", space_file("- name\n- dataset\n"), SpaceError, "space.yaml",
         ("top level must be a mapping", "name, description, dataset")),
    Case("space-unknown-key", call(parse_space, space(epochs=3)), SpaceError, "epochs",
         ("unknown key", "allowed keys: name, description, dataset")),
    Case("space-unknown-parameter", call(parse_space, space(**{"parameters.qbits": 3})), SpaceError,
         "parameters.qbits", ("unknown key", "n_qubits", "entanglement")),
    Case("space-unknown-attack-setting", call(parse_space, space(**{"attacks.settings": {"pgd": {"stepz": 3}}})),
         SpaceError, "attacks.settings.pgd.stepz", ("allowed keys: eps, alpha, steps, random_start, eot_iter",)),
    Case("space-missing-name", call(parse_space, space(name=None)), SpaceError, "name", ("required key",)),
    Case("space-wrong-type-seed", call(parse_space, space(seed="zero")), SpaceError, "seed",
         ("an integer >= 0", "'zero'")),
    Case("space-wrong-type-num-samples", call(parse_space, space(num_samples=2.5)), SpaceError, "num_samples",
         ("an integer >= 1", "2.5")),
    Case("space-wrong-type-depth", call(parse_space, space(**{"parameters.depth": "deep"})), SpaceError,
         "parameters.depth", ("an integer >= 1",)),
    Case("space-ambiguous-list", call(parse_space, space(**{"parameters.entanglement": ["linear", "ring"]})),
         SpaceError, "parameters.entanglement", ("{choice: [...]}",)),
    Case("space-empty-choice", call(parse_space, space(**{"parameters.entanglement": {"choice": []}})), SpaceError,
         "parameters.entanglement.choice", ("non-empty", *ALLOWED_ENTANGLEMENT)),
    Case("space-inverted-uniform", call(parse_space, space(**{"parameters.w_q": {"uniform": [0.9, 0.1]}})),
         SpaceError, "parameters.w_q.uniform", ("empty or inverted range", "lo < hi")),
    Case("space-empty-int-range", call(parse_space, space(**{"parameters.n_qubits": {"int": [4, 4]}})), SpaceError,
         "parameters.n_qubits.int", ("empty or inverted range", "lo < hi")),
    Case("space-loguniform-nonpositive", call(parse_space, space(**{"parameters.lr": {"loguniform": [0, 0.01]}})),
         SpaceError, "parameters.lr.loguniform[0]", ("a number > 0",)),
    Case("space-bound-out-of-range", call(parse_space, space(**{"parameters.noise_strength": {"uniform": [0, 1.5]}})),
         SpaceError, "parameters.noise_strength.uniform[1]", ("[0, 1]",)),
    Case("space-unknown-topology", call(parse_space, space(**{"parameters.entanglement": {"choice": ["mesh"]}})),
         SpaceError, "parameters.entanglement.choice[0]", ALLOWED_ENTANGLEMENT),
    Case("space-unknown-noise", call(parse_space, space(**{"parameters.noise": "thermal"})), SpaceError,
         "parameters.noise", ALLOWED_NOISE),
    Case("space-unknown-attack", call(parse_space, space(**{"attacks.names": ["pgd", "bim"]})), SpaceError,
         "attacks.names[1]", ALLOWED_ATTACKS),
    Case("space-unknown-backend", call(parse_space, space(**{"parameters.backend": "cirq"})), SpaceError,
         "parameters.backend", ALLOWED_BACKENDS),
    Case("space-unknown-dataset", call(parse_space, space(dataset="imagenet")), SpaceError, "dataset",
         ALLOWED_DATASETS),
    # (noisy circuits above 10 qubits are simulated by trajectories and fit the memory budget: issue #13)
    Case("space-too-many-qubits",
         call(parse_space, space(**{"parameters.n_qubits": {"int": [2, 17]}})), SpaceError,
         "parameters.n_qubits", ("2..16", "got 17")),
    Case("space-eps-above-one", call(parse_space, space(**{"attacks.eps": 1.5})), SpaceError, "attacks.eps",
         ("[0, 1]",)),
    Case("space-eps-negative", call(parse_space, space(**{"attacks.settings": {"pgd": {"eps": -0.01}}})),
         SpaceError, "attacks.settings.pgd.eps", ("[0, 1]",)),
    Case("space-n-eval-above-limit-test", call(parse_space, space(**{"attacks.n_eval": 50})), SpaceError,
         "attacks.n_eval", ("1..20",)),
    Case("space-contradictory-constraints",
         call(parse_space, space(constraints={"min_accuracy": 0.9, "max_accuracy": 0.5})), SpaceError,
         "constraints.max_accuracy", ("min_accuracy=0.9 > max_accuracy=0.5",)),
    # ---- quantum layer: refused at construction, before a backend is built -------------------------------
    Case("qlayer-density-matrix-too-large",
         call(QuantumLayer, 14, 1, noise="depolarizing", noise_strength=0.01, simulation="density_matrix"),
         ValueError, "n_qubits=14",
         (f"density matrix of {DM14} per sample", "max_state_bytes", "simulation='trajectories'"),
         guards=("quantum_backend",)),
    Case("qlayer-too-few-qubits", call(QuantumLayer, 1, 1), ValueError, "n_qubits=1", ("2..16",),
         guards=("quantum_backend",)),
    Case("qlayer-unknown-topology", call(QuantumLayer, 4, 1, entanglement="mesh"), ValueError,
         "entanglement='mesh'", ALLOWED_ENTANGLEMENT, guards=("quantum_backend",)),
    Case("qlayer-unknown-noise", call(QuantumLayer, 4, 1, noise="thermal"), ValueError, "noise='thermal'",
         ALLOWED_NOISE, guards=("quantum_backend",)),
    Case("qlayer-unknown-backend", call(QuantumLayer, 4, 1, backend="cirq"), ValueError, "backend='cirq'",
         ALLOWED_BACKENDS),  # the backend lookup itself refuses it
    Case("qlayer-noise-strength-above-one", call(QuantumLayer, 4, 1, noise="depolarizing", noise_strength=1.5),
         ValueError, "noise_strength=1.5", ("[0, 1]",), guards=("quantum_backend",)),
    # ---- datasets ----------------------------------------------------------------------------------------
    Case("data-unknown-dataset", call(load_dataset, "imagenet"), ValueError, "name='imagenet'",
         tuple(sorted(ALLOWED_DATASETS)), guards=("digits_loader",)),
    Case("data-bad-limit", call(load_dataset, "digits", limit_train=0), ValueError, "limit_train=0",
         ("an integer >= 1",), guards=("digits_loader",)),
    Case("data-missing-file", lambda ctx: lambda: load_dataset("organamnist", ctx.tmp / "nowhere", progress=False),
         DatasetNotFoundError, "organamnist.npz", ("never downloads", "curl"), guards=("decode_images",)),
    Case("data-truncated-npz", truncated_npz, DatasetFormatError, "organamnist.npz",
         ("not a readable npz archive", "truncated or corrupted"), guards=("decode_images",)),
    Case("data-missing-array", organ(test_labels=None), DatasetFormatError, "organamnist.npz",
         ("lacks key(s) ['test_labels']",), guards=("decode_images",)),
    Case("data-wrong-image-shape", organ(test_images=np.zeros((11, 32, 32), np.uint8)), DatasetFormatError,
         "[test_images]", ("expected [N, C, H, W] = [N, 1, 28, 28]",), guards=("decode_images",)),
    Case("data-labels-out-of-range", organ(train_labels=np.full((22, 1), 11)), DatasetFormatError,
         "[train_labels]", ("out of range", "allowed 0..10"), guards=("decode_images",)),
    Case("data-image-label-count-mismatch", organ(test_labels=np.arange(10).reshape(-1, 1)), DatasetFormatError,
         "organamnist.npz", ("11 images but 10 labels",), guards=("decode_images",)),
    Case("data-nan-images", organ(train_images=np.where(np.eye(28, dtype=bool), np.nan, 0.5)[None].repeat(22, 0)),
         DatasetFormatError, "[train_images]", ("non-finite", "allowed: finite values in [0, 255]"),
         guards=("decode_images",)),
    # ---- attacks and evaluation: validated before the model runs -----------------------------------------
    Case("attack-unknown", call(build_attack, NoForward(), "bim", eps=0.1), ValueError, "attack='bim'",
         ALLOWED_ATTACKS, guards=("make_attack",)),
    Case("attack-eps-above-one", call(build_attack, NoForward(), "pgd", eps=1.5), ValueError, "eps=1.5",
         ("a number in [0, 1]",), guards=("make_attack",)),
    Case("attack-eps-negative", call(build_attack, NoForward(), "fgsm", eps=-0.01), ValueError, "eps=-0.01",
         ("a number in [0, 1]",), guards=("make_attack",)),
    Case("attack-eps-never-guessed", call(build_attack, NoForward(), "pgd"), ValueError, "attack='pgd' needs eps",
         ("a number in [0, 1]", "'mnist'"), guards=("make_attack",)),
    Case("attack-bad-override", call(build_attack, NoForward(), "pgd", eps=0.1, steps=0), ValueError, "steps=0",
         ("an integer >= 1",), guards=("make_attack",)),
    Case("attack-unknown-override", call(build_attack, NoForward(), "square", eps=0.1, queries=10), ValueError,
         "'queries'", ("n_queries",), guards=("make_attack",)),
    Case("evaluate-eps-above-one", call(evaluate, NoForward(), IMAGES, LABELS, [AttackConfig("pgd")], eps=2.0,
                                        progress=False, diagnostics=False), ValueError, "eps=2.0",
         ("a number in [0, 1]",)),
    Case("evaluate-nan-images", call(evaluate, NoForward(), NAN_IMAGES, LABELS, ["fgsm"], eps=0.1, progress=False,
                                     diagnostics=False), ValueError, "images", ("NaN", "finite numbers in [0, 1]")),
    Case("evaluate-unnormalised-images", call(evaluate, NoForward(), IMAGES * 3, LABELS, ["fgsm"], eps=0.1,
                                              progress=False, diagnostics=False), ValueError, "images",
         ("[0, 1]", "no normalisation")),
    # ---- model files -------------------------------------------------------------------------------------
    Case("model-truncated", load("truncated"), ValueError, "model.pt",
         ("truncated or corrupted", "written by qshield.models.save_model"), guards=("model_build",)),
    Case("model-empty", load("empty"), ValueError, "model.pt", ("truncated or corrupted", "save_model"),
         guards=("model_build",)),
    Case("model-bit-flip", load("bitflip"), ValueError, "model.pt", ("SHA-256", "save_model, unmodified"),
         guards=("model_build",)),
    Case("model-pickled-payload", load("pickle"), UnsafeCheckpointError, "model.pt",
         ("torch.load(weights_only=True)", "nothing in it was run"), guards=("model_build",)),
    Case("model-foreign-file", load("foreign"), ValueError, "model.pt", ("not a qshield model file",),
         guards=("model_build",)),
    Case("model-not-a-file", lambda ctx: lambda: load_model(ctx.tmp / "none.pt"), ValueError, "none.pt",
         ("is not a file", "save_model"), guards=("model_build",)),
    # ---- trials: refused before data is read or a step is trained ----------------------------------------
    Case("trial-resume-truncated-checkpoint", resume("truncated"), ValueError, "model.pt",
         ("truncated or corrupted",), guards=(*NO_TRAINING, "trial.load_dataset")),
    Case("trial-resume-bit-flipped-checkpoint", resume("bitflip"), ValueError, "model.pt", ("SHA-256",),
         guards=(*NO_TRAINING, "trial.load_dataset")),
    Case("trial-resume-bad-epoch", resume("valid", '{"epoch": 7}'), ValueError, "trial_state.json",
         ("epoch=7", "an integer in 0..1"), guards=(*NO_TRAINING, "trial.load_dataset")),
    Case("trial-unknown-topology", trial({"entanglement": "mesh"}), ValueError, "entanglement='mesh'",
         ALLOWED_ENTANGLEMENT, guards=(*NO_TRAINING, "trial.load_dataset")),
    Case("trial-too-many-qubits", trial({"n_qubits": 17}), ValueError, "n_qubits=17",
         ("2..16",), guards=(*NO_TRAINING, "trial.load_dataset")),
    Case("trial-corrupt-dataset", trial_on_organ(train_labels=np.full((22, 1), 12)), DatasetFormatError,
         "[train_labels]", ("allowed 0..10",), guards=NO_TRAINING),
    # ---- registry ----------------------------------------------------------------------------------------
    Case("registry-unknown-model", registered("models:/nope@champion"), SelectionError, "no registered model 'nope'",
         ("allowed values: 'exists'",), uses_store=True),
    Case("registry-alias-missing", registered("models:/exists@champion"), SelectionError,
         "has no alias 'champion'", ("allowed values: none",), uses_store=True),
    Case("registry-version-missing", registered("models:/exists/3"), SelectionError, "has no version '3'",
         ("allowed values: none",), uses_store=True),
    Case("registry-unknown-sweep", champion_of("no-such-sweep"), SelectionError, "'no-such-sweep'",
         ("no finished trials", "run `qshield sweep` first"), uses_store=True),
    Case("registry-unknown-experiment", champion_of("s", experiment="nope"), SelectionError, "'nope'",
         ("does not exist",), uses_store=True),
    # ---- command line: exit status 2 and the message, nothing run ----------------------------------------
    Case("cli-unknown-command", qshield("frobnicate"), CliExit, "COMMAND", ("'sweep'", "'select'", "'train'"),
         exit_code=2),
    Case("cli-sweep-needs-space", qshield("sweep"), CliExit, "--space", ("required",), exit_code=2,
         guards=("run_sweep", "init_ray", "ray.init")),
    Case("cli-sweep-bad-space", qshield("sweep", "--space", written_space(**{"parameters.noise": "thermal"})),
         CliExit, "parameters.noise", ALLOWED_NOISE, exit_code=2, guards=("run_sweep", "init_ray", "ray.init")),
    Case("cli-sweep-missing-space-file", qshield("sweep", "--space", tmp("none.yaml")), CliExit, "none.yaml",
         ("no such file", "mnist5k-demo"), exit_code=2, guards=("run_sweep", "init_ray", "ray.init")),
    Case("cli-sweep-bad-num-samples", qshield("sweep", "--space", written_space(), "--num-samples", "many"),
         CliExit, "--num-samples", ("an integer >= 1",), exit_code=2, guards=("run_sweep", "init_ray", "ray.init")),
    Case("cli-sweep-zero-num-cpus", qshield("sweep", "--space", written_space(), "--num-cpus", "0"),
         CliExit, "--num-cpus", ("an integer >= 1",), exit_code=2, guards=("run_sweep", "init_ray", "ray.init")),
    # trials a local Ray could never place would wait forever, with the lease taken and a parent run RUNNING
    Case("cli-sweep-cpus-beyond-local-ray",
         qshield("sweep", "--space", written_space(**{"resources.cpus": 64}), "--num-cpus", "2"),
         CliExit, "resources.cpus=64", ("at most 2", "RAY_ADDRESS"), exit_code=2, guards=("init_ray", "ray.init")),
    Case("cli-sweep-gpus-beyond-local-ray",
         qshield("sweep", "--space", written_space(**{"resources.gpus": torch.cuda.device_count() + 1})),
         CliExit, "resources.gpus=", (f"at most {torch.cuda.device_count()} here", "RAY_ADDRESS"), exit_code=2,
         guards=("init_ray", "ray.init")),
    Case("cli-select-unknown-rule", qshield("select", "--sweep", "s", "--rule", "best"), CliExit, "--rule",
         ("'knee'", "'weighted'", "'constrained_best'"), exit_code=2, guards=("select_champion",)),
    Case("cli-select-bad-weights", qshield("select", "--sweep", "s", "--rule", "weighted", "--weights", "accuracy"),
         CliExit, "--weights", ("metric=weight pairs",), exit_code=2, guards=("select_champion",)),
    Case("cli-train-unknown-dataset", qshield("train", "--dataset", "imagenet", "--out", tmp("m.pt")), CliExit,
         "--dataset", ("'digits'", "'mnist5k'", "'organamnist'"), exit_code=2, guards=("train", "load_dataset")),
    Case("cli-train-needs-dataset", qshield("train", "--out", tmp("m.pt")), CliExit, "--dataset",
         ("required",), exit_code=2, guards=("train", "load_dataset")),
    Case("cli-train-noise-strength", qshield("train", "--dataset", "digits", "--out", tmp("m.pt"),
                                             "--noise-strength", "1.5"), CliExit, "--noise-strength",
         ("[0.0, 1.0]",), exit_code=2, guards=("train", "load_dataset")),
    Case("cli-train-too-many-qubits",
         qshield("train", "--dataset", "digits", "--out", tmp("m.pt"), "--n-qubits", "17", "--noise",
                 "depolarizing", "--noise-strength", "0.01"), CliExit, "n_qubits=17",
         ("2..16",), exit_code=2, guards=("train", "load_dataset")),
    Case("cli-evaluate-eps-above-one", qshield("evaluate", tmp("m.pt"), "--out", tmp("results"), "--eps", "2"),
         CliExit, "--eps", ("[0, 1]",), exit_code=2, guards=("evaluate", "load_dataset")),
    Case("cli-evaluate-corrupt-model",
         lambda ctx: (model_file("truncated")(ctx), qshield("evaluate", tmp("model.pt"), "--out", tmp("results"),
                                                             "--dataset", "digits")(ctx))[1],
         CliExit, "model.pt", ("truncated or corrupted",), exit_code=2, guards=("evaluate", "load_dataset")),
    Case("cli-rerun-unknown-run", qshield("rerun", "0123456789abcdef", "--tracking-uri", store("uri")), CliExit,
         "RUN_ID='0123456789abcdef'", ("no such MLflow run", "a finished sweep trial"), exit_code=2,
         guards=("run_trial",), uses_store=True),
    Case("cli-rerun-not-a-trial", qshield("rerun", store("parent"), "--tracking-uri", store("uri")),
         CliExit, "RUN_ID=", ("is not a sweep trial", "a finished sweep trial"), exit_code=2,
         guards=("run_trial",), uses_store=True),
    Case("cli-rerun-unfinished-trial", qshield("rerun", store("running"), "--tracking-uri", store("uri")), CliExit,
         "RUN_ID=", ("did not finish", "a finished sweep trial"), exit_code=2, guards=("run_trial",),
         uses_store=True),
    Case("cli-rerun-no-store", qshield("rerun", "abc", "--tracking-uri",
                                       lambda ctx: f"sqlite:///{ctx.tmp / 'none.db'}"), CliExit,
         "--tracking-uri=", ("no MLflow store", "the tracking URI the sweep logged to"), exit_code=2,
         guards=("run_trial",)),
    Case("cli-train-from-run-moved", qshield("train", "--from-run", "abc", "--dataset", "digits", "--lr", "0.1"),
         CliExit, "--from-run", ("its own command now", "qshield rerun abc"), exit_code=2,
         guards=("run_trial", "train")),
    Case("cli-evaluate-settings-of-an-attack-not-run",
         lambda ctx: (model_file("valid")(ctx), qshield("evaluate", tmp("model.pt"), "--out", tmp("results"),
                                                         "--dataset", "digits", "--attacks", "fgsm", "--set",
                                                         "pgd.steps=3")(ctx))[1],
         CliExit, "--set", ("not evaluated: pgd", "the attacks of --attacks (fgsm)"), exit_code=2,
         guards=("evaluate", "load_dataset")),
    Case("cli-sweep-abbreviated-flag", qshield("sweep", "--space", written_space(), "--num-sample", "3"),
         CliExit, "--num-sample", ("unrecognized arguments",), exit_code=2, guards=("run_sweep", "init_ray")),
    Case("cli-sweep-space-is-a-folder", qshield("sweep", "--space", tmp("")), CliExit, "is a folder",
         ("a path to a .yaml file", "mnist5k-demo"), exit_code=2, guards=("run_sweep", "init_ray")),
    Case("cli-sweep-space-not-utf8",
         lambda ctx: ((ctx.tmp / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1")),
                      qshield("sweep", "--space", tmp("latin1.yaml"))(ctx))[1],
         CliExit, "latin1.yaml", ("not UTF-8 text", "a YAML file in UTF-8"), exit_code=2, guards=("run_sweep",)),
    Case("cli-sweep-file-store", qshield("sweep", "--space", written_space(), "--tracking-uri", tmp("mlruns")),
         CliExit, "mlruns", ("is a file store", "sqlite:///"), exit_code=2, guards=("init_ray", "ray.init")),
    Case("cli-sweep-empty-experiment", qshield("sweep", "--space", written_space(), "--experiment", ""),
         CliExit, "--experiment", ("Invalid experiment name",), exit_code=2, guards=("run_sweep",)),
    Case("cli-sweep-select-bad-model-name",
         qshield("sweep", "--space", written_space(), "--select", "--model-name", "a/b:c"),
         CliExit, "--model-name", ("cannot contain '/' or ':'",), exit_code=2, guards=("run_sweep",)),
    Case("cli-select-no-store", qshield("select", "--sweep", "s", "--tracking-uri",
                                        lambda ctx: f"sqlite:///{ctx.tmp / 'none.db'}"), CliExit,
         "none.db", ("no MLflow store", "the tracking URI the sweep logged to"), exit_code=2,
         guards=("select_champion",)),
    Case("cli-card-no-store", qshield("card", "models:/m@champion", "--tracking-uri",
                                      lambda ctx: f"sqlite:///{ctx.tmp / 'none.db'}"), CliExit,
         "none.db", ("no MLflow store",), exit_code=2),
    Case("cli-demo-workdir-is-a-file",
         lambda ctx: ((ctx.tmp / "taken").write_text("x"), qshield("demo", "--workdir", tmp("taken"))(ctx))[1],
         CliExit, "--workdir", ("is a file", "a folder"), exit_code=2, guards=("run_sweep", "init_ray")),
]


# ----------------------------------------------------------------------------------------------------------
# fixtures and the test


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A sqlite MLflow store with a sweep parent run, an unfinished trial run and a model without aliases."""
    from mlflow import MlflowClient

    from orchestrator.tracking import SweepTracker

    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # a sqlite store keeps its artifacts under ./mlruns
        mp.setenv("QSHIELD_GIT_SHA", "test")
        uri = f"sqlite:///{root / 'mlflow.db'}"
        tracker = SweepTracker("s", "qshield", uri, retries=0)
        parent = tracker.parent_run_id()
        running = tracker.trial_run_id("s_00000", params=PARAMS)
        client = MlflowClient(uri)
        client.create_registered_model("exists")
    return {"uri": uri, "parent": parent, "running": running, "client": client, "root": root}


def store_state(store: dict[str, Any]) -> tuple[int, list[str], int]:
    client = store["client"]
    runs = sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())
    models = sorted(m.name for m in client.search_registered_models())
    versions = len(client.search_model_versions())
    return runs, models, versions


def files_under(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def forbid(name: str) -> Callable[..., Any]:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} ran: the bad input was not refused before compute")

    return forbidden


@pytest.fixture
def ctx(tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> Ctx:
    case = request.node.callspec.params.get("case") if hasattr(request.node, "callspec") else None
    store = request.getfixturevalue("mlflow_store") if case is not None and case.uses_store else {}
    return Ctx(tmp_path, store, capsys)


def test_the_table_is_large_and_covers_every_entry_point() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    prefixes = {c.id.split("-")[0] for c in CASES}
    assert prefixes >= {"space", "qlayer", "data", "attack", "evaluate", "model", "trial", "registry", "cli"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_before_compute(case: Case, ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    if "ray.init" in case.guards:
        pytest.importorskip("ray")
    monkeypatch.chdir(ctx.tmp)
    thunk = case.prepare(ctx)
    for name in case.guards:  # from here on, the expensive functions fail the test if called
        module, attr = GUARDS[name]
        module, _, cls = module.partition(":")
        target = importlib.import_module(module)
        monkeypatch.setattr(getattr(target, cls) if cls else target, attr, forbid(name))
    before_files = files_under(ctx.tmp)
    before_store = store_state(ctx.store) if case.uses_store else None

    with pytest.raises(case.error) as info:
        thunk()

    message = str(info.value)
    if case.exit_code is not None:
        assert info.value.code == case.exit_code, message
    assert case.field in message, f"the message does not name {case.field!r}: {message}"
    for text in case.allowed:
        assert text in message, f"the message does not say {text!r}: {message}"
    assert "Traceback" not in message
    # nothing was written: no file appeared or changed, no MLflow run / model / version was created
    assert files_under(ctx.tmp) == before_files
    if before_store is not None:
        assert store_state(ctx.store) == before_store
    assert not (ctx.tmp / "payload_ran").exists()


# ----------------------------------------------------------------------------------------------------------
# the valid inputs pass (so each case fails for the one thing it changes)


def test_the_valid_inputs_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import build_parser
    from orchestrator.trial import plan_trial
    from qshield.data import dataset_spec

    monkeypatch.chdir(tmp_path)
    sp = parse_space(SPACE)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    assert load_space(tmp_path / "space.yaml") == sp
    assert plan_trial(PARAMS, sp, dataset_spec("digits")).model.n_qubits == 4
    QuantumLayer(4, 1, entanglement="linear", noise="depolarizing", noise_strength=0.05)
    ctx = Ctx(tmp_path, {}, capsys)
    assert len(organ()(ctx)().test) == 11
    model, config = load_model(model_file("valid")(ctx))
    assert config == SMALL_CNN
    build_attack(model, "pgd", eps=0.1, steps=2)
    report = evaluate(model, IMAGES, LABELS, [AttackConfig("fgsm")], eps=0.1, progress=False, diagnostics=False)
    assert report.results[0].n_total == 4
    parser = build_parser()
    parser.parse_args(["sweep", "--space", str(tmp_path / "space.yaml"), "--num-samples", "2"])
    parser.parse_args(["select", "--sweep", "s", "--rule", "weighted", "--weights", "accuracy=1,asr=1"])
    parser.parse_args(["train", "--dataset", "digits", "--out", "m.pt", "--noise-strength", "0.5"])
    parser.parse_args(["rerun", "abc", "--tracking-uri", "sqlite:///x.db"])
    parser.parse_args(["evaluate", "m.pt", "--out", "r", "--eps", "8/255"])
