"""Benchmark of `cryosr superres` methods on `cryosr simulate` movies against the noise-free truth.

For every method and for the movie acquired at the HR pixel (aligned with the true shifts,
dose-weighted), prints, against truth/*_clean.mrc at the HR pixel:

- FRC in [0.5, 1.0) x LR Nyquist, and in [1.0, 1.5) x LR Nyquist *outside the LR Fourier square*
  (max(|kx|, |ky|) >= LR Nyquist: the honest super-resolution band),
- the share of the HR movie's SSNR there (SSNR = FRC^2 / (1 - FRC^2)),
- PSNR after the best affine intensity fit (``cryosr.core.evaluate.metrics``),
- seconds per stage (align / train / reconstruct),

with true and with estimated shifts, as mean ± std over movies, for each LR pixel size. zssr runs
per movie (``halves`` pairing, the default, and the seed paper's ``scale`` pairing), in dataset
mode (trained on the first movie, then a short fine-tune per later movie: those later movies are
the rows) and, when given, from pretrained weights (``--zssr-init``). A second table gives the
shift-estimation error against the true shifts (LR px RMS over the first 10 frames, after removing
the common offset) for several movie sizes. Writes everything to JSON.

Estimated shifts are re-referenced to the true frame-1 origin by their mean difference (a global
translation of the output is not a resolution property; the FRC would otherwise measure it).

    python benchmarks/bench_superres.py --out bench_out        # default: ~3 min on 2 idle CPU cores
    python benchmarks/bench_superres.py --size 512 --movies 6 --pixel-size 1.3 --zssr-init default
    python benchmarks/bench_superres.py --zssr-init default --docs   # also write docs/benchmarks/superres.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.align import estimate_shifts
from cryosr.core.cli.main import main as cryosr_main
from cryosr.core.dose import dose_weighted_sum
from cryosr.core.evaluate.frc import band_ring_frc, frc_band, ssnr_from_frc
from cryosr.core.evaluate.metrics import affine_fit, psnr
from cryosr.core.io import read_micrograph, read_movie
from cryosr.core.pipeline.superres import load_zssr_weights
from cryosr.core.shifts import fourier_shift
from cryosr.core.simulate.project import read_true_shifts
from cryosr.core.spectral import rfft_frequencies
from cryosr.core.superres.reconstruct import SuperresConfig, run_superres

try:
    from _provenance import DocsPage  # run as a script: benchmarks/ is sys.path[0]
except ImportError:  # loaded from the repository root (tests)
    from benchmarks._provenance import DocsPage

HR_ROW = "HR movie (true shifts)"
LIMIT_ROW = "limit: HR movie SSNR x 2x2-pixel transfer² (alias-free)"


def simulate(out: Path, size: int, n_movies: int, args: argparse.Namespace, pixel_size_a: float) -> Path:
    sim = out / f"sim_px{pixel_size_a}_n{size}"
    if not (sim / "movies.star").exists():
        particles = max(1, round(args.particles * (size / 256) ** 2))
        code = cryosr_main([
            "-q", "simulate", "--out", str(sim), "--n-movies", str(n_movies), "--size", str(size),
            "--frames", str(args.frames), "--pixel-size", str(pixel_size_a), "--dose-per-frame", str(args.dose),
            "--particles", str(particles), "--seed", str(args.seed), "--device", "cpu",
        ])  # fmt: skip
        if code != 0:
            raise SystemExit(f"cryosr simulate failed ({code})")
    return sim


def true_shifts(path: Path) -> torch.Tensor:
    return read_true_shifts(path)  # cryosr's convention: content moved by +shift


def scores(image: torch.Tensor, truth: torch.Tensor) -> dict:
    return {
        "frc_in": float(frc_band(image, truth, 0.5, 1.0, nyquist=0.25, per_ring=True)),
        "frc_out": float(frc_band(image, truth, 1.0, 1.5, nyquist=0.25, outside_square=True, per_ring=True)),
        "psnr": psnr(affine_fit(image, truth), truth),
    }


def pixel_limit(hr_image: torch.Tensor, truth: torch.Tensor) -> dict:
    """Band FRCs an ideal alias-free reconstruction from the LR detector could reach.

    An LR pixel integrates 2x2 HR pixels: the signal at HR frequency ``(ky, kx)`` is multiplied by
    ``cos(pi ky) cos(pi kx)`` while the LR Poisson noise (same electrons per Å²) stays white. With
    perfectly diverse sub-pixel shifts the four aliases separate without noise gain, so the best
    SSNR is the HR movie's times that transfer squared. Per ring: SSNR from the HR movie's ring FRC,
    times the ring mean of the transfer², back to an FRC; averaged over the band's rings like
    ``frc_band(per_ring=True)``. The simulation has no detector MTF, so none enters here.
    """
    ky, kx = (g.expand(truth.shape[-2], truth.shape[-1] // 2 + 1) for g in rfft_frequencies(tuple(truth.shape[-2:]), dtype=torch.float32))
    box2 = (torch.cos(torch.pi * ky.double()) * torch.cos(torch.pi * kx.double())) ** 2
    out = {}
    for key, lo, hi, square in (("frc_in", 0.5, 1.0, False), ("frc_out", 1.0, 1.5, True)):
        frc, used, gain = band_ring_frc(hr_image, truth, lo, hi, nyquist=0.25, outside_square=square, average=box2)
        ssnr = ssnr_from_frc(frc.clamp(0, 0.999)) * gain
        limit = torch.sqrt(ssnr / (1 + ssnr))
        out[key] = float((limit * used).sum() / used.sum())
    return out


def shift_error(est: torch.Tensor, true: torch.Tensor) -> tuple[float, torch.Tensor]:
    """RMS error over the first 10 frames after removing the mean offset, and the re-referenced shifts."""
    diff = est - true
    offset = diff.mean(0)
    err = (diff - offset)[:10].pow(2).sum(1).mean().sqrt()
    return float(err), est - offset


def load_movie(sim: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return read_movie(sim / "Movies" / f"{name}.mrcs").frames, true_shifts(sim / "truth" / f"{name}_shifts.star")


def bench_movie(sim: Path, name: str, args: argparse.Namespace, px: float, state: dict) -> dict:
    """All rows of one movie; ``state`` carries the dataset-mode weights from movie to movie."""
    movie, shifts = load_movie(sim, name)
    hr = read_movie(sim / "HR" / "Movies" / f"{name}.mrcs").frames
    truth = read_micrograph(sim / "truth" / f"{name}_clean.mrc").data
    rows: dict[str, dict] = {}
    t0 = time.perf_counter()
    acq = Acquisition(px, args.dose)
    hr_sum = dose_weighted_sum(fourier_shift(hr, -2 * shifts), acq.binned(0.5))
    rows[HR_ROW] = {**scores(hr_sum, truth), "stages": {"reconstruct": time.perf_counter() - t0}}
    rows[LIMIT_ROW] = {**pixel_limit(hr_sum, truth), "stages": {}}
    t0 = time.perf_counter()
    est = estimate_shifts(movie, acq)
    align_s = time.perf_counter() - t0
    err, est_ref = shift_error(est, shifts)

    def add(label: str, config: SuperresConfig, use: torch.Tensor, estimated: bool, weights: dict | None = None):
        res = run_superres(movie, acq, config=config, shifts_yx_px=use, weights=weights)
        stages = {k: v for k, v in res.seconds.items() if k != "align"}
        if estimated:
            stages["align"] = align_s
        row = {**scores(res.image, truth), "stages": stages}
        for key in ("train_loss_first", "train_loss_last", "train_val_identity", "train_val_best", "train_best_step"):
            if key in res.info:
                row[key.removeprefix("train_")] = res.info[key]
        rows[label] = row
        return res

    for method in ("bicubic", "fourier"):
        add(f"{method} (true shifts)", SuperresConfig(method=method, tile=0), shifts, False)
    for method in ("drizzle", "wiener"):
        add(f"{method} (true shifts)", SuperresConfig(method=method, tile=0), shifts, False)
        add(f"{method} (estimated shifts)", SuperresConfig(method=method, tile=0), est_ref, True)
    if args.zssr_iterations > 0:
        its = args.zssr_iterations
        zssr = add("zssr halves (true shifts)", SuperresConfig(method="zssr", tile=0, iterations=its), shifts, False)
        if args.zssr_estimated:
            add("zssr halves (estimated shifts)", SuperresConfig(method="zssr", tile=0, iterations=its), est_ref, True)
        if state.get("dataset") is None:
            state["dataset"] = zssr.weights  # dataset mode: trained on the first movie ...
        else:  # ... and a short fine-tune on every later one
            cfg = SuperresConfig(method="zssr", tile=0, iterations=args.finetune_iterations)
            add(f"zssr dataset mode ({args.finetune_iterations}-step fine-tune)", cfg, shifts, False, state["dataset"])
        if args.zssr_init:
            cfg = SuperresConfig(method="zssr", tile=0, iterations=args.finetune_iterations)
            add(f"zssr --init {Path(args.zssr_init).name} ({args.finetune_iterations}-step fine-tune)", cfg, shifts, False,
                load_zssr_weights(args.zssr_init))
    hr_ssnr = float(ssnr_from_frc(torch.tensor(rows[HR_ROW]["frc_out"]).clamp(0, 0.999)))
    for row in rows.values():
        ssnr = float(ssnr_from_frc(torch.tensor(row["frc_out"]).clamp(0, 0.999)))
        row["ssnr_share"] = ssnr / hr_ssnr if hr_ssnr > 0 else float("nan")
        row["seconds"] = sum(row["stages"].values())
    return {"movie": name, "shift_rms_first10_lr_px": err, "align_seconds": align_s, "rows": rows}


def summarise(results: list[dict]) -> dict:
    table: dict[str, dict] = {}
    for res in results:
        for name, row in res["rows"].items():
            cols = table.setdefault(name, {})
            for key in ("frc_in", "frc_out", "ssnr_share", "psnr", "seconds"):
                if key in row:
                    cols.setdefault(key, []).append(row[key])
            for stage, value in row["stages"].items():
                cols.setdefault(f"s_{stage}", []).append(value)
            if "best_step" in row:
                cols.setdefault("net_kept", []).append(float(row["best_step"] >= 0))
    return {
        name: {k: (statistics.mean(v), statistics.pstdev(v), len(v)) for k, v in cols.items()}
        for name, cols in table.items()
    }


def print_table(summary: dict) -> None:
    print("| method | FRC [0.5,1.0) LR Nyq | FRC [1.0,1.5) outside LR square | share of HR SSNR | PSNR dB | "
          "s align / train / reconstruct | zssr net kept |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, cols in summary.items():
        cells = [f"{cols[k][0]:.3f} ± {cols[k][1]:.3f}" for k in ("frc_in", "frc_out", "ssnr_share")]
        cells.append(f"{cols['psnr'][0]:.2f} ± {cols['psnr'][1]:.2f}" if "psnr" in cols else "-")
        stages = " / ".join(f"{cols[f's_{s}'][0]:.1f}" if f"s_{s}" in cols else "-" for s in ("align", "train", "reconstruct"))
        kept = f"{cols['net_kept'][0] * cols['net_kept'][2]:.0f} of {cols['net_kept'][2]}" if "net_kept" in cols else "-"
        print(f"| {name} (n={cols['frc_out'][2]}) | {' | '.join(cells)} | {stages} | {kept} |")


def shift_accuracy(args: argparse.Namespace, px: float) -> list[dict]:
    rows = []
    for size in args.align_sizes:
        sim = simulate(args.out, size, args.align_movies, args, px)
        errs, secs = [], []
        for path in sorted((sim / "Movies").glob("*.mrcs")):
            movie, shifts = load_movie(sim, path.name.split(".")[0])
            t0 = time.perf_counter()
            est = estimate_shifts(movie, Acquisition(px, args.dose))
            secs.append(time.perf_counter() - t0)
            errs.append(shift_error(est, shifts)[0])
        rows.append({"size": size, "errors": errs, "seconds": secs})
        print(f"| {size}² x {args.frames} | {statistics.mean(errs):.4f} ± {statistics.pstdev(errs):.4f} "
              f"(n={len(errs)}) | {statistics.mean(secs):.1f} |")  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_superres_out"))
    parser.add_argument("--size", type=int, default=256, help="LR movie size (px)")
    parser.add_argument("--movies", type=int, default=4)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--dose", type=float, default=1.5, help="e/Å² per frame")
    parser.add_argument("--particles", type=int, default=15, help="particles per 256² movie (scaled with area)")
    parser.add_argument("--pixel-size", type=float, nargs="+", default=[1.3, 2.0], help="LR pixel sizes (Å)")
    parser.add_argument("--zssr-iterations", type=int, default=100, help="zssr steps per movie (0: skip zssr)")
    parser.add_argument("--finetune-iterations", type=int, default=30, help="zssr steps from given weights")
    parser.add_argument("--zssr-init", help="also run zssr from these weights (default = the shipped ones, or a .pt)")
    parser.add_argument("--zssr-estimated", action="store_true", help="also run zssr with estimated shifts")
    parser.add_argument("--align-sizes", type=int, nargs="*", default=[256, 512, 1024], help="shift-accuracy table")
    parser.add_argument("--align-movies", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--docs", action="store_true", help="also write docs/benchmarks/superres.md")
    args = parser.parse_args()
    page = DocsPage("superres", "Benchmark: super-resolution methods in 2-D", enabled=args.docs)
    torch.manual_seed(args.seed)
    if args.zssr_init:
        from cryosr.core.superres.zssr import ZssrConfig

        load_zssr_weights(args.zssr_init, ZssrConfig())  # fail early on a bad path
    started = time.strftime("%Y-%m-%d %H:%M")
    report = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "runs": [],
              "started": started, "load_average": os.getloadavg()}  # fmt: skip
    t_all = time.perf_counter()
    for px in args.pixel_size:
        sim = simulate(args.out, args.size, args.movies, args, px)
        names = sorted(p.name.split(".")[0] for p in (sim / "Movies").glob("*.mrcs"))
        state: dict = {}
        results = [bench_movie(sim, n, args, px, state) for n in names]
        summary = summarise(results)
        shift_err = [r["shift_rms_first10_lr_px"] for r in results]
        with page.section(f"LR pixel {px} Å (HR {px / 2} Å)"):
            print(f"\nLR pixel {px} Å (HR truth {px / 2} Å), {len(names)} movies of {args.size}² x {args.frames} frames, "
                  f"{args.dose} e/Å²/frame; FRC/PSNR vs truth/*_clean.mrc, mean ± std over movies")  # fmt: skip
            print(f"shift error vs truth, first 10 frames (LR px RMS): {statistics.mean(shift_err):.4f} ± "
                  f"{statistics.pstdev(shift_err):.4f}")  # fmt: skip
            print_table(summary)
        run = {"pixel_size_a": px, "movies": results, "summary": summary, "shift_rms": shift_err}
        if args.align_sizes:
            with page.section(f"Shift estimation vs movie size, LR pixel {px} Å"):
                print(f"\nshift estimation vs movie size, LR pixel {px} Å ({args.particles} particles per 256²):")
                print("| movie | RMS error, first 10 frames (LR px) | s per movie |\n|---|---|---|")
                run["shift_accuracy"] = shift_accuracy(args, px)
        report["runs"].append(run)
    report["seconds"] = time.perf_counter() - t_all
    report["load_average_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_superres.json").write_text(json.dumps(report, indent=1))
    print(f"\n{report['seconds'] / 60:.1f} min in all; load average at start/end: "
          f"{report['load_average'][0]:.1f} / {report['load_average_end'][0]:.1f}")  # fmt: skip
    print(f"JSON: {args.out / 'bench_superres.json'}")
    page.add("Run time", f"{report['seconds'] / 60:.1f} min in all; load average at the end "
                         f"{report['load_average_end'][0]:.1f}.")  # fmt: skip
    page.write()


if __name__ == "__main__":
    main()
