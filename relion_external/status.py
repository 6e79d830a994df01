"""RELION job status marker files: stale-marker cleanup, success/failure/abort, abort polling.

RELION never reads the exit code: only these files in the job directory count (``src/pipeline_control.h``,
identical in 3.1, 4.0 and 5.0). ``RELION_OUTPUT_NODES.star`` is read once, when the success marker
appears, so the success marker is always written last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["ABORTED", "ABORT_NOW", "EXIT_MARKERS", "FAILURE", "SUCCESS", "JobAborted", "JobStatus"]

SUCCESS = "RELION_JOB_EXIT_SUCCESS"
FAILURE = "RELION_JOB_EXIT_FAILURE"
ABORTED = "RELION_JOB_EXIT_ABORTED"
ABORT_NOW = "RELION_JOB_ABORT_NOW"
EXIT_MARKERS = (SUCCESS, FAILURE, ABORTED)


class JobAborted(Exception):
    """The user pressed "Abort" in RELION (``RELION_JOB_ABORT_NOW`` appeared)."""


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
        """Remove exit markers left by an earlier run (RELION does this too before a launch).

        ``RELION_JOB_ABORT_NOW`` is kept: it may be a fresh abort request made while we started up.

        Returns
        -------
        removed : list[str]
            Names of the markers removed.
        """
        removed = []
        for name in EXIT_MARKERS:
            path = self.job_dir / name
            if path.exists():
                path.unlink()
                removed.append(name)
        return removed

    def abort_requested(self) -> bool:
        """True when ``RELION_JOB_ABORT_NOW`` exists (cheap; poll between micrographs or iterations)."""
        return (self.job_dir / ABORT_NOW).exists()

    def check_abort(self) -> None:
        """Raise ``JobAborted`` if an abort was requested."""
        if self.abort_requested():
            raise JobAborted(f"{self.job_dir / ABORT_NOW} found")

    def mark_success(self) -> None:
        """Touch the success marker: call only after every output and RELION_OUTPUT_NODES.star is in place."""
        self._touch(SUCCESS)

    def mark_failure(self) -> bool:
        """Touch the failure marker (creating the job directory if needed, as RELION would have).

        Returns False when it could not be written (e.g. a read-only directory).
        """
        return self._touch(FAILURE, quiet=True, make_dir=True)

    def mark_aborted(self) -> bool:
        """Touch the aborted marker and remove the abort request, as the RELION documentation asks."""
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
