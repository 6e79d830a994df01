"""core/io: movies, micrographs, gain, STAR round trips, and one-line errors for bad input."""

import subprocess
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from cryosr.core.errors import InputError
from cryosr.core.io import atomic_path, read_gain, read_micrograph, read_movie, read_star, write_mrc, write_star
from cryosr.core.io.fei import read_fei_metadata
from cryosr.core.io.movie import correct_defects, read_defects
from cryosr.core.io.mrc import read_volume
from tests.helpers import relion_exe, shared_data


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
    np.testing.assert_array_equal(movie.frames.numpy(), data[:, ::-1, :])  # RELION: TIFF flipped along Y
    np.testing.assert_array_equal(read_movie(p, tiff_flip_y=False).frames.numpy(), data)
    assert movie.pixel_size_a is None


@pytest.mark.relion
def test_tiff_and_mrc_orientation_match_relion(tmp_path):
    """relion_image_handler turns our TIFF and MRC test movies into MRCs: we read what RELION reads."""
    (exe,) = relion_exe("relion_image_handler")
    data = np.zeros((2, 6, 8), np.uint16)
    data[:, 0, 0], data[:, 1, 0], data[1, 0, 7] = 9, 5, 3  # asymmetric: any flip or transpose shows
    tifffile.imwrite(tmp_path / "m.tif", data, compression="lzw")
    write_mrc(tmp_path / "m.mrcs", data.astype(np.float32), 1.0)
    for name in ("m.tif", "m.mrcs"):
        out = f"relion_{Path(name).stem}_{Path(name).suffix[1:]}.mrcs"
        subprocess.run([exe, "--i", name, "--o", out], cwd=tmp_path, check=True, capture_output=True)
        with mrcfile.open(tmp_path / out) as m:
            np.testing.assert_array_equal(read_movie(tmp_path / name).frames.numpy(), m.data)


def test_tiff_gain_and_gain_extension(tmp_path):
    gain = (np.arange(20, dtype=np.float32).reshape(4, 5) + 1) / 10
    tifffile.imwrite(tmp_path / "g.gain", gain)  # EPU Falcon gains are TIFF files named .gain
    tifffile.imwrite(tmp_path / "m.tif", np.ones((2, 4, 5), np.uint8))
    np.testing.assert_allclose(read_gain(tmp_path / "g.gain").numpy(), gain[::-1])
    movie = read_movie(tmp_path / "m.tif", gain=tmp_path / "g.gain")
    np.testing.assert_allclose(movie.frames[0].numpy(), gain[::-1])  # movie and gain flipped alike
    np.testing.assert_allclose(read_gain(tmp_path / "g.gain", tiff_flip_y=False, flip=1).numpy(), gain[::-1])
    with pytest.raises(InputError, match="single image"):
        read_gain(tmp_path / "m.tif")
    bad = tmp_path / "bad.mrc"
    write_mrc(bad, np.ones((1, 2), np.float32), 1.0)
    with mrcfile.open(bad, mode="r+") as m:
        m.data[0, 1] = np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        read_gain(bad)
    with pytest.raises(InputError, match="rotate must be 0-3"):
        read_gain(tmp_path / "g.gain", rotate=4)

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
    assert torch.equal(fixed[:, :5], frames[:, :5])  # good pixels untouched


def test_defect_files_list_and_map(tmp_path):
    data = np.full((2, 6, 8), 4.0, np.float32)
    data[:, 1, 2:5] = 0  # a dead row segment (not hot: only a defect file finds it)
    write_mrc(tmp_path / "m.mrcs", data, 1.0)
    (tmp_path / "defects.txt").write_text("# x y w h\n2 1 3 1\n")
    fixed = read_movie(tmp_path / "m.mrcs", defects=tmp_path / "defects.txt").frames
    np.testing.assert_allclose(fixed.numpy(), 4.0)
    defect_map = np.zeros((6, 8), np.float32)
    defect_map[1, 2:5] = 1
    write_mrc(tmp_path / "defects.mrc", defect_map, 1.0)
    np.testing.assert_allclose(read_movie(tmp_path / "m.mrcs", defects=tmp_path / "defects.mrc").frames.numpy(), 4.0)
    assert torch.equal(read_defects(tmp_path / "defects.txt", (6, 8)), torch.from_numpy(defect_map > 0))
    (tmp_path / "bad.txt").write_text("2 1 three 1\n")
    with pytest.raises(InputError, match="line 1"):
        read_movie(tmp_path / "m.mrcs", defects=tmp_path / "bad.txt")
    (tmp_path / "outside.txt").write_text("20 1 3 1\n")
    with pytest.raises(InputError, match="outside"):
        read_movie(tmp_path / "m.mrcs", defects=tmp_path / "outside.txt")
    write_mrc(tmp_path / "small.mrc", np.zeros((5, 8), np.float32), 1.0)
    with pytest.raises(InputError, match="does not match"):
        read_movie(tmp_path / "m.mrcs", defects=tmp_path / "small.mrc")
    with pytest.raises(InputError, match="defect file not found"):
        read_movie(tmp_path / "m.mrcs", defects=tmp_path / "none.txt")


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
    inf = tmp_path / "inf.mrcs"
    arr = np.zeros((3, 8, 8), np.float32)
    arr[2, 0, 0] = -np.inf
    write_mrc(inf, np.zeros_like(arr), 1.0)
    with mrcfile.open(inf, mode="r+") as m:
        m.data[:] = arr
    cases[inf] = r"frame\(s\) \[2\] contain NaN or Inf"
    four_d = tmp_path / "v4.mrc"
    with warnings.catch_warnings(), mrcfile.new(four_d) as m:
        warnings.simplefilter("ignore")
        m.set_data(np.zeros((2, 3, 4, 5), np.float32))  # a volume stack
    cases[four_d] = r"expected a \(frames, y, x\) stack, found shape \(2, 3, 4, 5\)"
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
    epu = shared_data("real", "micrographs", "mrcfile_fei", "epu2.9_example.mrc")
    fei = read_micrograph(epu)
    assert fei.data.shape == (4096, 4096) and fei.pixel_size_a == pytest.approx(0.66655, abs=1e-4)
    meta = read_fei_metadata(epu)  # EPU's FEI2 extended header: microscope settings of the exposure
    assert meta["voltage_kv"] == pytest.approx(300.0) and meta["pixel_size_a"] == pytest.approx(fei.pixel_size_a, rel=1e-4)
    assert meta["defocus_um"] == pytest.approx(1.815, abs=1e-3) and meta["applied_defocus_um"] == pytest.approx(-2.2)
    assert read_fei_metadata(p) is None  # no FEI header


def test_micrograph_and_volume_errors_and_permissive_fallback(tmp_path, caplog):
    nan = tmp_path / "nan.mrc"
    write_mrc(nan, np.zeros((4, 4), np.float32), 1.0)
    with mrcfile.open(nan, mode="r+") as m:
        m.data[1, 1] = np.nan
    with pytest.raises(InputError, match="NaN or Inf pixels"):
        read_micrograph(nan)
    assert read_micrograph(nan, check_finite=False).data.shape == (4, 4)
    flat = tmp_path / "flat.mrc"
    write_mrc(flat, np.zeros((4, 4), np.float32), 1.0)
    with pytest.raises(InputError, match="expected 3-D data"):
        read_volume(flat)
    # an old header without the "MAP " ID: strict mrcfile refuses it, permissive mode reads it
    old = tmp_path / "old.mrc"
    write_mrc(old, np.arange(12, dtype=np.float32).reshape(3, 4), 1.7)
    raw = bytearray(old.read_bytes())
    raw[208:212] = bytes(4)
    old.write_bytes(bytes(raw))
    with pytest.raises(ValueError), mrcfile.open(old):
        pass
    with caplog.at_level("WARNING"):
        mic = read_micrograph(old)
    np.testing.assert_array_equal(mic.data.numpy(), np.arange(12).reshape(3, 4))
    assert mic.pixel_size_a == pytest.approx(1.7) and "read permissively" in caplog.text


def test_write_mrc_is_atomic_and_keeps_pixel_size(tmp_path):
    p = tmp_path / "out" / "a.mrc"
    write_mrc(p, torch.ones(6, 4), 0.65)
    with mrcfile.open(p) as m:
        assert m.data.dtype == np.float32 and m.voxel_size.x == pytest.approx(0.65)
    with pytest.raises(InputError, match="exists"):
        write_mrc(p, torch.ones(6, 4), 0.65)
    write_mrc(p, torch.zeros(2, 3, 5), 1.3, overwrite=True)  # only when asked
    with mrcfile.open(p) as m:
        assert m.data.shape == (2, 3, 5) and float(m.data.max()) == 0 and m.voxel_size.x == pytest.approx(1.3)
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
        "relion31tutorial__default_pipeline.star",
        "relion5__default_pipeline.star",
        "relion5__mtf_k2_200kV.star",
        "GoToFly-JK__external_cryolo_job.star",
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
            assert list(again[key].items()) == list(block.items())
    if "optics" in blocks:
        assert list(again["optics"]["rlnOpticsGroup"]) == list(blocks["optics"]["rlnOpticsGroup"])
        assert len(again["optics"]) == len(blocks["optics"])


@pytest.mark.relion
def test_relion_reads_round_tripped_star_files(tmp_path):
    (exe,) = relion_exe("relion_star_printtable")
    for name, block, label in [
        ("relion5__particles.first200rows.star", "data_particles", "rlnImageName"),
        ("relion5__particles.first200rows.star", "data_optics", "rlnOpticsGroupName"),
        ("relion31tutorial__micrographs_ctf.star", "data_micrographs", "rlnDefocusU"),
    ]:
        src = shared_data("relion", name)
        out = write_star(tmp_path / name, read_star(src))

        def table(path, block=block, label=label):
            res = subprocess.run([exe, str(path), block, label], capture_output=True, text=True, check=True)
            return res.stdout.split()

        assert table(out) == table(src) and len(table(out)) > 0


def test_bad_star(tmp_path):
    with pytest.raises(InputError, match="no such STAR"):
        read_star(tmp_path / "x.star")
