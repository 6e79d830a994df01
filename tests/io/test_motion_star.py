"""RELION per-micrograph motion STAR -> per-frame shifts in cryosr's convention."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from cryosr.core.errors import InputError
from cryosr.core.io import write_star
from cryosr.core.io.motion_star import read_relion_motion
from tests.helpers import shared_data


def _write(path: Path, shifts_xy: list[tuple[float, float]], **general) -> Path:
    blocks = {
        "general": {
            "rlnImageSizeX": 400,
            "rlnImageSizeY": 300,
            "rlnImageSizeZ": len(shifts_xy),
            "rlnMicrographMovieName": "Movies/m1.tiff",
            "rlnMicrographBinning": 2.0,
            "rlnMicrographOriginalPixelSize": 0.65,
            "rlnMicrographDoseRate": 1.5,
            "rlnMicrographPreExposure": 0.5,
            "rlnVoltage": 300.0,
            "rlnMicrographStartFrame": 1,
            **general,
        },
        "global_shift": pd.DataFrame(
            {
                "rlnMicrographFrameNumber": list(range(1, len(shifts_xy) + 1)),
                "rlnMicrographShiftX": [s[0] for s in shifts_xy],
                "rlnMicrographShiftY": [s[1] for s in shifts_xy],
            }
        ),
    }
    return write_star(path, blocks)


def test_shifts_are_negated_and_swapped_to_yx(tmp_path: Path) -> None:
    # RELION stores the correction applied to each frame (x, y); ours is the content motion (y, x)
    path = _write(tmp_path / "m1.star", [(0.0, 0.0), (1.5, -0.25), (3.0, -0.75)])
    motion = read_relion_motion(path)
    expected = torch.tensor([[0.0, 0.0], [0.25, -1.5], [0.75, -3.0]])
    torch.testing.assert_close(motion.shifts_yx_px, expected)
    assert motion.binning == 2.0
    assert motion.pixel_size_a == 0.65
    assert motion.dose_per_frame == 1.5
    assert motion.pre_exposure == 0.5
    assert motion.voltage_kv == 300.0
    assert motion.image_size_yx == (300, 400)
    assert motion.n_frames_movie == 3
    assert motion.matches_movie("/elsewhere/m1.tiff")
    assert not motion.matches_movie("m2.tiff")
    assert not motion.has_local_motion


def test_tutorial_file_when_present() -> None:
    motion = read_relion_motion(shared_data("relion", "relion31tutorial__20170629_00021_frameImage.star"))
    assert motion.shifts_yx_px.shape == (24, 2)
    # frame 2 of the tutorial movie: rlnMicrographShiftX 0.963543, rlnMicrographShiftY -0.81565
    torch.testing.assert_close(motion.shifts_yx_px[1], torch.tensor([0.81565, -0.963543]))
    assert motion.pixel_size_a == pytest.approx(0.885)
    assert motion.dose_per_frame == pytest.approx(1.277)
    assert motion.voltage_kv == 200.0
    assert motion.gain_name == "Movies/gain.mrc"
    assert motion.has_local_motion
    assert motion.movie_name.endswith("20170629_00021_frameImage.tiff")


def test_bad_files_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="NaN"):
        read_relion_motion(_write(tmp_path / "nan.star", [(0.0, 0.0), (float("nan"), 1.0)]))
    with pytest.raises(InputError, match="global_shift"):
        write_star(tmp_path / "g.star", {"general": {"rlnMicrographMovieName": "a.tiff"}})
        read_relion_motion(tmp_path / "g.star")
    with pytest.raises(InputError, match="no such"):
        read_relion_motion(tmp_path / "missing.star")
