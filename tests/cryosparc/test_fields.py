"""Pure ``Dataset`` tests of the exposure-field rewriting, on the real sample ``.cs`` files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import IN_CI, SHARED_DATA

if not IN_CI:  # in CI the extra is required: a missing cryosparc-tools is a collection error there, not a skip
    pytest.importorskip("cryosparc.dataset", reason="cryosparc-tools (extra 'cryosparc') not installed")

from cryosparc.dataset import CSDAT_FORMAT, NUMPY_FORMAT, Dataset

from cryosr.core.errors import InputError
from cryosr.core.io import read_gain, write_mrc
from cryosr.cryosparc_plugin.args import PluginConfig, parse_input
from cryosr.cryosparc_plugin.fields import (
    ExposureSource,
    SrMicrograph,
    check_exposures,
    eer_rendering,
    exposure_sources,
    fill_output,
    gain_orientation_to_relion,
    input_slot_specs,
    output_name,
    output_slot_specs,
    strip_export_prefix,
    trajectory_to_shifts,
)

DATA = SHARED_DATA / "cryosparc"
MOVIES = DATA / "SYNTHETIC__cryosparc-tools_conftest_t20s_imported_movies.cs"
PARTICLES = DATA / "SYNTHETIC__cryosparc-tools_conftest_t20s_extracted_particles.cs"
EXPORTED = DATA / "cryodrgn__tests_data__cryosparc_J2_particles_exported.cs"


def _load(path: Path) -> Dataset:
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"sample data missing: {path.name}")
        pytest.skip(f"sample data not present: {path.name}")
    return Dataset.load(path)


def _output_fields(inp: Dataset) -> list[tuple]:
    """What ``get_output_fields`` would give for ``output_slot_specs``: the input's own columns."""
    slots = {s["name"] for s in output_slot_specs([(p, p) for p in inp.prefixes()])}
    return [d for d in inp.descr() if d[0] != "uid" and d[0].split("/")[0] in slots]


def test_t20s_movies_sources_dose_and_pixel_size():
    dset = _load(MOVIES)
    sources = exposure_sources(dset)
    assert len(sources) == 20 and {s.kind for s in sources} == {"movie"}
    s = sources[0]
    assert s.uid == 15762140416835289736
    assert s.path.endswith("_00003hl_00002es.frames.tif") and s.gain_path == "J1/imported/norm-amibox05-0.mrc"
    assert s.n_frames == 38 and s.shape_yx == (7676, 7420)
    assert s.dose_per_frame == pytest.approx(53.0 / 38)
    assert (s.gain_rotate, s.gain_flip, s.voltage_kv, s.motion_path) == (0, 0, 300.0, None)
    assert check_exposures(sources) == pytest.approx(0.6575, rel=1e-6)
    # the import-stage micrograph_blob is empty: asking for micrographs falls back to the movies
    assert exposure_sources(dset, prefer="micrograph")[0].kind == "movie"


def test_t20s_slot_specs_keep_and_drop():
    dset = _load(MOVIES)
    results = [(p, p) for p in dset.prefixes()]
    inputs = {s["name"]: s for s in input_slot_specs(results)}
    assert set(inputs) == {"movie_blob", "micrograph_blob", "mscope_params", "gain_ref_blob"}
    assert [n for n, s in inputs.items() if s["required"]] == ["mscope_params"]
    outs = [s["name"] for s in output_slot_specs(results + [("background_blob", "stat_blob")])]
    assert outs[0] == "micrograph_blob" and "background_blob" not in outs and "movie_blob" in outs
    with pytest.raises(InputError, match="neither movie_blob nor micrograph_blob"):
        input_slot_specs([("blob", "blob"), ("mscope_params", "mscope_params")])


def test_fill_output_on_t20s_keeps_uids_and_doubles_shape_round_trip():
    inp = _load(MOVIES)
    uids = [int(u) for u in inp["uid"]]
    written = {
        u: SrMicrograph(f"J42/cryosr/{output_name(u, p)}", (2 * 7676, 2 * 7420), 0.6575 / 2, -1.0, 2.0)
        for u, p in zip(uids, inp["movie_blob/path"])
    }
    out = Dataset({"uid": inp["uid"]}).add_fields(_output_fields(inp))
    fill_output(out, inp, written)
    assert out["uid"].tolist() == inp["uid"].tolist()
    assert out["micrograph_blob/shape"].tolist() == [[15352, 14840]] * 20
    np.testing.assert_allclose(out["micrograph_blob/psize_A"], 0.32875, rtol=1e-6)
    assert (
        out["micrograph_blob/path"][0] == "J42/cryosr/015762140416835289736_14sep05c_00024sq_00003hl_00002es_sr2x.mrc"
    )
    assert set(out["micrograph_blob/format"]) == {"MRC/2"}
    for field in ("movie_blob/path", "movie_blob/import_sig", "gain_ref_blob/path", "mscope_params/exp_group_id"):
        assert out[field].tolist() == inp[field].tolist()
    for fmt in (NUMPY_FORMAT, CSDAT_FORMAT):
        buf = io.BytesIO()
        out.save(buf, format=fmt)
        buf.seek(0)
        back = Dataset.load(buf)
        assert back["uid"].tolist() == uids and back["micrograph_blob/shape"].tolist() == out["micrograph_blob/shape"].tolist()  # fmt: skip
        assert back["micrograph_blob/path"].tolist() == out["micrograph_blob/path"].tolist()
    # a row not written must not be registered
    with pytest.raises(ValueError, match="exactly the written"):
        fill_output(Dataset({"uid": inp["uid"]}).add_fields(_output_fields(inp)), inp, dict(list(written.items())[:5]))


def test_particle_files_are_not_exposures_and_export_prefix_is_stripped():
    particles = _load(PARTICLES)
    with pytest.raises(InputError, match="no movie_blob/path and no micrograph_blob/path"):
        exposure_sources(particles)
    exported = _load(EXPORTED)
    raw = str(exported["blob/path"][0])
    assert raw.startswith(">") and strip_export_prefix(raw) == raw[1:] and not strip_export_prefix(raw).startswith(">")


def test_mixed_pixel_sizes_and_zero_dose_are_rejected():
    dset = _load(MOVIES).slice(0, 3)
    dset["movie_blob/psize_A"][2] = 0.83
    with pytest.raises(InputError, match="mixed pixel sizes"):
        check_exposures(exposure_sources(dset))
    dset["movie_blob/psize_A"][2] = dset["movie_blob/psize_A"][0]
    dset["mscope_params/total_dose_e_per_A2"][1] = 0
    with pytest.raises(InputError, match="dose is needed"):
        check_exposures(exposure_sources(dset))
    dset["mscope_params/total_dose_e_per_A2"][1] = 53
    dset["movie_blob/path"][0] = "J1/imported/a.eer"
    check_exposures(exposure_sources(dset))  # EER is read now (eer_rendering fits it to the row)
    with pytest.raises(InputError, match="no exposures"):
        check_exposures([])


@pytest.mark.parametrize(
    ("flips_rot", "expected"),
    [((0, 0, 0), (0, 0)), ((0, 1, 0), (0, 1)), ((1, 0, 0), (0, 2)), ((0, 0, 1), (3, 0)), ((1, 1, 0), (2, 0))],
)
def test_gain_orientation_matches_read_gain(tmp_path, flips_rot, expected):
    flip_x, flip_y, rot = flips_rot
    assert gain_orientation_to_relion(flip_x, flip_y, rot) == expected
    gain = torch.arange(12, dtype=torch.float32).reshape(3, 4) + 1
    write_mrc(tmp_path / "g.mrc", gain, 1.0)
    want = gain.numpy()
    if flip_x:
        want = want[:, ::-1]
    if flip_y:
        want = want[::-1, :]
    want = np.rot90(want, k=rot)
    got = read_gain(tmp_path / "g.mrc", rotate=expected[0], flip=expected[1])
    np.testing.assert_array_equal(got.numpy(), want)


def test_trajectory_to_shifts_known_answer():
    traj = np.array([[0.0, 0.0], [-1.3, 2.6], [-2.6, 3.9]], dtype=np.float32)  # (x, y) Å, psize 1.3
    shifts = trajectory_to_shifts(traj, psize_a=1.3, n_frames=3, frame_start=0, frame_end=3)
    np.testing.assert_allclose(shifts, [[0, 0], [2, 1], [3, 2]], atol=1e-6)
    assert trajectory_to_shifts(traj, psize_a=1.3, n_frames=4) is None
    assert trajectory_to_shifts(traj, psize_a=1.3, n_frames=3, frame_start=1, frame_end=4) is None


def test_names_and_options():
    assert output_name(7, "J1/imported/007_a.frames.tif") == "007_a_sr2x.mrc"
    assert (
        output_name(5, ">J3/motioncorrected/b_patch_aligned_doseweighted.mrc")
        == "5_b_patch_aligned_doseweighted_sr2x.mrc"
    )
    assert parse_input("J12") == ("J12", "micrographs") and parse_input("J7:exposures") == ("J7", "exposures")
    with pytest.raises(InputError, match="JOB\\[:OUTPUT\\]"):
        parse_input("12")
    with pytest.raises(InputError, match="--project"):
        PluginConfig(project_uid="3", workspace_uid="W1", input_job_uid="J1")
    with pytest.raises(InputError, match="--method"):
        PluginConfig(project_uid="P3", workspace_uid="W1", input_job_uid="J1", method="magic")
    with pytest.raises(InputError, match="scheme"):
        PluginConfig(project_uid="P3", workspace_uid="W1", input_job_uid="J1", url="host:39000")


def test_eer_rendering_fits_the_dataset_grid_and_dose():
    """An EER row: the grid follows movie_blob/shape, the dose per fraction the detector frames' total."""
    row = ExposureSource(uid=1, kind="movie", path="J1/imported/a.eer", pixel_size_a=0.4, n_frames=40,
                         dose_per_frame=1.0, voltage_kv=300.0, shape_yx=(8192, 8192))  # fmt: skip
    eer = eer_rendering(row, (4096, 4096), 400, grouping=20, upsampling=None)
    assert (eer.upsampling, eer.n_fractions) == (2, 20)
    assert eer.dose_per_fraction == pytest.approx(40.0 * 20 / 400)
    for kwargs, msg in (({"grouping": 0, "upsampling": None}, "needs --eer-grouping"),
                        ({"grouping": 20, "upsampling": 1}, "dataset's grid is 2x"),
                        ({"grouping": 500, "upsampling": None}, "exceeds the 400 EER frames")):  # fmt: skip
        with pytest.raises(InputError, match=msg):
            eer_rendering(row, (4096, 4096), 400, **kwargs)
    with pytest.raises(InputError, match="not 1x or 2x"):
        eer_rendering(row, (3000, 3000), 400, grouping=20, upsampling=None)
