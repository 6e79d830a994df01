"""Benchmark: a Falcon-4-like EER movie, `cryosr superres --eer-upsampling 2` against `1`, next to RELION.

One `cryosr simulate --format eer` movie (events on the 4x sub-pixel grid, drawn inside their HR
pixel) is super-resolved with drizzle from fractions rendered on the physical grid (upsampling 1)
and on the 2x grid (upsampling 2: the fine grid comes from the detector itself). Every result is
scored on the HR grid against truth/*_clean.mrc (noise-free, motion-free, dose-weighted):

- FRC in [0.5, 1.0) x LR Nyquist, and in [1.0, 1.5) x LR Nyquist *outside the LR Fourier square*
  (the band that only sub-pixel information can fill), as ``bench_superres.py`` scores;
- wall seconds of the command.

RELION 3.1 renders only 4096 x 4096 EER movies. Its rows therefore run on a 4096 x 4096 copy of the
same file in which every detector frame holds the movie's events tiled 8 x 8 (identical copies: the
same information as the small movie, nothing more to align on). RELION's micrograph is cropped to
one tile and scored in the same way; its time covers the 64 tiles.

    python benchmarks/bench_eer.py --out bench_eer_out     # ~25 min on 2 CPU cores, 1 GB of disk

Estimated shifts are re-referenced to the true frame-1 origin by their mean difference (as in
bench_superres.py); RELION references its shifts to its first fraction, as the truth does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from cryosr.core.cli.main import main as cryosr_main
from cryosr.core.evaluate.frc import frc_band
from cryosr.core.fourier import fourier_crop, fourier_pad
from cryosr.core.io import read_micrograph
from cryosr.core.io.eer import read_eer_header, write_eer
from cryosr.core.shifts import fourier_shift
from cryosr.core.simulate.project import read_true_shifts

RELION_SIZE = 4096


def simulate(args: argparse.Namespace) -> Path:
    sim = args.out / "sim"
    if not (sim / "movies.star").exists():
        code = cryosr_main([
            "-q", "simulate", "--out", str(sim), "--n-movies", "1", "--size", str(args.size), "--pixel-size",
            str(args.pixel_size), "--frames", str(args.fractions), "--dose-per-frame", str(args.dose),
            "--format", "eer", "--eer-frames-per-fraction", str(args.grouping), "--seed", str(args.seed),
            "--device", "cpu",
        ])  # fmt: skip
        if code != 0:
            raise SystemExit(f"cryosr simulate failed ({code})")
    return sim


def score(image: torch.Tensor, truth: torch.Tensor) -> dict:
    """Band FRCs on the HR grid (an LR-grid image is Fourier-padded, a 4x-grid one Fourier-cropped)."""
    n = truth.shape[-1]
    if image.shape[-1] < n:
        image = fourier_pad(image.double(), n / image.shape[-1])
    elif image.shape[-1] > n:
        image = fourier_crop(image.double(), image.shape[-1] / n)
    image, truth = image.double(), truth.double()
    return {
        "frc_in": float(frc_band(image, truth, 0.5, 1.0, nyquist=0.25, per_ring=True)),
        "frc_out": float(frc_band(image, truth, 1.0, 1.5, nyquist=0.25, outside_square=True, per_ring=True)),
    }


def rereference(images: dict[str, torch.Tensor], out: Path, star: Path, upsampling: int) -> dict[str, torch.Tensor]:
    """Undo the global offset of estimated shifts (frame content = reference moved by +s, so a common error c
    moves the result by -c); a global translation is no resolution property, as in bench_superres."""
    used = torch.tensor(json.loads((out / "superres.json").read_text())["movies"][0]["shifts_yx_px"])
    offset = (used - read_true_shifts(star) * upsampling).mean(0)  # on the rendering grid
    return {"output": fourier_shift(images["output"].double(), 2 * offset.double()),
            "lr_sum": fourier_shift(images["lr_sum"].double(), offset.double())}  # fmt: skip


def run_cryosr(sim: Path, out: Path, upsampling: int, grouping: int, shifts: bool) -> tuple[dict[str, torch.Tensor], float]:
    argv = ["-q", "superres", str(sim / "Movies/movie_0001.eer"), "--out", str(out), "--method", "drizzle", "--device",
            "cpu", "--eer-grouping", str(grouping), "--eer-upsampling", str(upsampling), "--overwrite"]  # fmt: skip
    star = sim / "truth/movie_0001_shifts.star"  # dose, pixel and (with shifts) the true shifts
    argv += ["--shifts", str(star)] if shifts else ["--pixel-size", str(read_eer_header(argv[2]).pixel_size_a),
                                                    "--dose-per-frame", str(json_dose(sim))]  # fmt: skip
    t0 = time.perf_counter()
    if cryosr_main(argv) != 0:
        raise SystemExit("cryosr superres failed")
    seconds = time.perf_counter() - t0
    images = {"output": read_micrograph(out / "movie_0001.mrc").data, "lr_sum": read_micrograph(out / "movie_0001_lr_sum.mrc").data}
    return (images if shifts else rereference(images, out, star, upsampling)), seconds


def json_dose(sim: Path) -> float:
    return json.loads((sim / "truth/simulation.json").read_text())["detector"]["eer"]["dose_per_fraction_e_a2"]


def tiled_eer(sim: Path, target: Path, size: int) -> Path:
    """A RELION-sized copy: each detector frame's events (decoded by tifffile at the 4x level) tiled."""
    if target.exists():
        return target
    source = sim / "Movies/movie_0001.eer"
    header = read_eer_header(source)
    reps = RELION_SIZE // size
    offsets = np.stack(np.meshgrid(np.arange(reps), np.arange(reps), indexing="ij"), -1).reshape(-1, 2) * size * 4

    def frames():
        with tifffile.TiffFile(source, superres=2) as tif:
            for page in tif.series[0].pages:
                yx = np.argwhere(page.asarray())
                yield (yx[None, :, :] + offsets[:, None, :]).reshape(-1, 2)

    return write_eer(target, frames(), (RELION_SIZE, RELION_SIZE), header.n_frames, pixel_size_a=header.pixel_size_a)


def run_relion(proj: Path, args: argparse.Namespace, upsampling: int) -> tuple[torch.Tensor, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if not (proj / "Import/job001/movies.star").exists():
        (proj / "Import/job001").mkdir(parents=True, exist_ok=True)
        subprocess.run(["relion_import", "--do_movies", "--optics_group_name", "opticsGroup1", "--angpix",
                        str(args.pixel_size), "--kV", "300", "--Cs", "2.7", "--Q0", "0.07", "--i", "Movies/*.eer",
                        "--odir", "Import/job001/", "--ofile", "movies.star"], cwd=proj, env=env, check=True,
                       capture_output=True)  # fmt: skip
    job = f"MotionCorr/up{upsampling}"
    shutil.rmtree(proj / job, ignore_errors=True)
    cmd = ["relion_run_motioncorr", "--i", "Import/job001/movies.star", "--o", f"{job}/", "--use_own", "--j",
           str(args.threads), "--eer_grouping", str(args.grouping), "--eer_upsampling", str(upsampling), "--bin_factor",
           "1", "--bfactor", "150", "--dose_per_frame", str(args.dose), "--voltage", "300", "--angpix",
           str(args.pixel_size), "--dose_weighting", "--patch_x", "1", "--patch_y", "1", "--skip_defect"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    mic = proj / job / "Movies/tiled.mrc"
    if proc.returncode != 0 or not mic.exists():
        raise SystemExit(f"relion_run_motioncorr failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    tile = args.size * upsampling
    return read_micrograph(mic).data[:tile, :tile], seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench_eer_out"))
    p.add_argument("--size", type=int, default=512, help="LR (physical) pixels; RELION gets a 4096 tiling")
    p.add_argument("--pixel-size", type=float, default=1.3, help="physical pixel in Å (bench_superres's LR pixel)")
    p.add_argument("--fractions", type=int, default=10)
    p.add_argument("--grouping", type=int, default=40, help="EER detector frames per fraction")
    p.add_argument("--dose", type=float, default=2.0, help="e/Å² per fraction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="RELION --j")
    p.add_argument("--no-relion", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    sim = simulate(args)
    sim_s = time.perf_counter() - t0
    truth = read_micrograph(sim / "truth/movie_0001_clean.mrc").data
    info = json.loads((sim / "truth/simulation.json").read_text())["movies"][0]["info"]
    rows = []
    for shifts in (False, True):
        for up in (1, 2):
            images, seconds = run_cryosr(sim, args.out / f"cryosr_up{up}_{'true' if shifts else 'est'}", up, args.grouping, shifts)
            label = f"cryosr drizzle, --eer-upsampling {up}, {'true' if shifts else 'estimated'} shifts"
            rows.append({"row": label, "grid": f"{2 * up}x", **score(images["output"], truth), "seconds": seconds})
            rows.append({"row": f"  its aligned sum (lr_sum, {up}x grid)", "grid": f"{up}x",
                         **score(images["lr_sum"], truth), "seconds": seconds})  # fmt: skip
    if not args.no_relion and shutil.which("relion_run_motioncorr"):
        proj = args.out / "relion"
        tiled_eer(sim, proj / "Movies/tiled.eer", args.size)
        for up in (1, 2):
            mic, seconds = run_relion(proj, args, up)
            rows.append({"row": f"RELION 3.1 motioncorr --use_own, --eer_upsampling {up} (DW sum)", "grid": f"{up}x",
                         **score(mic, truth), "seconds": seconds, "note": f"{(RELION_SIZE // args.size) ** 2} tiles"})  # fmt: skip
    result = {
        "date": datetime.date.today().isoformat(), "size_px": args.size, "pixel_size_a": args.pixel_size,
        "fractions": args.fractions, "detector_frames": args.fractions * args.grouping, "dose_per_fraction_e_a2": args.dose,
        "eer_events": info.get("eer_events"), "eer_coincidence_lost": info.get("eer_coincidence_lost"),
        "simulate_seconds": sim_s, "threads": args.threads, "rows": rows,
    }  # fmt: skip
    (args.out / "bench_eer.json").write_text(json.dumps(result, indent=2) + "\n")
    per_px = args.dose * args.pixel_size**2 / args.grouping
    print(f"EER benchmark {result['date']}: {args.size}² px at {args.pixel_size} Å, {args.fractions} fractions x "
          f"{args.grouping} detector frames ({per_px:.3f} e/px/frame, {args.dose * args.fractions:g} e/Å²), "
          f"{args.threads} threads")  # fmt: skip
    print("| row | grid | FRC [0.5,1.0) LR Nyq | FRC [1.0,1.5) outside LR square | seconds |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['grid']} | {r['frc_in']:.3f} | {r['frc_out']:.3f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
