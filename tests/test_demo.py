"""`cryosr demo` runs end to end (small size) and leaves the outputs it announces."""

import json

from cryosr.core.cli.main import main


def test_demo_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "128", "--frames", "8", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report") in printed
    assert (out / "superres_default" / "movie_0001.mrc").exists()
    assert (out / "superres_bicubic" / "movie_0001.mrc").exists()
    assert (out / "report" / "report.html").exists()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics  # one entry per prediction folder and movie
