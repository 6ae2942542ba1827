"""Reproduce the QShield paper's MNIST experiment on the offline ``mnist5k`` data and write ``docs/reproduction.md``.

An experiment built on the library, outside it (it was ``qshield.reproduce``): see :mod:`experiments`.

The protocol (QShield, arXiv 2604.10933, "Experiments"), with the reference's settings:

* models: ``DNN`` (the paper's MLP), ``CNN`` (the classical backbone alone) and four hybrids ``None``,
  ``Linear``, ``Star``, ``Full`` = the same CNN + 4 qubits, depth 1, that CNOT pattern, mixed noise p = 0.005,
  no trainable circuit rotations (as the released code), gated fusion;
* training: Adam, lr 1e-3, weight decay 1e-4, batch 128, NLL loss, classes balanced by subsampling;
* attacks: the eight of :data:`qshield.attacks.ATTACKS` with the reference's hyper-parameters, MNIST ε = 32/255;
  ODR = clean accuracy, ASR over the correctly classified test images;
* plus what the paper lacks: the gradient-masking diagnostics on every model
  (:func:`qshield.evaluation.check_gradient_masking`) and counted adversary cost;
* and the paper's claim measured on the paper's own model: ``Ref-Full`` is the reference code's hybrid reproduced
  with its flaws (:class:`~qshield.models.ReferenceHybrid`: random projection per call, circuit outside the
  autograd graph; Full entanglement, the paper's strongest MNIST hybrid), evaluated the naive way the paper did
  (``adaptive="off"``: its rows in the main tables, flagged by the diagnostics) and adaptively (BPDA through its
  differentiable surrogate + EOT, the default for a model that declares hidden parts; a subset of attacks), with a
  verdict per claim (paper vs naive vs adaptive) computed from the numbers.

Sizes are cut so the whole run fits a ~10-minute budget on a 2-core CPU (:class:`ReproductionConfig`: 300
attacked test images, fewer for the costly attacks, and a small CNN instead of ResNet-18); the document says so.

    python -m experiments.reproduce                   # regenerate docs/reproduction.md (+ PNG, CSV)
    python -m experiments.reproduce --help

Modules: ``_paper`` (the paper's published numbers, :data:`PAPER_MNIST_ODR`, :data:`PAPER_MNIST_ASR`,
:data:`PAPER_MNIST_TTC`, :data:`PAPER_MNIST_ATTACK_SECONDS`, clearly labelled: the paper's values, copied from its
tables, never computed here), ``_run`` (the protocol, training and evaluation: :func:`run_reproduction` returns a
:class:`Reproduction`), ``_render`` (the document: :func:`render_reproduction`, :func:`write_reproduction`) and
``_cli`` (the command line, run by ``__main__``). It uses the public API of :mod:`qshield` only.
"""

from ._cli import build_parser, main
from ._paper import PAPER_MNIST_ASR, PAPER_MNIST_ATTACK_SECONDS, PAPER_MNIST_ODR, PAPER_MNIST_TTC, PAPER_SOURCE
from ._render import asr_comparison, render_reproduction, write_reproduction
from ._run import (
    ADAPTIVE_ATTACKS,
    ADAPTIVE_MASKING,
    DEFAULT_ADAPTIVE_EXAMPLES,
    DEFAULT_EXAMPLES_BY_ATTACK,
    MODEL_NAMES,
    REFERENCE_NAME,
    REFERENCE_PAPER_ROW,
    Reproduction,
    ReproductionConfig,
    TrainedModel,
    model_config,
    paper_attack,
    run_reproduction,
)

__all__ = [
    "ADAPTIVE_ATTACKS",
    "ADAPTIVE_MASKING",
    "DEFAULT_ADAPTIVE_EXAMPLES",
    "DEFAULT_EXAMPLES_BY_ATTACK",
    "MODEL_NAMES",
    "REFERENCE_NAME",
    "REFERENCE_PAPER_ROW",
    "PAPER_SOURCE",
    "PAPER_MNIST_ODR",
    "PAPER_MNIST_ASR",
    "PAPER_MNIST_TTC",
    "PAPER_MNIST_ATTACK_SECONDS",
    "ReproductionConfig",
    "TrainedModel",
    "Reproduction",
    "model_config",
    "paper_attack",
    "run_reproduction",
    "asr_comparison",
    "render_reproduction",
    "write_reproduction",
    "build_parser",
    "main",
]
