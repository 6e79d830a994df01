"""Session-wide test settings (helpers live in ``tests.helpers``, fakes in ``tests.fakes``)."""

from __future__ import annotations

import logging

import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep each test on at most 2 threads (CI has 2 cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


_CRYOSR_HANDLERS = list(logging.getLogger("cryosr").handlers)


@pytest.fixture(autouse=True)
def _own_log_handlers():
    """Handlers an in-process entry point installs on the ``cryosr`` logger are removed after each test.

    ``cryosr`` commands configure logging once per process; run in-process (also from module-scoped
    fixtures), one test's handler would otherwise write into later tests' captured stderr.
    """
    yield
    root = logging.getLogger("cryosr")
    for handler in root.handlers[:]:
        if handler not in _CRYOSR_HANDLERS:
            root.removeHandler(handler)
