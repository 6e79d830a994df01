"""Session-wide test settings (helpers live in ``tests.helpers``, fakes in ``tests.fakes``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep each test on at most 2 threads (CI has 2 cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)
