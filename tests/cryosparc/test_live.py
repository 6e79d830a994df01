"""Following a CryoSPARC Live session (``--follow-session``) against the fake v5 server.

Exposure documents (real cryosparc-tools ``Exposure`` models) appear between polls: the tests' ``sleep``
adds them and moves the fake clock on. The tiny exposures are those of ``test_job.py`` (48 x 64 px,
4 frames, CryoSPARC-style rigid trajectories).
"""

from __future__ import annotations

import signal
from datetime import datetime, timedelta

import numpy as np
import pytest

from tests.helpers import IN_CI

if not IN_CI:  # in CI the extra is required: a missing cryosparc-tools is a collection error there, not a skip
    pytest.importorskip("cryosparc.tools", reason="cryosparc-tools (extra 'cryosparc') not installed")

from cryosparc.models.exposure import (
    Exposure,
    ExposureElement,
    ExposureGroups,
    GainRefBlob,
    MicrographBlob,
    MotionData,
    MovieBlob,
    MScopeParams,
)

from cryosr.cryosparc_plugin import job as job_module
from cryosr.cryosparc_plugin import live
from cryosr.cryosparc_plugin.args import PluginConfig
from cryosr.cryosparc_plugin.main import main
from tests.cryosparc.test_job import ARGS, DOSE, NT, NX, NY, PX, SLOT_DTYPES, make_exposures
from tests.fakes.cryosparc_server import NOW, FakeCryoSPARC, fake_client


def _exposure(dset, i: int, stage: str = "ctf", **kw) -> Exposure:
    """Exposure ``i + 1`` of session S1 as Live stores it, from row ``i`` of a ``make_exposures`` dataset."""
    row = dset[i]
    element = ExposureElement(
        uid=str(int(row["uid"])),
        movie_blob=MovieBlob(format="MRC/2", is_gain_corrected=False, path=row["movie_blob/path"], psize_A=PX,
                             shape=[NT, NY, NX], import_sig=str(int(row["movie_blob/import_sig"]))),
        micrograph_blob=MicrographBlob(format="MRC/2", idx=0, is_background_subtracted=False,
                                       path=row["micrograph_blob/path"], psize_A=PX, shape=[NY, NX]),
        mscope_params=MScopeParams(accel_kv=300.0, cs_mm=2.7, exp_group_id=1, phase_plate=0,
                                   total_dose_e_per_A2=DOSE),
        gain_ref_blob=GainRefBlob(flip_x=0, flip_y=0, idx=0, path=row["gain_ref_blob/path"], rotate_num=0,
                                  shape=[NY, NX]),
        rigid_motion=MotionData(frame_end=NT, frame_start=0, idx=0, path=row["rigid_motion/path"], psize_A=PX,
                                type="rigid", zero_shift_frame=0),
    )  # fmt: skip
    return Exposure(uid=i + 1, project_uid="P3", session_uid="S1", exp_group_id=1, abs_file_path=f"/data/{i}.mrcs",
                    size=1, discovered_at=NOW, stage=stage, groups=ExposureGroups(exposure=element), **kw)  # fmt: skip


class Collection:
    """A session collecting over time: ``sleep`` (between polls) shows the next batch and moves the clock."""

    def __init__(self, fake: FakeCryoSPARC, dset, steps) -> None:
        self.fake, self.dset, self.steps, self.t, self.sleeps = fake, dset, list(steps), 0.0, 0
        fake.add_session("S1")
        self.step()

    def step(self) -> None:
        if self.steps:
            self.steps.pop(0)(self.fake, self.dset)

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.t += seconds
        self.step()


def first_two(fake, dset):
    fake.add_exposures([_exposure(dset, 0), _exposure(dset, 1, "ready"), _exposure(dset, 2, "motion")])


def three_more(fake, dset):
    fake.set_stage("S1", 3, "thumbs")  # motion correction of exposure 3 has finished
    fake.add_exposures([_exposure(dset, 3, "pick"), _exposure(dset, 4)])


def none_new(fake, dset):
    fake.add_exposures([_exposure(dset, 5, failed=True), _exposure(dset, 6, "found")])  # failed / not corrected


SCHEDULE = (first_two, three_more, none_new)


@pytest.fixture
def session(tmp_path, monkeypatch):
    """Project P3 with 7 tiny exposures on disk, a source job J1 (Live's motion correction), session S1."""
    root = tmp_path / "P3"
    root.mkdir()
    fake = FakeCryoSPARC(root)
    fake_client(monkeypatch, fake)
    dset = make_exposures(root, 7)
    fake.add_source_job(dset, dtypes=SLOT_DTYPES)  # stands for the session's own jobs: the External job is J2
    return fake, dset


def _config(**kw) -> PluginConfig:
    base = {"project_uid": "P3", "workspace_uid": "W1", "session_uid": "S1", "url": "http://cs.example:39000",
            "email": "ada@example.com", "password": "pw", "device": "cpu", "method": "fourier",
            "poll_interval_s": 30.0, "idle_timeout_s": 30.0}  # fmt: skip
    return PluginConfig(**{**base, **kw})


def _spy(monkeypatch, fail_at: int | None = None, action=None) -> list[str]:
    """Record the movies given to ``process_superres``; raise at call ``fail_at`` (1-based) or run ``action``."""
    real, calls = job_module.process_superres, []

    def spy(task, config, **kw):
        calls.append(task.movie_path.name)
        if len(calls) == fail_at:
            if action is None:
                raise RuntimeError("worker node lost")
            action()
        return real(task, config, **kw)

    monkeypatch.setattr(job_module, "process_superres", spy)
    return calls


def _saves(fake) -> list[tuple[int, int, str]]:
    """Record (rows, version, job status) of every ``jobs.save_output``."""
    seen, real = [], fake.op_jobs__save_output

    def save(p, q, r):
        result = real(p, q, r)
        seen.append((len(fake.saved[(p["job_uid"], p["output_name"])]), int(q["version"]), fake.jobs[p["job_uid"]]["status"]))  # fmt: skip
        return result

    fake.op_jobs__save_output = save
    return seen


def _movies(dset, idx) -> list[str]:
    return [dset["movie_blob/path"][i].split("/")[-1] for i in idx]


def test_three_polls_bring_2_3_0_and_all_five_are_processed_once_in_order(session, monkeypatch):
    fake, dset = session
    collection = Collection(fake, dset, SCHEDULE)
    calls, saves = _spy(monkeypatch), _saves(fake)
    summary = live.follow(_config(), clock=collection.clock, sleep=collection.sleep)
    assert (summary.polls, summary.saves, summary.n_processed, summary.n_exposures) == (3, 2, 5, 5)
    assert "--idle-timeout" in summary.stopped_by
    assert calls == _movies(dset, range(5))  # once each, in the session's order
    # saved incrementally while the job runs (a picker can start on the first save), whole micrographs only
    assert saves == [(2, 2, "running"), (5, 5, "running")]
    job = summary.job_uid
    assert job == "J2" and fake.jobs[job]["status"] == "completed"
    assert fake.jobs[job]["inputs"] == {}  # fed by the session, not by a job's output
    out = fake.saved[(job, "micrographs")]
    assert out["uid"].tolist() == dset["uid"][:5].tolist()
    assert out["micrograph_blob/shape"].tolist() == [[2 * NY, 2 * NX]] * 5
    np.testing.assert_allclose(out["micrograph_blob/psize_A"], PX / 2, rtol=1e-6)
    assert out["movie_blob/path"].tolist() == dset["movie_blob/path"][:5].tolist()
    assert out["rigid_motion/path"].tolist() == dset["rigid_motion/path"][:5].tolist()
    np.testing.assert_allclose(out["mscope_params/total_dose_e_per_A2"], DOSE)
    for rel in out["micrograph_blob/path"]:
        assert rel.startswith(f"{job}/cryosr/") and (fake.project_dir / rel).is_file()
    slots = {s["name"]: s["dtype"] for s in fake.jobs[job]["outputs"]["micrographs"]["slots"]}
    assert slots["rigid_motion"] == "motion" and slots["micrograph_blob"] == "micrograph_blob"
    texts = [t for level, j, t in fake.events if j == job]
    assert any("poll 2: 3 new motion-corrected" in t for t in texts) and "jobs.add_image_log" in fake.calls


def test_crash_between_saves_loses_nothing_and_resume_skips_what_was_saved(session, monkeypatch):
    fake, dset = session
    collection = Collection(fake, dset, SCHEDULE)
    real = job_module.process_superres
    _spy(monkeypatch, fail_at=5)  # exposures 3 and 4 are written, not saved, when 5 crashes
    with pytest.raises(RuntimeError, match="worker node lost"):
        live.follow(_config(), clock=collection.clock, sleep=collection.sleep)
    assert fake.jobs["J2"]["status"] == "failed"
    assert fake.saved[("J2", "micrographs")]["uid"].tolist() == dset["uid"][:2].tolist()
    written = sorted((fake.project_dir / "J2" / "cryosr").iterdir())
    assert len(written) == 4 and not list((fake.project_dir / "J2").rglob("*.tmp"))  # 1-4, nothing half-written
    stamps = [p.stat().st_mtime_ns for p in written]

    monkeypatch.setattr(job_module, "process_superres", real)
    calls = _spy(monkeypatch)
    again = Collection(fake, dset, ())
    summary = live.follow(_config(resume_job_uid="J2"), clock=again.clock, sleep=again.sleep)
    assert calls == _movies(dset, (2, 3, 4))  # 1 and 2 were saved: not even looked at
    assert (summary.n_processed, summary.n_reused, summary.n_exposures) == (1, 4, 5)  # 3, 4 from their files
    assert [p.stat().st_mtime_ns for p in written] == stamps
    assert fake.saved[("J2", "micrographs")]["uid"].tolist() == dset["uid"][:5].tolist()
    assert fake.jobs["J2"]["status"] == "completed" and fake.calls.count("jobs.create") == 1


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_mid_exposure_saves_the_finished_ones(session, monkeypatch, how):
    fake, dset = session
    collection = Collection(fake, dset, SCHEDULE)
    stop = (lambda: signal.raise_signal(signal.SIGINT)) if how == "ctrl-c" else (lambda: signal.raise_signal(signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    calls = _spy(monkeypatch, fail_at=2, action=stop)  # while exposure 2 is being computed
    summary = live.follow(_config(), clock=collection.clock, sleep=collection.sleep)
    assert summary.stopped_by == ("stopped by Ctrl-C" if how == "ctrl-c" else "stopped by signal SIGTERM")
    assert calls == _movies(dset, (0, 1)) and summary.polls == 1
    assert fake.saved[("J2", "micrographs")]["uid"].tolist() == dset["uid"][:1].tolist()
    assert fake.jobs["J2"]["status"] == "completed"
    assert len(list((fake.project_dir / "J2" / "cryosr").iterdir())) == 1  # exposure 2: no partial file
    assert signal.getsignal(signal.SIGTERM) is before


def test_until_session_end_and_limit_stop_the_follow(session, monkeypatch):
    fake, dset = session
    collection = Collection(fake, dset, SCHEDULE)
    late = datetime(2026, 12, 3, 18, 0)
    summary = live.follow(_config(idle_timeout_s=None, until=late - timedelta(minutes=1)), clock=collection.clock,
                          sleep=collection.sleep, now=lambda: late)  # fmt: skip
    assert summary.polls == 1 and summary.n_exposures == 2 and "--until 2026-12-03 17:59 reached" in summary.stopped_by

    collection.step()  # exposures 3-5
    fake.sessions["S1"] = "completed"  # no exposure will come: the first poll without a new one ends it
    summary = live.follow(_config(idle_timeout_s=None, resume_job_uid="J2"), clock=collection.clock,
                          sleep=collection.sleep)  # fmt: skip
    assert summary.stopped_by == "session S1 is completed" and summary.n_exposures == 5

    summary = live.follow(_config(limit=1), clock=collection.clock, sleep=collection.sleep)
    assert summary.stopped_by == "--limit 1 reached" and summary.n_exposures == 1 and summary.job_uid == "J3"


def test_exposures_are_paged_and_bad_ones_skipped(session, monkeypatch):
    fake, dset = session
    monkeypatch.setattr(live, "PAGE", 2)
    (fake.project_dir / dset["movie_blob/path"][1]).unlink()  # exposure 2's movie is gone
    Collection(fake, dset, [lambda f, d: f.add_exposures([_exposure(d, i) for i in range(5)])])
    summary = live.follow(_config(idle_timeout_s=1.0), sleep=lambda s: None)
    assert fake.calls.count("exposures.find") == 3 * summary.polls  # pages of 2, 2 and 1
    assert fake.saved[("J2", "micrographs")]["uid"].tolist() == [dset["uid"][i] for i in (0, 2, 3, 4)]
    assert any("exposure 2 skipped" in t and "does not exist" in t for _, _, t in fake.events)


def test_nothing_motion_corrected_yet_creates_no_job(session):
    fake, dset = session
    collection = Collection(fake, dset, [lambda f, d: f.add_exposures([_exposure(d, 0, "motion")])])
    summary = live.follow(_config(), clock=collection.clock, sleep=collection.sleep)
    assert summary.job_uid == "" and summary.polls == 2 and "jobs.create" not in fake.calls


def test_command_line(session, monkeypatch, capsys):
    fake, dset = session
    Collection(fake, dset, SCHEDULE[:1])
    monkeypatch.setenv("CRYOSPARC_PASSWORD", "pw")
    for var in ("CRYOSPARC_MASTER_HOSTNAME", "CRYOSPARC_BASE_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert main([*ARGS, "--live", "S1", "--poll-interval", "1", "--idle-timeout", "1", "--device", "cpu"]) == 0
    assert fake.saved[("J2", "micrographs")]["uid"].tolist() == dset["uid"][:2].tolist()
    capsys.readouterr()  # the run's log lines
    for bad, needle in ((["--live", "S9"], "Live session P3-S9"), (["--live", "X1"], "expected S<number>"),
                        (["--live", "S1", "--input", "J1"], "exactly one of"),
                        (["--live", "S1", "--until", "soon"], "--until 'soon'")):  # fmt: skip
        assert main([*ARGS, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err, err
