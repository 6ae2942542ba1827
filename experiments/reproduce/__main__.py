"""``python -m experiments.reproduce``: run the reproduction and write ``docs/reproduction.md`` (see ``--help``)."""

import sys

from ._cli import main

sys.exit(main())
