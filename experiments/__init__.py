"""Experiments built on the qshield library: applications of its public API, not part of it.

The library (``qshield/``) and the application (``orchestrator/``) are what the wheel ships; this folder is not
packaged (``pyproject.toml`` includes ``qshield*`` and ``orchestrator*`` only) and runs from a checkout, in the
project's virtual environment. Each experiment imports the library's public API only, and the library never
imports an experiment.

* :mod:`experiments.reproduce`: the QShield paper's MNIST experiment, written to ``docs/reproduction.md``
  (``python -m experiments.reproduce``).
"""
