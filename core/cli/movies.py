"""What the movie commands (``superres``, ``enhance``) share: planning tasks from the options, and running them.

``plan_tasks`` checks every input before anything is written (headers, motion STARs, gain shape,
output collisions); ``run_tasks`` runs them through ``MovieRunner`` (in this process or on Dask
workers), keeps ``OUT/<command>.json`` up to date as movies finish, and ends with one summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryosr.core import __version__
from cryosr.core.batch import MovieRunner
from cryosr.core.batch.retry import ProcessFn
from cryosr.core.cli.options import runner_kwargs
from cryosr.core.errors import InputError
from cryosr.core.io import atomic_path, read_gain, read_movie_header, read_relion_motion
from cryosr.core.io.movie import EER_SUFFIX, read_eer_gain
from cryosr.core.pipeline import MovieTask, match_motion, motion_shifts, parse_frame_list, plan_acquisition

logger = logging.getLogger(__name__)

__all__ = ["MovieRun", "plan_tasks", "run_tasks"]

#: Least seconds between two rewrites of the JSON record during a run (it is always written at the end).
JSON_INTERVAL_S = 5.0


def output_stem(path: Path) -> str:
    """The output name of a movie: its file name up to the first dot (``a.mrcs`` and ``a.tif`` -> ``a``)."""
    return path.name.split(".")[0]


def plan_tasks(args: argparse.Namespace, *, lr_sum: bool) -> list[MovieTask]:
    """One ``MovieTask`` per input from the shared movie options; reads only headers and small files.

    Raises
    ------
    InputError
        A missing or unreadable input, no pixel size, a motion STAR for no input, a gain of the
        wrong shape, or two inputs that would write the same output.
    """
    motions = [read_relion_motion(p) for p in args.shifts or ()]
    exclude = parse_frame_list(args.exclude_frames)
    gain = read_gain(args.gain, rotate=args.gain_rotate, flip=args.gain_flip) if args.gain else None
    tasks, seen = [], {}
    for path in args.inputs:
        motion = match_motion(path, motions)
        eer = _eer_options(args, motion)
        header = read_movie_header(path, **eer)
        if gain is not None and header.n_frames > 1:
            _check_gain(args, gain, header, eer["eer_upsampling"])
        acq = plan_acquisition(header, pixel_size_a=args.pixel_size, dose_per_frame_e_a2=args.dose_per_frame,
                               pre_exposure_e_a2=args.pre_exposure, voltage_kv=args.voltage, motion=motion,
                               source="--pixel-size")  # fmt: skip
        stem = output_stem(path)
        if stem in seen:
            raise InputError(path, f"has the same output name as {seen[stem]}; outputs would collide")
        seen[stem] = path
        tasks.append(MovieTask(
            movie_path=path, out_path=args.out / f"{stem}.mrc", acquisition=acq,
            lr_sum_path=args.out / f"{stem}_lr_sum.mrc" if lr_sum else None, gain_path=args.gain,
            gain_rotate=args.gain_rotate, gain_flip=args.gain_flip,
            shifts_yx_px=motion_shifts(motion, header.n_frames, eer["eer_upsampling"]), exclude_frames=exclude, **eer,
        ))  # fmt: skip
    return tasks


def _eer_options(args: argparse.Namespace, motion) -> dict:
    """EER rendering of a movie: the options, else its motion STAR's (RELION's rlnEERGrouping/Upsampling)."""
    return {"eer_grouping": args.eer_grouping or (motion.eer_grouping if motion else 0),
            "eer_upsampling": args.eer_upsampling or (motion.eer_upsampling if motion else 1)}  # fmt: skip


def _check_gain(args: argparse.Namespace, gain, header, eer_upsampling: int) -> None:
    """The gain fits the frames: as read for MRC/TIFF, by RELION's EER rules for EER (``read_eer_gain``)."""
    frames = header.shape[1:]
    if header.path.suffix.lower() == EER_SUFFIX:
        physical = (frames[0] // eer_upsampling, frames[1] // eer_upsampling)
        read_eer_gain(args.gain, physical, eer_upsampling, rotate=args.gain_rotate, flip=args.gain_flip)
    elif tuple(gain.shape) != frames:
        raise InputError(args.gain, f"gain shape {tuple(gain.shape)} does not match the frames of {header.path.name} {frames}")


@dataclass
class MovieRun:
    """One command's run over its tasks, and the JSON record it keeps (``OUT/<name>.json``)."""

    tasks: list[MovieTask]
    config: object
    process_fn: ProcessFn
    out_dir: Path
    name: str
    command: str
    header: dict = field(default_factory=dict)
    overwrite: bool = False

    @property
    def json_path(self) -> Path:
        """``OUT/<name>.json``."""
        return self.out_dir / f"{self.name}.json"

    def load_records(self) -> dict[str, dict]:
        """Records of earlier runs into the same folder, by movie (an unreadable file starts afresh)."""
        if not self.json_path.exists():
            return {}
        try:
            return {r["movie"]: r for r in json.loads(self.json_path.read_text()).get("movies", [])}
        except (ValueError, KeyError, TypeError):
            logger.warning("%s is unreadable; starting a new one", self.json_path)
            return {}

    def write(self, records: dict[str, dict]) -> None:
        """Rewrite the JSON record atomically: this run's movies in input order, then older ones."""
        mine = [str(t.movie_path) for t in self.tasks if str(t.movie_path) in records]
        ordered = [records[k] for k in mine] + [r for k, r in records.items() if k not in set(mine)]
        payload = {
            "cryosr_version": __version__,
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": self.command,
            **self.header,
            "movies": ordered,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.json_path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(payload, indent=1))


def run_tasks(
    run: MovieRun, args: argparse.Namespace, *, before: Callable[[MovieRunner], dict | None] | None = None
) -> int:
    """Run every task (``before(runner)`` may return shared weights first); write the record; summarise.

    Returns
    -------
    code : int
        0 when every movie has its output, 1 when some failed for another reason than bad input.

    Raises
    ------
    InputError
        A movie failed because of a bad input (after the others ran), naming it and the count.
    """
    records = run.load_records()
    last_write = [0.0]

    def on_record(i: int, record: dict) -> None:
        task = run.tasks[i]
        if "error" not in record:
            logger.info("%s -> %s", task.movie_path, task.out_path)
        if record.get("skipped") and str(task.movie_path) in records:
            return
        records[str(task.movie_path)] = record
        if time.monotonic() - last_write[0] >= JSON_INTERVAL_S:  # thousands of movies: not after each one
            run.write(records)
            last_write[0] = time.monotonic()

    with MovieRunner(**runner_kwargs(args), progress=False) as runner:
        weights = before(runner) if before is not None else None
        results = runner.run(run.tasks, run.config, process_fn=run.process_fn, overwrite=run.overwrite,
                             weights=weights, on_record=on_record)  # fmt: skip
    run.write(records)
    return _summary(run, results)


def _summary(run: MovieRun, results: list[dict]) -> int:
    failed = [r for r in results if "error" in r]
    for r in failed:
        logger.error("%s failed (%d attempt(s)): %s", r["movie"], r["attempts"], r["error"])
    if not failed:
        return 0
    summary = f"{len(failed)} of {len(results)} movie(s) failed (details in {run.json_path}); first: "
    bad_input = [r for r in failed if r.get("input_error")]
    if bad_input:
        raise InputError(None, summary + bad_input[0]["error"].removeprefix("InputError: "))
    print(f"cryosr {run.name}: {summary}{failed[0]['error']}", file=sys.stderr)
    return 1
