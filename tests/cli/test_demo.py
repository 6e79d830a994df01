"""`cryosr demo` runs end to end (small size), ends with the evaluation report and prints its path."""

import json
from pathlib import Path

import pytest

from cryosr.core.cli.main import main
from tests.helpers.html import validate_report_html


def test_demo_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "128", "--frames", "8", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    # the last line names the report page, and it is there
    assert printed[-1].strip().startswith("evaluation report:")
    report = Path(printed[-1].split(":", 1)[1].split()[0])
    assert report == out / "report" / "report.html" and report.is_file()
    assert (out / "superres_default" / "movie_0001.mrc").exists()
    assert (out / "superres_bicubic" / "movie_0001.mrc").exists()
    parser = validate_report_html(report)
    assert len(parser.imgs) >= 4
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    summary = {s["method"]: s for s in metrics["summary"]}
    assert set(summary) == {"truth", "superres_default", "superres_bicubic"}
    for method in ("superres_default", "superres_bicubic"):
        assert summary[method]["n"] == 1
        assert -1 <= summary[method]["frc_below_lr_nyquist"] <= 1 and summary[method]["psnr_db"] > 0
    for name in ("metrics.csv", "frc.png", "power_spectra.png", "panels_movie_0001.png"):
        assert (out / "report" / name).stat().st_size > 0, name


@pytest.mark.parametrize("bad", [["--size", "8"], ["--frames", "0"]])
def test_demo_rejects_bad_sizes(tmp_path, capsys, bad):
    assert main(["demo", "--out", str(tmp_path / "d"), *bad]) == 2
    assert capsys.readouterr().err.strip()
