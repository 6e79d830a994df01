"""Simulate cryo-EM movies with ground truth (a RELION project: LR and HR movies, truths, STARs).

Example:

    cryosr simulate --out sim --n-movies 1 --size 256 --frames 8 --particles 6

The LR movie is what a camera at half the magnification records of the same specimen (2x2 pixel
integration, detector MTF, Poisson counts); HR/ holds the same exposure recorded at the HR pixel
and truth/ the noise-free, motion-free targets, true shifts, particle poses and the 3-D map.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cryosr.core.cli.options import add_device
from cryosr.core.device import resolve_device
from cryosr.core.errors import InputError
from cryosr.core.simulate import MOTION_MODELS, SimulationConfig, plan_movie, simulate_movie
from cryosr.core.simulate.config import LR_OPERATORS, MOVIE_FORMATS
from cryosr.core.simulate.model_io import default_model_path, read_model
from cryosr.core.simulate.movie import _box_size
from cryosr.core.simulate.physics import ICE_MIP_V
from cryosr.core.simulate.potential import potential_volume
from cryosr.core.simulate.project import read_mtf, summary, write_movie_files, write_project_files

logger = logging.getLogger(__name__)

__all__ = ["add_args", "main"]


@dataclass(frozen=True)
class SimulateJob:
    """What ``cryosr simulate`` was asked to do, beyond the physics in ``SimulationConfig``."""

    out_dir: Path
    n_movies: int
    model: str | None
    mtf: str | None
    device: str
    overwrite: bool

    def __post_init__(self) -> None:
        if self.n_movies < 1:
            raise InputError(None, f"--n-movies {self.n_movies}: must be >= 1")


def add_args(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``cryosr simulate``."""
    d = SimulationConfig()
    parser.add_argument("--model", default=None, help="PDB/mmCIF model or MRC map (default: embedded apoferritin subunit, 6Z6U chain A)")
    parser.add_argument("--out", required=True, help="project directory to create")
    parser.add_argument("--n-movies", type=int, default=2)
    parser.add_argument("--size", type=int, default=d.size, help="LR movie size in pixels")
    parser.add_argument("--pixel-size", type=float, default=d.pixel_size_a, help="LR pixel size in Å")
    parser.add_argument("--bin", type=int, default=d.bin_factor, help="HR pixels per LR pixel (2)")
    parser.add_argument("--frames", type=int, default=d.frames)
    parser.add_argument("--dose-per-frame", type=float, default=d.dose_per_frame, help="e/Å² per frame")
    parser.add_argument("--particles", type=int, default=None,
                        help=f"particles per micrograph (default: {d.particles} per (1024 Å)², scaled with the field area)")
    parser.add_argument("--defocus", default="0.8:2.5", help="MIN:MAX defocus range in µm (underfocus positive)")
    parser.add_argument("--astigmatism", type=float, default=d.astigmatism_a, help="max (DefocusU-DefocusV)/2 in Å")
    parser.add_argument("--voltage", type=float, default=d.voltage_kv, help="kV")
    parser.add_argument("--cs", type=float, default=d.cs_mm, help="spherical aberration in mm")
    parser.add_argument("--amp-contrast", type=float, default=d.amp_contrast)
    parser.add_argument("--ice-thickness", type=float, default=d.ice_thickness_a, help="Å")
    parser.add_argument("--energy-filter", action="store_true", help="zero-loss filtered: remove inelastic electrons")
    parser.add_argument("--mtf", default=None, help="detector MTF STAR (rlnResolutionInversePixel, rlnMtfValue)")
    parser.add_argument("--noise-mtf", action="store_true",
                        help="apply the --mtf to the Poisson-sampled counts (coloured noise, power ~ MTF²) instead of the expectation")
    parser.add_argument("--motion", choices=MOTION_MODELS, default=d.motion)
    parser.add_argument("--lr-operator", choices=LR_OPERATORS, default=d.lr_operator,
                        help="box: 2x2 pixel integration (physical); fourier: Fourier crop (for comparison)")
    parser.add_argument("--b-factor", type=float, default=None, help="B-factor for all atoms in Å² (default: model's)")
    parser.add_argument("--seed", type=int, default=d.seed)
    add_device(parser)
    parser.add_argument("--save-clean-frames", action="store_true", help="also write noise-free per-frame frames")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing simulation in --out")
    _add_detector_args(parser, d)


def _add_detector_args(parser: argparse.ArgumentParser, d: SimulationConfig) -> None:
    g = parser.add_argument_group("camera and file format of the LR movie (Movies/)")
    g.add_argument("--format", dest="movie_format", choices=MOVIE_FORMATS, default=d.movie_format,
                   help="mrc: float32 MRC stack; tiff: integer counts, LZW (as EPU/SerialEM); eer: electron events at "
                   "sub-pixel positions (Falcon 4; RELION 3.1 reads only --size 4096)")
    g.add_argument("--eer-frames-per-fraction", type=int, default=d.eer_frames_per_fraction, metavar="N",
                   help="EER detector frames per frame (--frames fractions; read back with --eer-grouping N)")
    g.add_argument("--eer-compression", type=int, choices=(65001, 65002), default=d.eer_compression)
    g.add_argument("--gain-sigma", type=float, default=d.gain_sigma,
                   help="relative rms of the per-pixel sensitivity; writes Movies/gain.mrc (RELION's convention)")
    g.add_argument("--hot-pixels", type=int, default=d.hot_pixels, help="pixels that fire every frame (Movies/defects.txt)")
    g.add_argument("--dead-columns", type=int, default=d.dead_columns, help="columns that record nothing (Movies/defects.txt)")
    g.add_argument("--hot-pixel-rate", type=float, default=d.hot_pixel_rate,
                   help="counts per frame of a hot pixel, in mean counts per pixel and frame")


def _defocus_a(text: str) -> tuple[float, float]:
    try:
        parts = [float(x) for x in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise InputError(None, f"--defocus {text!r}: expected MIN:MAX in µm, e.g. 0.8:2.5")
    return parts[0] * 1e4, parts[1] * 1e4


def _particles(args: argparse.Namespace) -> int:
    """``--particles``, or the default density (120 per (1024 Å)²) scaled to this field."""
    if args.particles is not None:
        return args.particles
    field_a = args.size * args.pixel_size
    return max(1, int(SimulationConfig().particles * (field_a / 1024.0) ** 2))


def main(args: argparse.Namespace) -> int:
    """Run ``cryosr simulate``: validate everything, then simulate and write movie by movie."""
    t0 = time.perf_counter()
    job = SimulateJob(Path(args.out), args.n_movies, args.model, args.mtf, args.device, args.overwrite)
    lo, hi = _defocus_a(args.defocus)
    mtf_f, mtf_v = read_mtf(job.mtf) if job.mtf else ((), ())
    config = SimulationConfig(
        size=args.size, pixel_size_a=args.pixel_size, bin_factor=args.bin, frames=args.frames,
        dose_per_frame=args.dose_per_frame, particles=_particles(args), defocus_min_a=lo, defocus_max_a=hi,
        astigmatism_a=min(args.astigmatism, 0.5 * lo), voltage_kv=args.voltage, cs_mm=args.cs,
        amp_contrast=args.amp_contrast, ice_thickness_a=args.ice_thickness, energy_filter=args.energy_filter,
        motion=args.motion, lr_operator=args.lr_operator, mtf_frequencies=mtf_f, mtf_values=mtf_v,
        mtf_name=Path(job.mtf).name if job.mtf else "", noise_mtf=args.noise_mtf, b_factor_a2=args.b_factor, seed=args.seed,
        save_clean_frames=args.save_clean_frames, movie_format=args.movie_format,
        eer_frames_per_fraction=args.eer_frames_per_fraction, eer_compression=args.eer_compression,
        gain_sigma=args.gain_sigma, hot_pixels=args.hot_pixels, dead_columns=args.dead_columns,
        hot_pixel_rate=args.hot_pixel_rate,
    )
    if config.movie_format == "eer" and config.size != 4096:
        logger.warning("--format eer with --size %d: RELION 3.1 reads only 4096 x 4096 EER movies", config.size)
    device = resolve_device(job.device)
    model = read_model(job.model)
    if (job.out_dir / "movies.star").exists() and not job.overwrite:
        raise InputError(job.out_dir, "already holds a simulation (movies.star); pass --overwrite to replace it")
    plans = [plan_movie(model, config, i) for i in range(job.n_movies)]  # fails before any output
    logger.info("simulating %d movie(s) of %d frames, %d² px at %.3g Å (HR %d² at %.3g Å) on %s",
                job.n_movies, config.frames, config.size, config.pixel_size_a, config.hr_size, config.hr_pixel_size_a, device)
    sims = []
    for i, plan in enumerate(tqdm(plans, desc="movies", unit="movie", disable=None)):
        sim = simulate_movie(model, config, i, device, plan=plan)
        write_movie_files(job.out_dir, i, sim, config)
        sims.append(summary(sim))
        logger.info("movie %d: %.2f s, defocus %.0f/%.0f Å, drift %.1f Å", i + 1, sim.seconds,
                    sim.defocus_u_a, sim.defocus_v_a, float(sim.shifts_a[-1].norm()))
        del sim
    box = _box_size(model, config.hr_pixel_size_a)
    volume = potential_volume(model, box, config.hr_pixel_size_a, b_factor_a2=config.b_factor_a2,
                              solvent_mip_v=ICE_MIP_V, device=device)
    model_name = str(job.model) if job.model else f"embedded:{default_model_path().name}"
    write_project_files(job.out_dir, sims, config, map_volume=volume, model_name=model_name, mtf_path=job.mtf,
                        argv=sys.argv, device=str(device), seconds=time.perf_counter() - t0)
    logger.info("wrote %s (%.1f s)", job.out_dir, time.perf_counter() - t0)
    return 0
