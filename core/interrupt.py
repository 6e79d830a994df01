"""SIGTERM as an exception, so that a job killed by a scheduler or a workflow engine stops like Ctrl-C.

``scancel``, ``qdel``, ``kill`` and the CCP-EM pipeliner's abort (``PIPELINER_JOB_ABORT_NOW``, then
SIGTERM, then SIGKILL 5 s later) all send SIGTERM. Python's default action ends the process at once,
without running ``finally`` blocks; turned into ``Terminated`` it unwinds the stack instead, so
temporary files are removed and the adapters can record what was finished.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Terminated", "sigterm_as_exception"]


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, so no ``except Exception`` on the way retries the work)."""


def _terminate(signum, frame) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` inside the block (main thread only; restored afterwards).

    Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` inside the block too, whatever handler a library
    installed (dask-jobqueue's, on import, exits the process instead).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
