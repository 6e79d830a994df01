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


@pytest.fixture(autouse=True)
def _own_log_handlers():
    """Handlers an in-process entry point installs on the ``cryosr`` logger are removed after the test.

    ``cryosr`` commands configure logging once per process; run in-process, one test's handler would
    otherwise write into the next test's captured stderr.
    """
    import logging

    root = logging.getLogger("cryosr")
    before = list(root.handlers)
    yield
    for handler in root.handlers[:]:
        if handler not in before:
            root.removeHandler(handler)
