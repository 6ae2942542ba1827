"""The QShield paper's MNIST experiment (moved here from ``qshield.reproduce``; see :mod:`._run`)."""

from ._run import *  # noqa: F403
from ._run import __all__  # noqa: F401
