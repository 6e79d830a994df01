"""Following a CryoSPARC Live session: super-resolve exposures as they are motion-corrected.

``cryosr-cryosparc --follow-session S1`` (alias ``--live``) polls the session's exposures through
cryosparc-tools 5 (``api.exposures.find(project_uid=[...], session_uid=[...], stage=[...])``, paginated)
every ``--poll-interval`` seconds. An exposure counts as motion-corrected once Live has moved it past the
``motion`` stage (``MOTION_DONE_STAGES``) and it has not failed. New ones are processed in the session's
order, one at a time, with the per-exposure pipeline of ``job.py`` (same files, same core call, same
checks), and appended to the ``micrographs`` output of one External job: it is saved after at most
``--save-every`` new micrographs and after every poll, each save holding every micrograph finished so
far, so a picker connected to that output can start while collection goes on.

The External job is created at the first motion-corrected exposure (its slots are those the exposures
carry). Ctrl-C, SIGTERM, ``--until``, ``--idle-timeout``, ``--limit`` or the session being completed stop
the follow: the micrographs finished but not yet saved are saved and the job is marked completed; the
one being computed is dropped (outputs are written atomically), so nothing half-written is registered.
A crash loses nothing either: ``--resume J`` reopens the job, skips what its output holds and reuses the
finished files not yet saved (``--transfer direct``).

Not verified against a real server (see docs/cryosparc_live.md): the exposure document's field values,
which stages Live really passes through, whether a downstream job sees a running External job's later
saves, and whether a completed External job may be marked running again for ``--resume``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import torch

from cryosr.core.device import resolve_device
from cryosr.core.errors import CryosrError, InputError
from cryosr.core.interrupt import Terminated, sigterm_as_exception
from cryosr.cryosparc_plugin.args import PluginConfig
from cryosr.cryosparc_plugin.fields import SrMicrograph, check_exposures, exposure_sources, output_slot_specs
from cryosr.cryosparc_plugin.job import (
    OUTPUT_NAME,
    RunSummary,
    _Files,
    _lookup,
    _output_rows,
    _process_one,
    _Register,
    _running,
    _saved_output,
    _wire_new_job,
)
from cryosr.cryosparc_plugin.session import connect, import_tools

logger = logging.getLogger(__name__)

__all__ = ["MOTION_DONE_STAGES", "SLOT_DTYPES", "FollowSummary", "dataset_uid", "exposures_dataset", "follow",
           "motion_corrected"]  # fmt: skip

#: Live stages after motion correction (``Exposure.stage``; ``api.pyi`` ``ExposuresAPI.find``).
MOTION_DONE_STAGES = ("ctf", "thumbs", "pick", "extract", "extract_manual", "ready")
#: Exposure slots copied into the output and their dtypes (``rigid_motion``'s dtype ``motion`` is unverified).
SLOT_DTYPES = {"movie_blob": "movie_blob", "micrograph_blob": "micrograph_blob", "mscope_params": "mscope_params",
               "gain_ref_blob": "gain_ref_blob", "rigid_motion": "motion"}  # fmt: skip
#: Exposures per ``api.exposures.find`` request.
PAGE = 100
#: Session states after which no exposure will come.
_FINISHED = ("completed", "compacting", "compacted")


@dataclass
class FollowSummary(RunSummary):
    """What a follow did: ``RunSummary`` plus polls, saves and why it stopped."""

    polls: int = 0
    saves: int = 0
    stopped_by: str = ""


def motion_corrected(api, project_uid: str, session_uid: str) -> list:
    """The session's motion-corrected, not failed, not deleted exposures, in the session's order.

    Parameters
    ----------
    api : cryosparc.api.APIClient
        ``cs.api``.
    project_uid, session_uid : str
        ``P3``, ``S1``.

    Returns
    -------
    exposures : list of cryosparc.models.exposure.Exposure
        Sorted by ``Exposure.uid``; only those whose document has a ``micrograph_blob`` or ``movie_blob``.
    """
    found, after = [], None
    while True:
        page = api.exposures.find(project_uid=[project_uid], session_uid=[session_uid],
                                  stage=list(MOTION_DONE_STAGES), limit=PAGE, after=after)  # fmt: skip
        found += page
        if len(page) < PAGE:
            break
        after = page[-1].id
    slots = (e.groups.exposure for e in found)
    ok = [e for e, g in zip(found, slots) if not e.failed and not e.deleted and (g.micrograph_blob or g.movie_blob)]
    return sorted(ok, key=lambda e: e.uid)


def dataset_uid(exposure) -> int:
    """The exposure's dataset uid (``groups.exposure.uid``), or a stable one from project, session and uid."""
    uid = int(exposure.groups.exposure.uid or 0)
    if uid:
        return uid
    key = f"{exposure.project_uid}/{exposure.session_uid}/{exposure.uid}".encode()
    return int.from_bytes(hashlib.sha1(key).digest()[:8], "little") or 1


def _column(field: str, values: list) -> np.ndarray:
    """A dataset column from model values (None where the exposure lacks the slot)."""
    known = [v for v in values if v is not None]
    if field == "import_sig":  # a 64-bit integer sent as a string
        return np.array([int(v or 0) for v in values], dtype=np.uint64)
    if known and all(isinstance(v, list) for v in known):
        width = len(known[0])
        return np.array([v if v is not None else [0] * width for v in values], dtype=np.int64)
    if known and all(isinstance(v, bool | int) for v in known):
        return np.array([int(v or 0) for v in values], dtype=np.int64)
    if known and all(isinstance(v, int | float) for v in known):
        return np.array([float(v or 0) for v in values], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def exposures_dataset(exposures: list, slots: list[str]):
    """An exposure ``Dataset`` (what ``job.load_input`` would give) from Live exposure documents.

    Parameters
    ----------
    exposures : list of Exposure
        From ``motion_corrected``.
    slots : list of str
        Slots to copy (``groups.exposure.<slot>``); every field of each slot's model becomes a column.

    Returns
    -------
    dset : cryosparc.dataset.Dataset
    """
    from cryosparc.dataset import Dataset

    columns: dict = {"uid": np.array([dataset_uid(e) for e in exposures], dtype=np.uint64)}
    for slot in slots:
        blobs = [getattr(e.groups.exposure, slot) for e in exposures]
        model = next((type(b) for b in blobs if b is not None), None)
        for field in model.model_fields if model is not None else ():
            columns[f"{slot}/{field}"] = _column(field, [getattr(b, field) if b is not None else None for b in blobs])
    return Dataset(columns)


class _Follower:
    """State of one follow: the job, what is written and saved, when to stop."""

    def __init__(self, cs, project, config: PluginConfig, device: torch.device, summary: FollowSummary,
                 stack: ExitStack, *, clock: Callable[[], float], sleep: Callable[[float], None],
                 now: Callable[[], datetime]) -> None:  # fmt: skip
        self.cs, self.project, self.config, self.device, self.summary = cs, project, config, device, summary
        self.stack, self.clock, self.sleep, self.now = stack, clock, sleep, now
        self.job = self.files = self.register = self.out = None
        self.slots: list[str] = []
        self.known: dict[int, object] = {}  # dataset uid -> exposure, for every exposure handled or skipped
        self.pending: dict[int, SrMicrograph] = {}  # written, not yet saved
        self.first = None  # this run's first exposure source: the others must have its pixel size
        self.last_new = clock()

    # ---- the job ---------------------------------------------------------------------------------
    def open(self, job) -> None:
        """Start (or restart, ``--resume``) the External job and load what its output holds."""
        self.job = job
        self.summary.job_uid = job.uid
        self.stack.enter_context(_running(job))
        self.out = _saved_output(job)
        self.slots = [r.name for r in job.outputs[OUTPUT_NAME].results]
        self.files = _Files(self.project, job, self.config, self.stack)
        self.summary.transfer = self.files.mode
        self.register = _Register(job, self.files, self.summary, 0)
        saved = self.summary.n_exposures = 0 if self.out is None else len(self.out)
        for note in self.summary.notes:
            job.log(note, level="warning")
        job.log(f"cryosr: following Live session {self.config.session_uid} of {self.config.project_uid}: "
                f"{self.config.method}, device {self.device}, {saved} micrographs saved already")  # fmt: skip

    def _create(self, first) -> None:
        group = first.groups.exposure
        self.slots = [name for name in SLOT_DTYPES if getattr(group, name) is not None]
        out_slots = output_slot_specs([(name, SLOT_DTYPES[name]) for name in self.slots])
        desc = f"cryosr 2x super-resolution ({self.config.method}) following Live session {self.config.session_uid}"
        self.open(_wire_new_job(self.project, self.config, desc, [], out_slots))

    # ---- polling and processing --------------------------------------------------------------------
    def poll(self) -> list:
        """Motion-corrected exposures not handled yet (those the saved output holds count as handled)."""
        self.summary.polls += 1
        exposures = motion_corrected(self.cs.api, self.config.project_uid, self.config.session_uid)
        saved = set() if self.out is None else {int(u) for u in self.out["uid"]}
        fresh = [e for e in exposures if dataset_uid(e) not in self.known]
        for e in fresh:
            if dataset_uid(e) in saved:
                self.known[dataset_uid(e)] = e
                self.summary.n_reused += 1
        return [e for e in fresh if dataset_uid(e) not in saved]

    def process(self, batch: list) -> None:
        """Process a poll's new exposures in order; save every ``save_every`` and at the end."""
        if batch:
            self.last_new = self.clock()
            if self.job is None:
                self._create(batch[0])
            self.job.log(f"cryosr: poll {self.summary.polls}: {len(batch)} new motion-corrected exposure(s)")
        for e in batch:
            if self.config.limit is not None and self._n_done() >= self.config.limit:
                break
            self._one(e)
            if len(self.pending) >= self.config.save_every:
                self.save()
        self.save()

    def _n_done(self) -> int:
        return (0 if self.out is None else len(self.out)) + len(self.pending)

    def _one(self, e) -> None:
        """One exposure; a bad one (missing file, other pixel size) is logged and skipped for good."""
        uid = dataset_uid(e)
        self.known[uid] = e
        try:
            [s] = exposure_sources(exposures_dataset([e], self.slots), prefer=self.config.source)
            self.first = self.first or s
            check_exposures([self.first, s])
            self.files.check_inputs([s], self.config.use_motion)
            self.register.n_todo = self._n_done() + 1
            _process_one(self.files, self.register, self.config, self.device, self._n_done(), s)
        except CryosrError as exc:
            logger.warning("exposure %s: skipped: %s", e.uid, exc)
            self.job.log(f"cryosr: exposure {e.uid} skipped: {exc}", level="warning")
            return
        self.pending[uid] = self.register.written[uid]

    def save(self) -> None:
        """Append the pending micrographs to the output and save it (only whole micrographs)."""
        if not self.pending:
            return
        rows = exposures_dataset([self.known[u] for u in self.pending], self.slots)
        new = _output_rows(self.job, rows, self.pending)
        total = new if self.out is None else self.out.append(new, assert_same_fields=True)
        self.job.save_output(OUTPUT_NAME, total, version=len(total))
        self.out, self.pending = total, {}
        self.summary.saves += 1
        self.summary.n_exposures = len(total)
        self.job.log(f"cryosr: saved {len(total)} micrographs to output '{OUTPUT_NAME}'")

    # ---- stopping --------------------------------------------------------------------------------------
    def stop_reason(self, had_new: bool) -> str:
        """Why the follow should stop after this poll ("" to go on)."""
        config = self.config
        if config.limit is not None and self._n_done() >= config.limit:
            return f"--limit {config.limit} reached"
        if config.until is not None and self.now() >= config.until:
            return f"--until {config.until:%Y-%m-%d %H:%M} reached"
        if config.idle_timeout_s is not None and self.clock() - self.last_new >= config.idle_timeout_s:
            return f"no new exposure for {config.idle_timeout_s:g} s (--idle-timeout)"
        if not had_new:
            session = self.cs.api.sessions.find_one(config.project_uid, config.session_uid)
            if session.status in _FINISHED:
                return f"session {config.session_uid} is {session.status}"
        return ""

    def run(self) -> None:
        """Poll, process and save until a stop condition, Ctrl-C or SIGTERM; then save what is finished."""
        try:
            while True:
                t0 = time.perf_counter()
                batch = self.poll()
                self.process(batch)
                self.summary.seconds += time.perf_counter() - t0
                self.summary.stopped_by = self.stop_reason(bool(batch))
                if self.summary.stopped_by:
                    break
                self.sleep(self.config.poll_interval_s)
        except (KeyboardInterrupt, Terminated) as exc:
            self.summary.stopped_by = f"stopped by {str(exc) or 'Ctrl-C'}"
        if self.job is None:
            return
        self.save()
        self.job.log(f"cryosr: {self.summary.stopped_by}; {self.summary.n_exposures} micrographs in output "
                     f"'{OUTPUT_NAME}' ({self.summary.n_processed} computed, {self.summary.n_reused} reused)")  # fmt: skip


def follow(config: PluginConfig, *, cs=None, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep, now: Callable[[], datetime] = datetime.now) -> FollowSummary:  # fmt: skip
    """Follow ``config.session_uid`` until a stop condition; return what was done.

    Parameters
    ----------
    config : PluginConfig
        With ``session_uid`` set (and optionally ``resume_job_uid``, ``poll_interval_s``,
        ``idle_timeout_s``, ``until``, ``save_every``, ``limit``).
    cs : cryosparc.tools.CryoSPARC | None
        An open session (default: connect with ``config``).
    clock, sleep, now : callable
        Monotonic seconds, waiting between polls and local time (tests pass fakes).

    Returns
    -------
    summary : FollowSummary

    Raises
    ------
    CryosrError
        Unknown project, workspace, session or job (before anything is created).
    """
    import_tools()
    device = resolve_device(config.device)
    notes: list[str] = []
    if cs is None:
        cs, notes = connect(config.url, email=config.email, password=config.password)
    where = f"{config.project_uid}-{config.session_uid}"
    project = _lookup(f"project {config.project_uid}", cs.find_project, config.project_uid)
    _lookup(f"workspace {config.project_uid}-{config.workspace_uid}", project.find_workspace, config.workspace_uid)
    _lookup(f"Live session {where}", cs.api.sessions.find_one, config.project_uid, config.session_uid)
    summary = FollowSummary(job_uid="", notes=notes)
    with ExitStack() as stack, sigterm_as_exception():
        follower = _Follower(cs, project, config, device, summary, stack, clock=clock, sleep=sleep, now=now)
        if config.resume_job_uid:
            job = _lookup(f"External job {config.resume_job_uid}", project.find_external_job, config.resume_job_uid)
            if OUTPUT_NAME not in job.outputs:
                raise InputError(None, f"--resume {job.uid}: it has no '{OUTPUT_NAME}' output (not a cryosr job)")
            follower.open(job)
        follower.run()
    return summary
