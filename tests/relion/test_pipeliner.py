"""cryosr under the real CCP-EM pipeliner (ccpem-pipeliner 1.6.1, the engine behind Doppio).

A project is made with the pipeliner's own API on a tiny MotionCorr-style output (``make_project``: 32 px
movies, 4-6 frames, RELION motion metadata); jobs run through ``PipelinerProject.run_job`` in the
foreground, i.e. the pipeliner's real job runner starts our command in a subprocess, reads its exit
code, aborts it through ``PIPELINER_JOB_ABORT_NOW`` + SIGTERM and registers the output nodes in
``default_pipeline.star``. Two job forms: the native ``cryosr.superres`` job (entry point of this
package) and ``cryosr-relion`` as a ``relion.external`` job.

Skipped without the ``pipeliner`` extra, except in CI, where it must be installed (see
``test_pipeliner_extra.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import IN_CI

if not IN_CI:  # in CI the extra is required: a missing ccpem-pipeliner is a collection error there, not a skip
    pytest.importorskip("pipeliner.api.manage_project", reason="ccpem-pipeliner (extra 'pipeliner') not installed")

from pipeliner import user_settings
from pipeliner.api.manage_project import PipelinerProject
from pipeliner.job_factory import new_job_of_type
from pipeliner.starfile_handler import JobStar

from cryosr.core.io import read_mrc_header, read_star
from cryosr.relion_external.args import PARAMS, JobArgs
from tests.relion.test_job import make_project

pytestmark = pytest.mark.slow

MICS = "MotionCorr/job002/corrected_micrographs.star"
BIN = Path(sys.executable).parent
#: Seconds between our first log line and the abort request.
SETTLE_S = 6.0


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A new pipeliner project around a MotionCorr output; returns a function making it (n, frames)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the pipeliner's settings file
    monkeypatch.setattr(user_settings, "_settings", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ.get('PATH', '')}")
    monkeypatch.chdir(tmp_path)

    def make(n: int = 2, t: int = 4) -> PipelinerProject:
        make_project(tmp_path, n=n, t=t)
        Path("default_pipeline.star").unlink()  # make_project's RELION 3.1 pipeline; the pipeliner makes its own
        return PipelinerProject(make_new_project=True)

    return make


def _pipeline() -> tuple[dict, dict]:
    """Process statuses and node types of the project's ``default_pipeline.star``."""
    blocks = read_star("default_pipeline.star")
    procs = blocks["pipeline_processes"].set_index("rlnPipeLineProcessName")["rlnPipeLineProcessStatusLabel"]
    nodes = blocks["pipeline_nodes"].set_index("rlnPipeLineNodeName")["rlnPipeLineNodeTypeLabel"]
    return procs.to_dict(), nodes.to_dict()


def _check_outputs(job: str) -> None:
    """Pixel size halved, every other optics column kept, 2x micrographs at the halved pixel size."""
    before, after = read_star(MICS), read_star(f"{job}micrographs.star")
    assert after["optics"]["rlnMicrographPixelSize"].tolist() == [0.5]
    kept = [c for c in before["optics"].columns if c != "rlnMicrographPixelSize"]
    assert after["optics"][kept].equals(before["optics"][kept])
    assert after["optics"]["rlnMicrographOriginalPixelSize"].tolist() == [1.0]
    names = after["micrographs"]["rlnMicrographName"].tolist()
    assert names == [f"{job}Movies/day1/mov_0{i}.mrc" for i in range(len(names))]
    for name in names:
        header = read_mrc_header(name)
        assert header["shape"] == (1, 64, 64) and header["pixel_size_a"] == pytest.approx(0.5)


def test_native_superres_job_registers_its_node_shows_results_and_continues(project):
    proj = project()
    job = proj.run_job({"_rlnJobTypeLabel": "cryosr.superres", "in_mics": MICS, "method": "fourier"},
                       run_in_foreground=True).output_dir  # fmt: skip
    assert job == "CryoSR/job001/"
    assert Path(job, "PIPELINER_JOB_EXIT_SUCCESS").exists(), Path(job, "run.err").read_text()
    procs, nodes = _pipeline()
    assert procs[job] == "Succeeded"
    assert nodes[f"{job}micrographs.star"] == "MicrographGroupMetadata.star.relion.cryosr"
    assert nodes[MICS].startswith("MicrographGroupMetadata.star.relion")  # the input edge
    _check_outputs(job)
    note = Path(job, "note.txt").read_text()
    assert f"-m cryosr.relion_external.main --o {job} --in_mics {MICS} --method fourier --j 1" in note

    displays = proj.get_job(job).save_results_display_files()
    assert [d.dobj_type for d in displays] == ["image", "graph"], [getattr(d, "reason", "") for d in displays]
    assert Path(displays[0].image_path).stat().st_size > 1000
    x_in, x_out = displays[1].xvalues  # the output's spectrum reaches twice the input's Nyquist (1/Å)
    assert max(x_in) == pytest.approx(0.5, abs=0.02) and max(x_out) == pytest.approx(1.0, abs=0.02)

    # Continue (the pipeliner's resume): a finished micrograph is skipped, a missing one recomputed
    Path(job, "Movies/day1/mov_01.mrc").unlink()
    proj.continue_job(job, run_in_foreground=True)
    assert Path(job, "PIPELINER_JOB_EXIT_SUCCESS").exists(), Path(job, "run.err").read_text()
    records = json.loads(Path(job, "cryosr_relion.json").read_text())["micrographs"]
    assert [r["skipped"] for r in records] == [True, False]
    assert _pipeline()[0][job] == "Succeeded"
    _check_outputs(job)


def test_native_enhance_job(project):
    proj = project(n=1, t=6)  # the shipped network looks at 5 frames
    job = proj.run_job({"_rlnJobTypeLabel": "cryosr.enhance", "in_mics": MICS}, run_in_foreground=True).output_dir
    assert Path(job, "PIPELINER_JOB_EXIT_SUCCESS").exists(), Path(job, "run.err").read_text()
    procs, nodes = _pipeline()
    assert procs[job] == "Succeeded" and nodes[f"{job}micrographs.star"] == "MicrographGroupMetadata.star.relion.cryosr"
    _check_outputs(job)
    assert json.loads(Path(job, "cryosr_relion.json").read_text())["micrographs"][0]["method"] == "enhance"


def test_cryosr_relion_as_relion_external_job(project):
    proj = project()
    options = {"_rlnJobTypeLabel": "relion.external", "fn_exe": str(BIN / "cryosr-relion"), "in_mic": MICS,
               "param1_label": "method", "param1_value": "fourier", "nr_threads": 1,
               "fn_output": "micrographs.star", "output_nodetype": "MicrographGroupMetadata", "output_kwds": "relion"}  # fmt: skip
    job = proj.run_job(options, run_in_foreground=True).output_dir
    assert job == "External/job001/"
    assert Path(job, "PIPELINER_JOB_EXIT_SUCCESS").exists(), Path(job, "run.err").read_text()
    procs, nodes = _pipeline()
    assert procs[job] == "Succeeded"
    assert nodes[f"{job}micrographs.star"] == "MicrographGroupMetadata.star.relion"
    _check_outputs(job)
    command = Path(job, "note.txt").read_text()
    assert f"--in_mics {MICS} --o {job} --method fourier" in command and "--j" not in command  # pipeliner's form


def _abort_when_computing(job: Path, timeout_s: float = 120) -> threading.Thread:
    """Touch ``PIPELINER_JOB_ABORT_NOW`` (what ``PipelinerProject.abort_job`` does) once our run computes.

    The touch comes just after one of the runner's polls (every 5 s from the "Running command" line), so
    that cryosr sees the trigger first and must then wait for the runner's SIGTERM (exiting at once
    would be recorded as a failed command).
    """

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        out = job / "run.out"
        while time.monotonic() < deadline:
            text = out.read_text() if out.exists() else ""
            if "micrographs from" in text:
                stamp = next(line for line in text.splitlines() if "Running command 1" in line).split(": ")[0]
                started = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
                time.sleep(SETTLE_S)  # past the first optimiser steps (torch imports modules lazily there)
                time.sleep(0.3 + (started - time.time()) % 5.0)
                (job / "PIPELINER_JOB_ABORT_NOW").touch()
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_abort_registers_no_output_then_continue_finishes(project):
    proj = project(t=6)  # zssr trains on 6-frame movies; a million steps would take far longer than the test
    job = "External/job001/"
    options = {"_rlnJobTypeLabel": "relion.external", "fn_exe": str(BIN / "cryosr-relion"), "in_mic": MICS,
               "param1_label": "method", "param1_value": "zssr", "param2_label": "iterations",
               "param2_value": "1000000", "fn_output": "micrographs.star",
               "output_nodetype": "MicrographGroupMetadata", "output_kwds": "relion"}  # fmt: skip
    watcher = _abort_when_computing(Path(job))
    t0 = time.monotonic()
    proj.run_job(options, run_in_foreground=True)
    watcher.join(1)
    assert time.monotonic() - t0 < 90
    out = Path(job, "run.out").read_text()
    assert "abort requested (PIPELINER_JOB_ABORT_NOW)" in out
    # then it waited for the runner's SIGTERM (exiting first would have been recorded as a failed command)
    assert out.index("abort requested (PIPELINER") < out.index("Terminating command 1")
    assert Path(job, "PIPELINER_JOB_EXIT_ABORTED").exists() and not Path(job, "PIPELINER_JOB_ABORT_NOW").exists()
    procs, nodes = _pipeline()
    assert procs[job] == "Aborted"
    assert f"{job}micrographs.star" not in nodes  # scheduled with the job, removed: its file does not exist
    assert not Path(job, "micrographs.star").exists() and not list(Path(job).rglob("*.tmp"))
    assert not Path(job, "Movies/day1/mov_00.mrc").exists()

    # the pipeliner continues only succeeded jobs ("first mark it succeeded"); Params may change on continue
    proj.update_job_status(job, "Succeeded")
    star = JobStar(Path(job, "continue_job.star"))
    star.modify({"param1_value": "fourier"})
    star.write(Path(job, "continue_job.star"))
    proj.continue_job(job, run_in_foreground=True)
    assert Path(job, "PIPELINER_JOB_EXIT_SUCCESS").exists(), Path(job, "run.err").read_text()
    procs, nodes = _pipeline()
    assert procs[job] == "Succeeded" and nodes[f"{job}micrographs.star"] == "MicrographGroupMetadata.star.relion"
    _check_outputs(job)


@pytest.mark.parametrize("job_type", ["cryosr.superres", "cryosr.enhance"])
def test_job_options_are_the_external_jobs_params(job_type):
    job = new_job_of_type(job_type)  # found through this package's ccpem_pipeliner.jobs entry point
    defaults = {f.name: f.default for f in dataclasses.fields(JobArgs)}
    params = [name for name in job.joboptions if name in PARAMS]
    assert params == [name for name in PARAMS if name in job.PARAM_NAMES]
    for name in params:
        option = job.joboptions[name]
        assert option.help_text == PARAMS[name]
        expected = defaults[name]
        if expected is None:
            assert option.get_string() == ""
        elif isinstance(expected, bool):
            assert option.get_boolean() is expected
        else:
            assert str(option.get_string()) == str(expected)
    job.output_dir = "CryoSR/job007/"
    job.joboptions["in_mics"].value = MICS
    job.joboptions["tile"].value = "128"
    job.joboptions["nr_threads"].value = 2
    command = job.get_commands()[0].cmd
    extra = ["--enhance", "yes"] if job_type == "cryosr.enhance" else []
    assert command == ["python", "-m", "cryosr.relion_external.main", "--o", "CryoSR/job007/", "--in_mics", MICS,
                       "--tile", "128", *extra, "--j", "2"]  # fmt: skip
    assert job.additional_joboption_validation() == []
    job.joboptions["gain_rot"].value = 7
    [error] = job.additional_joboption_validation()
    assert error.type == "error" and "--gain_rot 7" in error.message and error.raised_by == [job.joboptions["gain_rot"]]
