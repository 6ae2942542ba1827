"""The QShield paper's published MNIST numbers: the paper's values, copied verbatim from its tables, never computed
here. Everything computed is in :mod:`._run` (the experiment) and :mod:`._render` (the document).

Source: :data:`PAPER_SOURCE`. Models are the paper's table rows (``DNN``, ``CNN``, the hybrids ``None``,
``Linear``, ``Star``, ``Full``); attacks are :data:`qshield.attacks.PAPER_ATTACKS` names.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["PAPER_SOURCE", "PAPER_MNIST_ODR", "PAPER_MNIST_ASR", "PAPER_MNIST_TTC", "PAPER_MNIST_ATTACK_SECONDS"]

#: Where the numbers below come from.
PAPER_SOURCE = "QShield (Azimi, Prakash, Wang, Xiong, arXiv 2604.10933, 2026), MNIST tables"

#: The paper's clean accuracy (ODR, %) on full MNIST. Published values, copied verbatim.
PAPER_MNIST_ODR: Mapping[str, float] = MappingProxyType(
    {"DNN": 97.09, "CNN": 99.15, "None": 98.21, "Linear": 98.88, "Star": 98.65, "Full": 99.06}
)

_PAPER_ATTACK_ORDER = ("fgsm", "pgd", "apgd", "vmifgsm", "cw", "deepfool", "onepixel", "square")


def _row(*values: float) -> Mapping[str, float]:
    return MappingProxyType(dict(zip(_PAPER_ATTACK_ORDER, values)))


#: The paper's ASR (%) on full MNIST, per model and attack. Published values, copied verbatim.
PAPER_MNIST_ASR: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "DNN": _row(78.06, 62.36, 91.92, 47.34, 91.22, 69.05, 1.15, 76.67),
        "CNN": _row(47.29, 53.39, 89.82, 38.91, 89.82, 83.26, 2.94, 51.81),
        "None": _row(40.64, 45.66, 81.96, 29.68, 18.49, 72.15, 0.68, 9.82),
        "Linear": _row(33.33, 35.83, 74.15, 22.00, 19.05, 71.20, 0.68, 5.90),
        "Star": _row(31.36, 33.18, 75.45, 22.50, 9.77, 75.00, 0.45, 7.50),
        "Full": _row(23.76, 28.73, 75.57, 16.29, 11.09, 76.02, 0.68, 5.66),
    }
)

#: The paper's training + test time (s) on full MNIST (ResNet-18 backbone, 10 epochs). Published values.
PAPER_MNIST_TTC: Mapping[str, float] = MappingProxyType(
    {"DNN": 65.60, "CNN": 194.95, "None": 10783.81, "Linear": 11971.86, "Star": 12205.14, "Full": 13049.79}
)

#: The paper's total attack-generation time (s) on MNIST for the two models it reports. Published values.
PAPER_MNIST_ATTACK_SECONDS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "CNN": _row(3.22, 12.66, 17.48, 88.06, 2250.62, 4130.74, 934.88, 345.73),
        "Full": _row(214.59, 1986.20, 2277.03, 11759.00, 59952.11, 3114.46, 27731.18, 85337.92),
    }
)
