"""Run the main job end to end on the embedded example: simulate -> superres -> evaluate.

Example::

    cryosr demo --out demo_out

Simulates a small apoferritin movie (embedded model) recorded at a 2x larger pixel, super-resolves
it with the default method and with the bicubic baseline, and writes an evaluation report against
the ground truth. Prints where the outputs are; the last line is the path of the HTML report.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cryosr.core.cli.options import add_device
from cryosr.core.errors import InputError

logger = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    """Options of ``cryosr demo``."""
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--size", type=int, default=256, help="LR movie size in pixels (default 256)")
    parser.add_argument("--frames", type=int, default=16, help="frames per movie (default 16)")
    add_device(parser)
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    """Run simulate, superres (default method and bicubic) and evaluate in process."""
    from cryosr.core.cli.main import main as cryosr_main

    if args.size < 64 or args.size % 2:
        raise InputError(None, f"--size {args.size}: give an even LR size of at least 64 pixels")
    if args.frames < 2:
        raise InputError(None, f"--frames {args.frames}: the demo needs at least 2 frames")
    out: Path = args.out
    sim, report = out / "sim", out / "report"
    dose = 1.25
    steps = []
    if not (sim / "truth" / "simulation.json").exists():
        steps.append(
            ["simulate", "--out", str(sim), "--n-movies", "1", "--size", str(args.size), "--frames",
             str(args.frames), "--dose-per-frame", str(dose), "--seed", str(args.seed), "--device", args.device]
        )
    movie = sim / "Movies" / "movie_0001.mrcs"
    preds = []
    for method in ("default", "bicubic"):
        pred = out / f"superres_{method}"
        preds.append(str(pred))
        cmd = ["superres", str(movie), "--out", str(pred), "--dose-per-frame", str(dose), "--device", args.device]
        if method != "default":
            cmd += ["--method", method]
        steps.append(cmd)
    steps.append(["evaluate", "--truth", str(sim), "--pred", *preds, "--out", str(report), "--device", args.device])
    for cmd in steps:
        logger.info("demo: cryosr %s", " ".join(cmd))
        code = cryosr_main(cmd)
        if code != 0:
            raise InputError(None, f"demo step 'cryosr {cmd[0]}' failed with exit code {code}")
    print(f"demo outputs in {out}/:")
    print(f"  simulated project (LR movie, HR movie, truth): {sim}/")
    for pred in preds:
        print(f"  super-resolved micrographs: {pred}/")
    print(f"  tables and plots: {report}/ (metrics.json, metrics.csv, frc.png, power_spectra.png, panels_*.png)")
    print(f"evaluation report: {report / 'report.html'}")
    return 0
