"""Super-resolve movies 2x: shift-aware multi-frame reconstruction (wiener, drizzle, zssr) or baselines.

Writes DIR/<movie stem>.mrc (float32, header pixel = input pixel / 2, counts per output pixel
summed over frames), DIR/<stem>_lr_sum.mrc (aligned dose-weighted sum at the input pixel) and
DIR/superres.json (per movie: method, device, seconds per stage, shifts used, training loss).
Movies whose output exists are skipped (resume); pass --overwrite to recompute. --workers N,
--scheduler ADDRESS or --cluster slurm|pbs|lsf run the movies as Dask tasks (a failed movie is
retried once, then reported in superres.json while the others go on); in --mode dataset the
network is trained once, on one worker, and its weights are broadcast to all workers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from cryosr.core import __version__
from cryosr.core.batch import MovieRunner
from cryosr.core.cli.options import add_eer_args, add_scale_args, eer_command_args, runner_kwargs, scale_command_args
from cryosr.core.errors import InputError
from cryosr.core.io import atomic_path
from cryosr.core.io.motion_star import RelionMotion, read_relion_motion
from cryosr.core.pipeline import MovieTask, process_superres, train_zssr_dataset
from cryosr.core.superres.reconstruct import DEFAULT_METHOD, METHODS, SuperresConfig

logger = logging.getLogger(__name__)

#: Least seconds between two rewrites of superres.json during a run (it is always written at the end).
JSON_INTERVAL_S = 5.0


@dataclass(frozen=True)
class SuperresRun:
    """Everything one ``cryosr superres`` call does (built from the arguments only)."""

    tasks: tuple[MovieTask, ...]
    config: SuperresConfig
    out_dir: Path
    device: str
    mode: str
    train_movies: int
    train_iterations: int | None
    overwrite: bool
    command: str

    def __post_init__(self) -> None:
        if self.mode not in ("movie", "dataset"):
            raise InputError(None, f"--mode {self.mode!r}: use movie or dataset")
        if self.mode == "dataset" and self.config.method != "zssr":
            raise InputError(None, "--mode dataset needs --method zssr")
        if self.train_movies < 1:
            raise InputError(None, "--train-movies must be at least 1")
        if self.train_iterations is not None and self.train_iterations < 1:
            raise InputError(None, "--train-iterations must be at least 1")
        stems = [t.out_path.name for t in self.tasks]
        if len(set(stems)) != len(stems):
            raise InputError(None, "two input movies have the same file stem; outputs would collide")


def add_args(parser: argparse.ArgumentParser) -> None:
    """Declare the ``superres`` options."""
    parser.add_argument("movies", nargs="+", type=Path, metavar="MOVIE", help="movies (.mrcs/.mrc/.tif/.eer) or micrographs")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--pixel-size", type=float, help="input pixel size in Å (default: header or --shifts)")
    parser.add_argument("--dose-per-frame", type=float, help="e/Å² per frame (default: from --shifts)")
    parser.add_argument("--pre-exposure", type=float, default=None, help="e/Å² before the first frame")
    parser.add_argument("--voltage", type=float, default=None, help="kV (default 300 or from --shifts)")
    parser.add_argument("--gain", type=Path, help="gain reference (.mrc or .gain/.tif)")
    parser.add_argument("--gain-rotate", type=int, default=0, choices=(0, 1, 2, 3))
    parser.add_argument("--gain-flip", type=int, default=0, choices=(0, 1, 2))
    parser.add_argument(
        "--shifts", type=Path, nargs="+", metavar="STAR",
        help="RELION per-micrograph motion STAR files (rlnMicrographMetadata), matched to movies by file name",
    )
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS, help=f"default {DEFAULT_METHOD} (best in the 3-D benchmark; README, section superres)")
    parser.add_argument("--scale", type=int, default=2, help="only 2")
    parser.add_argument("--mode", default="movie", choices=("movie", "dataset"), help="zssr: train per movie or once")
    parser.add_argument("--train-movies", type=int, default=3, help="dataset mode: movies used for the shared training")
    parser.add_argument(
        "--train-iterations", type=int, help="dataset mode: steps of the shared training (default: per-movie default)"
    )
    parser.add_argument(
        "--wiener-gain", default="ring", choices=("ring", "bin", "none"),
        help="wiener/zssr: undo the prior's shrinkage per ring (default: radial transfer 1), per Fourier bin, "
        "or not at all (plain posterior mean)",
    )
    parser.add_argument(
        "--zssr-pairing", default="halves", choices=("halves", "scale"),
        help="zssr training pairs: halves (Noise2Noise between the Wiener reconstructions of even/odd frames; "
        "default) or scale (the seed paper's: later frames 2x-binned -> early frames)",
    )
    parser.add_argument("--init", default="none", help="zssr start weights: none, default or a .pt path")
    parser.add_argument("--iterations", type=int, help="zssr steps per movie (dataset mode default: 30)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--tile", type=int, default=1024, help="LR tile edge (0: whole frames)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="recompute movies whose output exists")
    add_eer_args(parser)
    add_scale_args(parser)


def command_line(args: argparse.Namespace) -> str:
    """The canonical ``cryosr superres ...`` command that reproduces this run."""
    parts = ["cryosr", "superres", *map(str, args.movies), "--out", str(args.out)]
    for name in ("pixel_size", "dose_per_frame", "pre_exposure", "voltage", "gain", "method", "scale", "mode",
                 "train_movies", "train_iterations", "zssr_pairing", "wiener_gain", "init", "iterations", "device", "tile", "seed"):
        value = getattr(args, name)
        if value is not None:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    if args.shifts:
        parts += ["--shifts", *map(str, args.shifts)]
    return shlex.join(parts + eer_command_args(args) + scale_command_args(args))


def _match_shifts(movie: Path, motions: list[RelionMotion]) -> RelionMotion | None:
    if not motions:
        return None
    for motion in motions:
        if motion.matches_movie(movie):
            return motion
    if len(motions) == 1:
        raise InputError(Path(motions[0].path), f"shifts are for {motions[0].movie_name}, not for {movie.name}")
    raise InputError(movie, "none of the --shifts files is for this movie")


def build_run(args: argparse.Namespace) -> SuperresRun:
    """Turn the arguments into a validated ``SuperresRun`` (reads only the small --shifts STAR files)."""
    motions = [read_relion_motion(p) for p in args.shifts or []]
    tasks = []
    voltage = args.voltage
    pre_exposure = args.pre_exposure
    for movie in args.movies:
        if not movie.exists():
            raise InputError(movie, "no such movie")
        motion = _match_shifts(movie, motions)
        dose = args.dose_per_frame if args.dose_per_frame is not None else (motion.dose_per_frame if motion else None)
        pixel = args.pixel_size if args.pixel_size is not None else (motion.pixel_size_a if motion else None)
        if motion is not None:
            voltage = voltage if voltage is not None else motion.voltage_kv
            pre_exposure = pre_exposure if pre_exposure is not None else motion.pre_exposure
        upsampling = args.eer_upsampling or (motion.eer_upsampling if motion else 1)
        stem = movie.name.split(".")[0]
        tasks.append(
            MovieTask(
                movie_path=movie,
                out_path=args.out / f"{stem}.mrc",
                lr_sum_path=args.out / f"{stem}_lr_sum.mrc",
                pixel_size_a=pixel,
                dose_per_frame=dose,
                gain_path=args.gain,
                gain_rotate=args.gain_rotate,
                gain_flip=args.gain_flip,
                shifts_yx_px=None if motion is None else tuple(map(tuple, motion.shifts_for_eer_upsampling(upsampling).tolist())),
                eer_grouping=args.eer_grouping or (motion.eer_grouping if motion else 0),
                eer_upsampling=upsampling,
            )
        )
    iterations = args.iterations
    if args.mode == "dataset" and iterations is None:
        iterations = 30
    config = SuperresConfig(
        method=args.method, scale=args.scale, voltage_kv=voltage if voltage is not None else 300.0,
        pre_exposure=pre_exposure or 0.0, tile=args.tile, iterations=iterations, init=args.init, seed=args.seed,
        zssr_pairing=args.zssr_pairing, wiener_gain=args.wiener_gain,
    )
    return SuperresRun(
        tasks=tuple(tasks), config=config, out_dir=args.out, device=args.device, mode=args.mode,
        train_movies=args.train_movies, train_iterations=args.train_iterations, overwrite=args.overwrite,
        command=command_line(args),
    )


def _load_records(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        return {r["movie"]: r for r in json.loads(path.read_text()).get("movies", [])}
    except (ValueError, KeyError, TypeError):
        logger.warning("%s is unreadable; starting a new one", path)
        return {}


def _in_task_order(run: SuperresRun, records: dict[str, dict]) -> list[dict]:
    """This run's movies in input order (Dask finishes them in any order), then older records."""
    mine = [str(t.movie_path) for t in run.tasks if str(t.movie_path) in records]
    return [records[k] for k in mine] + [r for k, r in records.items() if k not in set(mine)]


def _write_json(path: Path, run: SuperresRun, records: dict[str, dict], training: list[dict]) -> None:
    payload = {
        "cryosr_version": __version__,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": run.command,
        "mode": run.mode,
        "config": asdict(run.config),
        "intensity_scale": "counts per output pixel summed over frames (LR sum / 4 at low frequencies)",
        "dataset_training": training,
        "movies": _in_task_order(run, records),
    }
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(payload, indent=1))


def main(args: argparse.Namespace) -> int:
    """Super-resolve every movie (in this process or on Dask workers); write outputs and superres.json.

    Returns
    -------
    code : int
        0 when every movie has its output, 1 when some failed for another reason than bad input.

    Raises
    ------
    InputError
        Bad options, or a movie that failed because of a bad input (after the others ran).
    """
    run = build_run(args)
    runner = MovieRunner(**runner_kwargs(args), progress=False)
    json_path = run.out_dir / "superres.json"
    records = _load_records(json_path)
    weights = None
    training: list[dict] = []
    todo = [t for t in run.tasks if run.overwrite or not t.out_path.exists()]
    with runner:
        if run.mode == "dataset" and todo:
            weights, training = runner.train(todo[: run.train_movies], _full_training(run), train_fn=train_zssr_dataset)
            run.out_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(run.out_dir / "zssr_dataset.pt", overwrite=True) as tmp:
                torch.save(weights, tmp)

        last_write = [0.0]

        def on_record(i: int, record: dict) -> None:
            task = run.tasks[i]
            if "error" not in record:
                logger.info("%s -> %s", task.movie_path, task.out_path)
            if record.get("skipped") and str(task.movie_path) in records:
                return
            records[str(task.movie_path)] = record
            if time.monotonic() - last_write[0] >= JSON_INTERVAL_S:  # thousands of movies: not after each one
                _write_json(json_path, run, records, training)
                last_write[0] = time.monotonic()

        results = runner.run(
            run.tasks, run.config, process_fn=process_superres, overwrite=run.overwrite, weights=weights,
            on_record=on_record,
        )
    _write_json(json_path, run, records, training)
    failed = [r for r in results if "error" in r]
    for r in failed:
        logger.error("%s failed (%d attempt(s)): %s", r["movie"], r["attempts"], r["error"])
    if not failed:
        return 0
    summary = f"{len(failed)} of {len(results)} movie(s) failed (details in {json_path}); first: "
    bad_input = [r for r in failed if r.get("input_error")]
    if bad_input:
        raise InputError(None, summary + bad_input[0]["error"].removeprefix("InputError: "))
    print(f"cryosr superres: {summary}{failed[0]['error']}", file=sys.stderr)
    return 1


def _full_training(run: SuperresRun) -> SuperresConfig:
    """The shared dataset-mode training: ``--train-iterations`` steps (default: the per-movie default)."""
    return SuperresConfig(**{**asdict(run.config), "iterations": run.train_iterations})
