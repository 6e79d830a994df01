"""Read-ahead for the in-process loop: pull the next movie file into the page cache in a thread.

The process function reads its own input, so the prefetcher does not hand arrays over; it reads the
next movie's bytes (and its gain reference) once in a background thread while the current movie
is being computed. The read then hits memory instead of the disk or network file system. File
reads release the GIL, so this overlaps I/O with compute without a second process. A file that
cannot be read is ignored here; the process function reports it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from cryosr.core.batch.retry import BatchTask

logger = logging.getLogger(__name__)

__all__ = ["Prefetcher", "read_ahead"]

CHUNK_BYTES = 8 << 20


def read_ahead(paths: list[Path], stop: threading.Event | None = None) -> int:
    """Read ``paths`` start to end and discard the bytes (warms the OS page cache).

    Parameters
    ----------
    paths : list[Path]
        Files to read.
    stop : threading.Event | None
        Set it to abandon the read early.

    Returns
    -------
    n_bytes : int
        Bytes read.
    """
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    total = 0
    for path in paths:
        try:
            with open(path, "rb", buffering=0) as f:
                while not (stop is not None and stop.is_set()):
                    n = f.readinto(view)
                    if not n:
                        break
                    total += n
        except OSError as exc:
            logger.debug("prefetch of %s skipped: %s", path, exc)
    return total


class Prefetcher:
    """One background reader thread at a time; ``start`` the next movie, ``wait`` before reading it."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.n_bytes = 0
        self.seconds = 0.0

    def start(self, task: BatchTask) -> None:
        """Begin reading ``task``'s movie (and gain) in a daemon thread."""
        self.wait()
        paths = [Path(p) for p in task.input_paths]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(paths,), name="cryosr-prefetch", daemon=True)
        self._thread.start()

    def _run(self, paths: list[Path]) -> None:
        t0 = time.perf_counter()
        self.n_bytes += read_ahead(paths, self._stop)
        self.seconds += time.perf_counter() - t0

    def wait(self) -> None:
        """Block until the current read-ahead (if any) is finished."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def cancel(self) -> None:
        """Abandon the current read-ahead and wait for the thread to stop."""
        self._stop.set()
        self.wait()
