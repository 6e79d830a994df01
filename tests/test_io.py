"""core/io: movies, micrographs, gain, STAR round trips, and one-line errors for bad input."""

import warnings

import mrcfile
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from cryosr.core.errors import InputError
from cryosr.core.io import atomic_path, read_gain, read_micrograph, read_movie, read_star, write_mrc, write_star
from cryosr.core.io.movie import correct_defects
from tests.conftest import shared_data


def _frames(t=3, h=8, w=10, seed=0):
    return np.random.default_rng(seed).poisson(3.0, size=(t, h, w))


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.uint8, np.int16, np.uint16, np.float32])
def test_read_mrc_movie_modes(tmp_path, dtype):
    data = _frames().astype(dtype)
    p = tmp_path / "m.mrcs"
    with mrcfile.new(p) as m:
        m.set_data(data)
        m.voxel_size = 0.83
    movie = read_movie(p)
    assert movie.frames.dtype == torch.float32 and movie.n_frames == 3
    np.testing.assert_array_equal(movie.frames.numpy(), data.astype(np.float32))
    assert movie.pixel_size_a == pytest.approx(0.83, abs=1e-5)


@pytest.mark.parametrize("compression", [None, "lzw", "deflate"])
def test_read_tiff_movie(tmp_path, compression):
    data = _frames().astype(np.uint8)
    p = tmp_path / "m.tif"
    tifffile.imwrite(p, data, compression=compression)
    movie = read_movie(p)
    np.testing.assert_array_equal(movie.frames.numpy(), data)


def test_gain_is_multiplied_and_oriented_like_relion(tmp_path):
    data = np.ones((2, 4, 6), np.float32)
    mpath = tmp_path / "m.mrcs"
    write_mrc(mpath, data, 1.0)
    gain = np.arange(24, dtype=np.float32).reshape(4, 6) + 1
    gpath = tmp_path / "gain.mrc"
    write_mrc(gpath, gain, 1.0)
    movie = read_movie(mpath, gain=gpath)
    np.testing.assert_array_equal(movie.frames[1].numpy(), gain)
    # rotate by 90 deg clockwise twice == 180 deg; flip 2 = left-right
    np.testing.assert_array_equal(read_gain(gpath, rotate=2).numpy(), gain[::-1, ::-1])
    np.testing.assert_array_equal(read_gain(gpath, flip=2).numpy(), gain[:, ::-1])
    np.testing.assert_array_equal(read_gain(gpath, flip=1).numpy(), gain[::-1, :])
    np.testing.assert_array_equal(read_gain(gpath, rotate=1).numpy(), np.rot90(gain, k=-1))
    with pytest.raises(InputError, match="gain shape"):
        read_movie(mpath, gain=gpath, gain_rotate=1)
    with pytest.raises(InputError, match="gain reference not found"):
        read_movie(mpath, gain=tmp_path / "nope.mrc")


def test_defect_correction_replaces_hot_pixels():
    frames = torch.poisson(torch.full((10, 32, 32), 2.0), generator=torch.Generator().manual_seed(0))
    frames[:, 5, 7] = 500
    fixed, n = correct_defects(frames)
    assert n == 1 and fixed[:, 5, 7].max().item() < 20


def test_bad_movies_give_one_line_errors(tmp_path):
    cases = {}
    p = tmp_path / "trunc.mrcs"
    write_mrc(p, np.zeros((4, 16, 16), np.float32), 1.0)
    p.write_bytes(p.read_bytes()[:-100])
    cases[p] = "truncated|not a readable"
    nan = tmp_path / "nan.mrcs"
    arr = np.zeros((3, 8, 8), np.float32)
    arr[1, 2, 2] = np.nan
    with warnings.catch_warnings(), mrcfile.new(nan) as m:
        warnings.simplefilter("ignore")
        m.set_data(arr)
    cases[nan] = r"frame\(s\) \[1\] contain NaN"
    vol4 = tmp_path / "x.txt"
    vol4.write_text("hello")
    cases[vol4] = "unknown movie extension"
    eer = tmp_path / "a.eer"
    eer.write_bytes(b"\0")
    cases[eer] = "EER"
    cases[tmp_path / "missing.mrcs"] = "no such file"
    garbage = tmp_path / "garbage.mrc"
    garbage.write_bytes(b"\x01" * 100)
    cases[garbage] = "not a readable MRC"
    for path, msg in cases.items():
        with pytest.raises(InputError, match=msg) as info:
            read_movie(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_micrograph_rejects_stacks_and_reads_fei_extended_header(tmp_path):
    p = tmp_path / "stack.mrc"
    write_mrc(p, np.zeros((2, 8, 8), np.float32), 1.0)
    with pytest.raises(InputError, match="stack of 2"):
        read_micrograph(p)
    fei = read_micrograph(shared_data("real", "micrographs", "mrcfile_fei", "epu2.9_example.mrc"))
    assert fei.data.ndim == 2 and fei.pixel_size_a is not None and fei.pixel_size_a > 0


def test_write_mrc_is_atomic_and_keeps_pixel_size(tmp_path):
    p = tmp_path / "out" / "a.mrc"
    write_mrc(p, torch.ones(6, 4), 0.65)
    with mrcfile.open(p) as m:
        assert m.data.dtype == np.float32 and m.voxel_size.x == pytest.approx(0.65)
    with pytest.raises(InputError, match="exists"):
        write_mrc(p, torch.ones(6, 4), 0.65)
    with pytest.raises(InputError, match="NaN"):
        write_mrc(tmp_path / "b.mrc", torch.full((2, 2), float("nan")), 1.0)
    assert not (tmp_path / "b.mrc").exists()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "c.mrc") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(
    "name",
    [
        "relion31tutorial__movies.star",
        "relion31tutorial__corrected_micrographs.star",
        "relion31tutorial__micrographs_ctf.star",
        "relion31tutorial__20170629_00021_frameImage.star",
        "relion5__corrected_micrographs.star",
        "relion5__micrographs_ctf.star",
        "relion5__particles.first200rows.star",
        "relion5__RELION_OUTPUT_NODES.star",
    ],
)
def test_star_round_trip_keeps_every_block_and_column(tmp_path, name):
    src = shared_data("relion", name)
    blocks = read_star(src)
    out = write_star(tmp_path / name, blocks)
    again = read_star(out)
    assert list(again) == list(blocks)
    for key, block in blocks.items():
        if isinstance(block, pd.DataFrame):
            assert list(again[key].columns) == list(block.columns)
            pd.testing.assert_frame_equal(again[key], block, check_dtype=False, atol=1e-6)
        else:
            assert again[key].keys() == block.keys()
    if "optics" in blocks:
        assert list(again["optics"]["rlnOpticsGroup"]) == list(blocks["optics"]["rlnOpticsGroup"])


def test_bad_star(tmp_path):
    with pytest.raises(InputError, match="no such STAR"):
        read_star(tmp_path / "x.star")
