"""The 3-D benchmark (the seed paper's Fig. 5): does super-resolution help the reconstruction?

On synthetic apoferritin (`cryosr simulate`, the full 24-mer of PDB 6Z6U from ../shared/data, LR
pixel 1.3 Å, 2x2-integrated LR camera, HR movie of the same exposure at 0.65 Å), for every input

    LR sum (aligned, dose-weighted, 1.3 Å) | bicubic | fourier | wiener | drizzle | zssr (2x, 0.65 Å)
    | HR-acquired sum (0.65 Å)

particles are extracted at the TRUE coordinates with the real ``relion_preprocess`` (CTF from the
truth), reconstructed with ``relion_reconstruct --ctf`` at the TRUE angles (symmetry O when the
truth map is octahedral in RELION's setting, checked numerically, otherwise C1) and compared with
``truth/map.mrc`` by FSC inside a soft spherical mask (0.143 and 0.5 crossings, Å).

The 2x inputs come from ``cryosr superres`` given the TRUE per-frame shifts (the simulator's
truth/movie_XXXX_shifts.star, converted to RELION's motion STAR sign so ``--shifts`` reads them),
so the table measures reconstruction quality, not alignment. Each micrograph's global offset from
the truth frame is measured by cross-correlation with truth/movie_XXXX_clean.mrc (clean_lr.mrc for
the LR sum) and added to the particle coordinates; the sub-pixel rest of each coordinate goes into
rlnOriginX/YAngst so no input loses RELION's integer-pixel rounding.

    python benchmarks/bench_3d.py --out bench3d_out                    # default: ~15 min, 2 CPU cores
    python benchmarks/bench_3d.py --movies 40 --pad 2                 # larger (GPU: add --device cuda)

Needs the RELION 3.1 binaries on PATH (Debian package ``relion``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import pandas as pd
import torch

from cryosr.core.cli.main import main as cryosr_main
from cryosr.core.dose import dose_weighted_sum
from cryosr.core.evaluate.fsc import fsc_against, match_map, soft_sphere_mask
from cryosr.core.io import read_micrograph, read_movie, read_star, write_mrc, write_star
from cryosr.core.io.mrc import read_volume
from cryosr.core.shifts import cross_correlation_shift, fourier_shift

matplotlib.use("Agg")
import matplotlib.pyplot as plt

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "data" / "real" / "models" / "atomic" / "6z6u_human_apoferritin_1.25A.pdb"
SR_METHODS = ("bicubic", "fourier", "wiener", "drizzle", "zssr")
BINARIES = ("relion_preprocess", "relion_reconstruct")


def run(cmd: list[str], cwd: Path, log: Path) -> None:
    """Run a RELION binary (argument list, no shell); its output goes to ``log``."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}\n({time.perf_counter() - t0:.1f} s)\n")
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}), see {log}:\n{proc.stderr[-1500:]}")


def simulate(out: Path, args: argparse.Namespace) -> Path:
    """Simulate into ``out/sim``; an earlier run with the same settings is reused (its outputs too)."""
    sim = out / "sim"
    meta_path = sim / "truth" / "simulation.json"
    want = {"size": args.size, "frames": args.frames, "pixel_size_a": args.pixel_size, "dose_per_frame": args.dose,
            "particles": args.particles, "seed": args.seed}  # fmt: skip
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        same = all(meta["config"].get(k) == v for k, v in want.items()) and len(meta["movies"]) == args.movies
        lo, hi = (float(v) * 1e4 for v in args.defocus.split(":"))
        same = same and (meta["config"]["defocus_min_a"], meta["config"]["defocus_max_a"]) == (lo, hi)
        model = meta.get("model", "")
        if same and (model == str(args.model) or (args.model == "default" and model.startswith("embedded:"))):
            return sim
        for stale in ("sim", "superres", "hr_sum", "motion", "relion"):
            shutil.rmtree(out / stale, ignore_errors=True)
    argv = ["-q", "simulate", "--out", str(sim), "--n-movies", str(args.movies), "--size", str(args.size),
            "--frames", str(args.frames), "--pixel-size", str(args.pixel_size), "--dose-per-frame", str(args.dose),
            "--particles", str(args.particles), "--defocus", args.defocus, "--seed", str(args.seed),
            "--device", args.device]  # fmt: skip
    if args.model != "default":
        argv += ["--model", str(args.model)]
    if cryosr_main(argv) != 0:
        raise SystemExit("cryosr simulate failed")
    return sim


def true_shifts(path: Path) -> torch.Tensor:
    """`(t, 2)` true shifts (LR px, cryosr convention: frame content = reference moved by +shift)."""
    table = read_star(path)["global_shift"]
    return torch.tensor(table[["rlnMicrographShiftY", "rlnMicrographShiftX"]].to_numpy(), dtype=torch.float32)


def relion_motion_star(truth_star: Path, out: Path) -> Path:
    """The truth shifts as a RELION motion STAR (RELION stores the correction: the negated motion)."""
    blocks = read_star(truth_star)
    table = blocks["global_shift"][["rlnMicrographFrameNumber", "rlnMicrographShiftX", "rlnMicrographShiftY"]].copy()
    table[["rlnMicrographShiftX", "rlnMicrographShiftY"]] *= -1.0
    general = blocks["general"]
    if isinstance(general, pd.DataFrame):
        general = general.iloc[0].to_dict()
    return write_star(out, {"general": general, "global_shift": table})


def octahedral(volume: torch.Tensor) -> bool:
    """Whether ``volume`` (centre ``n // 2``) has O symmetry in RELION's setting (4-folds on x, y, z)."""
    v = volume.double() - volume.double().mean()

    def cc(b: torch.Tensor) -> float:
        return float((v * b).sum() / (v.norm() * b.norm()))

    rot_z = torch.roll(torch.rot90(v, 1, (1, 2)), 1, 1)  # rot90 maps i -> n-1-i; roll restores centre n//2
    three = v.permute(1, 2, 0)  # 3-fold about (1, 1, 1)
    return min(cc(rot_z), cc(three)) > 0.99


def make_inputs(sim: Path, names: list[str], args: argparse.Namespace, work: Path) -> dict[str, dict]:
    """Micrographs per input kind: ``{kind: {"paths": [...], "pixel_size_a", "scale", "seconds"}}``."""
    px = args.pixel_size
    motion = [relion_motion_star(sim / "truth" / f"{n}_shifts.star", work / "motion" / f"{n}.star") for n in names]
    movies = [sim / "Movies" / f"{n}.mrcs" for n in names]
    inputs: dict[str, dict] = {}
    methods = list(args.methods)
    for method in methods:
        out = work / "superres" / method
        argv = ["-q", "superres", *map(str, movies), "--out", str(out), "--method", method, "--shifts", *map(str, motion),
                "--device", args.device, "--seed", str(args.seed)]  # fmt: skip
        if method == "zssr" and args.zssr_iterations:
            argv += ["--iterations", str(args.zssr_iterations)]
        t0 = time.perf_counter()
        if cryosr_main(argv) != 0:
            raise SystemExit(f"cryosr superres --method {method} failed")
        inputs[f"{method} 2x"] = {"paths": [out / f"{n}.mrc" for n in names], "pixel_size_a": px / 2, "scale": 2,
                                  "seconds": time.perf_counter() - t0}  # fmt: skip
    # the aligned, dose-weighted LR sum written by every superres run (same for all methods)
    lr = {"paths": [work / "superres" / methods[0] / f"{n}_lr_sum.mrc" for n in names], "pixel_size_a": px, "scale": 1}
    hr_paths = []
    t0 = time.perf_counter()
    for n in names:
        path = work / "hr_sum" / f"{n}.mrc"
        if not path.exists():
            hr = read_movie(sim / "HR" / "Movies" / f"{n}.mrcs").frames
            shifts = true_shifts(sim / "truth" / f"{n}_shifts.star")
            total = dose_weighted_sum(fourier_shift(hr, -2 * shifts), args.dose, px / 2)
            write_mrc(path, total, px / 2)
        hr_paths.append(path)
    hr_input = {"paths": hr_paths, "pixel_size_a": px / 2, "scale": 2, "seconds": time.perf_counter() - t0}
    return {"LR sum": lr, **inputs, "HR-acquired sum": hr_input}


def offset_yx(sim: Path, name: str, path: Path, scale: int) -> list[float]:
    """Global displacement (output px) of a micrograph's content relative to the truth frame."""
    truth = read_micrograph(sim / "truth" / (f"{name}_clean.mrc" if scale == 2 else f"{name}_clean_lr.mrc")).data
    image = read_micrograph(path).data
    return [float(v) for v in cross_correlation_shift(truth, image, max_shift_px=16)]


def extract_and_reconstruct(
    kind: str, spec: dict, sim: Path, names: list[str], truth: pd.DataFrame, optics: pd.DataFrame,
    args: argparse.Namespace, work: Path, sym: str,
) -> dict:  # fmt: skip
    """relion_preprocess at the true coordinates, relion_reconstruct at the true angles; returns paths/counts."""
    slug = kind.split()[0].lower().replace("-", "_") + ("_2x" if "2x" in kind else "")
    job = work / "relion" / slug
    if job.exists():
        shutil.rmtree(job)
    (job / "mics").mkdir(parents=True)
    px, scale = spec["pixel_size_a"], spec["scale"]
    box = args.box if scale == 2 else args.box // 2
    rows, offsets = [], {}
    by_movie = truth.groupby("cryosrMovieName")
    for name, path in zip(names, spec["paths"]):
        link = job / "mics" / f"{name}.mrc"
        link.symlink_to(path.resolve())
        off = offset_yx(sim, name, path, scale)
        offsets[name] = off
        parts = by_movie.get_group(f"Movies/{name}.mrcs")
        first = parts.iloc[0]
        rows.append({"rlnMicrographName": str(link.relative_to(work)), "rlnOpticsGroup": 1,
                     "rlnDefocusU": first["rlnDefocusU"], "rlnDefocusV": first["rlnDefocusV"],
                     "rlnDefocusAngle": first["rlnDefocusAngle"], "rlnCtfMaxResolution": 5.0,
                     "rlnCtfFigureOfMerit": 0.1})  # fmt: skip
        x = (parts["cryosrCoordinateXHr"] if scale == 2 else parts["rlnCoordinateX"]).to_numpy() + off[1]
        y = (parts["cryosrCoordinateYHr"] if scale == 2 else parts["rlnCoordinateY"]).to_numpy() + off[0]
        coords = pd.DataFrame({"rlnCoordinateX": x.round(), "rlnCoordinateY": y.round(),
                               "rlnAngleRot": parts["rlnAngleRot"].to_numpy(), "rlnAngleTilt": parts["rlnAngleTilt"].to_numpy(),
                               "rlnAnglePsi": parts["rlnAnglePsi"].to_numpy(),
                               # RELION centres the particle by shifting the image by +origin
                               "rlnOriginXAngst": (x.round() - x) * px, "rlnOriginYAngst": (y.round() - y) * px})  # fmt: skip
        write_star(job / "coords" / job.relative_to(work) / "mics" / f"{name}_truth.star", {"": coords})
    opt = optics[["rlnOpticsGroupName", "rlnOpticsGroup", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"]].copy()
    opt["rlnMicrographOriginalPixelSize"] = args.pixel_size
    opt["rlnMicrographPixelSize"] = px
    write_star(job / "micrographs_ctf.star", {"optics": opt, "micrographs": pd.DataFrame(rows)})
    rel = job.relative_to(work)
    run(["relion_preprocess", "--i", str(rel / "micrographs_ctf.star"), "--coord_dir", str(rel / "coords") + "/",
         "--coord_suffix", "_truth.star", "--part_star", str(rel / "particles.star"), "--part_dir", str(rel) + "/",
         "--extract", "--extract_size", str(box), "--norm", "--bg_radius", str(int(0.45 * box)),
         "--invert_contrast"], work, job / "preprocess.log")  # fmt: skip
    parts = read_star(job / "particles.star")
    particles = parts["particles"]
    if "rlnAngleRot" not in particles.columns or "rlnOriginXAngst" not in particles.columns:
        raise SystemExit(f"{job / 'particles.star'}: RELION dropped the pose columns of the coordinate files")
    run(["relion_reconstruct", "--i", str(rel / "particles.star"), "--o", str(rel / "recon.mrc"), "--ctf",
         "--sym", sym, "--pad", str(args.pad)], work, job / "reconstruct.log")  # fmt: skip
    return {"job": job, "box": box, "pixel_size_a": px, "n_particles": len(particles), "offsets_yx_px": offsets}


def band_mean(freq_per_a: tuple[float, ...], fsc: tuple[float, ...], lo: float, hi: float) -> float | None:
    """Mean FSC over the shells in ``[lo, hi)`` (1/Å); None when the map has no shell there."""
    values = [c for f, c in zip(freq_per_a, fsc) if lo <= f < hi]
    return sum(values) / len(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_3d_out"))
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="PDB/mmCIF of the specimen ('default': embedded subunit, C1)")
    parser.add_argument("--movies", type=int, default=24)
    parser.add_argument("--size", type=int, default=512, help="LR movie size (px)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--dose", type=float, default=2.5, help="e/Å² per frame")
    parser.add_argument("--particles", type=int, default=18, help="particles per movie (<= 19 fit in 512 px)")
    parser.add_argument("--pixel-size", type=float, default=1.3, help="LR pixel size (Å)")
    parser.add_argument("--defocus", default="0.5:1.5", help="MIN:MAX µm")
    parser.add_argument("--box", type=int, default=256, help="extraction box at the 2x pixel (LR: half)")
    parser.add_argument("--pad", type=int, default=1, help="relion_reconstruct --pad (2: 8x slower gridding)")
    parser.add_argument("--sym", default="auto", help="auto (O if the truth map is octahedral, else C1), O, C1, ...")
    parser.add_argument("--methods", nargs="+", default=list(SR_METHODS), help="cryosr superres methods")
    parser.add_argument("--zssr-iterations", type=int, default=None)
    parser.add_argument("--band-limit-a", type=float, default=2.0, help="FSC band from LR Nyquist to this (Å)")
    parser.add_argument("--mask-margin-a", type=float, default=10.0, help="FSC mask radius = particle radius + this")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise SystemExit(f"RELION binaries not on PATH: {', '.join(missing)} (apt-get install relion)")
    if args.model != "default" and not Path(args.model).exists():
        raise SystemExit(f"{args.model}: no such model (pass --model default for the embedded subunit)")
    if args.box % 4:
        raise SystemExit("--box must be a multiple of 4 (the LR box is half of it)")
    torch.manual_seed(args.seed)
    out = args.out.resolve()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    sim = simulate(out, args)
    timings["simulate"] = time.perf_counter() - t0
    names = sorted(p.name.split(".")[0] for p in (sim / "Movies").glob("*.mrcs"))
    meta = json.loads((sim / "truth" / "simulation.json").read_text())
    radius_a = max(m["particle_radius_a"] for m in meta["movies"])
    truth_blocks = read_star(sim / "truth" / "particles.star")
    truth_map, map_px = read_volume(sim / "truth" / "map.mrc")
    sym = args.sym if args.sym != "auto" else ("O" if octahedral(truth_map) else "C1")

    t0 = time.perf_counter()
    inputs = make_inputs(sim, names, args, out)
    timings["inputs"] = time.perf_counter() - t0

    results: dict[str, dict] = {}
    for kind, spec in inputs.items():
        t0 = time.perf_counter()
        rec = extract_and_reconstruct(kind, spec, sim, names, truth_blocks["particles"], truth_blocks["optics"], args, out, sym)
        volume, voxel = read_volume(rec["job"] / "recon.mrc")
        reference = match_map(truth_map.double(), map_px, voxel, volume.shape[-1])
        mask = soft_sphere_mask(volume.shape[-1], (radius_a + args.mask_margin_a) / voxel, 6.0).double()
        fsc = fsc_against(volume.double(), reference, voxel, mask=mask)
        results[kind] = {
            "n_particles": rec["n_particles"], "box_px": rec["box"], "pixel_size_a": voxel,
            "resolution_0143_a": fsc.resolution_0143_a, "resolution_05_a": fsc.resolution_05_a,
            "nyquist_a": 2 * voxel, "offsets_yx_px": rec["offsets_yx_px"],
            "fsc_beyond_lr_nyquist": band_mean(fsc.freq_per_a, fsc.fsc, 1 / (2 * args.pixel_size), 1 / args.band_limit_a),
            "superres_seconds": spec.get("seconds"), "relion_and_fsc_seconds": time.perf_counter() - t0,
            "freq_per_a": list(fsc.freq_per_a), "fsc": list(fsc.fsc),
        }  # fmt: skip
        print(f"{kind:16s} {rec['n_particles']:4d} particles  FSC0.143 {fsc.resolution_0143_a:5.2f} Å  "
              f"FSC0.5 {fsc.resolution_05_a:5.2f} Å", flush=True)  # fmt: skip
    timings["total"] = time.perf_counter() - t_start

    lr_nyquist = 2 * args.pixel_size
    n_parts = results["LR sum"]["n_particles"]
    print(f"\n3-D benchmark: {len(names)} movies of {args.size}² x {args.frames} frames at {args.pixel_size} Å "
          f"({args.dose} e/Å²/frame), {n_parts} particles, symmetry {sym}, box {args.box} px at "
          f"{args.pixel_size / 2:g} Å, true shifts, true coordinates, true angles, true CTF; "
          f"LR Nyquist {lr_nyquist:.2f} Å; total {timings['total'] / 60:.1f} min")  # fmt: skip
    print(f"| input | pixel (Å) | FSC 0.143 (Å) | FSC 0.5 (Å) | mean FSC {lr_nyquist:.2f}-{args.band_limit_a:.2f} Å |")
    print("|---|---|---|---|---|")
    for kind, r in results.items():
        band = r["fsc_beyond_lr_nyquist"]
        cell = "-" if band is None else f"{band:.3f}"
        print(f"| {kind} | {r['pixel_size_a']:.2f} | {r['resolution_0143_a']:.2f} | {r['resolution_05_a']:.2f} | {cell} |")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, r in results.items():
        ax.plot(r["freq_per_a"][1:], r["fsc"][1:], label=f"{kind} ({r['resolution_0143_a']:.2f} Å)")
    for level in (0.143, 0.5):
        ax.axhline(level, color="grey", lw=0.8, ls="--")
    ax.axvline(1 / lr_nyquist, color="k", lw=0.8, ls=":", label=f"LR Nyquist ({lr_nyquist:.2f} Å)")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC vs truth map (masked)")
    ax.set_ylim(-0.1, 1.02)
    ax.set_title(f"apoferritin, {n_parts} particles, {sym}, true poses")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "bench_3d_fsc.png", dpi=120)
    plt.close(fig)
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "symmetry": sym, "movies": names, "particle_radius_a": radius_a, "lr_nyquist_a": lr_nyquist,
        "timings_s": timings, "results": results, "python": sys.version.split()[0], "torch": torch.__version__,
    }  # fmt: skip
    (out / "bench_3d.json").write_text(json.dumps(report, indent=1))
    print(f"\nJSON: {out / 'bench_3d.json'}\nplot: {out / 'bench_3d_fsc.png'}")


if __name__ == "__main__":
    main()
