"""`cryosr ctf`: RELION CtfFind-format STAR, diagnostics, and bad input before any output."""

from __future__ import annotations

import pytest
import torch

from cryosr.core.cli.main import main
from cryosr.core.io import read_star, write_mrc
from cryosr.core.io.ctf_star import read_ctf_star
from tests.helpers import relion_exe
from tests.helpers.images import ctf_noise_image


def test_ctf_cli_writes_relion_star_and_pictures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_mrc("mic_a.mrc", ctf_noise_image(512, 1.0, 12000.0, 11500.0, 20.0, seed=11), 1.0)
    write_mrc("mic_b.mrc", ctf_noise_image(512, 0.5, 7000.0, 6900.0, 100.0, seed=12, noise=0.5), 0.5)
    assert main(["ctf", "mic_a.mrc", "mic_b.mrc", "--out", "CTF", "--spectrum-tile", "256", "--fit-range", "30:3"]) == 0
    optics, mics = read_ctf_star("CTF/micrographs_ctf.star")
    assert list(mics.columns) == [
        "rlnMicrographName",
        "rlnOpticsGroup",
        "rlnCtfImage",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnCtfAstigmatism",
        "rlnDefocusAngle",
        "rlnCtfFigureOfMerit",
        "rlnCtfMaxResolution",
    ]
    assert list(mics["rlnMicrographName"]) == ["mic_a.mrc", "mic_b.mrc"]
    assert abs(mics["rlnDefocusU"][0] - 12000) < 120 and abs(mics["rlnDefocusV"][0] - 11500) < 115
    assert abs(mics["rlnDefocusU"][1] - 7000) < 70 and abs(mics["rlnDefocusV"][1] - 6900) < 69
    assert mics["rlnCtfAstigmatism"][0] == pytest.approx(mics["rlnDefocusU"][0] - mics["rlnDefocusV"][0])
    # two pixel sizes -> two optics groups with the per-group constants RELION's CtfFind needs
    assert list(optics["rlnMicrographPixelSize"]) == [1.0, 0.5]
    assert list(mics["rlnOpticsGroup"]) == [1, 2]
    assert set(optics["rlnVoltage"]) == {300.0} and set(optics["rlnAmplitudeContrast"]) == {0.07}
    assert (mics["rlnCtfMaxResolution"] < 5.0).all()
    assert (tmp_path / "CTF" / "mic_a_ctf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert mics["rlnCtfImage"][0] == "CTF/mic_a.ctf:mrc"
    assert (tmp_path / "CTF" / "mic_a.ctf").exists()


@pytest.mark.relion
def test_ctf_cli_output_is_readable_by_relion(tmp_path, monkeypatch):
    """RELION's own STAR reader (relion_star_printtable) reads our file."""
    import subprocess

    (exe,) = relion_exe("relion_star_printtable")
    monkeypatch.chdir(tmp_path)
    write_mrc("m.mrc", ctf_noise_image(256, 1.0, 10000.0, 9800.0, 45.0, seed=13), 1.0)
    assert main(["ctf", "m.mrc", "--out", "CTF", "--spectrum-tile", "128"]) == 0
    out = subprocess.run(
        [exe, "CTF/micrographs_ctf.star", "data_micrographs", "rlnDefocusU", "rlnDefocusV"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    blocks = read_star("CTF/micrographs_ctf.star")
    assert float(out[0]) == pytest.approx(float(blocks["micrographs"]["rlnDefocusU"][0]), rel=1e-5)


def test_ctf_cli_bad_input_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_mrc("ok.mrc", torch.zeros(128, 128), 1.0)
    (tmp_path / "bad.mrc").write_bytes(b"not an mrc")
    assert main(["ctf", "ok.mrc", "bad.mrc", "--out", "CTF"]) == 2
    assert "bad.mrc" in capsys.readouterr().err
    assert not (tmp_path / "CTF").exists()
    assert main(["ctf", "ok.mrc", "--out", "CTF", "--defocus-range", "5"]) == 2
    assert not (tmp_path / "CTF").exists()
