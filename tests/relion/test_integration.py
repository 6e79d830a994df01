"""cryosr-relion inside a real RELION 3.1 pipeline, with the real binaries.

simulate -> relion_run_motioncorr --use_own -> our External job run by relion_pipeliner (RELION builds the
command line, with a bare Params flag, "Additional arguments" and, because the executable's path contains
``relion_``, its own ``--pipeline_control``; it reads our output node) -> relion_preprocess extraction at the
true particle coordinates on the super-resolved grid with the true CTF -> relion_reconstruct with the true
angles. Along the way: the per-frame shifts RELION's MotionCorr stored are the ones our job used, and they
match the simulator's true drift (a sign or axis error would not).

Skipped when RELION is not installed; a failure when CI=true (CI installs the Debian ``relion`` package).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from cryosr.core.cli.main import main as cryosr_main
from cryosr.core.io import read_micrograph, read_star, write_star
from cryosr.core.io.mrc import read_volume
from cryosr.core.simulate.project import read_true_shifts

pytestmark = [pytest.mark.relion, pytest.mark.slow]

BINARIES = ("relion_run_motioncorr", "relion_pipeliner", "relion_preprocess", "relion_reconstruct",
            "relion_star_printtable")  # fmt: skip
JOB = "External/job003"


@pytest.fixture(scope="module")
def relion_env():
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but RELION binaries are missing: {', '.join(missing)} (apt-get install relion)")
        pytest.skip(f"RELION not installed ({', '.join(missing)} not on PATH)")
    exe = Path(sys.executable).parent / "cryosr-relion"
    if not exe.exists():
        pytest.fail(f"{exe} missing: install the package (make install) so the console script exists")
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return env, exe


def sh(cmd: list[str], cwd: Path, env: dict, timeout: int = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_external_job_in_real_relion_pipeline(tmp_path, relion_env):
    env, exe = relion_env
    proj = tmp_path / "proj"
    # dose 10 e/A^2/frame: enough signal in a 256 px movie for RELION's own alignment
    assert cryosr_main(["-q", "simulate", "--out", str(proj), "--n-movies", "2", "--size", "256", "--frames", "6",
                        "--particles", "10", "--dose-per-frame", "10", "--seed", "3", "--device", "cpu"]) == 0  # fmt: skip
    (proj / "default_pipeline.star").write_text("data_pipeline_general\n\n_rlnPipeLineJobCounter 3\n")

    # 1. RELION's own motion correction -> corrected_micrographs.star with per-movie motion metadata
    (proj / "MotionCorr/job002").mkdir(parents=True)
    sh(["relion_run_motioncorr", "--i", "movies.star", "--o", "MotionCorr/job002/", "--use_own", "--j", "1",
        "--bin_factor", "1", "--bfactor", "150", "--dose_per_frame", "10", "--preexposure", "0", "--patch_x", "1",
        "--patch_y", "1", "--dose_weighting", "--skip_defect"], proj, env)  # fmt: skip
    assert (proj / "MotionCorr/job002/corrected_micrographs.star").exists()

    # 2. our External job, created and run by RELION's pipeliner; "relion_" in the executable's path makes
    #    RELION append --pipeline_control, which must be accepted
    plugins = tmp_path / "relion_plugins"
    plugins.mkdir()
    (plugins / "cryosr-relion").symlink_to(exe)
    options = ";".join([f"fn_exe == {plugins / 'cryosr-relion'}", "in_mic == MotionCorr/job002/corrected_micrographs.star",
                        "param1_label == method", "param1_value == wiener", "param2_label == verbose",
                        "nr_threads == 1", "other_args == --overwrite no"])  # fmt: skip
    sh(["relion_pipeliner", "--addJob", "External", "--addJobOptions", options], proj, env)
    sh(["relion_pipeliner", "--RunJobs", f"{JOB}/", "--sec_wait_after", "1"], proj, env)
    job = proj / JOB
    assert (job / "RELION_JOB_EXIT_SUCCESS").exists(), (job / "run.err").read_text()
    note = " ".join((job / "note.txt").read_text().split())  # the command RELION built, whitespace collapsed
    assert "--verbose --j 1 --overwrite no --pipeline_control External/job003/" in note
    pipeline = read_star(proj / "default_pipeline.star")
    procs = pipeline["pipeline_processes"].set_index("rlnPipeLineProcessName")
    assert procs.loc[f"{JOB}/", "rlnPipeLineProcessType"] == 99 and procs.loc[f"{JOB}/", "rlnPipeLineProcessStatus"] == 2
    nodes = pipeline["pipeline_nodes"].set_index("rlnPipeLineNodeName")["rlnPipeLineNodeType"]
    assert nodes[f"{JOB}/micrographs.star"] == 1
    assert "--in_mics MotionCorr/job002/corrected_micrographs.star --method wiener --verbose" in note
    assert "[2/2] MotionCorr/job002/Movies/movie_0002.mrc -> External/job003/Movies/movie_0002.mrc (movie" in (
        job / "run.out"
    ).read_text()
    # the job used RELION's own MotionCorr shifts (not re-estimated), and they agree with the true drift
    for record in json.loads((job / "cryosr_relion.json").read_text())["micrographs"]:
        assert record["mode"] == "movie" and record["info"]["shifts"] == "given"
        true_yx = read_true_shifts(proj / "truth" / f"{Path(record['movie']).stem}_shifts.star")
        used_yx = torch.tensor(record["shifts_yx_px"])
        drift = float((true_yx[-1] - true_yx[0]).norm())
        rms = float((used_yx - used_yx[0] - (true_yx - true_yx[0])).norm(dim=1).pow(2).mean().sqrt())
        assert drift > 5 and rms < 0.2 * drift, (drift, rms)
    # RELION itself reads our STAR: halved pixel size, names under the job directory
    px = sh(["relion_star_printtable", f"{JOB}/micrographs.star", "data_optics", "rlnMicrographPixelSize"], proj, env)
    assert [float(v) for v in px.split()] == [0.5]
    names = sh(["relion_star_printtable", f"{JOB}/micrographs.star", "data_micrographs", "rlnMicrographName"], proj, env)
    assert names.split() == [f"{JOB}/Movies/movie_0001.mrc", f"{JOB}/Movies/movie_0002.mrc"]
    for name in names.split():
        mic = read_micrograph(proj / name)
        assert mic.data.shape == (512, 512) and mic.pixel_size_a == pytest.approx(0.5)

    # 3. downstream: extraction at the true coordinates on the 2x grid with the true CTF, then reconstruction
    truth = read_star(proj / "truth/particles.star")["particles"]
    mics = read_star(job / "micrographs.star")
    by_movie = truth.groupby("cryosrMovieName").first()
    table = mics["micrographs"]
    movie_of = [f"Movies/{Path(n).stem}.mrcs" for n in table["rlnMicrographName"]]
    for column in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"):
        table[column] = [float(by_movie.loc[m, column]) for m in movie_of]
    table["rlnCtfMaxResolution"], table["rlnCtfFigureOfMerit"] = 5.0, 0.1
    write_star(proj / "CtfTruth/job004/micrographs_ctf.star", mics)
    for movie, rows in truth.groupby("cryosrMovieName"):
        coords = pd.DataFrame({"rlnCoordinateX": rows["cryosrCoordinateXHr"], "rlnCoordinateY": rows["cryosrCoordinateYHr"],
                               "rlnAngleRot": rows["rlnAngleRot"], "rlnAngleTilt": rows["rlnAngleTilt"],
                               "rlnAnglePsi": rows["rlnAnglePsi"]})  # fmt: skip
        write_star(proj / "coords/Movies" / f"{Path(movie).stem}_truth.star", {"": coords})
    (proj / "Extract/job005").mkdir(parents=True)
    sh(["relion_preprocess", "--i", "CtfTruth/job004/micrographs_ctf.star", "--coord_dir", "coords/",
        "--coord_suffix", "_truth.star", "--part_star", "Extract/job005/particles.star", "--part_dir",
        "Extract/job005/", "--extract", "--extract_size", "128", "--norm", "--bg_radius", "50"], proj, env)  # fmt: skip
    parts = read_star(proj / "Extract/job005/particles.star")
    assert parts["optics"]["rlnImagePixelSize"].tolist() == [0.5]
    assert len(parts["particles"]) >= 4
    particles = parts["particles"]
    if "rlnAngleRot" not in particles.columns:  # older RELION drops extra coordinate columns: join on position
        key = truth.assign(x=truth["cryosrCoordinateXHr"].round(1), y=truth["cryosrCoordinateYHr"].round(1))
        particles = particles.assign(x=particles["rlnCoordinateX"].round(1), y=particles["rlnCoordinateY"].round(1))
        particles = particles.merge(key[["x", "y", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]], on=["x", "y"])
        parts["particles"] = particles.drop(columns=["x", "y"])
        write_star(proj / "Extract/job005/particles.star", parts)
    sh(["relion_reconstruct", "--i", "Extract/job005/particles.star", "--o", "recon.mrc", "--ctf", "--pad", "1", "--j", "1"], proj, env)
    volume, voxel = read_volume(proj / "recon.mrc")
    assert volume.shape == (128, 128, 128) and voxel == pytest.approx(0.5)
    assert float(volume.abs().max()) > 0
