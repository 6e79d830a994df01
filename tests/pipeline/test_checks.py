"""Acquisition checks of the movie pipeline (issue: degenerate and inconsistent acquisitions).

Each check is exercised through ``cryosr superres`` as a user would meet it: the message names the
file and the numbers, an error case writes no micrograph, and in a batch the other movies finish.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tifffile
import torch

from cryosr.core.cli.main import main
from cryosr.core.io import write_mrc
from cryosr.core.shifts import fourier_shift

PX = 1.0
SIZE, T = 48, 6


def counting_movie(seed: int, mean: float = 4.0, t: int = T) -> torch.Tensor:
    """Integer Poisson counts of a drifting smooth specimen: ``mean`` counts per pixel per frame."""
    g = torch.Generator().manual_seed(seed)
    k2 = torch.fft.fftfreq(SIZE)[:, None] ** 2 + torch.fft.rfftfreq(SIZE)[None] ** 2
    smooth = torch.fft.irfft2(torch.fft.rfft2(torch.randn(SIZE, SIZE, generator=g)) * torch.exp(-k2 / 0.005), s=(SIZE, SIZE))
    specimen = mean * (1 + 0.3 * smooth / smooth.std())
    shifts = torch.arange(t, dtype=torch.float32)[:, None] * torch.tensor([0.4, -0.3])
    return torch.poisson(fourier_shift(specimen.expand(t, SIZE, SIZE), shifts).clamp_min(0), generator=g)


def superres(*args: str) -> int:
    return main(["superres", *args, "--method", "fourier", "--device", "cpu"])


@pytest.fixture()
def movies(tmp_path):
    for i in range(2):
        write_mrc(tmp_path / f"good{i}.mrcs", counting_movie(i), PX)
    return tmp_path


@pytest.mark.parametrize(("frames", "words"), [
    (torch.zeros(T, SIZE, SIZE), "no counts: mean 0 per pixel per frame"),
    (torch.full((T, SIZE, SIZE), 7.0), "every pixel of every frame is 7: a dead exposure"),
])  # fmt: skip
def test_empty_or_dead_exposure_fails_alone_with_a_count(movies, capsys, frames, words):
    write_mrc(movies / "blank.mrcs", frames, PX)
    out = movies / "sr"
    inputs = [str(movies / n) for n in ("good0.mrcs", "blank.mrcs", "good1.mrcs")]
    assert superres(*inputs, "--out", str(out), "--dose-per-frame", "4") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # the one-line summary ends the run
    assert err.startswith("cryosr superres: error: 1 of 3 movie(s) failed") and f"blank.mrcs: {words}" in err
    assert not (out / "blank.mrc").exists() and not (out / "blank_lr_sum.mrc").exists()
    assert (out / "good0.mrc").exists() and (out / "good1.mrc").exists()
    records = {r["movie"].rsplit("/", 1)[-1]: r for r in json.loads((out / "superres.json").read_text())["movies"]}
    assert records["blank.mrcs"]["input_error"] and words in records["blank.mrcs"]["error"]


def test_dose_that_the_counts_contradict_is_reported_with_both_numbers(movies, caplog):
    out = movies / "sr"
    with caplog.at_level(logging.WARNING, logger="cryosr"):
        assert superres(str(movies / "good0.mrcs"), "--out", str(out), "--dose-per-frame", "1") == 0  # counts: ~4
    assert "good0.mrcs: the counts imply 4" in caplog.text and "but 1 e/Å² was given" in caplog.text
    dose = json.loads((out / "superres.json").read_text())["movies"][0]["checks"]["dose"]
    assert dose["stated_e_a2"] == 1.0 and dose["from_counts_e_a2"] == pytest.approx(4.0, rel=0.05)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cryosr"):  # within the factor 1.5: no warning
        assert superres(str(movies / "good1.mrcs"), "--out", str(out), "--dose-per-frame", "3.5") == 0
    assert "counts imply" not in caplog.text


def test_gain_on_a_gain_normalised_movie_is_reported(movies, caplog):
    normalised = counting_movie(2) * 0.97 + 0.013  # non-integer values: gain-corrected already
    write_mrc(movies / "norm.mrcs", normalised, PX)
    write_mrc(movies / "gain.mrc", torch.ones(SIZE, SIZE), PX)
    out = movies / "sr"
    with caplog.at_level(logging.WARNING, logger="cryosr"):
        assert superres(str(movies / "norm.mrcs"), "--out", str(out), "--dose-per-frame", "4",
                        "--gain", str(movies / "gain.mrc")) == 0  # fmt: skip
    assert "norm.mrcs: the movie holds non-integer values" in caplog.text and "gain may be applied twice" in caplog.text
    record = json.loads((out / "superres.json").read_text())["movies"][0]
    assert record["checks"]["gain_on_non_integer_movie"] is True and "dose" not in record["checks"]  # not counts


def test_dropped_frame_is_named_and_can_be_left_out(movies, caplog):
    frames = counting_movie(3)
    frames[2] = torch.poisson(torch.full((SIZE, SIZE), 0.1))  # a dropped frame
    write_mrc(movies / "drop.mrcs", frames, PX)
    out = movies / "sr"
    with caplog.at_level(logging.WARNING, logger="cryosr"):
        assert superres(str(movies / "drop.mrcs"), "--out", str(out), "--dose-per-frame", "4") == 0
    assert "drop.mrcs: 1 frame(s) with total counts outside 0.2-5x the median frame: frame 3 (0.0" in caplog.text
    assert "--exclude-frames" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cryosr"):
        assert superres(str(movies / "drop.mrcs"), "--out", str(out), "--dose-per-frame", "4", "--exclude-frames", "3",
                        "--overwrite") == 0  # fmt: skip
    assert "frame 3" not in caplog.text
    record = json.loads((out / "superres.json").read_text())["movies"][0]
    assert record["checks"]["excluded_frames"] == [3] and record["n_frames"] == T - 1
    assert superres(str(movies / "drop.mrcs"), "--out", str(out), "--dose-per-frame", "4", "--exclude-frames", "9",
                    "--overwrite") == 2  # fmt: skip


def test_header_pixel_size_disagreeing_with_the_option_says_which_is_used(movies, caplog):
    out = movies / "sr"
    with caplog.at_level(logging.WARNING, logger="cryosr"):
        assert superres(str(movies / "good0.mrcs"), "--out", str(out), "--dose-per-frame", "4", "--pixel-size", "1.05") == 0
    assert "good0.mrcs: header pixel size 1 Å differs from the --pixel-size's 1.05 Å by 4.8 %; using 1.05 Å" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cryosr"):  # 0.5 %: not reported
        assert superres(str(movies / "good1.mrcs"), "--out", str(out), "--dose-per-frame", "4", "--pixel-size", "1.005") == 0
    assert "header pixel size" not in caplog.text


def test_integer_counts_in_a_float_file_count_as_counts(tmp_path, caplog):
    """A TIFF of uint16 counts and an MRC of float32 whole numbers both get the dose check."""
    movie = counting_movie(4)
    tifffile.imwrite(tmp_path / "m.tif", movie.numpy().astype(np.uint16))
    with caplog.at_level(logging.WARNING, logger="cryosr"):
        assert superres(str(tmp_path / "m.tif"), "--out", str(tmp_path / "o"), "--dose-per-frame", "1",
                        "--pixel-size", "1.0") == 0  # fmt: skip
    assert "m.tif: the counts imply" in caplog.text
