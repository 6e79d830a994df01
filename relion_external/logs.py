"""Log lines on stdout (RELION appends it to ``<job>/run.out`` and shows its last 20 lines)."""

from __future__ import annotations

import logging
import sys

__all__ = ["FORMAT", "StdoutHandler", "ensure_stdout_logging"]

FORMAT = "cryosr-relion %(levelname)s: %(message)s"


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at emit time (run.out under RELION; captured in tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def ensure_stdout_logging(name: str = "cryosr") -> None:
    """Give logger ``name`` a stdout handler at INFO unless it has one (a fresh Dask worker process).

    Worker processes of a local Dask cluster inherit the parent's stdout, i.e. ``run.out``, but not
    its logging set-up, so their per-micrograph progress lines would otherwise be lost.
    """
    log = logging.getLogger(name)
    if not any(isinstance(h, StdoutHandler) for h in log.handlers):
        log.addHandler(StdoutHandler())
        log.setLevel(min(log.level or logging.INFO, logging.INFO))
