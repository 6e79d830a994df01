"""Console script ``cryosr-relion``: cryosr as a RELION External job (MotionCorr -> cryosr -> CtfFind).

RELION runs it from the project directory with stdout appended to ``<job>/run.out`` and stderr to
``<job>/run.err``; only the marker files tell RELION how it ended. Progress and information go to stdout;
the one-line reason of a failure goes to stderr. A SIGTERM (``scancel``, ``qdel``, ``kill``) or Ctrl-C
ends the run like RELION's Abort: ``RELION_JOB_EXIT_ABORTED``, finished micrographs kept for Continue.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import torch

from cryosr.core import __version__
from cryosr.core.errors import CryosrError
from cryosr.relion_external.args import find_output_dir, help_text, parse_args
from cryosr.relion_external.job import run_job
from cryosr.relion_external.logs import StdoutHandler
from cryosr.relion_external.status import JobAborted, JobStatus

__all__ = ["main"]

PROG = "cryosr-relion"


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, so no ``except Exception`` on the way retries the micrograph)."""


def _terminate(signum, frame) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` while the job runs (main thread only; restored afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(status: JobStatus | None, message: str) -> None:
    marker = status is not None and status.mark_failure()
    note = "" if marker or status is None else " (RELION_JOB_EXIT_FAILURE could not be written either)"
    print(f"{PROG}: error: {message}{note}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one External job.

    Parameters
    ----------
    argv : list[str] | None
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    code : int
        0 success, 1 failure or abort, 2 bad input (RELION ignores it; the markers are what counts).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "--help" in argv or "-h" in argv:
        print(help_text())
        return 0
    if "--version" in argv:
        print(f"{PROG} {__version__}")
        return 0
    log = logging.getLogger("cryosr")
    handler = StdoutHandler()
    old_level, old_threads = log.level, torch.get_num_threads()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    out_dir = find_output_dir(argv)
    status = JobStatus(out_dir) if out_dir is not None else None
    try:
        if status is not None and out_dir.is_dir():
            status.clear_stale()
        args = parse_args(argv)
        if args.verbose:
            log.setLevel(logging.DEBUG)
        status = JobStatus(args.out_dir)
        torch.set_num_threads(args.threads)
        with _sigterm_as_exception():
            run_job(args, status, argv=argv, project_dir=Path("."))
        status.mark_success()
        return 0
    except (JobAborted, Terminated, KeyboardInterrupt) as exc:
        why = "abort requested (RELION_JOB_ABORT_NOW)" if isinstance(exc, JobAborted) else f"stopped by {str(exc) or 'Ctrl-C'}"
        log.warning("%s: stopping; finished micrographs are kept for Continue", why)
        if status is not None:
            status.mark_aborted()
        return 1
    except CryosrError as exc:
        _fail(status, str(exc))
        return 2
    except OSError as exc:
        _fail(status, f"{exc.filename or ''}: {exc.strerror or exc}" if exc.filename else str(exc))
        return 1
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        _fail(status, f"internal error: {type(exc).__name__}: {exc}")
        return 1
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        torch.set_num_threads(old_threads)


if __name__ == "__main__":
    sys.exit(main())
