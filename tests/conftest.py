"""Suite-wide settings.

The models in the tests are tiny: on a 2-core machine torch's intra-op threads only add contention (measured: a
SmallCNN training step took ~5x longer with 2 threads than with 1 while other processes ran), so the whole suite
runs torch single-threaded. Ray workers started by the sweep tests set their own thread count per trial.
"""

from __future__ import annotations

import pytest
import torch

#: shared session fixtures: the registry of the card and app tests (built once for both modules)
pytest_plugins = ["tests._card_registry"]


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
