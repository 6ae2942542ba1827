"""qshield: hybrid quantum-classical image classifiers and honest adversarial-robustness evaluation."""

from __future__ import annotations

__version__ = "0.1.0"
