"""`cryosr enhance` in-process on tiny synthetic files: outputs, header pixel size, bad input."""

from __future__ import annotations

import logging

import mrcfile
import pytest
import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.cli.main import main
from cryosr.core.enhance.checkpoint import load_checkpoint, save_checkpoint
from cryosr.core.enhance.infer import EnhanceConfig, enhance_micrograph, enhance_movie
from cryosr.core.enhance.model import DSTNet, EnhanceNetConfig
from cryosr.core.io import write_mrc
from tests.helpers.enhance import tiny_checkpoint


@pytest.fixture()
def files(tmp_path):
    pt = tiny_checkpoint(tmp_path / "m.pt", (1.0, 2.0))
    gen = torch.Generator().manual_seed(0)
    movie = torch.poisson(torch.full((6, 40, 36), 3.0), generator=gen)
    write_mrc(tmp_path / "mov.mrcs", movie, 1.5)
    write_mrc(tmp_path / "mic.mrc", movie.sum(0), 1.5)
    return tmp_path, pt, movie


def test_enhance_cli_writes_movie_and_micrograph_outputs(files):
    tmp, pt, movie = files
    out = tmp / "out"
    args = ["enhance", str(tmp / "mov.mrcs"), str(tmp / "mic.mrc"), "--out", str(out), "--model", str(pt)]
    assert main([*args, "--scale", "2", "--device", "cpu", "--tile", "16"]) == 0
    model, _ = load_checkpoint(pt)
    cfg = EnhanceConfig(scale=2, tile=0)
    with mrcfile.open(out / "mov.mrc") as m:
        assert m.data.shape == (80, 72)
        assert float(m.voxel_size.x) == pytest.approx(0.75)
        expected = enhance_movie(movie, model, cfg, Acquisition(1.5)).image
        torch.testing.assert_close(torch.from_numpy(m.data.copy()), expected, atol=1e-3, rtol=1e-4)
    with mrcfile.open(out / "mic.mrc") as m:
        expected = enhance_micrograph(movie.sum(0), model, cfg).image
        torch.testing.assert_close(torch.from_numpy(m.data.copy()), expected, atol=1e-3, rtol=1e-4)
    # finished outputs are skipped (resume), not replaced without --overwrite
    mtime = (out / "mov.mrc").stat().st_mtime_ns
    assert main([*args, "--scale", "2", "--device", "cpu"]) == 0
    assert (out / "mov.mrc").stat().st_mtime_ns == mtime
    assert main([*args, "--scale", "2", "--device", "cpu", "--overwrite"]) == 0
    assert (out / "mov.mrc").stat().st_mtime_ns != mtime


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "nope.pt"], "model file not found"),
        (["--frames-bad"], None),
    ],
)
def test_enhance_cli_bad_model(files, extra, message, capsys):
    tmp, _, _ = files
    if message is None:
        with pytest.raises(SystemExit):
            main(["enhance", str(tmp / "mov.mrcs"), "--out", str(tmp / "o"), *extra])
        return
    assert main(["enhance", str(tmp / "mov.mrcs"), "--out", str(tmp / "o"), "--device", "cpu", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp / "o").exists()


def test_enhance_cli_window_larger_than_movie_and_missing_head(files, capsys):
    tmp, _, movie = files
    model = DSTNet(EnhanceNetConfig(frames=8, channels=8))
    pt = save_checkpoint(tmp / "long.pt", model, {})
    base = ["enhance", str(tmp / "mic.mrc"), str(tmp / "mov.mrcs"), "--out", str(tmp / "o"), "--device", "cpu"]
    assert main([*base, "--model", str(pt)]) == 2
    assert "window of 8 frames is larger than the movie (6 frames)" in capsys.readouterr().err
    assert main([*base, "--model", str(pt), "--scale", "2"]) == 2
    assert "no 2x head" in capsys.readouterr().err
    assert not (tmp / "o").exists()  # validated before anything was written


def test_enhance_cli_warns_on_pixel_size_far_outside_training(files, caplog):
    tmp, pt, _ = files
    with caplog.at_level(logging.WARNING, logger="cryosr"):
        code = main(["enhance", str(tmp / "mic.mrc"), "--out", str(tmp / "o"), "--model", str(pt),
                     "--device", "cpu", "--pixel-size", "5.0"])
    assert code == 0
    assert "far outside the model's training range" in caplog.text


def test_enhance_cli_rejects_a_checkpoint_of_another_architecture(files, capsys):
    tmp, pt, _ = files
    payload = torch.load(pt, map_location="cpu", weights_only=True)
    payload["config"]["channels"] = 12  # the weights are for 8 channels
    wrong = tmp / "wrong.pt"
    torch.save(payload, wrong)
    assert main(["enhance", str(tmp / "mov.mrcs"), "--out", str(tmp / "o"), "--model", str(wrong), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "wrong.pt" in err and "do not match the DSTNet architecture" in err
    assert not (tmp / "o").exists()


def test_enhance_cli_missing_pixel_size_fails_before_any_output(files, capsys):
    tmp, pt, movie = files
    write_mrc(tmp / "nopx.mrc", movie.sum(0), 0.0)
    base = ["enhance", str(tmp / "mic.mrc"), str(tmp / "nopx.mrc"), "--out", str(tmp / "o"), "--model", str(pt),
            "--device", "cpu"]
    assert main(base) == 2
    assert "nopx.mrc: no pixel size in the header" in capsys.readouterr().err
    assert not (tmp / "o").exists()  # mic.mrc (valid, first) was not written either
    assert main([*base, "--pixel-size", "1.5"]) == 0


def _motion_star(path, n_frames: int):
    """A RELION per-micrograph motion STAR with ``n_frames`` small shifts."""
    import pandas as pd

    from cryosr.core.io import write_star

    blocks = {
        "general": {"rlnImageSizeX": 36, "rlnImageSizeY": 40, "rlnImageSizeZ": n_frames,
                    "rlnMicrographMovieName": f"Movies/{path.stem}.mrcs", "rlnMicrographBinning": 1.0},
        "global_shift": pd.DataFrame({
            "rlnMicrographFrameNumber": list(range(1, n_frames + 1)),
            "rlnMicrographShiftX": [0.1 * i for i in range(n_frames)],
            "rlnMicrographShiftY": [0.0] * n_frames,
        }),
    }  # fmt: skip
    return write_star(path, blocks)


def test_enhance_cli_shifts_follow_the_superres_rule(files, capsys, caplog):
    """--shifts are matched to movies by name (as in superres); shifts that do not cover a movie are not
    used (it is aligned); a STAR for none of the inputs fails before any output."""
    import json

    tmp, pt, movie = files
    write_mrc(tmp / "a.mrcs", movie, 1.5)
    write_mrc(tmp / "b.mrcs", movie[:5], 1.5)
    base = ["enhance", str(tmp / "a.mrcs"), str(tmp / "b.mrcs"), "--out", str(tmp / "o"), "--model", str(pt),
            "--device", "cpu"]
    stray = _motion_star(tmp / "c.star", 6)  # for Movies/c.mrcs
    assert main([*base, "--shifts", str(stray)]) == 2
    err = capsys.readouterr().err.strip()
    assert "c.star" in err and "not for a.mrcs" in err and len(err.splitlines()) == 1
    assert not (tmp / "o").exists()
    stars = [str(_motion_star(tmp / "b.star", 6)), str(_motion_star(tmp / "a.star", 6))]  # any order
    with caplog.at_level("WARNING", logger="cryosr"):
        assert main([*base, "--shifts", *stars]) == 0
    assert "b.star: shifts cover frames 1-6 of a 5-frame movie" in caplog.text
    records = {r["movie"].rsplit("/", 1)[-1]: r for r in json.loads((tmp / "o" / "enhance.json").read_text())["movies"]}
    assert [s[1] for s in records["a.mrcs"]["shifts_yx_px"]] == pytest.approx([-0.1 * i for i in range(6)])
    assert (tmp / "o" / "a.mrc").is_file() and (tmp / "o" / "b.mrc").is_file()


def test_enhance_cli_tiff_window_is_checked_before_any_output(files, capsys):
    """A TIFF movie's frame count comes from its header: too short a movie fails before mic.mrc is written."""
    import numpy as np
    import tifffile

    tmp, pt, movie = files
    tifffile.imwrite(tmp / "short.tif", movie[:2].numpy().astype(np.uint16))
    args = ["enhance", str(tmp / "mic.mrc"), str(tmp / "short.tif"), "--out", str(tmp / "o"), "--model", str(pt),
            "--device", "cpu", "--pixel-size", "1.5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "short.tif" in err and "window of 3 frames is larger than the movie (2 frames)" in err
    assert not (tmp / "o").exists()


def test_enhance_cli_gain_is_checked_before_any_output_and_applied(files, capsys):
    tmp, pt, movie = files
    write_mrc(tmp / "b.mrcs", movie, 1.5)
    base = ["enhance", str(tmp / "mov.mrcs"), str(tmp / "b.mrcs"), "--out", str(tmp / "o"), "--model", str(pt),
            "--device", "cpu"]
    # an unreadable gain file
    (tmp / "bad_gain.mrc").write_bytes(b"not an MRC file" * 100)
    assert main([*base, "--gain", str(tmp / "bad_gain.mrc")]) == 2
    assert "bad_gain.mrc" in capsys.readouterr().err
    assert not (tmp / "o").exists()
    # a gain of the wrong shape (40 x 36 frames; rotated by 90° this gain is 40 x 36, unrotated it is not)
    gain = 1.0 + torch.rand((36, 40), generator=torch.Generator().manual_seed(1))
    write_mrc(tmp / "gain.mrc", gain, 1.5)
    assert main([*base, "--gain", str(tmp / "gain.mrc")]) == 2
    err = capsys.readouterr().err
    assert "gain.mrc" in err and "does not match the frames of mov.mrcs" in err
    assert not (tmp / "o").exists()
    # the right orientation: read once, applied to every movie
    assert main([*base, "--gain", str(tmp / "gain.mrc"), "--gain-rotate", "1"]) == 0
    model, _ = load_checkpoint(pt)
    expected = enhance_movie(movie * torch.rot90(gain, k=-1), model, EnhanceConfig(tile=0), Acquisition(1.5)).image
    for name in ("mov.mrc", "b.mrc"):
        with mrcfile.open(tmp / "o" / name) as m:
            torch.testing.assert_close(torch.from_numpy(m.data.copy()), expected, atol=1e-3, rtol=1e-4)


def test_bench_enhance_sim_panel_creates_a_missing_png_dir(files):
    """benchmarks/bench_enhance.py --png-dir NEW/DIR: the panel's folder is created (tiny hand-made project)."""
    import importlib.util
    import json
    from pathlib import Path

    tmp, pt, movie = files
    spec = importlib.util.spec_from_file_location(
        "bench_enhance", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_enhance.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    project = tmp / "h1"
    (project / "Movies").mkdir(parents=True)
    (project / "truth").mkdir()
    write_mrc(project / "Movies" / "movie_0001.mrcs", movie, 1.5)
    write_mrc(project / "truth" / "movie_0001_clean.mrc", torch.full((80, 72), 1.0), 0.75)
    _motion_star(project / "truth" / "movie_0001_shifts.star", 6)
    (project / "truth" / "simulation.json").write_text(json.dumps({"config": {"dose_per_frame": 1.0}}))
    model, _ = load_checkpoint(pt)
    png = bench.sim_panel(project, model, None, tmp / "new" / "images")
    assert png.is_file() and png.parent == tmp / "new" / "images"
