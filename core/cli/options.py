"""Shared options (not a subcommand): ``--workers``/``--scheduler``/``--cluster`` and ``--eer-*``.

``cryosr superres`` uses the scaling options; any other command or adapter that runs movies through
``cryosr.core.batch.MovieRunner`` can add the same options with ``add_scale_args`` and
turn them into runner keywords with ``runner_kwargs``. ``add_eer_args`` declares how EER movies
are rendered (``cryosr superres`` and ``cryosr enhance``).
"""

from __future__ import annotations

import argparse

from cryosr.core.batch import CLUSTER_KINDS, ClusterConfig
from cryosr.core.io.eer import DEFAULT_EER_GROUPING, EER_UPSAMPLINGS

__all__ = ["add_eer_args", "add_scale_args", "cluster_config", "eer_command_args", "runner_kwargs", "scale_command_args"]


def add_scale_args(parser: argparse.ArgumentParser) -> None:
    """Declare the scaling options in their own argument group."""
    g = parser.add_argument_group("scaling (Dask)")
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


def scale_command_args(args: argparse.Namespace) -> list[str]:
    """The scaling options that differ from their defaults, as command-line words."""
    parts: list[str] = []
    if args.workers != 1:
        parts += ["--workers", str(args.workers)]
    if args.scheduler:
        parts += ["--scheduler", args.scheduler]
    if args.retries != 1:
        parts += ["--retries", str(args.retries)]
    if args.cluster:
        parts += ["--cluster", args.cluster, "--cluster-jobs", str(args.cluster_jobs),
                  "--cluster-walltime", args.cluster_walltime, "--cluster-cores", str(args.cluster_cores),
                  "--cluster-memory", args.cluster_memory, "--cluster-gpus", str(args.cluster_gpus)]
        for name in ("queue", "account"):
            value = getattr(args, f"cluster_{name}")
            if value:
                parts += [f"--cluster-{name}", value]
        parts += [f"--cluster-directive={d}" for d in args.cluster_directive]
        parts += [w for line in args.cluster_prologue for w in ("--cluster-prologue", line)]
    return parts


def add_eer_args(parser: argparse.ArgumentParser) -> None:
    """Declare ``--eer-grouping`` and ``--eer-upsampling`` (they apply to ``.eer`` movies only)."""
    g = parser.add_argument_group("EER movies (Falcon 4/4i)")
    g.add_argument("--eer-grouping", type=int, default=0, metavar="N",
                   help=f"detector frames per rendered fraction (default {DEFAULT_EER_GROUPING}, as RELION); a remainder "
                   "is dropped with a warning. --dose-per-frame is then the dose per fraction (RELION's convention)")
    g.add_argument("--eer-upsampling", type=int, default=None, choices=EER_UPSAMPLINGS,
                   help="1 (default, or the --shifts file's): render events on the physical pixel; 2: on the 2x grid "
                   "(the detector's own sub-pixel positions; --pixel-size stays the physical pixel)")


def eer_command_args(args: argparse.Namespace) -> list[str]:
    """The EER options that differ from their defaults, as command-line words."""
    parts: list[str] = []
    if args.eer_grouping:
        parts += ["--eer-grouping", str(args.eer_grouping)]
    if args.eer_upsampling is not None:
        parts += ["--eer-upsampling", str(args.eer_upsampling)]
    return parts
