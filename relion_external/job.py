"""One External-job run: validate every input, super-resolve each micrograph, then register the outputs.

Order (../shared/docs/relion_external.md §1.3): stale markers and ``RELION_OUTPUT_NODES.star`` removed first;
every input checked before anything is written; micrographs processed one by one with an abort check
before each (finished ones are skipped, so RELION's "Continue" resumes); then ``micrographs.star``, the
provenance JSON, ``RELION_OUTPUT_NODES.star`` and, last, ``RELION_JOB_EXIT_SUCCESS`` (written by the caller).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cryosr.core import __version__
from cryosr.core.device import resolve_device
from cryosr.core.errors import InputError
from cryosr.core.io import atomic_path, read_mrc_header, read_star, write_star
from cryosr.core.io.motion_star import RelionMotion, read_relion_motion
from cryosr.core.superres.engine import SuperresConfig
from cryosr.core.superres.pipeline import MovieTask, process_movie
from cryosr.relion_external.args import JobArgs
from cryosr.relion_external.nodes import detect_relion_version, output_nodes_blocks
from cryosr.relion_external.star_rewrite import MicrographItem, output_blocks, plan_items
from cryosr.relion_external.status import JobStatus

logger = logging.getLogger(__name__)

__all__ = ["OUTPUT_STAR", "PROVENANCE", "JobResult", "WorkItem", "run_job", "select_device"]

OUTPUT_STAR = "micrographs.star"
NODES_STAR = "RELION_OUTPUT_NODES.star"
PROVENANCE = "cryosr_relion.json"
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
    voltage_kv : float
    pre_exposure : float
    """

    item: MicrographItem
    task: MovieTask
    mode: str
    voltage_kv: float
    pre_exposure: float


@dataclass(frozen=True)
class JobResult:
    """Summary of a finished run."""

    n_total: int
    n_processed: int
    n_skipped: int
    output_star: Path
    relion_version: str | None
    seconds: float


def select_device(gpu: str | None, device: str, visible: str | None = None) -> str:
    """Device string from the ``gpu`` / ``device`` Params (§4.2 of the RELION notes).

    ``gpu`` indexes within the visible set (a scheduler's ``CUDA_VISIBLE_DEVICES``): ``"1"`` -> ``cuda:1``,
    RELION's ``"0:1"``/``"0,1"`` -> the first id, a bare ``--gpu`` -> the first visible GPU, a negative id
    -> the CPU. Without ``gpu`` the ``device`` Param is used (default ``auto``: the first visible GPU if
    any, else the CPU).

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
    tokens = [t for t in re.split(r"[:,\s]+", gpu) if t]
    if not tokens:
        return "cuda"
    try:
        ids = [int(t) for t in tokens]
    except ValueError:
        raise InputError(None, f"--gpu {gpu!r}: expected GPU ids such as 0 or 0:1") from None
    if ids[0] < 0:
        return "cpu"
    if len(ids) > 1:
        logger.warning("--gpu %s: cryosr-relion uses one GPU per job; using id %d (of CUDA_VISIBLE_DEVICES=%s)",
                       gpu, ids[0], visible)  # fmt: skip
    return f"cuda:{ids[0]}"


def _exists(path: str | Path, what: str, star: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} named in {star} does not exist (paths are relative to the project directory)")
    return path


def _is_missing(value: str | None) -> bool:
    return value is None or value.strip() in ("", "None", "nan")


def _plan_work(args: JobArgs, items: list[MicrographItem]) -> list[WorkItem]:
    """Check every input file and motion record; build the tasks. Writes nothing."""
    star = args.input_star
    work = []
    single = 0
    for it in items:
        out = Path(it.output)
        voltage = it.voltage_kv or 300.0
        if args.input_kind == "movies":
            if args.dose_per_frame is None:
                raise InputError(star, "movies input needs the dose: add a Params row 'dose_per_frame' (e/A^2 per frame)")
            gain = _exists(args.gain_ref, "gain reference", star) if args.gain_ref else None
            task = MovieTask(
                movie_path=_exists(it.source, "movie", star), out_path=out, pixel_size_a=it.pixel_size_a,
                dose_per_frame=args.dose_per_frame, gain_path=gain, gain_rotate=args.gain_rot,
                gain_flip=args.gain_flip,
            )  # fmt: skip
            work.append(WorkItem(it, task, "movie", voltage, 0.0))
        elif _is_missing(it.metadata):
            task = MovieTask(movie_path=_exists(it.source, "micrograph", star), out_path=out, pixel_size_a=it.pixel_size_a)
            work.append(WorkItem(it, task, "single", voltage, 0.0))
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


def _movie_from_motion(args: JobArgs, it: MicrographItem, motion: RelionMotion, out: Path, voltage: float) -> WorkItem:
    meta = Path(it.metadata or "")
    if abs(motion.binning - 1.0) > 1e-6:
        raise InputError(
            meta,
            f"MotionCorr binned the movie by {motion.binning:g}; super-resolve from unbinned motion correction "
            "(re-run MotionCorr with binning factor 1)",
        )
    movie = _exists(motion.movie_name, "movie", meta)
    if motion.pixel_size_a and abs(motion.pixel_size_a - it.pixel_size_a) > 1e-3 * it.pixel_size_a:
        raise InputError(
            meta, f"movie pixel size {motion.pixel_size_a} A differs from the micrograph pixel size {it.pixel_size_a} A"
        )
    shifts = tuple(map(tuple, motion.shifts_yx_px.tolist()))
    n_movie = motion.n_frames_movie
    if motion.start_frame != 1 or (n_movie is not None and n_movie != len(shifts)):
        logger.warning("%s: shifts cover frames %d-%d of %s; re-estimating the alignment",
                       meta, motion.start_frame, motion.start_frame + len(shifts) - 1, n_movie)  # fmt: skip
        shifts = None
    if motion.has_local_motion:
        logger.debug("%s: local motion model present; only the global shifts are used", meta)
    gain = _exists(motion.gain_name, "gain reference", meta) if motion.gain_name else None
    dose = motion.dose_per_frame if motion.dose_per_frame else args.dose_per_frame
    if dose is None:
        raise InputError(meta, "no dose per frame (rlnMicrographDoseRate); add a Params row 'dose_per_frame'")
    task = MovieTask(
        movie_path=movie, out_path=out, pixel_size_a=it.pixel_size_a, dose_per_frame=dose, gain_path=gain,
        gain_rotate=args.gain_rot, gain_flip=args.gain_flip, shifts_yx_px=shifts,
    )  # fmt: skip
    return WorkItem(it, task, "movie", motion.voltage_kv or voltage, motion.pre_exposure)


def _superres_config(args: JobArgs, w: WorkItem) -> SuperresConfig:
    fields = {f.name for f in dataclasses.fields(SuperresConfig)}
    kwargs: dict = {"scale": args.scale, "voltage_kv": w.voltage_kv, "pre_exposure": w.pre_exposure}
    for name in ("method", "iterations", "tile"):
        value = getattr(args, name)
        if value is None:
            continue
        if name not in fields:
            raise InputError(None, f"--{name}: not an option of this cryosr version's super-resolution engine")
        kwargs[name] = value
    return SuperresConfig(**kwargs)


def _output_complete(path: Path, pixel_size_a: float) -> bool:
    """An existing output counts as done when it is a readable MRC with the expected pixel size."""
    if not path.exists():
        return False
    try:
        header = read_mrc_header(path)
    except InputError:
        return False
    px = header["pixel_size_a"]
    return px is not None and abs(px - pixel_size_a) <= 1e-3 * pixel_size_a and header["mode"] == 2


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


class _Enhancer:
    """The enhancement network at 2x, loaded once (``--enhance yes``)."""

    def __init__(self, model: str, device: torch.device) -> None:
        from cryosr.core.enhance.infer import EnhanceConfig
        from cryosr.core.io.checkpoint import load_checkpoint

        self.model, self.meta = load_checkpoint(None if model == "default" else model, device)
        if 2 not in self.model.config.scales:
            raise InputError(model, "the enhancement model has no 2x head")
        self.config = EnhanceConfig(scale=2)
        self.device = device

    def __call__(self, task: MovieTask) -> dict:
        from cryosr.core.enhance.infer import enhance_micrograph, enhance_movie
        from cryosr.core.io import read_movie, write_mrc

        movie = read_movie(task.movie_path, gain=task.gain_path, gain_rotate=task.gain_rotate, gain_flip=task.gain_flip)
        frames = movie.frames.to(self.device)
        try:
            if movie.n_frames == 1:
                result = enhance_micrograph(frames[0], self.model, self.config)
            else:
                shifts = None if task.shifts_yx_px is None else torch.tensor(task.shifts_yx_px, device=self.device)
                result = enhance_movie(frames, self.model, self.config, shifts_yx_px=shifts)
        except InputError as exc:
            raise InputError(task.movie_path, exc.problem) from exc
        out_px = float(task.pixel_size_a) / 2
        write_mrc(task.out_path, result.image, out_px, overwrite=True)
        return {"movie": str(task.movie_path), "output": str(task.out_path), "output_pixel_size_a": out_px,
                "method": "enhance", "seconds": result.seconds, "skipped": False}  # fmt: skip


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
    configs = [_superres_config(args, w) for w in work]  # validates method and options before any output

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    device = resolve_device(select_device(args.gpu, args.device, visible))
    logger.info("cryosr-relion %s: %d micrographs from %s, method %s, device %s (CUDA_VISIBLE_DEVICES=%s), %d threads",
                __version__, len(work), args.input_star, "enhance" if args.enhance else configs[0].method, device,
                visible, torch.get_num_threads())  # fmt: skip
    enhancer = _Enhancer(args.model, device) if args.enhance else None

    records, n_skipped = [], 0
    for k, (w, config) in enumerate(zip(work, configs), 1):
        status.check_abort()
        out_px = w.item.pixel_size_a / args.scale
        done = _output_complete(w.task.out_path, out_px)
        if done and not args.overwrite:
            n_skipped += 1
            records.append({"movie": str(w.task.movie_path), "output": w.item.output, "skipped": True})
            logger.info("[%d/%d] %s: done in an earlier run, skipped", k, len(work), w.item.output)
            continue
        if w.task.out_path.exists() and not done:
            logger.warning("%s is incomplete or stale; recomputing it", w.task.out_path)
        t0 = time.perf_counter()
        record = enhancer(w.task) if enhancer is not None else process_movie(w.task, config, device=device, overwrite=True)
        if abs(record["output_pixel_size_a"] - out_px) > 1e-4 * out_px:
            raise RuntimeError(f"{w.task.out_path}: pixel size {record['output_pixel_size_a']} A, expected {out_px} A")
        record["mode"] = w.mode
        records.append(record)
        logger.info("[%d/%d] %s -> %s (%s, %.1f s)", k, len(work), w.item.source, w.item.output, w.mode,
                    time.perf_counter() - t0)  # fmt: skip
    status.check_abort()

    out_star = write_star(job_dir / OUTPUT_STAR, out_blocks)
    pipeline, tag = _read_pipeline(project_dir)
    version = detect_relion_version(pipeline, tag)
    provenance = {
        "cryosr_version": __version__,
        "argv": argv,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(args).items()},
        "relion_version": version,
        "device": str(device),
        "micrographs": records,
    }
    with atomic_path(job_dir / PROVENANCE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(provenance, indent=1, default=str))
    write_star(job_dir / NODES_STAR, output_nodes_blocks([(str(out_star), "micrographs")], version))
    logger.info("wrote %s (%d micrographs, %d processed, %d skipped); RELION %s node types",
                out_star, len(work), len(work) - n_skipped, n_skipped, version or "3.1+5.0")  # fmt: skip
    return JobResult(len(work), len(work) - n_skipped, n_skipped, out_star, version, time.perf_counter() - t_start)
