"""EER movies through `cryosr superres` and `cryosr enhance`: grouping, upsampling, pixel sizes, shifts, gain, bad input."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
import torch

from cryosr.core.cli.main import main
from cryosr.core.io import read_micrograph, write_mrc
from cryosr.core.simulate.project import read_true_shifts
from tests.helpers.enhance import tiny_checkpoint


@pytest.fixture(scope="module")
def eer_project(tmp_path_factory):
    """A simulated EER movie: 6 fractions of 4 detector frames, 64 px at 1 Å, with a camera."""
    out = tmp_path_factory.mktemp("eer") / "sim"
    assert main(["-q", "simulate", "--out", str(out), "--n-movies", "1", "--size", "64", "--frames", "6", "--particles",
                 "1", "--dose-per-frame", "3", "--seed", "2", "--device", "cpu", "--format", "eer",
                 "--eer-frames-per-fraction", "4", "--gain-sigma", "0.1"]) == 0  # fmt: skip
    return out


@pytest.mark.parametrize("upsampling", [1, 2])
def test_superres_renders_eer_on_either_grid(eer_project, tmp_path, upsampling):
    movie = eer_project / "Movies/movie_0001.eer"
    shifts = eer_project / "truth/movie_0001_shifts.star"  # RELION motion STAR with rlnEERUpsampling 1
    out = tmp_path / "sr"
    assert main(["superres", str(movie), "--out", str(out), "--eer-grouping", "4", "--eer-upsampling", str(upsampling),
                 "--gain", str(eer_project / "Movies/gain.mrc"), "--shifts", str(shifts), "--method", "drizzle",
                 "--device", "cpu"]) == 0  # fmt: skip
    lr_sum, image = read_micrograph(out / "movie_0001_lr_sum.mrc"), read_micrograph(out / "movie_0001.mrc")
    assert lr_sum.data.shape == (64 * upsampling,) * 2 and lr_sum.pixel_size_a == pytest.approx(1.0 / upsampling)
    assert image.data.shape == (128 * upsampling,) * 2 and image.pixel_size_a == pytest.approx(0.5 / upsampling)
    record = json.loads((out / "superres.json").read_text())
    used = torch.tensor(record["movies"][0]["shifts_yx_px"])
    torch.testing.assert_close(used, read_true_shifts(shifts) * upsampling)  # scaled to the rendering grid
    assert "--eer-grouping 4" in record["command"] and f"--eer-upsampling {upsampling}" in record["command"]
    # pixel size and dose came from the STAR (physical pixel, dose per fraction)
    assert record["movies"][0]["pixel_size_a"] == pytest.approx(1.0 / upsampling)


def test_superres_refuses_bad_eer_options(eer_project, tmp_path, capsys):
    movie = eer_project / "Movies/movie_0001.eer"
    base = ["superres", str(movie), "--out", str(tmp_path / "sr"), "--pixel-size", "1", "--dose-per-frame", "3",
            "--device", "cpu"]  # fmt: skip
    assert main([*base, "--eer-grouping", "25"]) == 2
    assert "grouping 25 is larger than the movie's 24 frames" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--eer-upsampling", "3"])
    write_mrc(tmp_path / "wrong_gain.mrc", torch.ones(64, 60), 1.0)
    assert main([*base, "--eer-grouping", "4", "--eer-upsampling", "2", "--gain", str(tmp_path / "wrong_gain.mrc")]) == 2
    err = capsys.readouterr().err
    assert "wrong_gain.mrc" in err and "fits neither the EER frames" in err
    assert not (tmp_path / "sr" / "movie_0001.mrc").exists()


def test_enhance_reads_eer_from_headers_first(eer_project, tmp_path, capsys):
    pt = tiny_checkpoint(tmp_path / "m.pt", (0.4, 2.0))
    movie = eer_project / "Movies/movie_0001.eer"
    out = tmp_path / "en"
    base = ["enhance", str(movie), "--out", str(out), "--model", str(pt), "--device", "cpu", "--tile", "0"]
    assert main([*base, "--eer-grouping", "4", "--eer-upsampling", "2"]) == 0
    with mrcfile.open(out / "movie_0001.mrc") as m:
        assert m.data.shape == (128, 128) and float(m.voxel_size.x) == pytest.approx(0.5)  # EER metadata pixel / 2
        assert np.isfinite(m.data).all()
    assert main([*base, "--eer-grouping", "12", "--overwrite"]) == 2  # 2 fractions < the model's 3-frame window
    assert "window of 3 frames is larger than the movie (2 frames)" in capsys.readouterr().err
