"""End to end on a tiny `cryosr simulate` project: train lowers the loss, enhance beats the plain sum."""

from __future__ import annotations

import json

import mrcfile
import pytest
import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.cli.main import main
from cryosr.core.dose import dose_weighted_sum
from cryosr.core.enhance.dataset import load_sim_projects
from cryosr.core.evaluate.metrics import psnr
from cryosr.core.fourier import bin_sum
from cryosr.core.io import read_micrograph, read_movie
from cryosr.core.shifts import fourier_shift
from cryosr.core.simulate.project import read_true_shifts


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "p"
    args = ["simulate", "--out", str(out), "--n-movies", "2", "--size", "64", "--frames", "6",
            "--dose-per-frame", "2.0", "--seed", "3", "--device", "cpu"]
    assert main(args) == 0
    return out


def test_training_movies_are_registered_to_the_truth(project):
    """With the true shifts, the aligned noisy sum correlates with the clean LR truth."""
    movies, info = load_sim_projects([project], n_groups=4)
    assert len(movies) == 2 and info[0]["movies"] == 2 and info[0]["pixel_size_a"] == 1.0
    mv = movies[0]
    assert float(mv.target1.mean()) == pytest.approx(1.0, rel=1e-5)
    frames = read_movie(project / "Movies" / "movie_0001.mrcs").frames
    true = read_true_shifts(project / "truth" / "movie_0001_shifts.star")

    def corr(shifts):
        noisy = fourier_shift(frames, -shifts).sum(0)
        return float(torch.corrcoef(torch.stack([noisy.flatten(), mv.target1.flatten()]))[0, 1])

    # the window built with the true shifts is the aligned sum; the opposite sign misregisters it
    torch.testing.assert_close(mv.window.mean(0) / mv.window.mean(), fourier_shift(frames, -true).sum(0) / frames.sum(0).mean(), atol=1e-4, rtol=1e-4)
    assert corr(true) > 0.2 and corr(true) > 1.5 * corr(-true)


def test_train_then_enhance_beats_the_plain_sum(project, tmp_path):
    model = tmp_path / "m.pt"
    args = ["train", "--data", str(project), "--out", str(model), "--epochs", "2", "--steps-per-epoch", "15",
            "--batch", "4", "--patch", "32", "--frames", "3", "--channels", "8", "--lr", "0.003", "--device", "cpu",
            "--dose-weighted"]
    assert main(args) == 0
    meta = json.loads(model.with_suffix(".json").read_text())
    assert meta["fixed_batch_loss"]["after"] < 0.8 * meta["fixed_batch_loss"]["before"]
    assert meta["command"].startswith("cryosr train --data") and meta["training_pixel_size_a"] == [1.0, 1.0]
    payload = torch.load(model, map_location="cpu", weights_only=True)
    assert payload["config"]["frames"] == 3 and payload["config"]["dose_weighted"] is True
    assert payload["config"]["noise"] == "corner" and "--noise-estimate" not in meta["command"]

    out = tmp_path / "out"
    shifts = project / "truth" / "movie_0002_shifts.star"
    movie_path = project / "Movies" / "movie_0002.mrcs"
    # dose per frame not given: estimated from the counts (the simulator's 2.0 e/Å²)
    assert main(["enhance", str(movie_path), "--out", str(out), "--model", str(model), "--device", "cpu",
                 "--shifts", str(shifts)]) == 0
    with mrcfile.open(out / "movie_0002.mrc") as m:
        enhanced = torch.from_numpy(m.data.copy())
        assert float(m.voxel_size.x) == pytest.approx(1.0)
    truth = bin_sum(read_micrograph(project / "truth" / "movie_0002_clean.mrc").data, 2) / 4
    truth = truth / truth.mean()
    frames = read_movie(movie_path).frames
    plain = fourier_shift(frames, -read_true_shifts(shifts)).sum(0)
    gain_db = psnr(enhanced / enhanced.mean(), truth) - psnr(plain / plain.mean(), truth)
    assert gain_db > 1.0


def test_train_with_the_frames_noise_estimate_records_it(project, tmp_path):
    """--noise-estimate frames needs the Wiener anchor, is stored with the weights and in the
    command line, and is the enhance default for those weights."""
    model = tmp_path / "f.pt"
    args = ["train", "--data", str(project), "--out", str(model), "--epochs", "1", "--steps-per-epoch", "3",
            "--batch", "2", "--patch", "32", "--frames", "3", "--channels", "8", "--device", "cpu",
            "--dose-weighted", "--anchor", "wiener", "--noise-estimate", "frames"]
    assert main(args) == 0
    meta = json.loads(model.with_suffix(".json").read_text())
    assert meta["architecture"]["noise"] == "frames" and "--noise-estimate frames" in meta["command"]
    assert torch.load(model, map_location="cpu", weights_only=True)["config"]["noise"] == "frames"
    assert main(["train", *args[1:-5], "--out", str(tmp_path / "m.pt"), "--noise-estimate", "frames"]) == 2
    movie_path = project / "Movies" / "movie_0002.mrcs"
    shifts = project / "truth" / "movie_0002_shifts.star"
    images = {}
    for extra in ([], ["--noise-estimate", "frames"], ["--noise-estimate", "corner"]):
        out = tmp_path / f"out{len(images)}"
        assert main(["enhance", str(movie_path), "--out", str(out), "--model", str(model), "--device", "cpu",
                     "--shifts", str(shifts), *extra]) == 0
        images[tuple(extra)] = read_micrograph(out / "movie_0002.mrc").data
    torch.testing.assert_close(images[()], images[("--noise-estimate", "frames")])
    assert not torch.equal(images[()], images[("--noise-estimate", "corner")])


def test_shipped_weights_beat_the_plain_and_dose_weighted_sums(project, tmp_path):
    """The default weights on a simulated movie (seed not used in training): PSNR vs the clean truth."""
    movie_path = project / "Movies" / "movie_0001.mrcs"
    shifts = project / "truth" / "movie_0001_shifts.star"
    out = tmp_path / "out"
    assert main(["enhance", str(movie_path), "--out", str(out), "--device", "cpu", "--shifts", str(shifts)]) == 0
    enhanced = read_micrograph(out / "movie_0001.mrc").data
    truth = bin_sum(read_micrograph(project / "truth" / "movie_0001_clean.mrc").data, 2) / 4
    truth = truth / truth.mean()
    aligned = fourier_shift(read_movie(movie_path).frames, -read_true_shifts(shifts))
    plain = aligned.sum(0)
    dw = dose_weighted_sum(aligned, Acquisition(1.0, 2.0))
    score = psnr(enhanced / enhanced.mean(), truth)
    assert score > psnr(plain / plain.mean(), truth) + 3.0
    assert score > psnr(dw / dw.mean(), truth) + 3.0
