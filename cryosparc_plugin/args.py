"""Command-line options of ``cryosr-cryosparc`` and the frozen configuration built from them."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryosr.core.cli.options import add_eer_args
from cryosr.core.errors import InputError
from cryosr.core.superres.reconstruct import DEFAULT_METHOD, METHODS

__all__ = ["PluginConfig", "build_parser", "config_from_args", "parse_input", "parse_until"]

_UID = re.compile(r"^[PJWS]\d+$")
TRANSFERS = ("auto", "direct", "upload")


def parse_until(text: str, now: datetime | None = None) -> datetime:
    """``--until``: ``HH:MM`` (its next occurrence, local time) or an ISO date-time such as ``2026-12-03T18:30``."""
    now = now or datetime.now()
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}", text.strip()):
            hour, minute = (int(v) for v in text.split(":"))
            when = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            return when if when > now else when + timedelta(days=1)
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(None, f"--until {text!r}: expected HH:MM or a date-time such as 2026-12-03T18:30") from None


def parse_input(spec: str) -> tuple[str, str]:
    """``J12`` or ``J12:micrographs`` -> ``("J12", "micrographs")`` (default output ``micrographs``)."""
    job, _, output = spec.partition(":")
    job, output = job.strip(), (output.strip() or "micrographs")
    if not re.fullmatch(r"J\d+", job) or not re.fullmatch(r"[A-Za-z][0-9A-Za-z_]*", output):
        raise InputError(None, f"--input {spec!r}: expected JOB[:OUTPUT], e.g. J12 or J12:micrographs")
    return job, output


@dataclass(frozen=True)
class PluginConfig:
    """Everything one ``cryosr-cryosparc`` run needs (units in names).

    Attributes
    ----------
    url : str | None
        CryoSPARC web URL (``http://host:39000``); None: ``CRYOSPARC_BASE_URL`` or host/port env.
    email : str | None
        Account email; the password comes from ``CRYOSPARC_PASSWORD`` or a saved login session.
    password : str | None
        From the environment only (never a command-line option).
    project_uid, workspace_uid : str
        Where the external job is created.
    input_job_uid, input_output : str
        Source job and output (``J12``, ``micrographs``); ``input_job_uid`` is empty when following a session.
    session_uid : str | None
        Live session to follow (``--follow-session S1``) instead of a source job.
    poll_interval_s : float
        Following: seconds between two looks at the session's exposures.
    idle_timeout_s : float | None
        Following: stop after this many seconds without a newly motion-corrected exposure.
    until : datetime | None
        Following: stop at this local time.
    save_every : int
        Following: save the output after at most this many new micrographs (and after every poll).
    title : str
        External job title.
    resume_job_uid : str | None
        Existing cryosr external job to continue (exposures it saved already are skipped).
    method : str
        Super-resolution method of the core engine.
    source : str
        ``movie`` (multi-frame SR from the movies) or ``micrograph`` (interpolate the micrographs).
    use_motion : bool
        Use CryoSPARC's rigid trajectories when present (else the core estimates shifts).
    device : str
        ``auto``/``cpu``/``cuda:N``.
    transfer : str
        ``direct`` (read/write the project directory), ``upload`` (HTTP), ``auto`` (direct when the
        project directory is reachable from here).
    project_dir : Path | None
        Where the project directory is mounted here, when not at the server's path.
    scratch_dir : Path | None
        Local folder for downloads/uploads in ``upload`` mode (default: a temporary folder).
    limit : int | None
        Process only the first N exposures (tests, trials).
    workers : int
        Parallel worker processes (a Dask LocalCluster through ``MovieRunner``, as
        ``cryosr superres --workers``); 1 = in this process. Needs the project directory here.
    eer_grouping : int
        EER movies: detector frames per fraction (required for EER exposures; 0 = not given).
    eer_upsampling : int | None
        EER movies: 1 or 2; None = the grid of the dataset's ``movie_blob/shape`` (a different value is refused).
    """

    project_uid: str
    workspace_uid: str
    input_job_uid: str = ""
    input_output: str = "micrographs"
    url: str | None = None
    email: str | None = None
    password: str | None = None
    title: str = "cryosr 2x"
    resume_job_uid: str | None = None
    method: str = DEFAULT_METHOD
    source: str = "movie"
    use_motion: bool = True
    device: str = "auto"
    transfer: str = "auto"
    project_dir: Path | None = None
    scratch_dir: Path | None = None
    limit: int | None = None
    workers: int = 1
    session_uid: str | None = None
    poll_interval_s: float = 30.0
    idle_timeout_s: float | None = None
    until: datetime | None = None
    save_every: int = 10
    eer_grouping: int = 0
    eer_upsampling: int | None = None

    def __post_init__(self) -> None:
        self._check_uids()
        self._check_follow()
        if self.transfer not in TRANSFERS:
            raise InputError(None, f"--transfer {self.transfer!r}: use one of {', '.join(TRANSFERS)}")
        if self.source not in ("movie", "micrograph"):
            raise InputError(None, f"--source {self.source!r}: use movie or micrograph")
        if self.method not in known_methods():
            raise InputError(None, f"--method {self.method!r}: use one of {', '.join(known_methods())}")
        if self.limit is not None and self.limit < 1:
            raise InputError(None, f"--limit {self.limit}: must be at least 1")
        if self.workers < 1:
            raise InputError(None, f"--workers {self.workers}: must be at least 1")
        if self.workers > 1 and self.transfer == "upload":
            raise InputError(None, "--workers > 1 needs the project directory here: use --transfer direct or auto")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise InputError(None, f"--url {self.url!r}: give the scheme, e.g. http://{self.url}")

    def _check_uids(self) -> None:
        for opt, value, prefix in (
            ("--project", self.project_uid, "P"),
            ("--workspace", self.workspace_uid, "W"),
            ("--resume", self.resume_job_uid, "J"),
            ("--follow-session", self.session_uid, "S"),
        ):
            if value is not None and not (_UID.fullmatch(value) and value[0] == prefix):
                raise InputError(None, f"{opt} {value!r}: expected {prefix}<number>")
        if bool(self.input_job_uid) == bool(self.session_uid):
            raise InputError(None, "give exactly one of --input JOB[:OUTPUT] or --follow-session SESSION")

    def _check_follow(self) -> None:
        if not self.poll_interval_s >= 1:
            raise InputError(None, f"--poll-interval {self.poll_interval_s:g}: must be at least 1 s")
        if self.idle_timeout_s is not None and not self.idle_timeout_s > 0:
            raise InputError(None, f"--idle-timeout {self.idle_timeout_s:g}: must be positive")
        if self.save_every < 1:
            raise InputError(None, f"--save-every {self.save_every}: must be at least 1")
        if self.session_uid and self.workers > 1:
            raise InputError(None, "--follow-session processes one exposure at a time: leave --workers at 1")


def known_methods() -> tuple[str, ...]:
    """Methods the core super-resolution dispatches (``cryosr.core.superres.reconstruct.METHODS``)."""
    return METHODS


def build_parser() -> argparse.ArgumentParser:
    """The ``cryosr-cryosparc`` argument parser."""
    p = argparse.ArgumentParser(
        prog="cryosr-cryosparc",
        description="Run cryosr 2x super-resolution on the exposures of a CryoSPARC job and save them "
        "as the 'micrographs' output of a new External job (cryosparc-tools 5).",
    )
    con = p.add_argument_group("connection")
    con.add_argument("--url", help="CryoSPARC URL, e.g. http://host:39000 (default: $CRYOSPARC_BASE_URL)")
    con.add_argument(
        "--email",
        default=os.environ.get("CRYOSPARC_EMAIL"),
        help="account email (password from $CRYOSPARC_PASSWORD; or use a saved 'python -m cryosparc.tools login')",
    )
    job = p.add_argument_group("job")
    job.add_argument("--project", required=True, help="project uid, e.g. P3")
    job.add_argument("--workspace", required=True, help="workspace uid, e.g. W1")
    job.add_argument("--input", help="source JOB[:OUTPUT], e.g. J12 or J12:micrographs (or --follow-session)")
    job.add_argument("--title", default="cryosr 2x", help="title of the new External job")
    job.add_argument("--resume", metavar="JOB", help="continue an earlier cryosr External job (skip saved exposures)")
    live = p.add_argument_group("following a Live session (instead of --input)")
    live.add_argument("--follow-session", "--live", dest="follow_session", metavar="SESSION",
                      help="Live session uid, e.g. S1: super-resolve its exposures as they are motion-corrected, "
                      "saving them into one External job as they come")  # fmt: skip
    live.add_argument("--poll-interval", type=float, default=30.0, metavar="SECONDS",
                      help="seconds between two looks at the session (default 30)")  # fmt: skip
    live.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                      help="stop after this long without a new exposure (default: follow until stopped)")  # fmt: skip
    live.add_argument("--until", metavar="TIME", help="stop at this local time: HH:MM or 2026-12-03T18:30")
    live.add_argument("--save-every", type=int, default=10, metavar="N",
                      help="save the output after at most N new micrographs, and after every poll (default 10)")  # fmt: skip
    sr = p.add_argument_group("super-resolution")
    sr.add_argument(
        "--method", default=DEFAULT_METHOD, help=f"core method: {', '.join(known_methods())} (default {DEFAULT_METHOD})"
    )
    sr.add_argument(
        "--source",
        default="movie",
        choices=("movie", "micrograph"),
        help="use the movies (multi-frame) or the micrographs (interpolation only); default movie when present",
    )
    sr.add_argument("--no-motion", action="store_true", help="ignore CryoSPARC rigid trajectories; estimate shifts")
    sr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    sr.add_argument(
        "--workers",
        type=int,
        default=1,
        help="parallel worker processes (Dask LocalCluster, one per GPU with --device auto/cuda; default 1: "
        "this process); needs the project directory here",
    )
    io = p.add_argument_group("files")
    io.add_argument("--transfer", default="auto", choices=TRANSFERS, help="direct, upload or auto (default)")
    io.add_argument("--project-dir", type=Path, help="local mount of the project directory, if not at the server path")
    io.add_argument("--scratch-dir", type=Path, help="local folder for files moved over HTTP (default: temporary)")
    io.add_argument("--limit", type=int, help="process only the first N exposures")
    add_eer_args(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(ns: argparse.Namespace) -> PluginConfig:
    """Build the frozen config from parsed arguments (validated in ``PluginConfig.__post_init__``)."""
    job_uid, output = parse_input(ns.input) if ns.input else ("", "micrographs")
    return PluginConfig(
        project_uid=ns.project,
        workspace_uid=ns.workspace,
        input_job_uid=job_uid,
        input_output=output,
        url=ns.url or os.environ.get("CRYOSPARC_BASE_URL"),
        email=ns.email,
        password=os.environ.get("CRYOSPARC_PASSWORD"),
        title=ns.title,
        resume_job_uid=ns.resume,
        method=ns.method,
        source=ns.source,
        use_motion=not ns.no_motion,
        device=ns.device,
        transfer=ns.transfer,
        project_dir=ns.project_dir,
        scratch_dir=ns.scratch_dir,
        limit=ns.limit,
        workers=ns.workers,
        session_uid=ns.follow_session,
        poll_interval_s=ns.poll_interval,
        idle_timeout_s=ns.idle_timeout,
        until=parse_until(ns.until) if ns.until else None,
        save_every=ns.save_every,
        eer_grouping=ns.eer_grouping,
        eer_upsampling=ns.eer_upsampling,
    )
