"""Train the spatio-temporal enhancement network on simulated projects (from cryosr simulate).

Each --data folder is a `cryosr simulate` project: LR movies (Movies/), the clean dose-weighted
sums at the HR pixel (truth/*_clean.mrc) and the true shifts (truth/*_shifts.star). Writes the
weights (--out, a weights_only-loadable state dict) and a JSON sidecar with the architecture,
training data parameters, command line and package version.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import shlex
from pathlib import Path

from cryosr.core import __version__
from cryosr.core.cli.options import add_device
from cryosr.core.device import resolve_device
from cryosr.core.enhance.checkpoint import save_checkpoint
from cryosr.core.enhance.dataset import load_sim_projects
from cryosr.core.enhance.model import ANCHORS, NOISE_ESTIMATES, EnhanceNetConfig
from cryosr.core.enhance.training import TrainConfig, train_enhancer
from cryosr.core.errors import InputError

logger = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    """Declare the ``train`` options."""
    parser.add_argument("--data", nargs="+", required=True, type=Path, metavar="SIMDIR", help="simulated projects")
    parser.add_argument("--out", required=True, type=Path, help="output weights (.pt); a .json sidecar is written beside it")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64, help="patch edge in LR pixels")
    parser.add_argument("--frames", type=int, default=5, help="frame window (groups of consecutive frames)")
    parser.add_argument("--scale", type=int, nargs="+", default=[1], choices=(1, 2), help="heads to train: 1, 2 or both")
    parser.add_argument("--channels", type=int, default=24, help="feature channels")
    parser.add_argument("--levels", type=int, default=0, help="2x-downsampling levels of the multi-scale body (0-4)")
    parser.add_argument("--anchor", default="mean", choices=ANCHORS,
                        help="residual over the frame mean or its spectral Wiener estimate")
    parser.add_argument(
        "--noise-estimate", choices=NOISE_ESTIMATES, default="corner",
        help="noise level of the Wiener anchor of movie windows: corner (white) or frames (even/odd frame sums); "
        "one-frame batches always use corner; recorded in the checkpoint as the default for cryosr enhance",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ffl-weight", type=float, default=0.1, help="weight of the focal frequency loss")
    parser.add_argument("--p-single", type=float, default=0.2, help="fraction of one-frame (micrograph) batches")
    parser.add_argument(
        "--dose-weighted", action="store_true",
        help="exposure-weight the frame groups so they add up to the dose-weighted sum (dose from simulation.json)",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_device(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def command_line(args: argparse.Namespace) -> str:
    """The canonical ``cryosr train ...`` command that reproduces this run."""
    parts = ["cryosr", "train", "--data", *map(str, args.data), "--out", str(args.out)]
    for name in ("epochs", "steps_per_epoch", "batch", "patch", "frames", "channels", "levels", "lr", "ffl_weight",
                 "p_single", "seed"):
        parts += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    parts += ["--anchor", args.anchor]
    if args.noise_estimate != "corner":
        parts += ["--noise-estimate", args.noise_estimate]
    parts += ["--scale", *map(str, args.scale), "--device", args.device]
    if args.dose_weighted:
        parts.append("--dose-weighted")
    return shlex.join(parts)


def main(args: argparse.Namespace) -> int:
    """Read the projects, train, write the checkpoint."""
    net_config = EnhanceNetConfig(
        frames=args.frames, channels=args.channels, levels=args.levels, anchor=args.anchor, scales=tuple(args.scale),
        dose_weighted=args.dose_weighted, noise=args.noise_estimate,
    )
    train_config = TrainConfig(
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch=args.batch,
        patch=args.patch,
        lr=args.lr,
        ffl_weight=args.ffl_weight,
        p_single=args.p_single,
        seed=args.seed,
    )
    out = Path(args.out)
    if out.suffix != ".pt":
        raise InputError(out, "--out must end in .pt")
    if not args.overwrite:
        for p in (out, out.with_suffix(".json")):
            if p.exists():
                raise InputError(p, "exists already (pass --overwrite to replace it)")
    device = resolve_device(args.device)
    movies, data_info = load_sim_projects(
        args.data, n_groups=net_config.frames, keep_hr=2 in net_config.scales, dose_weighted=net_config.dose_weighted,
        noise=net_config.noise,
    )
    logger.info("training on %d movies from %d projects", len(movies), len(args.data))
    result = train_enhancer(movies, net_config, train_config, device=device)
    pixel_sizes = [mv.pixel_size_a for mv in movies]
    meta = {
        "command": command_line(args),
        "version": __version__,
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "training": train_config.to_dict(),
        "training_pixel_size_a": [min(pixel_sizes), max(pixel_sizes)],
        "data": data_info,
        "epoch_loss": result.epoch_loss,
        "fixed_batch_loss": {"before": result.fixed_loss_before, "after": result.fixed_loss_after},
        "seconds": round(result.seconds, 1),
    }
    save_checkpoint(out, result.model, meta, overwrite=args.overwrite)
    logger.info(
        "wrote %s (fixed-batch loss %.4f -> %.4f, %.0f s)",
        out, result.fixed_loss_before, result.fixed_loss_after, result.seconds,
    )
    return 0
