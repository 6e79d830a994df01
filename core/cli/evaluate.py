"""Evaluate predictions against a simulated project's truth (FRC, PSNR/SSIM, CTF fit) and write an HTML report.

Example::

    cryosr evaluate --truth SIM/ --pred SR_zssr/ SR_bicubic/ --out REPORT/

Each --pred folder holds <stem>.mrc for the truth micrographs SIM/truth/<stem>_clean.mrc. Without
--truth (real data) only the CTF fit and the pictures are produced. Writes REPORT/report.html (one
self-contained page), metrics.json, metrics.csv, frc.png, power_spectra.png, panels_*.png, ctf_*.png.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cryosr.core.cli.options import add_device
from cryosr.core.ctf.fit import CtfFitConfig
from cryosr.core.device import resolve_device
from cryosr.core.errors import InputError
from cryosr.core.evaluate.project import EvaluateConfig, evaluate_project

logger = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``cryosr evaluate``."""
    parser.add_argument(
        "--truth", type=Path, default=None, help="`cryosr simulate` project folder (omit for real data)"
    )
    parser.add_argument("--pred", type=Path, nargs="+", required=True, help="prediction folders with <stem>.mrc")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--scale", type=int, default=2, help="HR/LR factor (default 2)")
    parser.add_argument("--no-ctf", action="store_true", help="skip the CTF fit")
    parser.add_argument("--no-register", action="store_true", help="do not remove a global shift before comparing")
    parser.add_argument("--max-movies", type=int, default=None, help="evaluate at most N micrographs")
    parser.add_argument("--panels", type=int, default=1, help="micrographs shown as panels/CTF plots (default 1)")
    parser.add_argument("--voltage", type=float, default=300.0, help="kV (default 300; simulation.json wins)")
    parser.add_argument("--cs", type=float, default=2.7, help="mm (default 2.7; simulation.json wins)")
    parser.add_argument("--amp-contrast", type=float, default=0.07, help="(default 0.07; simulation.json wins)")
    parser.add_argument("--ctf-tile", type=int, default=256, help="CTF periodogram tile, px (default 256)")
    add_device(parser)


def main(args: argparse.Namespace) -> int:
    """Run ``cryosr evaluate``."""
    try:
        ctf = (
            None
            if args.no_ctf
            else CtfFitConfig(
                voltage_kv=args.voltage, cs_mm=args.cs, amplitude_contrast=args.amp_contrast, tile_px=args.ctf_tile
            )
        )
        config = EvaluateConfig(
            scale=args.scale, ctf=ctf, register=not args.no_register, max_movies=args.max_movies, n_panels=args.panels
        )
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    result = evaluate_project(
        list(args.pred), args.out, truth_dir=args.truth, config=config, device=resolve_device(args.device)
    )
    logger.info("wrote %s", result["report"])
    return 0
