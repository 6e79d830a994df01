"""Console script ``cryosr-relion``: cryosr as a RELION External job (MotionCorr -> cryosr -> CtfFind).

RELION runs it from the project directory with stdout appended to ``<job>/run.out`` and stderr to
``<job>/run.err``; only the marker files tell RELION how it ended. Progress and information go to stdout;
the one-line reason of a failure goes to stderr.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import torch

from cryosr.core import __version__
from cryosr.core.errors import CryosrError
from cryosr.relion_external.args import find_output_dir, help_text, parse_args
from cryosr.relion_external.job import run_job
from cryosr.relion_external.status import JobAborted, JobStatus

__all__ = ["main"]

PROG = "cryosr-relion"


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at emit time (run.out under RELION; captured in tests)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


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
    handler = _CurrentStdout()
    handler.setFormatter(logging.Formatter(f"{PROG} %(levelname)s: %(message)s"))
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
        run_job(args, status, argv=argv, project_dir=Path("."))
        status.mark_success()
        return 0
    except JobAborted:
        log.warning("abort requested (RELION_JOB_ABORT_NOW): stopping; finished micrographs are kept for Continue")
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
