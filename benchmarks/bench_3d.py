"""The 3-D benchmark (the seed paper's Fig. 5): does super-resolution help the reconstruction?

On synthetic apoferritin (`cryosr simulate`, the full 24-mer of PDB 6Z6U from ../shared/data, LR
pixel 1.3 Å, 2x2-integrated LR camera, HR movie of the same exposure at 0.65 Å), for every input

    LR sum (aligned, dose-weighted, 1.3 Å) | bicubic | fourier | wiener | drizzle | zssr (2x, 0.65 Å)
    | HR-acquired sum (0.65 Å) | controls: the noise-free truth micrographs at 0.65 and 1.3 Å

particles are extracted at the TRUE coordinates with the real ``relion_preprocess`` (CTF from the
truth), reconstructed with ``relion_reconstruct --ctf`` at the TRUE angles (symmetry O when the
truth map is octahedral in RELION's setting, checked numerically, otherwise C1) and compared with
``truth/map.mrc`` (resampled to each map's grid) by FSC inside a soft spherical mask; the 0.143 and
0.5 crossings are reported in Å (against a noise-free reference 0.5 is the like-for-like criterion).

The 2x inputs come from ``cryosr superres`` given the TRUE per-frame shifts (the simulator's
truth/movie_XXXX_shifts.star, a RELION motion STAR that ``--shifts`` reads; copied without cryosr's columns),
so the table measures reconstruction quality, not alignment. Each micrograph's global offset from
the truth frame is measured by cross-correlation with truth/movie_XXXX_clean.mrc (clean_lr.mrc for
1.3 Å inputs), reported, and added to the particle coordinates; the sub-pixel rest of each
coordinate goes into rlnOriginX/YAngst (RELION shifts each image by +origin), so no input loses
RELION's integer-pixel extraction.

Conventions checked on the real binaries (docs/benchmarks/3d.md): relion_preprocess puts the
pixel at 0-based array index ``round(x)`` at box index ``box // 2``; the origin sign above (the
opposite sign costs 0.2-0.5 in FSC at 3 Å on noise-free data); the contrast and CTF signs
(positive FSC). The controls give the pipeline's own ceiling for this particle count.

    python benchmarks/bench_3d.py --out bench_3d_out                  # default sizes (module constants)
    python benchmarks/bench_3d.py --movies 48 --pad 2 --device cuda    # larger: more particles, finer gridding
    python benchmarks/bench_3d.py --docs                               # also write docs/benchmarks/3d.md

Outputs: a Markdown table on stdout, OUT/bench_3d.json (all numbers, curves, timings, load average)
and OUT/bench_3d_fsc.png. Work is reused: the simulation when its settings match, ``cryosr
superres`` outputs that exist (``--recompute zssr`` redoes a method after a code change), and RELION
jobs whose input files are unchanged (an interrupted run resumes). OUT/bench_3d.json records the git
commit and the uncommitted files under core/ the run was made with.
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

import pandas as pd
import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.cli.main import main as cryosr_main
from cryosr.core.dose import dose_weighted_sum
from cryosr.core.evaluate.fsc import fsc_against, match_map, soft_sphere_mask
from cryosr.core.io import read_micrograph, read_movie, read_star, write_mrc, write_star
from cryosr.core.io.mrc import read_volume
from cryosr.core.shifts import cross_correlation_shift, fourier_shift
from cryosr.core.simulate.project import read_true_shifts

try:
    from _provenance import DocsPage  # run as a script: benchmarks/ is sys.path[0]
except ImportError:  # loaded from the repository root (tests)
    from benchmarks._provenance import DocsPage

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "data" / "real" / "models" / "atomic" / "6z6u_human_apoferritin_1.25A.pdb"
SR_METHODS = ("bicubic", "fourier", "wiener", "drizzle", "zssr")
BINARIES = ("relion_preprocess", "relion_reconstruct")
#: default sizes (docs/benchmarks/3d.md quotes them): 24 movies x 18 particles = 432 particles, x24 (O) asymmetric units
DEFAULTS = {"movies": 24, "size": 512, "frames": 16, "dose": 2.5, "particles": 18, "box": 256, "pad": 1}


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
        if same and (model == str(args.model) or (args.model == "default" and model.startswith("embedded"))):
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
    return read_true_shifts(path)


def relion_motion_star(truth_star: Path, out: Path) -> Path:
    """The truth shifts as a plain RELION motion STAR (RELION's sign: the correction, -shift).

    Built from ``read_true_shifts`` (the Å columns), so projects simulated before the truth file
    took RELION's sign (2026-12-02) give the same file.
    """
    blocks = read_star(truth_star)
    true = read_true_shifts(truth_star).double().numpy()
    table = blocks["global_shift"][["rlnMicrographFrameNumber"]].copy()
    table["rlnMicrographShiftX"] = 0.0 - true[:, 1]
    table["rlnMicrographShiftY"] = 0.0 - true[:, 0]
    general = blocks["general"]
    if isinstance(general, pd.DataFrame):
        general = general.iloc[0].to_dict()
    return write_star(out, {"general": general, "global_shift": table})


def octahedral(volume: torch.Tensor) -> bool:
    """Whether ``volume`` (centre ``n // 2``) has O symmetry in RELION's setting (4-folds on x, y, z)."""
    v = volume.double() - volume.double().mean()

    def cc(b: torch.Tensor) -> float:
        return float((v * b).sum() / (v.norm() * b.norm()))

    n = v.shape[-1]
    # rot90 maps index i -> n-1-i; for even n a roll by one restores the centre n//2 (odd n: no roll)
    rot_z = torch.roll(torch.rot90(v, 1, (1, 2)), 1 - n % 2, 1)
    three = v.permute(1, 2, 0)  # 3-fold about (1, 1, 1)
    return min(cc(rot_z), cc(three)) > 0.99


def hr_acquired_sum(sim: Path, name: str, dose: float, pixel_size_a: float, out: Path) -> Path:
    """Dose-weighted sum of the HR movie aligned with the true shifts (2x the LR shifts), at the HR pixel."""
    if not out.exists():
        hr = read_movie(sim / "HR" / "Movies" / f"{name}.mrcs").frames
        shifts = true_shifts(sim / "truth" / f"{name}_shifts.star")
        write_mrc(out, dose_weighted_sum(fourier_shift(hr, -2 * shifts), Acquisition(pixel_size_a / 2, dose)), pixel_size_a / 2)
    return out


def _method_token(token: str) -> str:
    """``METHOD`` or ``METHOD:GAIN`` (wiener/zssr with ``--wiener-gain GAIN``)."""
    method, _, gain = token.partition(":")
    if method not in (*SR_METHODS, "bilinear") or (gain and (method not in ("wiener", "zssr") or gain not in ("ring", "bin", "none"))):
        raise argparse.ArgumentTypeError(f"{token!r}: use one of {', '.join(SR_METHODS)}, bilinear, or wiener:GAIN / zssr:GAIN")
    return token


def make_inputs(sim: Path, names: list[str], args: argparse.Namespace, work: Path) -> dict[str, dict]:
    """Micrographs per input kind: ``{kind: {"paths", "pixel_size_a", "acquired_pixel_a", "seconds"}}``."""
    px = args.pixel_size
    motion = [relion_motion_star(sim / "truth" / f"{n}_shifts.star", work / "motion" / f"{n}.star") for n in names]
    movies = [sim / "Movies" / f"{n}.mrcs" for n in names]
    inputs: dict[str, dict] = {}
    for token in args.methods:
        method, _, gain = token.partition(":")  # e.g. wiener:bin = --method wiener --wiener-gain bin
        out = work / "superres" / token.replace(":", "_")
        argv = ["-q", "superres", *map(str, movies), "--out", str(out), "--method", method, "--shifts", *map(str, motion),
                "--device", args.device, "--seed", str(args.seed)]  # fmt: skip
        if gain:
            argv += ["--wiener-gain", gain]
        if token in args.recompute:
            argv.append("--overwrite")
        if method == "zssr" and args.zssr_iterations is not None:
            argv += ["--iterations", str(args.zssr_iterations)]
        t0 = time.perf_counter()
        if cryosr_main(argv) != 0:
            raise SystemExit(f"cryosr superres --method {method} failed")
        seconds = time.perf_counter() - t0
        log = out / "superres.json"  # per-movie stage times of the run that made the outputs (resume: earlier run)
        if log.exists():
            seconds = sum(sum(m.get("seconds", {}).values()) for m in json.loads(log.read_text()).get("movies", []))
        inputs[f"{method} {gain} 2x" if gain else f"{method} 2x"] = {"paths": [out / f"{n}.mrc" for n in names], "pixel_size_a": px / 2,
                                  "acquired_pixel_a": px, "seconds": seconds}  # fmt: skip
    # the aligned, dose-weighted LR sum written by every superres run (same for all methods)
    lr_dir = work / "superres" / args.methods[0].replace(":", "_")
    lr = {"paths": [lr_dir / f"{n}_lr_sum.mrc" for n in names], "pixel_size_a": px, "acquired_pixel_a": px}
    t0 = time.perf_counter()
    hr_paths = [hr_acquired_sum(sim, n, args.dose, px, work / "hr_sum" / f"{n}.mrc") for n in names]
    hr = {"paths": hr_paths, "pixel_size_a": px / 2, "acquired_pixel_a": px / 2, "seconds": time.perf_counter() - t0}
    kinds = {"LR sum": lr, **inputs, "HR-acquired sum": hr}
    if args.controls:
        truth = sim / "truth"
        kinds["control: clean HR"] = {"paths": [truth / f"{n}_clean.mrc" for n in names], "pixel_size_a": px / 2,
                                      "acquired_pixel_a": px / 2}  # fmt: skip
        kinds["control: clean LR"] = {"paths": [truth / f"{n}_clean_lr.mrc" for n in names], "pixel_size_a": px,
                                      "acquired_pixel_a": px}  # fmt: skip
    return kinds


def offset_yx(sim: Path, name: str, path: Path, lr_pixel_a: float) -> list[float]:
    """Global displacement (pixels of ``path``) of a micrograph's content relative to the truth frame."""
    image = read_micrograph(path)
    lr = abs(image.pixel_size_a - lr_pixel_a) < 1e-3 * lr_pixel_a
    truth = read_micrograph(sim / "truth" / (f"{name}_clean_lr.mrc" if lr else f"{name}_clean.mrc")).data
    if truth.shape != image.data.shape:
        raise SystemExit(f"{path}: size {tuple(image.data.shape)} does not match the truth {tuple(truth.shape)}")
    return [float(v) for v in cross_correlation_shift(truth, image.data, max_shift_px=16)]


def _slug(kind: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in kind.lower()).strip("_")


def _signature(spec: dict, extra: dict) -> dict:
    files = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in spec["paths"]]
    return {"files": files, **extra}


def extract_and_reconstruct(
    kind: str, spec: dict, sim: Path, names: list[str], truth: pd.DataFrame, optics: pd.DataFrame,
    args: argparse.Namespace, work: Path, sym: str,
) -> dict:  # fmt: skip
    """relion_preprocess at the true coordinates, relion_reconstruct at the true angles.

    Returns ``{"recon", "box", "pixel_size_a", "n_particles", "offsets_yx_px"}``; a job whose inputs
    and settings are unchanged is reused.
    """
    job = work / "relion" / _slug(kind)
    px = spec["pixel_size_a"]
    scale = int(round(args.pixel_size / px))
    box = args.box * scale // 2
    signature = _signature(spec, {"box": box, "pad": args.pad, "sym": sym, "px": px})
    done = job / "done.json"
    if done.exists() and (job / "recon.mrc").exists():
        previous = json.loads(done.read_text())
        if previous.get("signature") == signature:
            return {**previous["result"], "recon": job / "recon.mrc", "reused": True}
    shutil.rmtree(job, ignore_errors=True)
    (job / "mics").mkdir(parents=True)
    rel = job.relative_to(work)
    rows, offsets = [], {}
    by_movie = truth.groupby("cryosrMovieName")
    n_truth = 0
    for name, path in zip(names, spec["paths"], strict=True):
        link = job / "mics" / f"{name}.mrc"
        link.symlink_to(path.resolve())
        off = offset_yx(sim, name, path, args.pixel_size)
        offsets[name] = off
        parts = by_movie.get_group(f"Movies/{name}.mrcs")
        n_truth += len(parts)
        first = parts.iloc[0]
        rows.append({"rlnMicrographName": str(link.relative_to(work)), "rlnOpticsGroup": 1,
                     "rlnDefocusU": first["rlnDefocusU"], "rlnDefocusV": first["rlnDefocusV"],
                     "rlnDefocusAngle": first["rlnDefocusAngle"], "rlnCtfMaxResolution": 5.0,
                     "rlnCtfFigureOfMerit": 0.1})  # fmt: skip
        # truth: LR pixel centres at integers; HR = 2 LR + 0.5 (cryosrCoordinate*Hr)
        x = (parts["cryosrCoordinateXHr"] if scale == 2 else parts["rlnCoordinateX"]).to_numpy() + off[1]
        y = (parts["cryosrCoordinateYHr"] if scale == 2 else parts["rlnCoordinateY"]).to_numpy() + off[0]
        coords = pd.DataFrame({"rlnCoordinateX": x.round(), "rlnCoordinateY": y.round(),
                               "rlnAngleRot": parts["rlnAngleRot"].to_numpy(), "rlnAngleTilt": parts["rlnAngleTilt"].to_numpy(),
                               "rlnAnglePsi": parts["rlnAnglePsi"].to_numpy(),
                               # RELION centres the particle by shifting the image by +origin
                               "rlnOriginXAngst": (x.round() - x) * px, "rlnOriginYAngst": (y.round() - y) * px})  # fmt: skip
        write_star(job / "coords" / rel / "mics" / f"{name}_truth.star", {"": coords})
    opt = optics[["rlnOpticsGroupName", "rlnOpticsGroup", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"]].copy()
    opt["rlnMicrographOriginalPixelSize"] = spec["acquired_pixel_a"]
    opt["rlnMicrographPixelSize"] = px
    write_star(job / "micrographs_ctf.star", {"optics": opt, "micrographs": pd.DataFrame(rows)})
    run(["relion_preprocess", "--i", str(rel / "micrographs_ctf.star"), "--coord_dir", str(rel / "coords") + "/",
         "--coord_suffix", "_truth.star", "--part_star", str(rel / "particles.star"), "--part_dir", str(rel) + "/",
         "--extract", "--extract_size", str(box), "--norm", "--bg_radius", str(int(0.45 * box)),
         "--invert_contrast"], work, job / "preprocess.log")  # fmt: skip
    blocks = read_star(job / "particles.star")
    particles, popt = blocks["particles"], blocks["optics"]
    if not {"rlnAngleRot", "rlnOriginXAngst"} <= set(particles.columns):
        raise SystemExit(f"{job / 'particles.star'}: RELION dropped the pose columns of the coordinate files")
    if abs(float(popt["rlnImagePixelSize"].iloc[0]) - px) > 1e-4 or int(popt["rlnImageSize"].iloc[0]) != box:
        raise SystemExit(f"{job / 'particles.star'}: pixel/box {popt['rlnImagePixelSize'].iloc[0]}/{popt['rlnImageSize'].iloc[0]}, expected {px}/{box}")
    run(["relion_reconstruct", "--i", str(rel / "particles.star"), "--o", str(rel / "recon.mrc"), "--ctf",
         "--sym", sym, "--pad", str(args.pad)], work, job / "reconstruct.log")  # fmt: skip
    result = {"box": box, "pixel_size_a": px, "n_particles": len(particles), "n_truth": n_truth, "offsets_yx_px": offsets}
    done.write_text(json.dumps({"signature": signature, "result": result}))
    return {**result, "recon": job / "recon.mrc", "reused": False}


def band_mean(freq_per_a: list[float], fsc: list[float], lo: float, hi: float) -> float | None:
    """Mean FSC over the shells in ``(lo, hi]`` (1/Å, ``lo`` with a 1e-4 relative margin: a 1.3 Å map's
    Nyquist shell is not beyond the LR Nyquist); None when the map has no shell there."""
    values = [c for f, c in zip(freq_per_a, fsc, strict=True) if lo * (1 + 1e-4) < f <= hi]
    return sum(values) / len(values) if values else None


def score_map(recon: Path, truth_map: torch.Tensor, map_px: float, radius_a: float, args: argparse.Namespace) -> dict:
    """FSC of a reconstruction against the truth map on the reconstruction's grid, inside a soft sphere."""
    volume, voxel = read_volume(recon)
    box = volume.shape[-1]
    reference = match_map(truth_map.double(), map_px, voxel, box)
    mask = soft_sphere_mask(box, (radius_a + args.mask_margin_a) / voxel, args.mask_edge_a / voxel).double()
    fsc = fsc_against(volume.double(), reference, voxel, mask=mask)
    nyquist = 2 * voxel
    return {
        "pixel_size_a": voxel, "nyquist_a": nyquist,
        "resolution_0143_a": fsc.resolution_0143_a, "resolution_05_a": fsc.resolution_05_a,
        "fsc_beyond_lr_nyquist": band_mean(list(fsc.freq_per_a), list(fsc.fsc), 1 / (2 * args.pixel_size), 1 / args.band_limit_a),
        "freq_per_a": list(fsc.freq_per_a), "fsc": list(fsc.fsc),
    }  # fmt: skip


def _res(value: float, nyquist: float) -> str:
    return f"{value:.2f}" + (" (Nyquist)" if abs(value - nyquist) < 1e-6 else "")


def print_table(results: dict, args: argparse.Namespace, header: str) -> None:
    lr_nyq = 2 * args.pixel_size
    print(header)
    print(f"| input | pixel (Å) | particles | FSC 0.143 (Å) | FSC 0.5 (Å) | mean FSC {lr_nyq:.2f}-{args.band_limit_a:g} Å "
          "| max offset (px) | superres (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        band = "-" if r["fsc_beyond_lr_nyquist"] is None else f"{r['fsc_beyond_lr_nyquist']:.3f}"
        off = max(max(abs(v) for v in o) for o in r["offsets_yx_px"].values())
        sec = "-" if r.get("superres_seconds") is None else f"{r['superres_seconds']:.0f}"
        print(f"| {kind} | {r['pixel_size_a']:.2f} | {r['n_particles']} | {_res(r['resolution_0143_a'], r['nyquist_a'])} "
              f"| {_res(r['resolution_05_a'], r['nyquist_a'])} | {band} | {off:.2f} | {sec} |")  # fmt: skip


def save_plot(results: dict, path: Path, lr_nyquist: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for kind, r in results.items():
        style = ":" if kind.startswith("control") else "-"
        ax.plot(r["freq_per_a"][1:], r["fsc"][1:], style, lw=1.3, label=f"{kind} ({r['resolution_0143_a']:.2f} Å)")
    for level in (0.143, 0.5):
        ax.axhline(level, color="grey", lw=0.8, ls="--")
    ax.axvline(1 / lr_nyquist, color="k", lw=0.8, ls=":", label=f"LR Nyquist ({lr_nyquist:.2f} Å)")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC vs truth map (soft spherical mask)")
    ax.set_ylim(-0.1, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_state() -> dict | None:
    """Commit of the checkout and whether core/ has uncommitted changes (None outside a git checkout)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "core"], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": head.stdout.strip(), "core_dirty": sorted(line[3:] for line in dirty.stdout.splitlines())}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = DEFAULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_3d_out"))
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="PDB/mmCIF of the specimen ('default': embedded subunit, C1)")
    parser.add_argument("--movies", type=int, default=d["movies"])
    parser.add_argument("--size", type=int, default=d["size"], help="LR movie size (px)")
    parser.add_argument("--frames", type=int, default=d["frames"])
    parser.add_argument("--dose", type=float, default=d["dose"], help="e/Å² per frame")
    parser.add_argument("--particles", type=int, default=d["particles"], help="particles per movie (<= 19 fit in 512 px)")
    parser.add_argument("--pixel-size", type=float, default=1.3, help="LR pixel size (Å)")
    parser.add_argument("--defocus", default="0.5:1.5", help="MIN:MAX µm")
    parser.add_argument("--box", type=int, default=d["box"], help="extraction box at the 2x pixel (LR: half)")
    parser.add_argument("--pad", type=int, default=d["pad"], help="relion_reconstruct --pad (2: ~10x slower)")
    parser.add_argument("--sym", default="auto", help="auto (O if the truth map is octahedral, else C1), O, C1, ...")
    parser.add_argument("--methods", nargs="+", default=list(SR_METHODS), type=_method_token,
                        help="superres methods; wiener:GAIN or zssr:GAIN adds --wiener-gain GAIN (ring, bin, none)")
    parser.add_argument("--recompute", nargs="+", default=[], metavar="METHOD",
                        help="recompute these methods' superres outputs (after a code change; default: reuse)")  # fmt: skip
    parser.add_argument("--zssr-iterations", type=int, default=None, help="zssr steps per movie (default: the method's)")
    parser.add_argument("--no-controls", dest="controls", action="store_false", help="skip the noise-free truth rows")
    parser.add_argument("--band-limit-a", type=float, default=2.0, help="FSC band from LR Nyquist to this (Å)")
    parser.add_argument("--mask-margin-a", type=float, default=10.0, help="FSC mask radius = particle radius + this")
    parser.add_argument("--mask-edge-a", type=float, default=5.0, help="raised-cosine edge of the FSC mask (Å)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--docs", action="store_true", help="also write docs/benchmarks/3d.md")
    args = parser.parse_args(argv)
    if args.box % 4:
        parser.error("--box must be a multiple of 4 (the LR box is half of it)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise SystemExit(f"RELION binaries not on PATH: {', '.join(missing)} (apt-get install relion)")
    if args.model != "default" and not Path(args.model).exists():
        raise SystemExit(f"{args.model}: no such model (pass --model default for the embedded subunit)")
    page = DocsPage("3d", "Benchmark: 3-D reconstruction from super-resolved micrographs", enabled=args.docs,
                    argv=None if argv is None else ["benchmarks/bench_3d.py", *argv])  # fmt: skip
    torch.manual_seed(args.seed)
    git = git_state()  # the code the inputs are made with (the SR methods change under development)
    out = args.out.resolve()
    t_start = time.perf_counter()
    load_start = os.getloadavg()
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
        if rec["n_particles"] != rec["n_truth"]:
            print(f"warning: {kind}: RELION extracted {rec['n_particles']} of {rec['n_truth']} particles", file=sys.stderr)
        score = score_map(rec["recon"], truth_map, map_px, radius_a, args)
        results[kind] = {**{k: v for k, v in rec.items() if k != "recon"}, **score,
                         "superres_seconds": spec.get("seconds"), "relion_and_fsc_seconds": time.perf_counter() - t0}  # fmt: skip
        print(f"{kind:20s} {rec['n_particles']:4d} particles  FSC0.143 {score['resolution_0143_a']:5.2f} Å  "
              f"FSC0.5 {score['resolution_05_a']:5.2f} Å{'  (reused)' if rec['reused'] else ''}", flush=True)  # fmt: skip
    timings["total"] = time.perf_counter() - t_start
    load_end = os.getloadavg()

    lr_nyquist = 2 * args.pixel_size
    n_parts = results["LR sum"]["n_particles"]
    header = (f"\n3-D benchmark ({time.strftime('%Y-%m-%d')}): {len(names)} movies of {args.size}² x {args.frames} frames "
              f"at {args.pixel_size} Å ({args.dose} e/Å²/frame, {args.frames * args.dose:g} e/Å²), {n_parts} particles, "
              f"symmetry {sym}, box {args.box} px at {args.pixel_size / 2:g} Å ({args.box // 2} at {args.pixel_size:g} Å), "
              f"relion_reconstruct --pad {args.pad}; true shifts, coordinates, angles and CTF; LR Nyquist {lr_nyquist:.2f} Å; "
              f"total {timings['total'] / 60:.1f} min, load average {load_start[0]:.1f} -> {load_end[0]:.1f} "
              f"({os.cpu_count()} CPUs)")  # fmt: skip
    with page.section("FSC against the truth map"):
        print_table(results, args, header)
    title = f"apoferritin, {n_parts} particles, {sym}, true poses, LR {args.pixel_size} Å"
    save_plot(results, out / "bench_3d_fsc.png", lr_nyquist, title)
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "symmetry": sym, "movies": names, "particle_radius_a": radius_a, "lr_nyquist_a": lr_nyquist,
        "timings_s": timings, "load_average": {"start": load_start, "end": load_end}, "cpus": os.cpu_count(),
        "results": results, "git": git, "python": sys.version.split()[0], "torch": torch.__version__,
    }  # fmt: skip
    (out / "bench_3d.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"\nJSON: {out / 'bench_3d.json'}\nplot: {out / 'bench_3d_fsc.png'}")
    page.write()
    return report


if __name__ == "__main__":
    main()
