"""The simulator's camera: EER events at sub-pixel positions, gain variation, hot pixels and dead columns, TIFF/EER files.

Every file is checked with an independent reader (tifffile, imagecodecs through tifffile) and, for the gain
reference and the defect file, with real RELION (``relion_run_motioncorr``).
"""

from __future__ import annotations

import json
import os
import subprocess

import mrcfile
import numpy as np
import pytest
import tifffile
import torch

from cryosr.core.cli.main import main
from cryosr.core.errors import InputError
from cryosr.core.io import read_movie, read_star
from cryosr.core.io.movie import read_defects
from cryosr.core.simulate import SimulationConfig
from cryosr.core.simulate.detector import camera_expectation, eer_events, make_camera
from cryosr.core.simulate.movie import camera_for
from cryosr.core.simulate.project import read_true_shifts
from tests.helpers import relion_exe

SIM = ["-q", "simulate", "--n-movies", "1", "--size", "64", "--frames", "4", "--particles", "1", "--seed", "7",
       "--device", "cpu", "--dose-per-frame", "4"]  # fmt: skip


def _simulate(out, *extra: str):
    assert main([*SIM, "--out", str(out), *extra]) == 0
    return out


def test_eer_events_lie_inside_their_hr_pixel():
    """A checkerboard at the HR pixel: events only on its bright HR pixels, so EER at 2x resolves what 1x cannot."""
    n_hr = 64
    yy, xx = torch.meshgrid(torch.arange(n_hr), torch.arange(n_hr), indexing="ij")
    bright = ((yy + xx) % 2 == 0).float()
    gen = torch.Generator().manual_seed(0)
    render2 = torch.zeros(n_hr, n_hr)
    total = lost = 0
    for _ in range(200):
        events, n_lost = eer_events(0.05 * bright, None, gen)
        assert events.dtype == torch.int64 and events.shape[1] == 2
        lr_pixel = (events[:, 0] // 4) * (n_hr // 2) + events[:, 1] // 4
        assert lr_pixel.unique().numel() == len(events)  # at most one event per physical pixel and frame
        render2.index_put_((events[:, 0] // 2, events[:, 1] // 2), torch.ones(len(events)), accumulate=True)
        total, lost = total + len(events), lost + n_lost
    assert render2[bright == 0].sum() == 0 and render2[bright == 1].sum() == total
    expected = 200 * 0.05 * bright.sum()
    assert total + lost == pytest.approx(float(expected), rel=0.03)  # Poisson mean before coincidence
    assert 0 < lost < 0.1 * total  # 0.1 e/LR px: a few % coincide
    render1 = render2.reshape(32, 2, 32, 2).sum((1, 3))
    assert render1.var() / render1.mean() < 1.15  # on the physical grid the pattern is gone: shot noise only


def test_eer_events_of_hot_pixels_and_dead_columns():
    cam = make_camera(16, gain_sigma=0.0, hot_pixels=3, dead_columns=2, hot_counts=5.0, seed=1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        events, _ = eer_events(torch.full((32, 32), 0.05), cam, gen)
        lr = events // 4
        assert not torch.isin(lr[:, 1], cam.dead_columns).any()
        for y, x in cam.hot_yx.tolist():
            assert ((lr[:, 0] == y) & (lr[:, 1] == x)).sum() == 1  # fires once per detector frame


def test_camera_gain_reference_undoes_the_sensitivity():
    cam = make_camera(32, gain_sigma=0.3, hot_pixels=4, dead_columns=1, hot_counts=50.0, seed=2)
    lam = torch.rand(3, 32, 32) + 0.5
    seen = camera_expectation(lam, cam)
    live = cam.sensitivity > 0
    live[cam.hot_yx[:, 0], cam.hot_yx[:, 1]] = False
    torch.testing.assert_close((seen * cam.gain_reference)[:, live], lam[:, live])  # raw x gain = counts
    assert (seen[:, :, cam.dead_columns] == 0).all()
    assert (seen[:, cam.hot_yx[:, 0], cam.hot_yx[:, 1]] >= 50).all()
    assert cam.sensitivity[live].mean() == pytest.approx(1.0, abs=0.02)
    assert make_camera(32, gain_sigma=0, hot_pixels=0, dead_columns=0, hot_counts=1.0, seed=0) is None


def test_formats_hold_the_same_movie(tmp_path):
    """MRC, TIFF and EER of one seed: TIFF (tifffile, rows flipped) is the MRC movie; EER fractions carry the same dose."""
    mrc = _simulate(tmp_path / "mrc")
    tif = _simulate(tmp_path / "tif", "--format", "tiff")
    eer = _simulate(tmp_path / "eer", "--format", "eer", "--eer-frames-per-fraction", "20")
    ref = read_movie(mrc / "Movies/movie_0001.mrcs").frames
    with tifffile.TiffFile(tif / "Movies/movie_0001.tif") as t:
        raw = t.asarray()
        assert t.pages[0].compression == tifffile.COMPRESSION.LZW and raw.dtype in (np.uint8, np.uint16)
    np.testing.assert_array_equal(raw[:, ::-1, :], ref.numpy())  # stored flipped: a Y-flipping reader gets the array
    torch.testing.assert_close(read_movie(tif / "Movies/movie_0001.tif").frames, ref)
    for run in (tif, eer):  # the truths are those of the MRC movie, in its orientation
        with mrcfile.open(run / "truth/movie_0001_clean.mrc") as a, mrcfile.open(mrc / "truth/movie_0001_clean.mrc") as b:
            np.testing.assert_array_equal(a.data, b.data)
        torch.testing.assert_close(read_true_shifts(run / "truth/movie_0001_shifts.star"),
                                   read_true_shifts(mrc / "truth/movie_0001_shifts.star"))  # fmt: skip
    assert read_star(tif / "movies.star")["movies"]["rlnMicrographMovieName"].tolist() == ["Movies/movie_0001.tif"]

    meta = json.loads((eer / "truth/simulation.json").read_text())
    info = meta["movies"][0]["info"]
    fractions = read_movie(eer / "Movies/movie_0001.eer", eer_grouping=20).frames
    assert fractions.shape == ref.shape and fractions.sum() == info["eer_events"] and info["eer_detector_frames"] == 80
    kept = info["eer_events"] / (info["eer_events"] + info["eer_coincidence_lost"])
    assert fractions.mean() == pytest.approx(float(ref.mean()) * kept, rel=0.02)  # same dose, less coincidence
    up2 = read_movie(eer / "Movies/movie_0001.eer", eer_grouping=20, eer_upsampling=2)
    assert up2.frames.shape == (4, 128, 128) and up2.pixel_size_a == pytest.approx(0.5)
    general = read_star(eer / "truth/movie_0001_shifts.star")["general"]
    assert (int(general["rlnEERGrouping"]), int(general["rlnEERUpsampling"])) == (20, 1)
    assert meta["detector"]["eer"]["dose_per_fraction_e_a2"] == pytest.approx(4.0)
    assert meta["detector"]["eer"]["dose_per_detector_frame_e_a2"] == pytest.approx(0.2)


def test_camera_files_describe_the_raw_movie(tmp_path):
    out = _simulate(tmp_path / "cam", "--gain-sigma", "0.2", "--hot-pixels", "5", "--dead-columns", "2")
    config = SimulationConfig(size=64, frames=4, particles=1, seed=7, dose_per_frame=4.0, gain_sigma=0.2, hot_pixels=5,
                              dead_columns=2)  # fmt: skip
    cam = camera_for(config)
    raw = read_movie(out / "Movies/movie_0001.mrcs").frames
    with mrcfile.open(out / "Movies/gain.mrc") as m:
        gain = torch.from_numpy(np.array(m.data, dtype=np.float32))
    mask = read_defects(out / "Movies/defects.txt", (64, 64))
    torch.testing.assert_close(mask, cam.defect_mask((64, 64)))
    corrected = (raw * gain).sum(0)
    assert (raw[:, :, cam.dead_columns] == 0).all()
    assert corrected[~mask].mean() == pytest.approx(16.0, rel=0.02)  # raw x gain: the dose, 4 frames x 4 e/px
    assert corrected[~mask].std() < 1.3 * np.sqrt(16)  # flat up to shot noise (and the specimen's weak contrast)
    assert raw.sum(0)[cam.hot_yx[:, 0], cam.hot_yx[:, 1]].min() > 5 * 16  # hot pixels: 20x the mean rate
    meta = json.loads((out / "truth/simulation.json").read_text())["detector"]
    assert (meta["gain_reference"], meta["defect_file"]) == ("Movies/gain.mrc", "Movies/defects.txt")


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [({"movie_format": "tiff", "noise_mtf": True, "mtf_frequencies": (0.0, 0.5), "mtf_values": (1.0, 0.5)}, "integer counts"),
     ({"gain_sigma": 2.0}, "gain-sigma"), ({"dead_columns": 40, "size": 64}, "dead-columns"),
     ({"movie_format": "jpeg"}, "--format 'jpeg'"), ({"eer_frames_per_fraction": 0}, "eer-frames-per-fraction")],  # fmt: skip
)
def test_bad_camera_options(kwargs, msg):
    with pytest.raises(InputError, match=msg):
        SimulationConfig(**kwargs)


def test_bad_camera_option_on_the_command_line_writes_nothing(tmp_path, capsys):
    assert main([*SIM, "--out", str(tmp_path / "x"), "--hot-pixels", "-1"]) == 2
    assert "--hot-pixels" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.relion
@pytest.mark.slow
def test_relion_applies_our_gain_reference_and_defect_file(tmp_path):
    """TIFF movie with gain variation, hot pixels and dead columns: RELION's --gainref flattens it and its
    --defect_file (in the orientation RELION reads TIFF) names exactly the bad pixels."""
    relion_exe("relion_run_motioncorr")
    out = tmp_path / "sim"
    assert main(["-q", "simulate", "--out", str(out), "--n-movies", "1", "--size", "256", "--frames", "6", "--particles",
                 "10", "--dose-per-frame", "10", "--format", "tiff", "--gain-sigma", "0.3", "--hot-pixels", "20",
                 "--dead-columns", "2", "--seed", "3", "--device", "cpu"]) == 0  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="2")

    def motioncorr(job: str, *extra: str) -> tuple[np.ndarray, str]:
        (out / "MotionCorr" / job).mkdir(parents=True)
        cmd = ["relion_run_motioncorr", "--i", "movies.star", "--o", f"MotionCorr/{job}/", "--use_own", "--j", "2",
               "--bin_factor", "1", "--bfactor", "150", "--dose_per_frame", "10", "--patch_x", "1", "--patch_y", "1", *extra]  # fmt: skip
        proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        with mrcfile.open(out / f"MotionCorr/{job}/Movies/movie_0001.mrc") as m:
            mic = np.array(m.data, dtype=np.float64)
        return mic, (out / f"MotionCorr/{job}/Movies/movie_0001.log").read_text()

    with mrcfile.open(out / "Movies/gain.mrc") as m:
        sensitivity = 1 / np.array(m.data, dtype=np.float64)
    mask = read_defects(out / "Movies/defects.txt", (256, 256)).numpy()
    cam = camera_for(SimulationConfig(size=256, frames=6, particles=10, dose_per_frame=10, gain_sigma=0.3,
                                      hot_pixels=20, dead_columns=2, seed=3))  # fmt: skip
    live = ~mask

    raw, _ = motioncorr("raw", "--skip_defect")
    flat, _ = motioncorr("gain", "--skip_defect", "--gainref", "Movies/gain.mrc")
    assert np.corrcoef(raw[live], sensitivity[live])[0, 1] > 0.5  # the sensitivity pattern before correction
    assert abs(np.corrcoef(flat[live], sensitivity[live])[0, 1]) < 0.05  # gone after RELION multiplies by our gain
    assert np.median(flat[live]) == pytest.approx(60.0, rel=0.02)  # 6 frames x 10 e/px

    fixed, log = motioncorr("defects", "--gainref", "Movies/gain.mrc", "--defect_file", "Movies/defects.txt")
    alone, log_alone = motioncorr("auto", "--gainref", "Movies/gain.mrc")
    n_hot = len(cam.hot_yx)
    assert "Detected 0 hot pixels" in log  # our file already covered every hot pixel: same orientation as RELION's
    assert f"Detected {n_hot} hot pixels" in log_alone  # without it RELION finds them itself
    median = np.median(fixed[live])
    assert fixed[:, cam.dead_columns].mean() == pytest.approx(median, rel=0.05)  # dead columns filled from the file
    assert alone[:, cam.dead_columns].mean() < 0.8 * median  # ... which RELION's own detection leaves dark


def test_eer_camera_files_fit_either_grid(tmp_path):
    """EER with a camera: the gain holds the sensitivity (0 = dead), the defect files the physical and the 2x grid."""
    out = _simulate(tmp_path / "eer", "--format", "eer", "--eer-frames-per-fraction", "5", "--gain-sigma", "0.2",
                    "--hot-pixels", "4", "--dead-columns", "1")  # fmt: skip
    cam = camera_for(SimulationConfig(size=64, frames=4, particles=1, seed=7, dose_per_frame=4.0, gain_sigma=0.2,
                                      hot_pixels=4, dead_columns=1, movie_format="eer", eer_frames_per_fraction=5))  # fmt: skip
    with mrcfile.open(out / "Movies/gain.mrc") as m:
        np.testing.assert_allclose(m.data, cam.sensitivity.numpy(), rtol=1e-6)
    physical = cam.defect_mask((64, 64))
    fine = read_defects(out / "Movies/defects_eer_upsampling2.txt", (128, 128))
    torch.testing.assert_close(fine, physical.repeat_interleave(2, 0).repeat_interleave(2, 1))
    movie = out / "Movies/movie_0001.eer"
    raw = read_movie(movie, eer_grouping=5, eer_upsampling=2).frames
    fixed = read_movie(movie, eer_grouping=5, eer_upsampling=2, gain=out / "Movies/gain.mrc",
                       defects=out / "Movies/defects_eer_upsampling2.txt").frames  # fmt: skip
    dead = torch.zeros_like(fine)
    dead[:, 2 * cam.dead_columns] = dead[:, 2 * cam.dead_columns + 1] = True
    hot = fine & ~dead

    def over_good(frames: torch.Tensor, where: torch.Tensor) -> float:
        total = frames.sum(0)
        return float(total[where].mean() / total[~fine].mean())

    assert over_good(raw, dead) == 0 and over_good(raw, hot) > 1.5  # hot pixels fire on every detector frame
    for where in (dead, hot):
        assert over_good(fixed, where) == pytest.approx(1.0, abs=0.25)  # replaced by their neighbours
