"""Benchmark of `cryosr superres` methods on `cryosr simulate` movies against the noise-free truth.

For every method (with true and with estimated shifts) and for the movie acquired at the HR pixel
(aligned with the true shifts, dose-weighted), prints FRC against truth/*_clean.mrc in
[0.5, 1.0) x LR Nyquist and in [1.0, 1.5) x LR Nyquist outside the LR Fourier square, the share of the
HR movie's SSNR there (SSNR = FRC^2 / (1 - FRC^2)), the shift error (LR px RMS, first 10 frames,
after removing the common offset) and seconds per stage, as mean ± std over movies. Writes JSON.

Estimated shifts are re-referenced to the true frame-1 origin by their mean difference (a global
translation of the output is not a resolution property; the FRC would otherwise measure it).

    python benchmarks/bench_superres.py --out bench_out            # default: ~5 min on 2 CPU cores
    python benchmarks/bench_superres.py --size 512 --movies 4 --pixel-size 1.3 2.0
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from cryosr.core.cli.main import main as cryosr_main
from cryosr.core.dose import dose_weighted_sum
from cryosr.core.evaluate.frc import frc_band, ssnr_from_frc
from cryosr.core.io import read_micrograph, read_movie, read_star
from cryosr.core.shifts import fourier_shift
from cryosr.core.superres.align import estimate_shifts
from cryosr.core.superres.engine import SuperresConfig, run_superres

METHODS = ("bicubic", "fourier", "drizzle", "wiener", "zssr")


def simulate(out: Path, args: argparse.Namespace, pixel_size_a: float) -> Path:
    sim = out / f"sim_px{pixel_size_a}"
    if not (sim / "movies.star").exists():
        code = cryosr_main([
            "-q", "simulate", "--out", str(sim), "--n-movies", str(args.movies), "--size", str(args.size),
            "--frames", str(args.frames), "--pixel-size", str(pixel_size_a), "--dose-per-frame", str(args.dose),
            "--particles", str(args.particles), "--seed", str(args.seed), "--device", "cpu",
        ])
        if code != 0:
            raise SystemExit(f"cryosr simulate failed ({code})")
    return sim


def true_shifts(path: Path) -> torch.Tensor:
    table = read_star(path)["global_shift"]  # simulator convention = cryosr's (content moved by +shift)
    return torch.tensor(table[["rlnMicrographShiftY", "rlnMicrographShiftX"]].to_numpy(), dtype=torch.float32)


def scores(image: torch.Tensor, truth: torch.Tensor) -> dict:
    return {
        "frc_in": float(frc_band(image, truth, 0.5, 1.0, nyquist=0.25)),
        "frc_out": float(frc_band(image, truth, 1.0, 1.5, nyquist=0.25, outside_square=True)),
    }


def bench_movie(sim: Path, name: str, args: argparse.Namespace, pixel_size_a: float) -> dict:
    movie = read_movie(sim / "Movies" / f"{name}.mrcs").frames
    hr = read_movie(sim / "HR" / "Movies" / f"{name}.mrcs").frames
    truth = read_micrograph(sim / "truth" / f"{name}_clean.mrc").data
    shifts = true_shifts(sim / "truth" / f"{name}_shifts.star")
    rows = {}
    t0 = time.perf_counter()
    hr_sum = dose_weighted_sum(fourier_shift(hr, -2 * shifts), args.dose, pixel_size_a / 2)
    rows["HR movie (true shifts)"] = {**scores(hr_sum, truth), "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    est = estimate_shifts(movie, pixel_size_a=pixel_size_a)
    align_s = time.perf_counter() - t0
    diff = est - shifts
    offset = diff.mean(0)
    err = (diff - offset)[:10].pow(2).sum(1).mean().sqrt()
    est_ref = est - offset
    for method in METHODS:
        for label, s in (("true", shifts), ("estimated", est_ref)):
            if method in ("bicubic", "fourier") and label == "estimated":
                continue
            if method == "zssr" and label == "estimated" and not args.zssr_estimated:
                continue
            cfg = SuperresConfig(method=method, tile=0, iterations=args.zssr_iterations)
            res = run_superres(movie, pixel_size_a=pixel_size_a, dose_per_frame=args.dose, config=cfg, shifts_yx_px=s)
            seconds = dict(res.seconds)
            if label == "estimated":
                seconds["align"] = align_s
            row = {**scores(res.image, truth), "seconds": sum(seconds.values()), "stages": seconds}
            if "train_loss_first" in res.info:
                row["loss"] = [res.info["train_loss_first"], res.info["train_loss_last"]]
            rows[f"{method} ({label} shifts)"] = row
    hr_ssnr = float(ssnr_from_frc(torch.tensor(rows["HR movie (true shifts)"]["frc_out"]).clamp(0, 0.999)))
    for row in rows.values():
        ssnr = float(ssnr_from_frc(torch.tensor(row["frc_out"]).clamp(0, 0.999)))
        row["ssnr_share"] = ssnr / hr_ssnr if hr_ssnr > 0 else float("nan")
    return {"movie": name, "shift_rms_first10_lr_px": float(err), "rows": rows}


def summarise(results: list[dict]) -> dict:
    table: dict[str, dict] = {}
    for res in results:
        for name, row in res["rows"].items():
            for key in ("frc_in", "frc_out", "ssnr_share", "seconds"):
                table.setdefault(name, {}).setdefault(key, []).append(row[key])
    return {
        name: {k: (statistics.mean(v), statistics.pstdev(v)) for k, v in cols.items()} for name, cols in table.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_superres_out"))
    parser.add_argument("--size", type=int, default=256, help="LR movie size (px)")
    parser.add_argument("--movies", type=int, default=3)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--dose", type=float, default=1.5, help="e/Å² per frame")
    parser.add_argument("--particles", type=int, default=15)
    parser.add_argument("--pixel-size", type=float, nargs="+", default=[1.3], help="LR pixel sizes (Å)")
    parser.add_argument("--zssr-iterations", type=int, default=None)
    parser.add_argument("--zssr-estimated", action="store_true", help="also run zssr with estimated shifts")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    report = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "runs": []}
    for px in args.pixel_size:
        sim = simulate(args.out, args, px)
        names = sorted(p.name.split(".")[0] for p in (sim / "Movies").glob("*.mrcs"))
        results = [bench_movie(sim, n, args, px) for n in names]
        summary = summarise(results)
        shift_err = [r["shift_rms_first10_lr_px"] for r in results]
        report["runs"].append({"pixel_size_a": px, "movies": results, "summary": summary, "shift_rms": shift_err})
        print(f"\nLR pixel {px} Å, {len(names)} movies of {args.size}² x {args.frames} frames, {args.dose} e/Å²/frame")
        print(f"shift error vs truth, first 10 frames (LR px RMS): {statistics.mean(shift_err):.4f} ± {statistics.pstdev(shift_err):.4f}")
        print(f"| {'method':28s} | FRC [0.5,1.0) | FRC [1.0,1.5) outside sq. | share of HR SSNR | seconds |")
        print("|---|---|---|---|---|")
        for name, cols in summary.items():
            cells = [f"{cols[k][0]:.3f} ± {cols[k][1]:.3f}" for k in ("frc_in", "frc_out", "ssnr_share")]
            print(f"| {name:28s} | {cells[0]} | {cells[1]} | {cells[2]} | {cols['seconds'][0]:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_superres.json").write_text(json.dumps(report, indent=1))
    print(f"\nJSON: {args.out / 'bench_superres.json'}")


if __name__ == "__main__":
    main()
