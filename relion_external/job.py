"""One External-job run: validate every input, super-resolve each micrograph, then register the outputs.

Order (../shared/docs/relion_external.md §1.3): stale markers and ``RELION_OUTPUT_NODES.star`` removed first;
every input checked before anything is written; finished micrographs skipped (RELION's "Continue"
resumes); the others run through the shared ``MovieRunner`` (in this process, or on Dask workers with
``workers N``), each with an abort check before and while it is computed; a micrograph that fails makes
the job fail after the others; then ``micrographs.star``, the provenance JSON, ``RELION_OUTPUT_NODES.star``
and, last, ``RELION_JOB_EXIT_SUCCESS`` (written by the caller).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from cryosr.core import __version__
from cryosr.core.acquisition import DEFAULT_VOLTAGE_KV
from cryosr.core.batch import MovieRunner
from cryosr.core.device import resolve_device
from cryosr.core.enhance.infer import EnhanceConfig
from cryosr.core.errors import CryosrError, InputError
from cryosr.core.io import MovieHeader, atomic_path, read_movie_header, read_star, write_star
from cryosr.core.io.motion_star import RelionMotion, read_relion_motion
from cryosr.core.pipeline import (
    EnhanceRun,
    MovieTask,
    motion_shifts,
    output_complete,
    plan_acquisition,
    process_enhance,
    process_superres,
    train_zssr_dataset,
)
from cryosr.core.pipeline.enhance import load_model
from cryosr.core.superres.reconstruct import DATASET_FINE_TUNE_STEPS, SuperresConfig
from cryosr.relion_external.args import JobArgs
from cryosr.relion_external.logs import ensure_stdout_logging
from cryosr.relion_external.nodes import detect_relion_version, output_nodes_blocks
from cryosr.relion_external.star_rewrite import MicrographItem, output_blocks, plan_items
from cryosr.relion_external.status import OUTPUT_STAR, PROVENANCE, AbortWatcher, JobAborted, JobStatus

logger = logging.getLogger(__name__)

__all__ = [
    "OUTPUT_STAR",
    "PROVENANCE",
    "JobResult",
    "WorkItem",
    "process_relion_task",
    "run_job",
    "select_device",
    "train_relion",
    "worker_devices",
]

NODES_STAR = "RELION_OUTPUT_NODES.star"
#: Seconds between checks for RELION_JOB_ABORT_NOW while a micrograph is being computed.
ABORT_POLL_S = 0.5
_TMP_LEFTOVER = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")  # atomic_path's temp names, left by a killed run


@dataclass(frozen=True)
class WorkItem:
    """A planned micrograph: the STAR row plus what the super-resolution needs.

    Attributes
    ----------
    item : MicrographItem
        Row, names and optics parameters.
    task : MovieTask
        Input movie (or single micrograph), output path and acquisition parameters.
    mode : str
        ``movie`` (frames with known or estimated shifts) or ``single`` (one micrograph: interpolation).
    """

    item: MicrographItem
    task: MovieTask
    mode: str


@dataclass(frozen=True)
class JobResult:
    """Summary of a finished run."""

    n_total: int
    n_processed: int
    n_skipped: int
    output_star: Path
    relion_version: str | None
    seconds: float


def _gpu_ids(gpu: str) -> list[int]:
    """``"0"``, RELION's ``"0:1"``, ``"0,1"`` or ``""`` (bare flag) -> list of ids."""
    try:
        return [int(t) for t in re.split(r"[:,\s]+", gpu) if t]
    except ValueError:
        raise InputError(None, f"--gpu {gpu!r}: expected GPU ids such as 0 or 0:1") from None


def select_device(gpu: str | None, device: str, visible: str | None = None) -> str:
    """Device string from the ``gpu`` / ``device`` Params (§4.2 of the RELION notes), one process.

    ``gpu`` indexes within the visible set (a scheduler's ``CUDA_VISIBLE_DEVICES``): ``"1"`` -> ``cuda:1``,
    RELION's ``"0:1"``/``"0,1"`` -> the first id (several GPUs need ``--workers``), a bare ``--gpu`` -> the
    first visible GPU, a negative id -> the CPU. Without ``gpu`` the ``device`` Param is used (default
    ``auto``: the first visible GPU if any, else the CPU).

    Parameters
    ----------
    gpu : str | None
        ``--gpu`` value, None when absent.
    device : str
        ``--device`` value.
    visible : str | None
        ``CUDA_VISIBLE_DEVICES``, only for the log message.
    """
    if gpu is None:
        return device
    ids = _gpu_ids(gpu)
    if not ids:
        return "cuda"
    if ids[0] < 0:
        return "cpu"
    if len(ids) > 1:
        logger.warning("--gpu %s: one process uses one GPU; using id %d (of CUDA_VISIBLE_DEVICES=%s); "
                       "add a Params row 'workers' to use them all", gpu, ids[0], visible)  # fmt: skip
    return f"cuda:{ids[0]}"


def worker_devices(gpu: str | None, device: str, visible: str | None) -> tuple[str, str | None]:
    """Device spec for ``MovieRunner`` with several workers, and the GPUs they may use.

    Workers are pinned one per GPU by the runner, from ``CUDA_VISIBLE_DEVICES``. A ``--gpu`` list
    (ids within the visible set, RELION's ``0:1`` or ``0,1``) narrows that set; a negative id or
    ``--device cpu`` gives CPU workers; ``--device cuda:N`` means GPU N only.

    Parameters
    ----------
    gpu : str | None
        ``--gpu`` value, None when absent.
    device : str
        ``--device`` value.
    visible : str | None
        The current ``CUDA_VISIBLE_DEVICES``.

    Returns
    -------
    device_spec : str
        ``cpu``, ``cuda`` or ``auto``.
    cuda_visible : str | None
        New ``CUDA_VISIBLE_DEVICES`` for the run (physical ids), or None to leave it as it is.
    """
    spec = device.strip().lower()
    if gpu is None:
        if spec.startswith(("cuda:", "gpu:")):
            gpu = spec.split(":", 1)[1]
        else:
            return spec, None
    ids = _gpu_ids(gpu)
    if not ids:
        return "cuda", None
    if ids[0] < 0:
        return "cpu", None
    pool = [v.strip() for v in visible.split(",") if v.strip()] if visible is not None else None
    if pool is None:
        return "cuda", ",".join(str(i) for i in dict.fromkeys(ids))
    bad = [i for i in ids if i >= len(pool)]
    if bad:
        raise InputError(None, f"--gpu {gpu}: id {bad[0]} is not among the {len(pool)} visible GPU(s) ({visible})")
    return "cuda", ",".join(pool[i] for i in dict.fromkeys(ids))


def _exists(path: str | Path, what: str, star: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} named in {star} does not exist (paths are relative to the project directory)")
    return path


def _is_missing(value: str | None) -> bool:
    return value is None or value.strip() in ("", "None", "nan")


def _header(path: Path, star: Path, n_frames: int | None = None, **eer: int) -> MovieHeader:
    """The movie's header; an unreadable one fails that micrograph later (after the others), not the job now."""
    try:
        return read_movie_header(path, **eer)
    except InputError as exc:
        logger.warning("%s (named in %s): %s; it will fail when processed", path, star, exc.problem)
        return MovieHeader((n_frames or 0, 0, 0), None, path)


def _plan_work(args: JobArgs, items: list[MicrographItem]) -> list[WorkItem]:
    """Check every input file and motion record; build the tasks. Writes nothing."""
    star = args.input_star
    work = []
    single = 0
    for it in items:
        out = Path(it.output)
        voltage = it.voltage_kv or DEFAULT_VOLTAGE_KV
        if args.input_kind == "movies":
            if args.dose_per_frame is None:
                raise InputError(star, "movies input needs the dose: add a Params row 'dose_per_frame' (e/A^2 per frame)")
            movie = _exists(it.source, "movie", star)
            if (args.eer_upsampling or 1) != 1:
                raise InputError(star, "eer_upsampling 2 needs Input micrographs from a MotionCorr run with EER upsampling 2 "
                                 "(the output pixel of Input movies is the physical pixel / 2)")  # fmt: skip
            eer = {"eer_grouping": args.eer_grouping, "eer_upsampling": 1}
            acq = plan_acquisition(_header(movie, star, **eer), pixel_size_a=it.pixel_size_a, voltage_kv=voltage,
                                   dose_per_frame_e_a2=args.dose_per_frame, source="movies STAR")  # fmt: skip
            gain = _exists(args.gain_ref, "gain reference", star) if args.gain_ref else None
            task = MovieTask(movie_path=movie, out_path=out, acquisition=acq, gain_path=gain, gain_rotate=args.gain_rot,
                             gain_flip=args.gain_flip, **eer)  # fmt: skip
            work.append(WorkItem(it, task, "movie"))
        elif _is_missing(it.metadata):
            mic = _exists(it.source, "micrograph", star)
            acq = plan_acquisition(_header(mic, star), pixel_size_a=it.pixel_size_a, voltage_kv=voltage,
                                   source="micrographs STAR")  # fmt: skip
            work.append(WorkItem(it, MovieTask(movie_path=mic, out_path=out, acquisition=acq), "single"))
            single += 1
        else:
            motion = read_relion_motion(_exists(it.metadata, "motion metadata", star))
            work.append(_movie_from_motion(args, it, motion, out, voltage))
    if single:
        logger.warning(
            "%d of %d micrographs have no motion metadata (rlnMicrographMetadata): single-image mode, "
            "interpolation only; no information beyond the input Nyquist frequency is recovered",
            single, len(items),
        )  # fmt: skip
    return work


def _eer_rendering(args: JobArgs, motion: RelionMotion, movie: Path, meta: Path) -> dict:
    """Render an EER movie as MotionCorr did (its grid fixes the output pixel); other movies: no EER options."""
    if movie.suffix.lower() != ".eer":
        return {"eer_grouping": 0, "eer_upsampling": 1}
    upsampling = args.eer_upsampling or motion.eer_upsampling
    if upsampling != motion.eer_upsampling:
        raise InputError(meta, f"MotionCorr rendered the EER movie at upsampling {motion.eer_upsampling}, not "
                         f"{upsampling}: the output pixel follows its micrographs (leave eer_upsampling empty)")  # fmt: skip
    return {"eer_grouping": args.eer_grouping or motion.eer_grouping, "eer_upsampling": upsampling}


def _movie_from_motion(args: JobArgs, it: MicrographItem, motion: RelionMotion, out: Path, voltage: float) -> WorkItem:
    meta = Path(it.metadata or "")
    if abs(motion.binning - 1.0) > 1e-6:
        raise InputError(
            meta,
            f"MotionCorr binned the movie by {motion.binning:g}; super-resolve from unbinned motion correction "
            "(re-run MotionCorr with binning factor 1)",
        )
    movie = _exists(motion.movie_name, "movie", meta)
    eer = _eer_rendering(args, motion, movie, meta)
    mic_px = it.pixel_size_a * eer["eer_upsampling"]  # an EER micrograph has the pixel of RELION's rendering grid
    if motion.pixel_size_a and abs(motion.pixel_size_a - mic_px) > 1e-3 * mic_px:
        raise InputError(
            meta, f"movie pixel size {motion.pixel_size_a} A differs from the micrograph pixel size {it.pixel_size_a} A"
        )
    if motion.has_local_motion:
        logger.debug("%s: local motion model present; only the global shifts are used", meta)
    gain = _exists(motion.gain_name, "gain reference", meta) if motion.gain_name else None
    if motion.dose_per_frame is None and args.dose_per_frame is None:
        raise InputError(meta, "no dose per frame (rlnMicrographDoseRate); add a Params row 'dose_per_frame'")
    header = _header(movie, meta, motion.n_frames_movie or len(motion.shifts_yx_px), **eer)
    acq = plan_acquisition(header, pixel_size_a=mic_px, motion=motion, source="micrographs STAR",
                           dose_per_frame_e_a2=None if motion.dose_per_frame else args.dose_per_frame,
                           voltage_kv=motion.voltage_kv or voltage)  # fmt: skip
    task = MovieTask(
        movie_path=movie, out_path=out, acquisition=acq, gain_path=gain, gain_rotate=args.gain_rot,
        gain_flip=args.gain_flip, shifts_yx_px=motion_shifts(motion, header.n_frames, eer["eer_upsampling"]), **eer,
    )  # fmt: skip
    return WorkItem(it, task, "movie")


def _run_config(args: JobArgs) -> SuperresConfig | EnhanceRun:
    """The one config of every micrograph (the acquisition travels with each task); validates the options."""
    if args.enhance:
        tile = {} if args.tile is None else {"tile": args.tile}
        return EnhanceRun(model=args.model, enhance=EnhanceConfig(scale=args.scale, **tile))
    kwargs: dict = {"scale": args.scale}
    for name in ("method", "iterations", "tile"):
        value = getattr(args, name)
        if name == "iterations" and value is None and args.mode == "dataset":
            value = DATASET_FINE_TUNE_STEPS  # a short fine-tune from the shared weights, as `cryosr superres --mode dataset`
        if value is not None:
            kwargs[name] = value
    return SuperresConfig(**kwargs)


def _remove_leftovers(job_dir: Path) -> None:
    for path in job_dir.rglob(".*.tmp"):
        if path.is_file() and _TMP_LEFTOVER.match(path.name):
            logger.info("removing %s left by an interrupted run", path)
            path.unlink()


def _read_pipeline(project_dir: Path) -> tuple[dict | None, int | None]:
    path = project_dir / "default_pipeline.star"
    if not path.is_file():
        return None, None
    tag = None
    with open(path, encoding="utf-8", errors="replace") as fh:  # the "# version" comment starfile drops
        for line in fh:
            m = re.match(r"#\s*version\s+(\d+)", line.strip())
            if m:
                tag = int(m.group(1))
                break
    try:
        return read_star(path), tag
    except InputError as exc:
        logger.warning("could not read %s (%s)", path, exc)
        return None, tag


def process_relion_task(
    task: MovieTask,
    config: SuperresConfig | EnhanceRun,
    *,
    device: torch.device,
    overwrite: bool = False,
    weights: dict | None = None,
) -> dict:
    """``process_fn`` of ``MovieRunner.run`` for one micrograph of an External job (in-process or on a worker).

    The micrograph runs through the core pipeline (``process_superres``, or ``process_enhance`` with
    ``enhance yes``), as with ``cryosr superres``/``cryosr enhance``. What is specific to the External
    job travels in ``task.extra`` (picklable, for Dask workers): the job directory (abort requests),
    the STAR name, the torch thread count and the ``[k/n]`` position for the progress line in run.out.

    An abort request (``RELION_JOB_ABORT_NOW``) before or *during* the computation (polled every
    ``ABORT_POLL_S`` s by ``AbortWatcher``, also inside zssr training) returns ``{"aborted": True}``
    instead of raising, so the runner neither retries it nor counts it as a failure.

    Parameters
    ----------
    task : MovieTask
        Input, output, acquisition and ``extra`` as built by ``run_job``.
    config : SuperresConfig | EnhanceRun
        The job's options.
    device : torch.device
        Compute device chosen by the runner.
    overwrite : bool
        Recompute a finished output (``overwrite yes``).
    weights : dict | None
        Dataset mode: the shared zssr weights each micrograph fine-tunes from.

    Returns
    -------
    record : dict
        The pipeline's record plus ``mode`` and the STAR name as ``output``; or a short record with
        ``skipped`` or ``aborted``.
    """
    x = task.extra
    if x.get("log_to_stdout"):
        ensure_stdout_logging()
    if x.get("threads"):
        torch.set_num_threads(x["threads"])
    status = JobStatus(Path(x["job_dir"]))
    where = f"[{x['index']}/{x['total']}]"
    base = {"movie": str(task.movie_path), "output": x["name"], "mode": x["mode"], "skipped": False}
    if status.abort_requested():
        return {**base, "aborted": True}
    t0 = time.perf_counter()
    try:
        with AbortWatcher(status, x.get("abort_poll_s", ABORT_POLL_S)):
            if isinstance(config, EnhanceRun):
                record = process_enhance(task, config, device=device, overwrite=overwrite)
            else:
                record = process_superres(task, config, device=device, overwrite=overwrite, weights=weights)
    except JobAborted:
        logger.warning("%s %s: abort requested during the computation; stopped", where, x["name"])
        return {**base, "aborted": True}
    if record.get("skipped"):
        logger.info("%s %s: done in an earlier run, skipped", where, x["name"])
        return {**base, "skipped": True}
    record.update(mode=x["mode"], output=x["name"])
    logger.info("%s %s -> %s (%s, %.1f s)", where, x["source"], x["name"], x["mode"], time.perf_counter() - t0)
    return record


def _tasks(args: JobArgs, work: list[WorkItem], status: JobStatus, project_dir: Path, distributed: bool) -> list[MovieTask]:
    """The MovieTasks handed to ``MovieRunner.run`` (absolute paths on workers: they may run elsewhere)."""
    root = project_dir.resolve() if distributed else None

    def place(path: Path | None) -> Path | None:
        return path if path is None or root is None else root / path

    threads = max(1, args.threads // args.workers)
    tasks = []
    for k, w in enumerate(work, 1):
        extra = {
            "job_dir": str(place(status.job_dir)), "mode": w.mode, "name": w.item.output, "source": w.item.source,
            "index": k, "total": len(work), "threads": threads if distributed else None, "log_to_stdout": distributed,
        }  # fmt: skip
        tasks.append(dataclasses.replace(w.task, movie_path=place(w.task.movie_path), out_path=place(w.task.out_path),
                                         gain_path=place(w.task.gain_path), extra=extra))  # fmt: skip
    return tasks


def train_relion(tasks: list[MovieTask], config: SuperresConfig, *, device: torch.device) -> tuple[dict, list[dict]]:
    """``train_fn`` of ``MovieRunner.train`` (dataset mode): ``train_zssr_dataset`` with abort polling and run.out logs."""
    x = tasks[0].extra
    if x.get("log_to_stdout"):
        ensure_stdout_logging()
    if x.get("threads"):
        torch.set_num_threads(x["threads"])
    logger.info("dataset mode: training zssr once on %d micrograph(s) (%s steps each)", len(tasks),
                config.iterations or "default")  # fmt: skip
    with AbortWatcher(JobStatus(Path(x["job_dir"])), x.get("abort_poll_s", ABORT_POLL_S)):
        return train_zssr_dataset(tasks, config, device=device)


@contextlib.contextmanager
def _cuda_visible(value: str | None) -> Iterator[None]:
    """Set ``CUDA_VISIBLE_DEVICES`` while the runner starts its workers (they are pinned from it)."""
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = old


def _run_tasks(args: JobArgs, tasks: list[MovieTask], config: SuperresConfig | EnhanceRun, status: JobStatus,
               visible: str | None) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """Run the tasks in this process (``workers 1``) or on a local Dask cluster, through ``MovieRunner``.

    Returns the records (one per task, in order) and, in dataset mode, the shared training's records.
    """
    if args.workers == 1:
        spec, cuda_visible = select_device(args.gpu, args.device, visible), None
    else:
        spec, cuda_visible = worker_devices(args.gpu, args.device, visible)
        logger.info("%d Dask workers (%d torch threads each), device %s%s", args.workers,
                    max(1, args.threads // args.workers), spec, f", GPUs {cuda_visible}" if cuda_visible else "")  # fmt: skip
    with _cuda_visible(cuda_visible), MovieRunner(device_spec=spec, workers=args.workers, progress=False) as runner:
        weights, training = None, []
        if args.mode == "dataset":
            train_config = dataclasses.replace(config, iterations=args.train_iterations)
            try:
                weights, training = runner.train(tasks[: args.train_movies], train_config, train_fn=train_relion)
            except RuntimeError:  # on a worker an abort surfaces as a failed training task
                status.check_abort()
                raise
        records = runner.run(tasks, config, process_fn=process_relion_task, overwrite=args.overwrite, weights=weights)
        return records, training


def run_job(args: JobArgs, status: JobStatus, argv: list[str] | None = None, project_dir: Path = Path(".")) -> JobResult:
    """Run the External job (everything except the final success marker).

    Parameters
    ----------
    args : JobArgs
        Parsed command line.
    status : JobStatus
        Marker files of ``args.out_dir`` (abort polling).
    argv : list[str] | None
        The command line, for the provenance file.
    project_dir : Path
        The RELION project directory (the working directory when RELION runs us).

    Returns
    -------
    result : JobResult

    Raises
    ------
    InputError
        Bad input (nothing is registered).
    CryosrError
        Some micrographs failed (the finished ones are kept for Continue; nothing is registered).
    JobAborted
        ``RELION_JOB_ABORT_NOW`` appeared.
    """
    t_start = time.perf_counter()
    job_dir = args.out_dir
    job_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(job_dir, os.W_OK | os.X_OK):
        raise InputError(job_dir, "job directory is not writable")
    (job_dir / NODES_STAR).unlink(missing_ok=True)  # never leave a stale node for "Mark as finished"
    _remove_leftovers(job_dir)

    blocks = read_star(args.input_star)
    items = plan_items(blocks, args.input_kind, str(job_dir), star=str(args.input_star))
    if not items:
        raise InputError(args.input_star, "contains no micrographs")
    work = _plan_work(args, items)
    out_blocks = output_blocks(blocks, args.input_kind, items, scale=args.scale)
    config = _run_config(args)  # validates method and options before any output

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    device = resolve_device(select_device(args.gpu, args.device, visible))
    if args.workers > 1:
        worker_devices(args.gpu, args.device, visible)  # a bad --gpu list fails before any output
    logger.info("cryosr-relion %s: %d micrographs from %s, method %s, device %s (CUDA_VISIBLE_DEVICES=%s), %d threads",
                __version__, len(work), args.input_star, "enhance" if args.enhance else config.method, device,
                visible, args.threads)  # fmt: skip
    if isinstance(config, EnhanceRun):
        load_model(config, device)  # bad weights fail before any output

    tasks = _tasks(args, work, status, project_dir, distributed=args.workers > 1)
    scale = config.enhance.scale if isinstance(config, EnhanceRun) else config.scale
    records: list[dict | None] = [None] * len(tasks)
    todo = []
    for i, task in enumerate(tasks):  # Continue: finished micrographs need no worker
        if not args.overwrite and output_complete(task.out_path, task.acquisition.pixel_size_a / scale):
            records[i] = {"movie": str(work[i].task.movie_path), "output": work[i].item.output, "skipped": True}
            logger.info("[%d/%d] %s: done in an earlier run, skipped", i + 1, len(tasks), work[i].item.output)
        else:
            todo.append(i)
    status.check_abort()
    training: list[dict] = []
    if todo:
        done, training = _run_tasks(args, [tasks[i] for i in todo], config, status, visible)
        for i, record in zip(todo, done, strict=True):
            records[i] = record
    status.check_abort()
    if any(r.get("aborted") for r in records):
        raise JobAborted("abort requested")
    failed = [r for r in records if "error" in r]
    if failed:
        raise CryosrError(
            f"{len(failed)} of {len(records)} micrographs failed (finished ones are kept for Continue); "
            f"first: {' '.join(str(failed[0]['error']).split())}"
        )
    n_skipped = sum(bool(r.get("skipped")) for r in records)

    out_star = write_star(job_dir / OUTPUT_STAR, out_blocks)
    pipeline, tag = _read_pipeline(project_dir)
    version = detect_relion_version(pipeline, tag)
    provenance = {
        "cryosr_version": __version__,
        "argv": argv,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(args).items()},
        "relion_version": version,
        "device": str(device),
        "workers": args.workers,
        "dataset_training": training,
        "micrographs": records,
    }
    with atomic_path(job_dir / PROVENANCE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(provenance, indent=1, default=str))
    write_star(job_dir / NODES_STAR, output_nodes_blocks([(str(out_star), "micrographs")], version))
    logger.info("wrote %s (%d micrographs, %d processed, %d skipped); RELION %s node types",
                out_star, len(work), len(work) - n_skipped, n_skipped, version or "3.1+5.0")  # fmt: skip
    return JobResult(len(work), len(work) - n_skipped, n_skipped, out_star, version, time.perf_counter() - t_start)
