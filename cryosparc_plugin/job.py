"""The cryosparc-tools orchestration: External job in, super-resolved ``micrographs`` output out.

Order of work (every bad-input check happens before the first output file is written):

1. find the project, workspace and source job/output (errors here create no job);
2. create the External job (or reopen the one given with ``--resume``), add the ``exposures``
   input with explicit slot dtypes, connect it, add the ``micrographs`` output (no passthrough);
   if CryoSPARC rejects any of that, the new job is marked failed with the reason (not left building);
3. while the job is running (any exception, Ctrl-C included, marks it failed with the reason): load the exposures, validate
   them (pixel sizes, doses, files), process each one through ``cryosr.core.pipeline``,
   writing into ``<project>/J<ext>/cryosr/`` directly or over HTTP, and save the output once, with
   the rows of every micrograph completely written (a killed run registers nothing half-written;
   with ``--transfer direct`` its finished files are reused by ``--resume``; in upload mode the
   scratch folder is new each run, so exposures not yet saved are recomputed and re-uploaded).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import NoReturn

import numpy as np
import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.batch import MovieRunner
from cryosr.core.device import resolve_device
from cryosr.core.errors import CryosrError, InputError
from cryosr.core.io import read_micrograph
from cryosr.core.io.eer import read_eer_header
from cryosr.core.pipeline import MovieTask, process_superres
from cryosr.core.superres.reconstruct import SuperresConfig
from cryosr.cryosparc_plugin.args import PluginConfig
from cryosr.cryosparc_plugin.fields import (
    ExposureSource,
    SrMicrograph,
    check_exposures,
    eer_rendering,
    exposure_sources,
    fill_output,
    input_slot_specs,
    output_name,
    output_slot_specs,
    trajectory_to_shifts,
)
from cryosr.cryosparc_plugin.session import CryosparcError, connect, import_tools

logger = logging.getLogger(__name__)

__all__ = ["INPUT_NAME", "OUTPUT_DIR", "OUTPUT_NAME", "RunSummary", "run"]

INPUT_NAME = "exposures"
OUTPUT_NAME = "micrographs"
OUTPUT_DIR = "cryosr"


@dataclass
class RunSummary:
    """What one run did (returned to ``main`` and logged).

    Attributes
    ----------
    job_uid : str
        The External job.
    n_exposures : int
        Exposures in the output.
    n_processed, n_reused : int
        Exposures computed now / taken from an earlier run (saved rows or finished files).
    transfer : str
        ``direct`` or ``upload``.
    seconds : float
        Wall time of the processing loop.
    notes : list of str
        Warnings (version mismatch, ...).
    """

    job_uid: str
    n_exposures: int = 0
    n_processed: int = 0
    n_reused: int = 0
    transfer: str = ""
    seconds: float = 0.0
    notes: list = field(default_factory=list)


def _api_error_text(exc: Exception) -> str:
    data = getattr(exc, "data", None)
    detail = data.get("detail") if isinstance(data, dict) else None
    text = detail if isinstance(detail, str) else str(exc).splitlines()[0]
    return f"HTTP {getattr(exc, 'code', '?')}: {text}"


def _lookup(what: str, fn, *args):
    import_tools()
    from cryosparc.errors import APIError

    try:
        return fn(*args)
    except APIError as exc:
        raise CryosparcError(f"{what}: not found or not accessible ({_api_error_text(exc)})") from exc


def _source_results(project, config: PluginConfig) -> list[tuple[str, str]]:
    source = _lookup(f"job {config.project_uid}-{config.input_job_uid}", project.find_job, config.input_job_uid)
    outputs = source.outputs
    if config.input_output not in outputs:
        names = ", ".join(sorted(outputs)) or "none"
        raise InputError(
            None, f"job {config.input_job_uid} has no output {config.input_output!r} (its outputs: {names})"
        )
    output = outputs[config.input_output]
    if output.type != "exposure":
        raise InputError(
            None,
            f"{config.input_job_uid}:{config.input_output} is a {output.type!r} output; "
            "an exposure output (movies or micrographs) is needed",
        )
    return [(r.name, r.dtype) for r in output.results]


def _open_job(project, config: PluginConfig, results: list[tuple[str, str]]):
    """Create and wire the External job, or reopen and check the one to resume."""
    in_slots = input_slot_specs(results)
    out_slots = output_slot_specs(results)
    if config.resume_job_uid:
        job = _lookup(f"External job {config.resume_job_uid}", project.find_external_job, config.resume_job_uid)
        conns = job.inputs.get(INPUT_NAME).connections if INPUT_NAME in job.inputs else []
        if not any(c.job_uid == config.input_job_uid and c.output == config.input_output for c in conns):
            raise InputError(
                None,
                f"--resume {job.uid}: its '{INPUT_NAME}' input is not connected to "
                f"{config.input_job_uid}:{config.input_output}",
            )
        if OUTPUT_NAME not in job.outputs:
            job.add_output("exposure", OUTPUT_NAME, slots=out_slots, title="cryosr super-resolved micrographs")
        return job
    desc = f"cryosr 2x super-resolution ({config.method}) of {config.input_job_uid}:{config.input_output}"
    return _wire_new_job(project, config, desc, in_slots, out_slots)


def _wire_new_job(project, config: PluginConfig, desc: str, in_slots: list[dict], out_slots: list[dict]):
    """Create an External job: the ``exposures`` input connected to the source (if ``in_slots``), the output.

    If CryoSPARC rejects any of that, the new job is marked failed with the reason (``_fail_unwired``).
    """
    job = project.create_external_job(config.workspace_uid, title=config.title, desc=desc)
    step = "add_input"
    try:
        if in_slots:
            job.add_input("exposure", INPUT_NAME, min=1, max=1, slots=in_slots, title="Exposures to super-resolve")
            step = "connect"
            job.connect(INPUT_NAME, config.input_job_uid, config.input_output)
        step = "add_output"
        job.add_output("exposure", OUTPUT_NAME, slots=out_slots, title="cryosr super-resolved micrographs")
    except BaseException as exc:
        _fail_unwired(job, step, exc)
    return job


def _fail_unwired(job, step: str, exc: BaseException) -> NoReturn:
    """Mark a new External job failed with the reason its wiring was rejected, then re-raise.

    Without this the job would stay "building" in the CryoSPARC UI with no hint why. Marking it
    failed is best effort (the server may refuse that too): the original error is what is raised,
    as a one-line ``CryosparcError`` when CryoSPARC rejected the request.
    """
    from cryosparc.errors import APIError

    if isinstance(exc, APIError):
        reason = f"CryoSPARC rejected {step} ({_api_error_text(exc)})"
    elif isinstance(exc, KeyboardInterrupt):
        reason = f"interrupted during {step}"
    else:
        reason = f"{step} failed: {' '.join(str(exc).split()) or type(exc).__name__}"
    marked = "marked failed"
    try:
        job.log(f"cryosr: {reason}", level="error")
    except Exception as secondary:
        logger.debug("could not log to External job %s: %s", job.uid, secondary)
    try:
        job.stop(error=f"cryosr: {reason}")
    except Exception as secondary:  # keep the original error; say why the job could not be marked
        marked = f"could not be marked failed: {' '.join(str(secondary).split())[:200]}"
        logger.warning("External job %s %s", job.uid, marked)
    if isinstance(exc, APIError):
        raise CryosparcError(f"External job {job.uid} ({marked}): {reason}") from exc
    raise exc


def _saved_output(job):
    """The job's saved ``micrographs`` output (a ``Dataset``), or None when nothing was saved yet."""
    out = job.outputs.get(OUTPUT_NAME)
    if out is None or not any(r.metafiles for r in out.results):
        return None
    return job.load_output(OUTPUT_NAME)


def _saved_micrographs(job) -> dict[int, SrMicrograph]:
    """Rows of the job's ``micrographs`` output saved by an earlier run, by uid."""
    dset = _saved_output(job)
    if dset is None:
        return {}
    return {
        int(uid): SrMicrograph(
            path=str(dset["micrograph_blob/path"][i]),
            shape_yx=tuple(int(v) for v in dset["micrograph_blob/shape"][i]),
            pixel_size_a=float(dset["micrograph_blob/psize_A"][i]),
            vmin=float(dset["micrograph_blob/vmin"][i]),
            vmax=float(dset["micrograph_blob/vmax"][i]),
        )
        for i, uid in enumerate(dset["uid"])
        if str(dset["micrograph_blob/path"][i])
    }


class _Files:
    """Where inputs are read and outputs written: the project directory itself, or HTTP + scratch."""

    def __init__(self, project, job, config: PluginConfig, stack: ExitStack) -> None:
        self.project, self.job = project, job
        server_dir = Path(str(project.dir))
        local = config.project_dir or server_dir
        reachable = local.is_dir() and os.access(local, os.W_OK)
        if config.transfer == "direct" and not reachable:
            raise InputError(
                local, "project directory not reachable from here (use --project-dir or --transfer upload)"
            )
        self.mode = "direct" if (config.transfer == "direct" or (config.transfer == "auto" and reachable)) else "upload"
        self.project_dir = local
        if config.scratch_dir is not None:
            config.scratch_dir.mkdir(parents=True, exist_ok=True)
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=config.scratch_dir)))
        else:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cryosr-cryosparc-")))
        self.scratch = scratch
        if self.mode == "direct":
            (local / job.uid / OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
        else:
            job.mkdir(OUTPUT_DIR, exist_ok=True)

    def local(self, rel: str) -> Path:
        """A direct-mode path (absolute dataset paths are used as they are)."""
        p = PurePosixPath(rel)
        return Path(p) if p.is_absolute() else self.project_dir / p

    def check_inputs(self, sources: list[ExposureSource], use_motion: bool) -> None:
        """Fail before any output is written or uploaded if an input file is missing.

        Direct mode looks at the files themselves; upload mode asks the server for a listing of each
        folder the inputs are in (``project.list_files``: one request per folder, not per file).
        """
        needed = [
            (s, rel) for s in sources for rel in (s.path, s.gain_path, s.motion_path if use_motion else None) if rel
        ]
        if self.mode == "direct":
            for s, rel in needed:
                if not self.local(rel).is_file():
                    raise InputError(self.local(rel), f"exposure {s.uid}: file listed in the input does not exist")
            return
        import_tools()
        from cryosparc.errors import APIError

        listed: dict[str, set[str] | str] = {}
        for s, rel in needed:
            folder = str(PurePosixPath(rel).parent).removeprefix(".")
            if folder not in listed:
                try:  # paths relative to the project directory; compared by name (tolerant of the form)
                    listed[folder] = {PurePosixPath(e).name for e in self.project.list_files(folder)}
                except APIError as exc:
                    listed[folder] = _api_error_text(exc)
            names = listed[folder]
            if isinstance(names, str) or PurePosixPath(rel).name not in names:
                why = f": cannot list {folder} ({names})" if isinstance(names, str) else ""
                raise InputError(rel, f"exposure {s.uid}: file listed in the input is not on the server{why}")

    def fetch(self, rel: str | None) -> Path | None:
        """Local copy of an input file (direct mode: the file itself)."""
        if rel is None:
            return None
        if self.mode == "direct":
            return self.local(rel)
        target = self.scratch / "in" / PurePosixPath(rel).name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _lookup(f"{rel} (download)", self.project.download_file, rel, str(target))
        return target

    def out_path(self, name: str) -> Path:
        if self.mode == "direct":
            return self.project_dir / self.job.uid / OUTPUT_DIR / name
        return self.scratch / "out" / name

    def publish(self, local: Path, name: str) -> None:
        """Upload a finished output (upload mode), then drop the local copy and the downloads."""
        if self.mode == "direct":
            return
        with open(local, "rb") as fh:  # an open handle: cryosparc-tools leaves a path's file open
            self.job.upload(f"{OUTPUT_DIR}/{name}", fh, overwrite=True)
        local.unlink()
        shutil.rmtree(self.scratch / "in", ignore_errors=True)


def _shifts(files: _Files, s: ExposureSource, use_motion: bool) -> tuple | None:
    if not (use_motion and s.kind == "movie" and s.motion_path):
        return None
    path = files.fetch(s.motion_path)
    try:
        traj = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"exposure {s.uid}: unreadable rigid_motion trajectory ({exc})") from exc
    shifts = trajectory_to_shifts(
        traj,
        psize_a=s.motion_psize_a,
        n_frames=s.n_frames,
        frame_start=s.motion_frame_start,
        frame_end=s.motion_frame_end,
    )
    if shifts is None:
        logger.warning("%s: trajectory does not cover all %d frames; estimating shifts", s.path, s.n_frames)
        return None
    return tuple(tuple(float(v) for v in row) for row in shifts)


def _display_range(image: torch.Tensor) -> tuple[float, float]:
    flat = image.flatten().double()
    if flat.numel() > 1_000_000:
        flat = flat[:: flat.numel() // 1_000_000 + 1]
    lo, hi = torch.quantile(flat, torch.tensor([0.01, 0.99], dtype=flat.dtype))
    return float(lo), float(hi)


def _preview_figure(before: torch.Tensor, after: torch.Tensor, px_before: float, px_after: float):
    """Central crops of the same area before and after, side by side (matplotlib ``Figure``)."""
    from matplotlib.figure import Figure

    n = min(128, before.shape[-2], before.shape[-1])
    cy, cx = before.shape[-2] // 2, before.shape[-1] // 2
    crop_b = before[cy - n // 2 : cy - n // 2 + n, cx - n // 2 : cx - n // 2 + n]
    crop_a = after[2 * (cy - n // 2) : 2 * (cy - n // 2 + n), 2 * (cx - n // 2) : 2 * (cx - n // 2 + n)]
    fig = Figure(figsize=(8, 4))
    for ax, img, title in zip(
        fig.subplots(1, 2), (crop_b, crop_a), (f"input, {px_before:.3f} Å/px", f"cryosr 2x, {px_after:.3f} Å/px")
    ):
        ax.imshow(img.cpu().numpy(), cmap="gray")
        ax.set_title(title)
        ax.set_axis_off()
    return fig


def _task(files: _Files, s: ExposureSource, config: PluginConfig, preview: Path | None) -> MovieTask:
    """The core's unit of work for one exposure (inputs fetched to a local path when needed)."""
    acq = Acquisition(pixel_size_a=s.pixel_size_a, dose_per_frame_e_a2=s.dose_per_frame, voltage_kv=s.voltage_kv)
    movie = files.fetch(s.path)
    task = MovieTask(
        movie_path=movie,
        out_path=files.out_path(output_name(s.uid, s.path)),
        acquisition=acq,
        lr_sum_path=preview,
        gain_path=files.fetch(s.gain_path),
        gain_rotate=s.gain_rotate,
        gain_flip=s.gain_flip,
        shifts_yx_px=_shifts(files, s, config.use_motion),
    )
    return _eer_task(task, s, config) if movie.suffix.lower() == ".eer" else task


def _eer_task(task: MovieTask, s: ExposureSource, config: PluginConfig) -> MovieTask:
    """An EER exposure: rendered on the dataset's grid (its psize_A), the dose per fraction, CryoSPARC's motion if it fits."""
    header = read_eer_header(task.movie_path)
    eer = eer_rendering(s, header.shape, header.n_frames, grouping=config.eer_grouping, upsampling=config.eer_upsampling)
    shifts = task.shifts_yx_px if task.shifts_yx_px is None or len(task.shifts_yx_px) == eer.n_fractions else None
    if shifts is None and task.shifts_yx_px is not None:
        logger.warning("%s: the trajectory has %d frames, the rendering %d fractions; estimating shifts",
                       s.path, len(task.shifts_yx_px), eer.n_fractions)  # fmt: skip
    acq = task.acquisition.with_dose(eer.dose_per_fraction)
    return dataclasses.replace(task, acquisition=acq, shifts_yx_px=shifts, eer_grouping=eer.grouping,
                               eer_upsampling=eer.upsampling)  # fmt: skip


def _run_parallel(tasks: list[MovieTask], todo: list[ExposureSource], config: PluginConfig) -> list[dict]:
    """``--workers N``: the exposures as Dask tasks through ``MovieRunner`` (each task has its own acquisition)."""
    with MovieRunner(device_spec=config.device, workers=config.workers, progress=False) as runner:
        records = runner.run(tasks, SuperresConfig(method=config.method), process_fn=process_superres)
    _raise_failures(todo, records)
    return records


def _raise_failures(todo: list[ExposureSource], records: list[dict]) -> None:
    """The partial-failure rule (docs/cryosparc.md): the others finish, then the job fails with a count."""
    failed = [(s, r) for s, r in zip(todo, records, strict=True) if "error" in r]
    if failed:
        s, r = failed[0]
        raise CryosrError(
            f"{len(failed)} of {len(todo)} exposures failed (finished files are kept for --resume); "
            f"first: exposure {s.uid}: {' '.join(str(r['error']).split())}"
        )


def _run_serial(job, files, todo: list[ExposureSource], config: PluginConfig, device, register) -> None:
    """One exposure at a time (inputs fetched, outputs published as we go); a bad exposure fails alone."""
    records: list[dict] = []
    for k, s in enumerate(todo):
        try:
            _process_one(files, register, config, device, k, s)
        except InputError as exc:
            job.log(f"[{k + 1}/{len(todo)}] exposure {s.uid} failed: {exc}", level="error")
            records.append({"error": f"InputError: {exc}"})
            continue
        records.append({})
    _raise_failures(todo, records)


class _Register:
    """Checks each written micrograph, logs the first one as a before/after image, publishes it."""

    def __init__(self, job, files: _Files, summary: RunSummary, n_todo: int) -> None:
        self.job, self.files, self.summary, self.n_todo = job, files, summary, n_todo
        self.plotted = False
        self.written: dict[int, SrMicrograph] = {}

    def __call__(self, k: int, s: ExposureSource, task: MovieTask, record: dict) -> None:
        name = task.out_path.name
        mic = read_micrograph(task.out_path)
        expected = (2 * s.shape_yx[0], 2 * s.shape_yx[1])
        if tuple(mic.data.shape) != expected:
            raise InputError(
                task.movie_path,
                f"exposure {s.uid}: output shape {tuple(mic.data.shape)}, expected {expected} "
                "(the file's shape does not match the dataset's)",
            )
        vmin, vmax = _display_range(mic.data)
        skipped = bool(record.get("skipped"))
        preview = task.lr_sum_path
        if not self.plotted and not skipped and (preview is not None or s.kind == "micrograph"):
            self.plotted = True
            before = read_micrograph(preview if preview is not None else task.movie_path).data
            fig = _preview_figure(before, mic.data, s.pixel_size_a, s.pixel_size_a / 2)
            self.job.log_plot(fig, f"{name}: input (left) and cryosr 2x (right), central crop", formats=["png"])
        self.files.publish(task.out_path, name)
        self.written[s.uid] = SrMicrograph(
            path=f"{self.job.uid}/{OUTPUT_DIR}/{name}",
            shape_yx=tuple(int(v) for v in mic.data.shape),
            pixel_size_a=s.pixel_size_a / 2,
            vmin=vmin,
            vmax=vmax,
        )
        self.summary.n_processed += 0 if skipped else 1
        self.summary.n_reused += 1 if skipped else 0
        self.job.log(f"[{k + 1}/{self.n_todo}] {name} ({'reused' if skipped else 'done'})", name="progress")


def _process_one(files: _Files, register: _Register, config: PluginConfig, device: torch.device, k: int,
                 s: ExposureSource) -> None:  # fmt: skip
    """Fetch, super-resolve, check and publish exposure ``k`` in this process (the first one is plotted)."""
    preview = files.scratch / "preview_lr.mrc" if not register.plotted and s.kind == "movie" else None
    task = _task(files, s, config, preview)
    register(k, s, task, process_superres(task, SuperresConfig(method=config.method), device=device))


def _output_rows(job, inp, written: dict[int, SrMicrograph]):
    """The ``micrographs`` output rows of the written micrographs (the rows of ``inp`` with their uids).

    Only completely written micrographs are in ``written``: a saved output never names a half-written file.
    """
    rows = inp.query({"uid": list(written)}) if len(written) != len(inp) else inp
    return fill_output(job.alloc_output(OUTPUT_NAME, rows), rows, written)


def _process(job, project, config: PluginConfig, device: torch.device, summary: RunSummary) -> None:
    inp = job.load_input(INPUT_NAME)
    sources = exposure_sources(inp, prefer=config.source)
    if config.limit is not None:
        sources = sources[: config.limit]
    px = check_exposures(sources)
    saved = _saved_micrographs(job) if config.resume_job_uid else {}
    todo = [s for s in sources if s.uid not in saved]
    summary.n_reused = len(sources) - len(todo)
    job.log(
        f"cryosr: {len(sources)} exposures at {px:.4f} Å/px -> {px / 2:.4f} Å/px ({config.method}, "
        f"from {sources[0].kind}s); {summary.n_reused} already saved, {len(todo)} to do; device {device}"
        + (f", {config.workers} workers" if config.workers > 1 else "")
    )
    with ExitStack() as stack:
        files = _Files(project, job, config, stack)
        summary.transfer = files.mode
        if config.workers > 1 and files.mode != "direct":
            raise InputError(
                files.project_dir, "--workers > 1 needs the project directory here (use --project-dir to say where)"
            )
        files.check_inputs(todo, config.use_motion)
        register = _Register(job, files, summary, len(todo))
        t0 = time.perf_counter()
        lr_sum = files.scratch / "preview_lr.mrc"  # the input side of the before/after image (movies)
        if config.workers == 1:
            _run_serial(job, files, todo, config, device, register)
        else:
            tasks = [_task(files, s, config, None) for s in todo]
            fresh = (k for k, (s, t) in enumerate(zip(todo, tasks)) if s.kind == "movie" and not t.out_path.exists())
            first = next(fresh, None)
            if first is not None:
                tasks[first] = dataclasses.replace(tasks[first], lr_sum_path=lr_sum)
            for k, (s, task, record) in enumerate(zip(todo, tasks, _run_parallel(tasks, todo, config), strict=True)):
                register(k, s, task, record)
        summary.seconds = time.perf_counter() - t0
    written = {s.uid: saved[s.uid] for s in sources if s.uid in saved} | register.written
    out = _output_rows(job, inp, written)
    job.save_output(OUTPUT_NAME, out)
    summary.n_exposures = len(out)
    job.log(
        f"cryosr: saved {summary.n_exposures} micrographs to output '{OUTPUT_NAME}' ({summary.n_processed} computed, "
        f"{summary.n_reused} reused) in {summary.seconds:.1f} s"
    )


def run(config: PluginConfig, *, cs=None) -> RunSummary:
    """Run the whole adapter; return a summary. Raises ``CryosrError`` subclasses with one-line messages."""
    device = resolve_device(config.device)
    notes: list[str] = []
    if cs is None:
        cs, notes = connect(config.url, email=config.email, password=config.password)
    project = _lookup(f"project {config.project_uid}", cs.find_project, config.project_uid)
    _lookup(f"workspace {config.project_uid}-{config.workspace_uid}", project.find_workspace, config.workspace_uid)
    results = _source_results(project, config)
    job = _open_job(project, config, results)
    summary = RunSummary(job_uid=job.uid, notes=notes)
    logger.info("External job %s-%s", config.project_uid, job.uid)
    with _running(job):
        for note in notes:
            job.log(note, level="warning")
        _process(job, project, config, device, summary)
    return summary


@contextmanager
def _running(job):
    """Like ``job.run()`` (running, then completed or failed) with a one-line reason for the failure.

    ``job.run()`` only catches ``Exception``: a Ctrl-C would mark the job *completed*. Here any
    exception, ``KeyboardInterrupt`` included, marks it failed; a ``CryosrError`` is reported by
    its one-line message, anything else by its traceback.
    """
    job.start("running")
    try:
        yield job
    except CryosrError as exc:
        job.log(f"cryosr failed: {exc}", level="error")
        job.stop(error=f"cryosr: {exc}")
        raise
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else traceback.format_exc()
        job.stop(error=f"cryosr: {reason}")
        raise
    else:
        job.stop()
