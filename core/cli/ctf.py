"""Estimate the CTF of micrographs (CTFFIND4-style) and write RELION's micrographs_ctf.star.

Example::

    cryosr ctf SR/*.mrc --out CTF/ --voltage 300 --cs 2.7 --amp-contrast 0.07

Writes DIR/micrographs_ctf.star (optics + micrographs blocks, defocus in Å, RELION CtfFind
format), DIR/<stem>.ctf (the normalized power spectrum, MRC, referenced as rlnCtfImage) and
DIR/<stem>_ctf.png (half measured / half model spectrum and the 1-D fit with CC_fit). The pixel
size comes from each MRC header unless --pixel-size is given; super-resolved micrographs (pixel size
halved) are fitted out to their own Nyquist.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from cryosr.core.cli.options import add_device
from cryosr.core.ctf.fit import CtfFitConfig, fit_ctf
from cryosr.core.device import resolve_device
from cryosr.core.errors import InputError
from cryosr.core.evaluate.report import ctf_diagnostic_figure, save_figure
from cryosr.core.io import read_micrograph, read_mrc_header, write_mrc
from cryosr.core.io.ctf_star import CtfRow, write_ctf_star
from cryosr.core.io.fei import read_fei_metadata

logger = logging.getLogger(__name__)


def _pair(text: str, name: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in text.split(":"))
    except ValueError:
        raise InputError(None, f"--{name} must look like LOW:HIGH, got {text!r}") from None
    return a, b


def add_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``cryosr ctf``."""
    parser.add_argument("micrographs", nargs="+", type=Path, help="MRC micrographs")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--pixel-size", type=float, default=None, help="Å/px (default: from each MRC header)")
    parser.add_argument("--voltage", type=float, default=300.0, help="kV (default 300)")
    parser.add_argument("--cs", type=float, default=2.7, help="spherical aberration, mm (default 2.7)")
    parser.add_argument("--amp-contrast", type=float, default=0.07, help="amplitude contrast (default 0.07)")
    parser.add_argument("--defocus-range", default="0.3:5.0", help="mean defocus search range, µm (default 0.3:5.0)")
    parser.add_argument("--fit-range", default="30:5", help="resolution band of the search, Å (default 30:5)")
    parser.add_argument("--max-astigmatism", type=float, default=1500.0, help="grid limit of U-V, Å (default 1500)")
    parser.add_argument("--spectrum-tile", type=int, default=512, help="periodogram tile size, px (default 512)")
    parser.add_argument("--original-pixel-size", type=float, default=None, help="movie pixel size for the optics block")
    add_device(parser)


@dataclass(frozen=True)
class CtfJob:
    """Everything ``cryosr ctf`` needs, validated."""

    micrographs: tuple[Path, ...]
    out_dir: Path
    pixel_size_a: float | None
    original_pixel_size_a: float | None
    fit: CtfFitConfig
    device: str


def run_ctf_job(job: CtfJob) -> list[dict]:
    """Fit every micrograph, write the diagnostics and the STAR file; returns one record per micrograph."""
    device = resolve_device(job.device)
    stems = [p.stem for p in job.micrographs]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        raise InputError(None, f"micrograph names must be unique, repeated: {', '.join(sorted(dup))}")
    pixel_sizes = []
    for path in job.micrographs:  # validate every input before writing anything
        header = read_mrc_header(path)
        px = job.pixel_size_a or header["pixel_size_a"]
        if not px:
            raise InputError(path, "no pixel size in the MRC header; pass --pixel-size")
        if header["shape"][0] != 1:
            raise InputError(path, f"expected one micrograph, found {header['shape'][0]} sections")
        pixel_sizes.append(float(px))
    rows, records = [], []
    for path, px in zip(job.micrographs, pixel_sizes, strict=True):
        mic = read_micrograph(path)
        fit = fit_ctf(mic.data.to(device), px, job.fit)
        ctf_image = job.out_dir / f"{path.stem}.ctf"
        write_mrc(ctf_image, fit.spectrum, px, overwrite=True)
        save_figure(ctf_diagnostic_figure(fit, path.name), job.out_dir / f"{path.stem}_ctf.png")
        rows.append(
            CtfRow(
                micrograph_name=str(path),
                ctf_image=f"{ctf_image}:mrc",
                pixel_size_a=px,
                defocus_u_a=fit.defocus_u_a,
                defocus_v_a=fit.defocus_v_a,
                defocus_angle_deg=fit.defocus_angle_deg,
                figure_of_merit=fit.score,
                max_resolution_a=fit.fit_resolution_a,
            )
        )
        record = {"micrograph": str(path), **fit.as_record()}
        meta = read_fei_metadata(path)
        if meta is not None:
            record["nominal_defocus_um"] = meta["defocus_um"]
        logger.info(
            "%s: U %.0f Å V %.0f Å angle %.1f° FOM %.3f fit resolution %.2f Å",
            path.name,
            fit.defocus_u_a,
            fit.defocus_v_a,
            fit.defocus_angle_deg,
            fit.score,
            fit.fit_resolution_a,
        )
        records.append(record)
    star = write_ctf_star(
        job.out_dir / "micrographs_ctf.star",
        rows,
        voltage_kv=job.fit.voltage_kv,
        cs_mm=job.fit.cs_mm,
        amplitude_contrast=job.fit.amplitude_contrast,
        original_pixel_size_a=job.original_pixel_size_a,
    )
    logger.info("wrote %s", star)
    return records


def main(args: argparse.Namespace) -> int:
    """Run ``cryosr ctf``."""
    dmin, dmax = _pair(args.defocus_range, "defocus-range")
    low, high = _pair(args.fit_range, "fit-range")
    if args.pixel_size is not None and args.pixel_size <= 0:
        raise InputError(None, f"--pixel-size must be > 0, got {args.pixel_size}")
    try:
        fit = CtfFitConfig(
            voltage_kv=args.voltage,
            cs_mm=args.cs,
            amplitude_contrast=args.amp_contrast,
            defocus_min_a=dmin * 1e4,
            defocus_max_a=dmax * 1e4,
            max_astigmatism_a=args.max_astigmatism,
            tile_px=args.spectrum_tile,
            fit_low_res_a=low,
            fit_high_res_a=high,
        )
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    job = CtfJob(tuple(args.micrographs), args.out, args.pixel_size, args.original_pixel_size, fit, args.device)
    run_ctf_job(job)
    return 0
