"""``python -m experiments.reproduce``: run the reproduction and write ``docs/reproduction.md``."""

import sys

from ._run import main

sys.exit(main())
