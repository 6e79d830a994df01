"""The options shared by the commands and the adapters, each declared once (not a subcommand).

Every command adds them with the ``add_*`` helpers; the RELION adapter takes its Params help texts
from the same ``Option`` objects and the CryoSPARC adapter adds them to its parser. Values become
runner keywords with ``runner_kwargs`` and a reproducible command line with ``command_line``.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path

from cryosr.core.acquisition import DEFAULT_VOLTAGE_KV
from cryosr.core.batch import CLUSTER_KINDS, ClusterConfig
from cryosr.core.io.eer import DEFAULT_EER_GROUPING, EER_UPSAMPLINGS

__all__ = [
    "DEVICE",
    "DOSE_PER_FRAME",
    "EER_GROUPING",
    "EER_UPSAMPLING",
    "EXCLUDE_FRAMES",
    "GAIN",
    "GAIN_FLIP",
    "GAIN_ROTATE",
    "Option",
    "add_acquisition",
    "add_batch",
    "add_device",
    "add_eer_args",
    "add_gain",
    "add_movie_inputs",
    "cluster_config",
    "command_line",
    "runner_kwargs",
]


@dataclass(frozen=True)
class Option:
    """One command-line option: its flag, help text and argparse keywords."""

    flag: str
    help: str
    kwargs: tuple[tuple[str, object], ...] = ()

    @property
    def name(self) -> str:
        """The argparse destination / RELION Params label (``--gain-rotate`` -> ``gain_rotate``)."""
        return self.flag.lstrip("-").replace("-", "_")

    def add(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup, **overrides: object) -> None:
        """Declare the option on ``parser`` (``overrides`` replace argparse keywords, e.g. ``help``)."""
        kwargs = {"help": self.help, **dict(self.kwargs), **overrides}
        parser.add_argument(self.flag, **kwargs)


DEVICE = Option("--device", "auto (the first visible GPU, else the CPU), cpu, cuda or cuda:N", (("default", "auto"),))
PIXEL_SIZE = Option("--pixel-size", "input pixel size in Å (default: the motion STAR, else the file header)", (("type", float),))
DOSE_PER_FRAME = Option("--dose-per-frame", "e/Å² per frame (default: the motion STAR's)", (("type", float),))
PRE_EXPOSURE = Option("--pre-exposure", "e/Å² before the first frame (default: the motion STAR's, else 0)", (("type", float),))
VOLTAGE = Option("--voltage", f"kV (default: the motion STAR's, else {DEFAULT_VOLTAGE_KV:g})", (("type", float),))
GAIN = Option("--gain", "gain reference, multiplied (.mrc, or .gain/.tif: Y-flipped like RELION)", (("type", Path),))
GAIN_ROTATE = Option("--gain-rotate", "RELION gain rotation: 90° clockwise turns, 0-3", (("type", int), ("default", 0), ("choices", (0, 1, 2, 3))))
GAIN_FLIP = Option("--gain-flip", "RELION gain flip: 0 none, 1 upside down, 2 left-right", (("type", int), ("default", 0), ("choices", (0, 1, 2))))
SHIFTS = Option(
    "--shifts", "RELION per-micrograph motion STAR files (rlnMicrographMetadata), matched to movies by file name; "
    "shifts that do not cover a movie's frames are not used (it is aligned)",
    (("type", Path), ("nargs", "+"), ("metavar", "STAR"), ("default", ())),
)  # fmt: skip
EXCLUDE_FRAMES = Option(
    "--exclude-frames", "1-based frames to leave out, e.g. 1,2 or 1-2,40 (a dropped frame; RELION's "
    "--first_frame_sum/--last_frame_sum habit); their exposure still counts for the later frames",
    (("metavar", "LIST"),),
)  # fmt: skip
EER_GROUPING = Option(
    "--eer-grouping", f"EER movies: detector frames per rendered fraction (default: the motion STAR's, else "
    f"{DEFAULT_EER_GROUPING} as RELION); a remainder is dropped with a warning; --dose-per-frame is then per fraction",
    (("type", int), ("default", 0), ("metavar", "N")),
)  # fmt: skip
EER_UPSAMPLING = Option(
    "--eer-upsampling", "EER movies: 1 renders the events on the physical pixel, 2 on the 2x grid (the detector's own "
    "sub-pixel positions; --pixel-size stays the physical pixel); default: the motion STAR's, else 1",
    (("type", int), ("choices", EER_UPSAMPLINGS)),
)  # fmt: skip
OVERWRITE = Option("--overwrite", "recompute movies whose output is finished already (default: skip them, resume)",
                   (("action", "store_true"),))  # fmt: skip


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``."""
    DEVICE.add(parser)


def add_acquisition(parser: argparse.ArgumentParser) -> None:
    """``--pixel-size``, ``--dose-per-frame``, ``--pre-exposure``, ``--voltage`` (into one ``Acquisition``)."""
    g = parser.add_argument_group("acquisition (explicit values win over the motion STAR's and the header's)")
    for option in (PIXEL_SIZE, DOSE_PER_FRAME, PRE_EXPOSURE, VOLTAGE):
        option.add(g)


def add_eer_args(parser: argparse.ArgumentParser) -> None:
    """``--eer-grouping``, ``--eer-upsampling`` (they apply to ``.eer`` movies only)."""
    g = parser.add_argument_group("EER movies (Falcon 4/4i)")
    for option in (EER_GROUPING, EER_UPSAMPLING):
        option.add(g)


def add_gain(parser: argparse.ArgumentParser) -> None:
    """``--gain``, ``--gain-rotate``, ``--gain-flip``."""
    for option in (GAIN, GAIN_ROTATE, GAIN_FLIP):
        option.add(parser)


def add_movie_inputs(parser: argparse.ArgumentParser, *, what: str) -> None:
    """The inputs and outputs of a command that runs the movie pipeline (``superres``, ``enhance``)."""
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MOVIE", help=f"{what} (.mrcs/.mrc/.tif/.eer), or micrographs")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    add_acquisition(parser)
    add_gain(parser)
    add_eer_args(parser)
    SHIFTS.add(parser)
    EXCLUDE_FRAMES.add(parser)
    add_device(parser)
    OVERWRITE.add(parser)
    add_batch(parser)


def add_batch(parser: argparse.ArgumentParser) -> None:
    """``--workers``/``--scheduler``/``--cluster ...``/``--retries`` in their own argument group."""
    g = parser.add_argument_group("many movies (Dask)")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes on this machine (one per GPU with --device auto/cuda); 1: no Dask")
    g.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler, e.g. tcp://node01:8786")
    g.add_argument("--cluster", choices=tuple(CLUSTER_KINDS), help="start workers as batch jobs via dask-jobqueue")
    g.add_argument("--cluster-jobs", type=int, default=1, metavar="N", help="batch jobs to submit")
    g.add_argument("--cluster-queue", metavar="NAME", help="queue / partition")
    g.add_argument("--cluster-account", metavar="NAME", help="account / project to charge")
    g.add_argument("--cluster-walltime", default="01:00:00", metavar="HH:MM:SS", help="wall-clock limit per job")
    g.add_argument("--cluster-cores", type=int, default=8, metavar="N", help="CPU cores per job")
    g.add_argument("--cluster-memory", default="64GB", metavar="SIZE", help="memory per job, e.g. 64GB")
    g.add_argument("--cluster-gpus", type=int, default=1, metavar="N",
                   help="GPUs per job, one worker each (0: one CPU worker per job)")
    g.add_argument("--cluster-directive", action="append", default=[], metavar="TEXT",
                   help="extra batch directive, verbatim (repeatable), e.g. --cluster-directive=--constraint=h100")
    g.add_argument("--cluster-prologue", action="append", default=[], metavar="LINE",
                   help="shell line run in each job before the worker (repeatable), e.g. 'source venv/bin/activate'")
    g.add_argument("--retries", type=int, default=1, metavar="N",
                   help="extra attempts for a movie that crashed or whose worker died")


def cluster_config(args: argparse.Namespace) -> ClusterConfig | None:
    """The ``ClusterConfig`` of ``--cluster ...`` (None without ``--cluster``); validates the values."""
    if args.cluster is None:
        return None
    return ClusterConfig(
        args.cluster,
        jobs=args.cluster_jobs,
        queue=args.cluster_queue,
        walltime=args.cluster_walltime,
        cores=args.cluster_cores,
        memory=args.cluster_memory,
        gpus_per_job=args.cluster_gpus,
        account=args.cluster_account,
        job_extra_directives=tuple(args.cluster_directive),
        job_script_prologue=tuple(args.cluster_prologue),
    )


def runner_kwargs(args: argparse.Namespace) -> dict:
    """``MovieRunner`` keywords from the parsed options (device included)."""
    return {
        "device_spec": args.device,
        "workers": args.workers,
        "scheduler": args.scheduler,
        "cluster": cluster_config(args),
        "retries": args.retries,
    }


def command_line(prog: str, parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The canonical command that reproduces ``args``: positionals, then every option off its default."""
    parts = [*prog.split()]
    options: list[str] = []
    for action in parser._actions:
        if action.dest in ("help", "version") or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if not action.option_strings:
            parts += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif value != action.default and value is not None:
            options += _option_words(action, value)
    return shlex.join(parts + options)


def _option_words(action: argparse.Action, value: object) -> list[str]:
    flag = action.option_strings[-1]
    if isinstance(action, argparse._StoreTrueAction):
        return [flag] if value else []
    if isinstance(action, argparse._AppendAction):
        return [f"{flag}={v}" for v in value]  # type: ignore[union-attr]
    if isinstance(value, (list, tuple)):
        return [flag, *map(str, value)] if value else []
    return [flag, str(value)]
