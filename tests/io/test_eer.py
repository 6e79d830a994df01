"""EER movies: cryosr's encoder against imagecodecs/tifffile (event for event), the reader, bad input, gain rules.

The RELION tests write 4096 x 4096 movies (RELION 3.1 reads no other size) and run the real
``relion_import`` + ``relion_run_motioncorr --use_own`` on them.
"""

from __future__ import annotations

import logging
import os
import subprocess

import imagecodecs
import mrcfile
import numpy as np
import pytest
import tifffile
import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.errors import InputError
from cryosr.core.io import read_movie, write_mrc
from cryosr.core.io.eer import (
    DEFAULT_EER_GROUPING,
    eer_fractions,
    eer_gain,
    encode_eer_frame,
    read_eer_header,
    rendered_acquisition,
    write_eer,
)
from cryosr.core.io.motion_star import read_relion_motion
from cryosr.core.io.movie import read_eer_gain, read_movie_header
from tests.helpers import relion_exe

H, W = 40, 24  # physical frame of the small tests


def _random_events(rng: np.random.Generator, shape: tuple[int, int], k: int) -> np.ndarray:
    """`(k, 2)` (y, x) events on the 4x grid, at most one per physical pixel."""
    h, w = shape
    pix = rng.choice(h * w, size=min(k, h * w), replace=False)
    return np.stack([(pix // w) * 4 + rng.integers(0, 4, pix.size), (pix % w) * 4 + rng.integers(0, 4, pix.size)], 1)


def _edge_frames(rng: np.random.Generator) -> list[np.ndarray]:
    """Frames that exercise the run-length code: empty, first and last pixel, runs of exactly 127 and 254, long gaps."""
    n = H * W
    special = [np.array([0, n - 1]), np.array([127, 255, 509]), np.array([n - 1]), np.array([126, 127 + 126 + 1])]
    frames = [np.zeros((0, 2), np.int64)]
    for pix in special:
        frames.append(np.stack([(pix // W) * 4 + rng.integers(0, 4, pix.size), (pix % W) * 4 + rng.integers(0, 4, pix.size)], 1))
    frames += [_random_events(rng, (H, W), int(k)) for k in rng.integers(1, 400, 7)]
    return frames


def _render(events: np.ndarray, level: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """Expected image at super-resolution ``level`` (0: physical, 1: 2x, 2: 4x): counts per pixel."""
    out = np.zeros((shape[0] << level, shape[1] << level), np.int64)
    np.add.at(out, (events[:, 0] >> (2 - level), events[:, 1] >> (2 - level)), 1)
    return out


@pytest.mark.parametrize("compression", [65001, 65002])
def test_encoder_and_imagecodecs_agree_event_for_event(tmp_path, compression):
    """Each strip decoded by imagecodecs.eer_decode and each page by tifffile gives our events at levels 0/1/2."""
    rng = np.random.default_rng(compression)
    frames = _edge_frames(rng)
    for events in frames:
        strip = encode_eer_frame(events[:, 0], events[:, 1], (H, W))
        for level in (0, 1, 2):
            decoded = imagecodecs.eer_decode(strip, (H << level, W << level), 7, 2, 2, superres=level)
            np.testing.assert_array_equal(decoded.astype(np.int64), _render(events, level))
    path = write_eer(tmp_path / "m.eer", frames, (H, W), len(frames), pixel_size_a=0.83, compression=compression)
    for level in (0, 1, 2):
        with tifffile.TiffFile(path, superres=level) as tif:
            assert tif.is_eer and tif.pages.first.compression == compression
            stack = tif.asarray()
            meta = tif.eer_metadata
        assert stack.shape == (len(frames), H << level, W << level)
        for j, events in enumerate(frames):
            np.testing.assert_array_equal(stack[j].astype(np.int64), _render(events, level))
            assert int(stack[j].sum()) == len(events)  # counts per frame
    assert meta["sensorPixelSize.width"] == pytest.approx(0.83e-10) and int(meta["numberOfFrames"]) == len(frames)


def test_encoder_refuses_events_it_cannot_store():
    with pytest.raises(ValueError, match="at most one"):
        encode_eer_frame(np.array([0, 1]), np.array([0, 2]), (H, W))  # two events in pixel (0, 0)
    with pytest.raises(ValueError, match="outside"):
        encode_eer_frame(np.array([4 * H]), np.array([0]), (H, W))


def test_read_movie_renders_fractions_on_either_grid(tmp_path):
    rng = np.random.default_rng(1)
    frames = [_random_events(rng, (H, W), 150) for _ in range(10)]
    path = write_eer(tmp_path / "m.eer", frames, (H, W), 10, pixel_size_a=0.8)
    header = read_eer_header(path)
    assert (header.n_frames, header.shape, header.compression, header.pixel_size_a) == (10, (H, W), 65001, 0.8)
    for up in (1, 2):
        movie = read_movie(path, eer_grouping=5, eer_upsampling=up)
        assert movie.frames.shape == (2, H * up, W * up) and movie.frames.dtype == torch.float32
        assert movie.pixel_size_a == pytest.approx(0.8 / up)
        for f in range(2):
            expected = sum(_render(e, up - 1) for e in frames[5 * f : 5 * f + 5])
            np.testing.assert_array_equal(movie.frames[f].numpy(), expected)  # rows in file order: no Y flip
        header = read_movie_header(path, eer_grouping=5, eer_upsampling=up)
        assert header.shape == (2, H * up, W * up) and header.grid_upsampling == up
        assert header.pixel_size_a == pytest.approx(0.8 / up)
    # the dose of a rendered fraction: per detector frame x grouping (RELION's --dose_per_frame for EER)
    acq = rendered_acquisition(Acquisition(0.8, dose_per_frame_e_a2=0.05), grouping=5, upsampling=2)
    assert acq.pixel_size_a == pytest.approx(0.4) and acq.dose_per_frame_e_a2 == pytest.approx(0.25)


def test_grouping_rules_follow_relion(tmp_path, caplog):
    rng = np.random.default_rng(2)
    path = write_eer(tmp_path / "m.eer", [_random_events(rng, (H, W), 20) for _ in range(7)], (H, W), 7, pixel_size_a=1.0)
    with caplog.at_level(logging.WARNING):
        movie = read_movie(path, eer_grouping=3)
    assert movie.n_frames == 2 and "the last 1 frames are dropped" in caplog.text
    assert eer_fractions(None, 400, 0) == 400 // DEFAULT_EER_GROUPING
    for kwargs, msg in (({"eer_grouping": 8}, "grouping 8 is larger than the movie's 7 frames"),
                        ({"eer_grouping": 2, "eer_upsampling": 4}, "upsampling 4: must be 1"),
                        ({"eer_grouping": -1}, "must be >= 1")):  # fmt: skip
        for reader in (read_movie, read_movie_header):
            with pytest.raises(InputError, match=msg) as info:
                reader(path, **kwargs)
            assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_eer_files_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(3)
    good = write_eer(tmp_path / "good.eer", [_random_events(rng, (H, W), 300) for _ in range(4)], (H, W), 4, pixel_size_a=1.0)
    data = good.read_bytes()
    cases = {}
    cut = tmp_path / "cut.eer"
    cut.write_bytes(data[: len(data) - 40])  # the last strip loses its end
    cases[cut] = "truncated EER file"
    cut_ifd = tmp_path / "cut_ifd.eer"
    cut_ifd.write_bytes(data[: int(len(data) * 0.6)])
    cases[cut_ifd] = "truncated EER file|not a readable EER movie"
    plain = tmp_path / "plain.eer"
    tifffile.imwrite(plain, np.zeros((2, H, W), np.uint8), compression="lzw")
    cases[plain] = "not an EER movie"
    garbage = tmp_path / "garbage.eer"
    garbage.write_bytes(b"\x01" * 100)
    cases[garbage] = "not a readable EER movie"
    for path, msg in cases.items():
        for reader in (read_movie, read_eer_header):
            with pytest.raises(InputError, match=msg) as info:
                reader(path, eer_grouping=2) if reader is read_movie else reader(path)
            assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "m.eer"
    with pytest.raises(InputError, match="2 EER frames given, 3 declared"):
        write_eer(target, [np.zeros((0, 2))] * 2, (H, W), 3, pixel_size_a=1.0)
    with pytest.raises(ValueError, match="at most one"):
        write_eer(target, [np.array([[0, 0], [1, 1]])], (H, W), 1, pixel_size_a=1.0)
    assert list(tmp_path.iterdir()) == []


def test_eer_gain_follows_relion_load_eer_gain(tmp_path):
    """RELION's loadEERGain: 4K gain repeated 2x2 on the 8K grid, 8K gain summed on the 4K grid, MRC inverted (mean / g, 0 kept)."""
    g = torch.tensor([[1.0, 2.0], [4.0, 0.0]])
    mean = g.mean()
    inv = torch.tensor([[mean / 1, mean / 2], [mean / 4, 0.0]])
    torch.testing.assert_close(eer_gain(g, (2, 2), 1, multiplicative=False), inv)
    up = eer_gain(g, (2, 2), 2, multiplicative=False)  # the mean over the 8K grid equals the 4K mean
    torch.testing.assert_close(up, inv.repeat_interleave(2, 0).repeat_interleave(2, 1))
    fine = torch.arange(1.0, 17.0).reshape(4, 4)
    binned = fine.reshape(2, 2, 2, 2).sum((1, 3))
    torch.testing.assert_close(eer_gain(fine, (2, 2), 1, multiplicative=False), binned.mean() / binned)
    torch.testing.assert_close(eer_gain(fine, (2, 2), 2, multiplicative=False), fine.mean() / fine)
    torch.testing.assert_close(eer_gain(fine, (2, 2), 1, multiplicative=True), binned / 4)
    for bad in (torch.ones(3, 2), torch.ones(8, 8)):
        for up in (1, 2):
            with pytest.raises(InputError, match="fits neither the EER frames"):
                eer_gain(bad, (2, 2), up, multiplicative=False, path=tmp_path / "gain.mrc")


def test_read_movie_applies_eer_gain_files(tmp_path):
    rng = np.random.default_rng(4)
    frames = [_random_events(rng, (H, W), 300) for _ in range(4)]
    movie = write_eer(tmp_path / "m.eer", frames, (H, W), 4, pixel_size_a=1.0)
    sensitivity = torch.from_numpy(rng.uniform(0.8, 1.2, (H, W)).astype(np.float32))
    write_mrc(tmp_path / "gain.mrc", sensitivity, 1.0)
    raw = read_movie(movie, eer_grouping=2, eer_upsampling=2).frames
    corrected = read_movie(movie, eer_grouping=2, eer_upsampling=2, gain=tmp_path / "gain.mrc").frames
    factor = (sensitivity.mean() / sensitivity).repeat_interleave(2, 0).repeat_interleave(2, 1)
    torch.testing.assert_close(corrected, raw * factor)
    # EPU's .gain TIFF multiplies, on the file's rows (no Y flip, as RELION >= 4)
    tifffile.imwrite(tmp_path / "epu.gain", factor.numpy()[::2, ::2].copy())
    torch.testing.assert_close(read_movie(movie, eer_grouping=2, eer_upsampling=2, gain=tmp_path / "epu.gain").frames, corrected)
    torch.testing.assert_close(read_eer_gain(tmp_path / "epu.gain", (H, W), 1), factor[::2, ::2])
    for wrong in ((H + 2, W), (2 * H, 2 * W + 2)):
        write_mrc(tmp_path / "wrong.mrc", torch.ones(wrong), 1.0, overwrite=True)
        for up in (1, 2):
            with pytest.raises(InputError, match="fits neither") as info:
                read_movie(movie, eer_grouping=2, eer_upsampling=up, gain=tmp_path / "wrong.mrc")
            assert "wrong.mrc" in str(info.value)


# ---------------------------------------------------------------- real RELION 3.1 (4096 x 4096 only)

EER_4K = (4096, 4096)
RELION_GROUPING = 3
SHIFT_PER_FRACTION = (2, 3)  # content displacement (y, x) in physical pixels per fraction


def _texture(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """A smooth random pattern in [-1, 1] (something for RELION's alignment to lock on)."""
    g = torch.Generator().manual_seed(seed)
    k2 = torch.fft.fftfreq(shape[0])[:, None] ** 2 + torch.fft.rfftfreq(shape[1])[None, :] ** 2
    tex = torch.fft.irfft2(torch.fft.rfft2(torch.randn(shape, generator=g)) * torch.exp(-k2 / (2 * 0.01**2)), shape)
    return (tex / (2 * tex.std())).clamp(-1, 1)


def _moving_eer_frames(n_frames: int, rate: float, sensitivity: torch.Tensor | None, seed: int, contrast: float = 0.5):
    """Detector frames of a texture that moves by SHIFT_PER_FRACTION each fraction (at most one event per pixel)."""
    rng = np.random.default_rng(seed)
    tex = _texture(EER_4K, seed)
    for f in range(n_frames):
        j = f // RELION_GROUPING
        lam = rate * (1 + contrast * torch.roll(tex, (SHIFT_PER_FRACTION[0] * j, SHIFT_PER_FRACTION[1] * j), (0, 1)))
        if sensitivity is not None:
            lam = lam * sensitivity
        yy, xx = np.nonzero(rng.random(EER_4K) < lam.numpy())
        yield np.stack([yy * 4 + rng.integers(0, 4, yy.size), xx * 4 + rng.integers(0, 4, xx.size)], 1)


def _relion_motioncorr(proj, upsampling: int, *, gain: str | None = None, job: str = "MotionCorr/job002") -> np.ndarray:
    relion_exe("relion_import", "relion_run_motioncorr")
    env = dict(os.environ, OMP_NUM_THREADS="2")
    if not (proj / "Import/job001/movies.star").exists():
        (proj / "Import/job001").mkdir(parents=True)
        subprocess.run(["relion_import", "--do_movies", "--optics_group_name", "opticsGroup1", "--angpix", "1.0",
                        "--kV", "300", "--Cs", "2.7", "--Q0", "0.1", "--i", "Movies/*.eer", "--odir", "Import/job001/",
                        "--ofile", "movies.star"], cwd=proj, env=env, check=True, capture_output=True)  # fmt: skip
    cmd = ["relion_run_motioncorr", "--i", "Import/job001/movies.star", "--o", f"{job}/", "--use_own", "--j", "2",
           "--eer_grouping", str(RELION_GROUPING), "--eer_upsampling", str(upsampling), "--bin_factor", "1",
           "--bfactor", "150", "--dose_per_frame", "0.15", "--patch_x", "1", "--patch_y", "1", "--skip_defect"]  # fmt: skip
    if gain:
        cmd += ["--gainref", gain]
    proc = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=600)
    out = proj / job / "Movies" / "m1.mrc"
    assert proc.returncode == 0 and out.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    with mrcfile.open(out) as mrc:
        return np.array(mrc.data, dtype=np.float64)


@pytest.mark.relion
@pytest.mark.slow
def test_relion_reads_our_eer_at_both_grids(tmp_path):
    """relion_run_motioncorr renders our EER at 4K and 8K: size, counts, orientation and shifts as cryosr reads them."""
    relion_exe("relion_import", "relion_run_motioncorr")
    proj = tmp_path / "proj"
    n_frames = 3 * RELION_GROUPING  # RELION needs at least 3 fractions
    path = write_eer(proj / "Movies" / "m1.eer", _moving_eer_frames(n_frames, 0.05, None, 0), EER_4K, n_frames, pixel_size_a=1.0)
    ours = read_movie(path, eer_grouping=RELION_GROUPING).frames.double()
    events = float(ours.sum())
    truth = -np.outer(np.arange(3), SHIFT_PER_FRACTION)  # RELION's sign: the correction, in physical pixels
    for up in (1, 2):
        mic = _relion_motioncorr(proj, up, job=f"MotionCorr/up{up}")
        assert mic.shape == (4096 * up, 4096 * up)
        assert mic.sum() == pytest.approx(events, rel=2e-3)  # every event rendered once (mean dose)
        motion = read_relion_motion(proj / f"MotionCorr/up{up}/Movies/m1.star")
        assert (motion.eer_grouping, motion.eer_upsampling, motion.dose_per_frame) == (RELION_GROUPING, up, 0.15)
        relion_yx = -motion.shifts_yx_px.numpy()  # back to RELION's stored sign
        np.testing.assert_allclose(relion_yx / up, truth, atol=0.5)  # stored on the rendered grid
        np.testing.assert_allclose(-motion.shifts_for_eer_upsampling(1).numpy(), truth, atol=0.5)
        binned = mic.reshape(4096, up, 4096, up).sum((1, 3))
        ref = ours[0].numpy() - ours[0].numpy().mean()
        same = np.corrcoef(binned.ravel(), ref.ravel())[0, 1]
        flipped = np.corrcoef(binned[::-1].ravel(), ref.ravel())[0, 1]
        assert same > 0.3 and abs(flipped) < 0.05, (same, flipped)  # EER rows are not flipped by either


@pytest.mark.relion
@pytest.mark.slow
def test_relion_applies_our_eer_gain_reference(tmp_path):
    """An MRC sensitivity map as EER gain: RELION (mean / gain) and cryosr give the same flat-fielded counts."""
    relion_exe("relion_import", "relion_run_motioncorr")
    proj = tmp_path / "proj"
    rng = np.random.default_rng(5)
    coarse = torch.from_numpy(rng.uniform(0.6, 1.4, (64, 64)).astype(np.float32))
    sensitivity = coarse.repeat_interleave(64, 0).repeat_interleave(64, 1)  # 64 px blocks: visible in a sum
    write_mrc(proj / "Movies" / "gain.mrc", sensitivity, 1.0)
    n_frames = 3 * RELION_GROUPING
    path = write_eer(proj / "Movies" / "m1.eer", _moving_eer_frames(n_frames, 0.1, sensitivity, 1, contrast=0.2), EER_4K, n_frames,
                     pixel_size_a=1.0)  # fmt: skip
    mic = _relion_motioncorr(proj, 1, gain="Movies/gain.mrc")
    ours = read_movie(path, eer_grouping=RELION_GROUPING, gain=proj / "Movies" / "gain.mrc").frames.sum(0).double().numpy()
    raw = read_movie(path, eer_grouping=RELION_GROUPING).frames.sum(0).double().numpy()

    def blocks(img: np.ndarray) -> np.ndarray:  # 64 px block means, the grid of the gain pattern
        return img.reshape(64, 64, 64, 64).mean((1, 3))[1:-1, 1:-1].ravel()

    pattern = coarse.numpy()[1:-1, 1:-1].ravel()
    assert np.corrcoef(blocks(raw), pattern)[0, 1] > 0.9  # the sensitivity shows before correction
    for corrected in (mic, ours):  # RELION (mean / gain) and cryosr: flat-fielded, only the texture remains
        assert abs(np.corrcoef(blocks(corrected), pattern)[0, 1]) < 0.1
    ratio = blocks(mic) / blocks(ours)  # RELION's sum is aligned, ours not: block means agree to the shot noise
    assert abs(ratio.mean() - 1) < 2e-3 and ratio.std() < 0.02
    assert mic.mean() == pytest.approx(ours.mean(), rel=2e-3)
