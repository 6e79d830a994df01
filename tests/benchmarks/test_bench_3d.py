"""Pieces of the 3-D benchmark (benchmarks/bench_3d.py) on tiny inputs; the benchmark itself never runs here.

The RELION smoke test runs the benchmark's own extraction + reconstruction + FSC on a tiny simulated
project (the noise-free truth micrographs as input): the STAR pixel sizes and box are checked by the
benchmark, and a positive low-resolution FSC against the truth map shows that coordinates, origins,
angles and contrast/CTF signs agree (any one of them wrong gives a near-zero or negative FSC).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from cryosr.core.cli.main import main as cryosr_main
from cryosr.core.io import read_star
from cryosr.core.io.motion_star import read_relion_motion
from cryosr.core.io.mrc import read_volume

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_3d", REPO / "benchmarks" / "bench_3d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blobs(n: int, centres: list[tuple[float, float, float]]) -> torch.Tensor:
    x = torch.arange(n, dtype=torch.float64) - n // 2
    z, y, xx = torch.meshgrid(x, x, x, indexing="ij")
    return sum(torch.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (xx - c[2]) ** 2) / 4.0) for c in centres)


@pytest.mark.parametrize("n", [24, 25])
def test_octahedral_detects_relion_o_setting(bench, n):
    a, b = 6.0, 4.0
    axes = [(s * a, 0, 0) for s in (-1, 1)] + [(0, s * a, 0) for s in (-1, 1)] + [(0, 0, s * a) for s in (-1, 1)]
    corners = [(sz * b, sy * b, sx * b) for sz in (-1, 1) for sy in (-1, 1) for sx in (-1, 1)]
    assert bench.octahedral(_blobs(n, axes + corners))
    assert not bench.octahedral(_blobs(n, [(a, 0, 0), (0, a, 0), (0, 0, a)]) + _blobs(n, [(0, b, 2 * b)]))
    # a 4-fold about z only (no 3-fold) is not O
    assert not bench.octahedral(_blobs(n, [(0, a, 0), (0, -a, 0), (0, 0, a), (0, 0, -a), (b, 0, 0)]))


def test_truth_shifts_round_trip_through_the_relion_motion_star(bench, tmp_path):
    sim = tmp_path / "sim"
    args = ["-q", "simulate", "--out", str(sim), "--n-movies", "1", "--size", "64", "--frames", "5", "--particles", "0"]
    assert cryosr_main(args) == 0
    truth = sim / "truth" / "movie_0001_shifts.star"
    motion = read_relion_motion(bench.relion_motion_star(truth, tmp_path / "motion" / "movie_0001.star"))
    expected = bench.true_shifts(truth)
    assert float(expected.abs().max()) > 0.1  # the movie drifts
    assert torch.allclose(motion.shifts_yx_px, expected, atol=1e-5)  # the sign superres applies = the truth


def test_band_mean_excludes_the_lr_nyquist_shell(bench):
    freq = [0.0, 0.1, 1 / 2.6 * (1 + 1e-7), 0.45, 0.5]
    fsc = [1.0, 0.9, 0.3, 0.2, 0.1]
    assert bench.band_mean(freq, fsc, 1 / 2.6, 0.5) == pytest.approx(0.15)
    assert bench.band_mean(freq[:3], fsc[:3], 1 / 2.6, 0.5) is None


@pytest.mark.relion
def test_relion_extraction_and_reconstruction_on_truth_micrographs(bench, tmp_path):
    missing = [b for b in bench.BINARIES if shutil.which(b) is None]
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but RELION binaries are missing: {', '.join(missing)}")
        pytest.skip(f"RELION not installed ({', '.join(missing)})")
    out = (tmp_path / "b3").resolve()
    argv = ["--out", str(out), "--model", "default", "--movies", "1", "--size", "256", "--frames", "2",
            "--particles", "24", "--pixel-size", "1.5", "--box", "128", "--sym", "C1", "--methods", "bicubic"]  # fmt: skip
    args = bench.parse_args(argv)
    sim = bench.simulate(out, args)
    names = ["movie_0001"]
    truth = read_star(sim / "truth" / "particles.star")
    truth_map, map_px = read_volume(sim / "truth" / "map.mrc")
    radius = json.loads((sim / "truth" / "simulation.json").read_text())["movies"][0]["particle_radius_a"]
    # negative control: the same particles with their angles handed to other particles
    scrambled = truth["particles"].copy()
    for col in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"):
        scrambled[col] = scrambled[col].to_numpy()[::-1]

    def band(score: dict) -> float:
        low = [c for f, c in zip(score["freq_per_a"], score["fsc"]) if 0.02 < f < 0.1]
        return sum(low) / len(low)

    results = {}
    runs = (("clean HR", "clean", 0.75, truth["particles"]), ("clean LR", "clean_lr", 1.5, truth["particles"]),
            ("scrambled", "clean", 0.75, scrambled))  # fmt: skip
    for kind, name, px, particles in runs:
        spec = {"paths": [sim / "truth" / f"movie_0001_{name}.mrc"], "pixel_size_a": px, "acquired_pixel_a": px}
        rec = bench.extract_and_reconstruct(kind, spec, sim, names, particles, truth["optics"], args, out, "C1")
        assert rec["n_particles"] == rec["n_truth"] == 24 and not rec["reused"]
        assert all(math.hypot(*o) < 0.05 for o in rec["offsets_yx_px"].values())
        score = bench.score_map(rec["recon"], truth_map, map_px, radius, args)
        assert score["pixel_size_a"] == pytest.approx(px, rel=1e-4)
        results[kind] = band(score)
    again = bench.extract_and_reconstruct("clean LR", spec | {"paths": [sim / "truth" / "movie_0001_clean_lr.mrc"],
                                          "pixel_size_a": 1.5}, sim, names, truth["particles"], truth["optics"], args, out, "C1")  # fmt: skip
    assert again["reused"]  # unchanged inputs: the RELION job is not redone
    # noise-free views at the true poses correlate with the truth map; the same views at wrong poses do not
    assert results["clean HR"] > 0.3 and results["clean LR"] > 0.3, results  # measured ~0.45 (24 views, C1)
    assert results["scrambled"] < 0.5 * results["clean HR"], results
