"""Job status marker files: stale-marker cleanup, success/failure/abort, abort polling, for two callers.

RELION never reads the exit code: only these files in the job directory count (``src/pipeline_control.h``,
identical in 3.1, 4.0 and 5.0). ``RELION_OUTPUT_NODES.star`` is read once, when the success marker
appears, so the success marker is always written last.

The CCP-EM pipeliner (``relion.external`` and the native ``cryosr.*`` jobs) reads only the exit code and
writes its own ``PIPELINER_JOB_EXIT_*`` files; its abort is ``PIPELINER_JOB_ABORT_NOW`` (polled every
5 s by its job runner), then SIGTERM, then SIGKILL 5 s later (``pipeliner/scripts/job_runner.py``). Both
triggers are polled here; the RELION markers are written under both callers (the pipeliner ignores them).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "ABORTED",
    "ABORT_NOW",
    "ABORT_TRIGGERS",
    "EXIT_MARKERS",
    "FAILURE",
    "OUTPUT_NODES",
    "OUTPUT_STAR",
    "PIPELINER_ABORT_NOW",
    "PROVENANCE",
    "SUCCESS",
    "AbortWatcher",
    "JobAborted",
    "JobStatus",
]

SUCCESS = "RELION_JOB_EXIT_SUCCESS"
FAILURE = "RELION_JOB_EXIT_FAILURE"
ABORTED = "RELION_JOB_EXIT_ABORTED"
ABORT_NOW = "RELION_JOB_ABORT_NOW"
#: The pipeliner's abort request: it removes the file itself and SIGTERMs the job (never remove it here).
PIPELINER_ABORT_NOW = "PIPELINER_JOB_ABORT_NOW"
ABORT_TRIGGERS = (ABORT_NOW, PIPELINER_ABORT_NOW)
EXIT_MARKERS = (SUCCESS, FAILURE, ABORTED)
OUTPUT_NODES = "RELION_OUTPUT_NODES.star"
#: The job's output micrographs STAR and provenance record (named here, in a module without torch, for the
#: pipeliner job definitions that register them).
OUTPUT_STAR = "micrographs.star"
PROVENANCE = "cryosr_relion.json"


class JobAborted(Exception):
    """The user pressed "Abort" in RELION or the pipeliner (an abort trigger file appeared)."""


@dataclass(frozen=True)
class JobStatus:
    """Marker files of one job directory.

    Attributes
    ----------
    job_dir : Path
        ``External/jobNNN/``.
    """

    job_dir: Path

    def clear_stale(self) -> list[str]:
        """Remove exit markers and ``RELION_OUTPUT_NODES.star`` left by an earlier run.

        Called before the command line is parsed, so a re-run that fails on a bad flag or bad input does
        not leave an earlier run's output nodes next to ``RELION_JOB_EXIT_FAILURE`` (RELION's "Mark as
        finished" would register them). The abort triggers are kept: they may be fresh abort requests
        made while we started up. The pipeliner's ``PIPELINER_JOB_EXIT_*`` files are its own business.

        Returns
        -------
        removed : list[str]
            Names of the markers removed.
        """
        removed = []
        for name in (*EXIT_MARKERS, OUTPUT_NODES):
            path = self.job_dir / name
            if path.exists():
                path.unlink()
                removed.append(name)
        return removed

    def abort_trigger(self) -> str | None:
        """Name of the abort trigger present (``RELION_JOB_ABORT_NOW`` first), or None."""
        return next((name for name in ABORT_TRIGGERS if (self.job_dir / name).exists()), None)

    def abort_requested(self) -> bool:
        """True when an abort trigger exists (cheap; poll between micrographs or iterations)."""
        return self.abort_trigger() is not None

    def pipeliner_abort(self) -> bool:
        """True when the pipeliner asked for the abort: it will SIGTERM this process itself."""
        return (self.job_dir / PIPELINER_ABORT_NOW).exists()

    def check_abort(self) -> None:
        """Raise ``JobAborted`` if an abort was requested."""
        name = self.abort_trigger()
        if name is not None:
            raise JobAborted(f"{self.job_dir / name} found")

    def mark_success(self) -> None:
        """Touch the success marker: call only after every output and RELION_OUTPUT_NODES.star is in place."""
        self._touch(SUCCESS)

    def mark_failure(self) -> bool:
        """Touch the failure marker (creating the job directory if needed, as RELION would have).

        Returns False when it could not be written (e.g. a read-only directory).
        """
        return self._touch(FAILURE, quiet=True, make_dir=True)

    def mark_aborted(self) -> bool:
        """Touch the aborted marker and remove RELION's abort request, as the RELION documentation asks.

        ``PIPELINER_JOB_ABORT_NOW`` stays: the pipeliner's runner must still find it, or it would take
        our non-zero exit for a failure; it removes the file when the job has ended.
        """
        ok = self._touch(ABORTED, quiet=True)
        try:
            (self.job_dir / ABORT_NOW).unlink(missing_ok=True)
        except OSError as exc:
            logger.error("could not remove %s: %s", self.job_dir / ABORT_NOW, exc)
        return ok

    def _touch(self, name: str, quiet: bool = False, make_dir: bool = False) -> bool:
        try:
            if make_dir:
                self.job_dir.mkdir(parents=True, exist_ok=True)
            (self.job_dir / name).touch()
        except OSError as exc:
            if not quiet:
                raise
            logger.error("could not write %s: %s", self.job_dir / name, exc)
            return False
        return True


def _importing(thread_id: int) -> bool:
    """Whether the thread is inside an import (torch imports modules lazily, e.g. at the first optimiser step).

    An exception raised there would leave a half-initialised module in ``sys.modules`` for the rest of
    the process, so the abort waits until the import has finished.
    """
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Schedule ``exc_type`` in another thread (None: cancel a scheduled one); CPython's async exception."""
    obj = ctypes.py_object(exc_type) if exc_type is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), obj)


class AbortWatcher:
    """Abort polling *inside* long computations (zssr training, network inference), engine-agnostic.

    While the ``with`` block runs, a daemon thread checks for an abort trigger every
    ``interval_s`` seconds; when it appears, ``JobAborted`` is raised in the thread that entered the
    block at its next Python bytecode (CPython's ``PyThreadState_SetAsyncExc``; a long C call such as
    one FFT finishes first). Training loops are Python loops over optimiser steps, so an abort takes
    effect within one step, without a callback in the engine. It waits while that thread is importing
    a module (torch imports some lazily; an exception there would break the module for the rest of the
    process). Outputs are written through ``atomic_path``, whose cleanup runs on any exception, so
    nothing half-written remains.

    Leaving the block cancels a scheduled but undelivered exception under a lock shared with the
    poller, so ``JobAborted`` is raised inside the block or by ``__exit__``, never later.

    Parameters
    ----------
    status : JobStatus
        Marker files of the job directory.
    interval_s : float
        Polling interval in seconds.
    """

    def __init__(self, status: JobStatus, interval_s: float = 0.5) -> None:
        self.status = status
        self.interval_s = interval_s
        self.fired = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._active = False
        self._target = 0
        self._thread: threading.Thread | None = None

    def __enter__(self) -> AbortWatcher:
        self.status.check_abort()
        self._target = threading.get_ident()
        self._active = True
        self._thread = threading.Thread(target=self._poll, name="relion-abort-watch", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.status.abort_requested():
                continue
            with self._lock:
                if not self._active:
                    return
                if _importing(self._target):
                    continue  # try again after the import
                self.fired = True
                _raise_in_thread(self._target, JobAborted)
                return

    def __exit__(self, exc_type, exc, tb) -> bool:
        with self._lock:
            self._active = False
            if self.fired:
                _raise_in_thread(self._target, None)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.fired and exc_type is None:
            self.status.check_abort()
            raise JobAborted(f"{self.status.job_dir}: abort requested")
        return False
