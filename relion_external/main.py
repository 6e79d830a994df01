"""Console script ``cryosr-relion``: cryosr as a RELION External job (MotionCorr -> cryosr -> CtfFind).

RELION runs it from the project directory with stdout appended to ``<job>/run.out`` and stderr to
``<job>/run.err``; only the marker files tell RELION how it ended. Progress and information go to stdout;
the one-line reason of a failure goes to stderr. A SIGTERM (``scancel``, ``qdel``, ``kill``) or Ctrl-C
ends the run like RELION's Abort: ``RELION_JOB_EXIT_ABORTED``, finished micrographs kept for Continue.

The CCP-EM pipeliner runs the same command (as ``relion.external`` or for the native ``cryosr.*``
jobs) and reads only the exit code: 0 is success. Its abort is ``PIPELINER_JOB_ABORT_NOW``, then SIGTERM:
the computation stops at the trigger, and the process then waits for the SIGTERM (at most
``PIPELINER_GRACE_S``) so that the pipeliner records "Aborted" rather than a failed command.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path

import torch

from cryosr.core import __version__
from cryosr.core.errors import CryosrError
from cryosr.core.interrupt import Terminated, sigterm_as_exception
from cryosr.relion_external.args import find_output_dir, help_text, parse_args
from cryosr.relion_external.job import run_job
from cryosr.relion_external.logs import StdoutHandler
from cryosr.relion_external.status import JobAborted, JobStatus

__all__ = ["main"]

PROG = "cryosr-relion"
#: Seconds to wait for the pipeliner's SIGTERM after ``PIPELINER_JOB_ABORT_NOW`` (its runner polls every 5 s).
PIPELINER_GRACE_S = 30.0


def _fail(status: JobStatus | None, message: str) -> None:
    marker = status is not None and status.mark_failure()
    note = "" if marker or status is None else " (RELION_JOB_EXIT_FAILURE could not be written either)"
    print(f"{PROG}: error: {message}{note}", file=sys.stderr, flush=True)


def _stopped(status: JobStatus | None, exc: BaseException) -> int:
    """End an aborted or terminated run: ``RELION_JOB_EXIT_ABORTED``, then (pipeliner abort) await SIGTERM."""
    log = logging.getLogger("cryosr")
    trigger = status.abort_trigger() if status is not None else None
    why = f"abort requested ({trigger})" if isinstance(exc, JobAborted) else f"stopped by {str(exc) or 'Ctrl-C'}"
    log.warning("%s: stopping; finished micrographs are kept for Continue", why)
    if status is None:
        return 1
    pipeliner = isinstance(exc, JobAborted) and status.pipeliner_abort()
    status.mark_aborted()
    if pipeliner:
        _await_sigterm(status, PIPELINER_GRACE_S)
    return 1


def _await_sigterm(status: JobStatus, grace_s: float) -> None:
    """Idle until the pipeliner's SIGTERM, its trigger's removal (runner gone) or ``grace_s`` seconds.

    Exiting on our own before its runner polls the trigger again would be read as a failed command.
    """
    deadline = time.monotonic() + grace_s
    try:
        with sigterm_as_exception():
            while time.monotonic() < deadline and status.pipeliner_abort():
                time.sleep(0.1)
    except (Terminated, KeyboardInterrupt):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one External job.

    Parameters
    ----------
    argv : list[str] | None
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    code : int
        0 success, 1 failure or abort, 2 bad input (RELION ignores it and reads the markers; the pipeliner
        reads it).
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
        with sigterm_as_exception():
            run_job(args, status, argv=argv, project_dir=Path("."))
        status.mark_success()
        return 0
    except (JobAborted, Terminated, KeyboardInterrupt) as exc:
        return _stopped(status, exc)
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
