"""Super-resolve movies 2x: shift-aware multi-frame reconstruction (default drizzle) or baselines.

Writes DIR/<movie stem>.mrc (float32, header pixel = input pixel / 2, counts per output pixel
summed over frames), DIR/<stem>_lr_sum.mrc (aligned dose-weighted sum at the input pixel) and
DIR/superres.json (per movie: method, device, seconds per stage, shifts used, input checks).
Finished movies are skipped (resume); pass --overwrite to recompute. --workers N, --scheduler
ADDRESS or --cluster slurm|pbs|lsf run the movies as Dask tasks (a failed movie is retried once,
then reported in superres.json while the others go on). Methods marked experimental do not beat
drizzle in any benchmark (docs/benchmarks/superres.md).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, replace

import torch

from cryosr.core.cli.movies import MovieRun, plan_tasks, run_tasks
from cryosr.core.cli.options import add_movie_inputs, command_line
from cryosr.core.errors import InputError
from cryosr.core.io import atomic_path
from cryosr.core.pipeline import process_superres, train_zssr_dataset
from cryosr.core.superres.reconstruct import (
    DATASET_FINE_TUNE_STEPS,
    DEFAULT_METHOD,
    EXPERIMENTAL,
    METHODS,
    SuperresConfig,
)
from cryosr.core.superres.wiener import GAIN_CORRECTIONS

logger = logging.getLogger(__name__)


def _method_help() -> str:
    names = [f"{m} (experimental)" if m in EXPERIMENTAL else m for m in METHODS]
    return f"{', '.join(names)}; default {DEFAULT_METHOD} (best in the 3-D benchmark, docs/decisions.md)"


def add_args(parser: argparse.ArgumentParser) -> None:
    """Declare the ``superres`` options."""
    add_movie_inputs(parser, what="movies")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=tuple(METHODS), help=_method_help())
    parser.add_argument("--scale", type=int, default=2, help="only 2")
    z = parser.add_argument_group("experimental methods (wiener, zssr)")
    z.add_argument("--wiener-gain", default="ring", choices=GAIN_CORRECTIONS,
                   help="wiener/zssr: undo the prior's shrinkage per ring (radial transfer 1) or per Fourier bin")
    z.add_argument("--mode", default="movie", choices=("movie", "dataset"), help="zssr: train per movie or once")
    z.add_argument("--train-movies", type=int, default=3, help="zssr dataset mode: movies of the shared training")
    z.add_argument("--train-iterations", type=int, help="zssr dataset mode: steps of the shared training")
    z.add_argument("--init", default="none", help="zssr start weights: none, default or a .pt path")
    z.add_argument("--iterations", type=int,
                   help=f"zssr steps per movie (dataset mode default: {DATASET_FINE_TUNE_STEPS})")
    z.add_argument("--zssr-tile", type=int, default=1024, help="zssr network pass: LR tile edge (0: whole frames)")
    z.add_argument("--seed", type=int, default=0, help="zssr training seed")


def superres_config(args: argparse.Namespace) -> SuperresConfig:
    """The ``SuperresConfig`` of the options (validates them)."""
    if args.mode not in ("movie", "dataset"):
        raise InputError(None, f"--mode {args.mode!r}: use movie or dataset")
    if args.mode == "dataset" and args.method != "zssr":
        raise InputError(None, "--mode dataset needs --method zssr")
    if args.train_movies < 1 or (args.train_iterations is not None and args.train_iterations < 1):
        raise InputError(None, "--train-movies and --train-iterations must be at least 1")
    iterations = args.iterations
    if args.mode == "dataset" and iterations is None:
        iterations = DATASET_FINE_TUNE_STEPS
    return SuperresConfig(method=args.method, scale=args.scale, tile=args.zssr_tile, iterations=iterations,
                          init=args.init, seed=args.seed, wiener_gain=args.wiener_gain)  # fmt: skip


def _dataset_training(args: argparse.Namespace, run: MovieRun, training: list[dict]):
    """``before`` hook of ``run_tasks``: dataset mode trains once, saves the weights, returns them."""

    def train(runner) -> dict | None:
        todo = [t for t in run.tasks if run.overwrite or not t.out_path.exists()]
        if args.mode != "dataset" or not todo:
            return None
        shared = replace(run.config, iterations=args.train_iterations)
        weights, records = runner.train(todo[: args.train_movies], shared, train_fn=train_zssr_dataset)
        training.extend(records)
        run.out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(run.out_dir / "zssr_dataset.pt", overwrite=True) as tmp:
            torch.save(weights, tmp)
        return weights

    return train


def main(args: argparse.Namespace) -> int:
    """Super-resolve every movie (in this process or on Dask workers); write outputs and superres.json."""
    config = superres_config(args)
    tasks = plan_tasks(args, lr_sum=True)
    training: list[dict] = []
    run = MovieRun(
        tasks=tasks, config=config, process_fn=process_superres, out_dir=args.out, name="superres",
        command=command_line("cryosr superres", args._parser, args), overwrite=args.overwrite,
        header={"mode": args.mode, "config": asdict(config), "dataset_training": training,
                "intensity_scale": "counts per output pixel summed over frames (LR sum / 4 at low frequencies)"},
    )  # fmt: skip
    return run_tasks(run, args, before=_dataset_training(args, run, training))
