"""Enhance (denoise, optionally 2x super-resolve) movies or micrographs with the spatio-temporal network.

Each INPUT is a movie (.mrcs/.tif/.tiff/.eer, or an .mrc stack with more than one frame) or a single
micrograph (.mrc with one frame). Movies are aligned (estimated shifts, or --shifts matched by
file name), split into the model's frame window and enhanced; a micrograph is enhanced as a
one-frame window. Writes OUT/<stem>.mrc in counts of the whole exposure per output pixel, header
pixel size = input / scale, and OUT/enhance.json. Finished outputs are skipped (resume); the same
pipeline, checks and --workers/--cluster options as ``cryosr superres``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict

from cryosr.core.cli.movies import MovieRun, plan_tasks, run_tasks
from cryosr.core.cli.options import add_movie_inputs, command_line
from cryosr.core.device import resolve_device
from cryosr.core.enhance.infer import NOISE_ESTIMATES, EnhanceConfig
from cryosr.core.errors import InputError
from cryosr.core.io import read_movie_header
from cryosr.core.pipeline import EnhanceRun, process_enhance
from cryosr.core.pipeline.enhance import load_model, pixel_size_warning

logger = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    """Declare the ``enhance`` options."""
    add_movie_inputs(parser, what="movies")
    parser.add_argument("--model", default="default", help="'default' (shipped weights) or a .pt from cryosr train")
    parser.add_argument("--scale", type=int, default=1, choices=(1, 2), help="1: denoise; 2: denoise + 2x super-resolve")
    parser.add_argument("--tile", type=int, default=512, help="network tile edge in input pixels (0 = whole image)")
    parser.add_argument("--noise-estimate", choices=NOISE_ESTIMATES, default=None,
                        help="Wiener anchor noise for movies: corner (white, outer corner of the spectrum) or frames "
                        "(per ring from even/odd frame sums, colour-correct); default: the one the weights were "
                        "trained with (recorded in the checkpoint; corner if none); micrographs always use corner")


def enhance_run(args: argparse.Namespace) -> EnhanceRun:
    """The ``EnhanceRun`` of the options (validates them)."""
    return EnhanceRun(model=args.model, enhance=EnhanceConfig(scale=args.scale, tile=args.tile, noise=args.noise_estimate))


def main(args: argparse.Namespace) -> int:
    """Validate every input and the model, then enhance the movies; write outputs and enhance.json."""
    run_config = enhance_run(args)
    model, meta = load_model(run_config, resolve_device("cpu"))  # the model is checked before any output
    tasks = plan_tasks(args, lr_sum=False)
    for task in tasks:
        n = read_movie_header(task.movie_path, **task.header_options).n_frames
        if 1 < n < model.config.frames:
            raise InputError(task.movie_path, f"the model's window of {model.config.frames} frames is larger than the movie ({n} frames)")
        warning = pixel_size_warning(task.acquisition.pixel_size_a, meta)
        if warning:
            logger.warning("%s: %s", task.movie_path, warning)
    run = MovieRun(
        tasks=tasks, config=run_config, process_fn=process_enhance, out_dir=args.out, name="enhance",
        command=command_line("cryosr enhance", args._parser, args), overwrite=args.overwrite,
        header={"config": {"model": run_config.model, **asdict(run_config.enhance)}},
    )  # fmt: skip
    return run_tasks(run, args)
