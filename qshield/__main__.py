"""``python -m qshield train|evaluate ...``: the library command line without the orchestrator (see
:mod:`qshield.cli`)."""

from __future__ import annotations

import sys

from qshield.cli import main

if __name__ == "__main__":
    sys.exit(main())
