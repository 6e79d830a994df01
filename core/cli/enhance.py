"""Enhance (denoise, optionally 2x super-resolve) movies or micrographs with the spatio-temporal network.

Each INPUT is a movie (.mrcs/.tif/.tiff/.eer, or an .mrc stack with more than one frame) or a single
micrograph (.mrc with one frame). Movies are aligned (estimated shifts, or --shifts), split into the
model's frame window and enhanced; a micrograph is enhanced as a one-frame window. Writes
OUT/<stem>.mrc in counts of the whole exposure per output pixel, header pixel size = input / scale.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from cryosr.core.cli.options import add_eer_args
from cryosr.core.device import resolve_device
from cryosr.core.enhance.checkpoint import load_checkpoint
from cryosr.core.enhance.infer import NOISE_ESTIMATES, EnhanceConfig, enhance_micrograph, enhance_movie
from cryosr.core.errors import InputError
from cryosr.core.io import read_micrograph, read_movie, write_mrc
from cryosr.core.io.motion_star import read_relion_motion
from cryosr.core.io.movie import EER_SUFFIX, MOVIE_SUFFIXES, header_pixel_size_a, movie_shape, read_eer_gain, read_gain

logger = logging.getLogger(__name__)

#: Warn when the input pixel size is this factor outside the training range.
PIXEL_SIZE_TOLERANCE = 1.5


@dataclass(frozen=True)
class EnhanceJob:
    """Everything one ``cryosr enhance`` run needs."""

    inputs: tuple[Path, ...]
    out_dir: Path
    model: str
    enhance: EnhanceConfig
    gain: Path | None
    gain_rotate: int
    gain_flip: int
    shifts: tuple[Path, ...]
    pixel_size_a: float | None
    dose_per_frame: float | None
    voltage_kv: float
    device: str
    overwrite: bool
    eer_grouping: int = 0
    eer_upsampling: int = 1

    def __post_init__(self) -> None:
        if not self.inputs:
            raise InputError(None, "no INPUT given")
        if self.shifts and len(self.shifts) != len(self.inputs):
            raise InputError(None, f"--shifts needs one file per INPUT ({len(self.inputs)}), got {len(self.shifts)}")
        if self.pixel_size_a is not None and not self.pixel_size_a > 0:
            raise InputError(None, f"--pixel-size must be positive, got {self.pixel_size_a}")
        if self.dose_per_frame is not None and not self.dose_per_frame > 0:
            raise InputError(None, f"--dose-per-frame must be positive, got {self.dose_per_frame}")
        if not self.voltage_kv > 0:
            raise InputError(None, f"--voltage must be positive, got {self.voltage_kv}")
        stems = [p.stem for p in self.inputs]
        if len(set(stems)) != len(stems):
            raise InputError(None, "two INPUTs share a file stem; their outputs would collide")


def add_args(parser: argparse.ArgumentParser) -> None:
    """Declare the ``enhance`` options."""
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="movies or micrographs")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--model", default="default", help="'default' (shipped weights) or a .pt from cryosr train")
    parser.add_argument("--scale", type=int, default=1, choices=(1, 2), help="1: denoise; 2: denoise + 2x super-resolve")
    parser.add_argument("--gain", type=Path, help="gain reference for movies (multiplied)")
    parser.add_argument("--gain-rotate", type=int, default=0, choices=(0, 1, 2, 3), help="RELION gain rotation")
    parser.add_argument("--gain-flip", type=int, default=0, choices=(0, 1, 2), help="RELION gain flip")
    parser.add_argument("--shifts", nargs="+", type=Path, default=(), help="RELION motion STAR per INPUT (else estimated)")
    parser.add_argument("--pixel-size", type=float, help="input pixel size in Å (default: from the header)")
    parser.add_argument(
        "--dose-per-frame", type=float,
        help="e/Å² per frame, for models trained on dose-weighted windows (default: estimated from the counts)",
    )
    parser.add_argument("--voltage", type=float, default=300.0, help="kV (dose weighting)")
    parser.add_argument("--tile", type=int, default=512, help="tile edge in input pixels (0 = whole image)")
    parser.add_argument("--noise-estimate", choices=NOISE_ESTIMATES, default=None,
                        help="Wiener anchor noise for movies: corner (white, outer corner of the spectrum) or frames "
                        "(per ring from even/odd frame sums, colour-correct); default: the one the weights were "
                        "trained with (recorded in the checkpoint; corner if none); micrographs always use corner")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_eer_args(parser)


def _check_pixel_size(path: Path, pixel_size_a: float, meta: dict) -> None:
    rng = meta.get("training_pixel_size_a")
    if not rng:
        return
    lo, hi = float(min(rng)), float(max(rng))
    if pixel_size_a < lo / PIXEL_SIZE_TOLERANCE or pixel_size_a > hi * PIXEL_SIZE_TOLERANCE:
        logger.warning(
            "%s: pixel size %.3g Å is far outside the model's training range %.3g-%.3g Å; results may be poor",
            path, pixel_size_a, lo, hi,
        )


def _pixel_size(path: Path, pixel_size_a: float | None, meta: dict) -> float:
    if not pixel_size_a:
        raise InputError(path, "no pixel size in the header; pass --pixel-size")
    _check_pixel_size(path, pixel_size_a, meta)
    return float(pixel_size_a)


def _gain_for(job: EnhanceJob, path: Path, shape: tuple[int, int], cache: dict) -> torch.Tensor | None:
    """The gain factor for one movie's frames, read once per kind (an EER gain follows RELION's EER rules)."""
    if job.gain is None:
        return None
    if path.suffix.lower() == EER_SUFFIX:
        key = ("eer", shape)
        if key not in cache:
            physical = (shape[0] // job.eer_upsampling, shape[1] // job.eer_upsampling)
            cache[key] = read_eer_gain(job.gain, physical, job.eer_upsampling, rotate=job.gain_rotate, flip=job.gain_flip)
    else:
        key = ("plain",)
        if key not in cache:
            cache[key] = read_gain(job.gain, rotate=job.gain_rotate, flip=job.gain_flip)
    gain = cache[key]
    if tuple(gain.shape) != shape:
        raise InputError(job.gain, f"gain shape {tuple(gain.shape)} does not match the frames of {path.name} {shape}")
    return gain


def _input_pixel_size(job: EnhanceJob, path: Path) -> float | None:
    """``--pixel-size`` on the frames' grid (EER: the physical pixel / upsampling), else the header's."""
    if job.pixel_size_a is None:
        return header_pixel_size_a(path, eer_upsampling=job.eer_upsampling)
    eer = path.suffix.lower() == EER_SUFFIX
    return job.pixel_size_a / job.eer_upsampling if eer else job.pixel_size_a


def _plan_input(job: EnhanceJob, path: Path, shifts_path: Path | None, window: int, meta: dict, gains: dict) -> tuple:
    """Check one INPUT from its header (no pixel data): ``(path, movie, shifts, out, gain, pixel_size_a)``."""
    if not path.is_file():
        raise InputError(path, "no such file")
    suffix = path.suffix.lower()
    if suffix not in MOVIE_SUFFIXES:
        raise InputError(path, f"unknown extension {path.suffix!r} (expected one of {', '.join(MOVIE_SUFFIXES)})")
    n, h, w = movie_shape(path, eer_grouping=job.eer_grouping, eer_upsampling=job.eer_upsampling)
    movie = suffix in (".tif", ".tiff", ".mrcs", ".st", EER_SUFFIX) or n > 1
    px = _pixel_size(path, _input_pixel_size(job, path), meta)
    if movie and n < window:
        raise InputError(path, f"the model's window of {window} frames is larger than the movie ({n} frames)")
    gain = _gain_for(job, path, (h, w), gains) if movie else None
    out = job.out_dir / f"{path.stem}.mrc"
    if out.exists() and not job.overwrite:
        raise InputError(out, "exists already (pass --overwrite to replace it)")
    motion = read_relion_motion(shifts_path) if shifts_path is not None else None
    shifts = motion.shifts_for_eer_upsampling(job.eer_upsampling) if motion is not None else None
    if shifts is not None and not movie:
        raise InputError(shifts_path, f"shifts given for {path.name}, which is a single micrograph")
    if shifts is not None and shifts.shape[0] != n:
        raise InputError(path, f"{shifts.shape[0]} shifts in {shifts_path.name} for a movie of {n} frames")
    return path, movie, shifts, out, gain, px


def run(job: EnhanceJob) -> list[Path]:
    """Validate every input, then enhance them one by one (each output written atomically).

    Checked before any output is written: the model, each file's header (extension, frame count against
    the window and the --shifts count, pixel size), the gain file (read once) against every movie's frame
    shape, and existing outputs. Only problems in the pixel data (NaN, a non-positive mean) surface later.
    """
    device = resolve_device(job.device)
    model, meta = load_checkpoint(job.model, device)
    if job.enhance.scale not in model.config.scales:
        raise InputError(job.model, f"model has no {job.enhance.scale}x head (trained for {list(model.config.scales)})")
    # every check that needs no pixel data runs here, before any output is written
    gains: dict = {}
    plan = []
    for i, path in enumerate(job.inputs):
        plan.append(_plan_input(job, path, job.shifts[i] if job.shifts else None, model.config.frames, meta, gains))
    written = []
    for path, movie, shifts, out, gain, px in plan:
        if movie:
            mv = read_movie(path, gain=gain, eer_grouping=job.eer_grouping, eer_upsampling=job.eer_upsampling)
            frames = mv.frames.to(device)
            try:
                result = enhance_movie(
                    frames, model, job.enhance, shifts_yx_px=None if shifts is None else shifts.to(device),
                    pixel_size_a=px, dose_per_frame=job.dose_per_frame, voltage_kv=job.voltage_kv,
                )
            except InputError as exc:
                raise InputError(path, exc.problem) from exc
        else:
            mic = read_micrograph(path)
            try:
                result = enhance_micrograph(mic.data.to(device), model, job.enhance)
            except InputError as exc:
                raise InputError(path, exc.problem) from exc
        write_mrc(out, result.image, px / job.enhance.scale, overwrite=job.overwrite)
        logger.info("%s -> %s (%.1f s)", path.name, out, sum(result.seconds.values()))
        written.append(out)
    return written


def main(args: argparse.Namespace) -> int:
    """Build the job from the arguments and run it."""
    job = EnhanceJob(
        inputs=tuple(args.inputs),
        out_dir=args.out,
        model=args.model,
        enhance=EnhanceConfig(scale=args.scale, tile=args.tile, noise=args.noise_estimate),
        gain=args.gain,
        gain_rotate=args.gain_rotate,
        gain_flip=args.gain_flip,
        shifts=tuple(args.shifts),
        pixel_size_a=args.pixel_size,
        dose_per_frame=args.dose_per_frame,
        voltage_kv=args.voltage,
        device=args.device,
        overwrite=args.overwrite,
        eer_grouping=args.eer_grouping,
        eer_upsampling=args.eer_upsampling or 1,
    )
    run(job)
    return 0
