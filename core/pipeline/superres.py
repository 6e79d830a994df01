"""Super-resolution of one movie file -> output MRCs (the file-level stage shared by the CLI and adapters).

Resumable: a movie whose output exists already is skipped. Outputs are written atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace

import torch

from cryosr.core.errors import InputError
from cryosr.core.io import read_movie, write_mrc
from cryosr.core.pipeline.task import MovieTask
from cryosr.core.superres.reconstruct import SuperresConfig, run_superres

logger = logging.getLogger(__name__)

__all__ = ["process_superres", "train_zssr_dataset"]


def process_superres(
    task: MovieTask,
    config: SuperresConfig,
    *,
    device: torch.device,
    overwrite: bool = False,
    weights: dict | None = None,
    callback: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Super-resolve one movie file and write its outputs.

    Parameters
    ----------
    task : MovieTask
        Input and output paths and acquisition parameters.
    config : SuperresConfig
        Method options.
    device : torch.device
        Compute device.
    overwrite : bool
        Recompute even when the output exists (otherwise it is skipped: resumable runs).
    weights : dict | None
        zssr start weights (dataset mode).
    callback : Callable[[str, int, int], None] | None
        Progress of long stages, ``callback(stage, step, total)`` (see ``run_superres``).

    Returns
    -------
    record : dict
        JSON-serialisable summary: paths, pixel sizes, method, shifts, seconds per stage.
    """
    if task.out_path.exists() and not overwrite:
        logger.info("%s exists, skipping", task.out_path)
        return {"movie": str(task.movie_path), "output": str(task.out_path), "skipped": True}
    t0 = time.perf_counter()
    movie = read_movie(task.movie_path, **task.read_options)
    seconds = {"read": time.perf_counter() - t0}
    pixel_size_a = task.frame_pixel_size_a or movie.pixel_size_a
    if pixel_size_a is None:
        raise InputError(task.movie_path, "pixel size missing from the header; give it explicitly")
    frames = movie.frames.to(device)
    if not torch.isfinite(frames).all():
        raise InputError(task.movie_path, "the movie contains NaN or infinite values")
    if movie.n_frames == 1:
        logger.warning(
            "%s has a single frame: only interpolation is possible; no information beyond the input "
            "Nyquist frequency can be recovered from one image",
            task.movie_path,
        )
    elif task.dose_per_frame is None:
        raise InputError(task.movie_path, "dose per frame is unknown; give it explicitly")
    shifts = None
    if task.shifts_yx_px is not None:
        shifts = torch.tensor(task.shifts_yx_px, dtype=frames.dtype, device=device)
        if tuple(shifts.shape) != (movie.n_frames, 2):
            raise InputError(task.movie_path, f"{shifts.shape[0]} shifts given for {movie.n_frames} frames")
    try:
        result = run_superres(
            frames,
            pixel_size_a=pixel_size_a,
            dose_per_frame=task.dose_per_frame or 1.0,
            config=config,
            shifts_yx_px=shifts,
            weights=weights,
            callback=callback,
        )
    except InputError as exc:
        if exc.path is None:
            raise InputError(task.movie_path, exc.problem) from exc
        raise
    seconds.update(result.seconds)
    t0 = time.perf_counter()
    out_px = pixel_size_a / config.scale
    if task.lr_sum_path is not None:
        write_mrc(task.lr_sum_path, result.lr_sum, pixel_size_a, overwrite=True)
    write_mrc(task.out_path, result.image, out_px, overwrite=True)
    seconds["write"] = time.perf_counter() - t0
    return {
        "movie": str(task.movie_path),
        "output": str(task.out_path),
        "lr_sum": None if task.lr_sum_path is None else str(task.lr_sum_path),
        "pixel_size_a": pixel_size_a,
        "output_pixel_size_a": out_px,
        "n_frames": movie.n_frames,
        "device": str(device),
        "config": asdict(config),
        "shifts_yx_px": result.shifts_yx_px.cpu().tolist(),
        "seconds": seconds,
        "info": result.info,
        "skipped": False,
    }


def train_zssr_dataset(tasks: list[MovieTask], config: SuperresConfig, *, device: torch.device) -> tuple[dict, list[dict]]:
    """Train the zssr network once over a few movies (each fine-tunes the previous weights).

    Parameters
    ----------
    tasks : list[MovieTask]
        The training movies (their outputs are not written).
    config : SuperresConfig
        Options; ``method`` must be ``zssr``.
    device : torch.device
        Compute device.

    Returns
    -------
    weights : dict
        State dict to start every movie's short fine-tune from.
    records : list[dict]
        Per training movie: seconds and losses.
    """
    if config.method != "zssr":
        raise InputError(None, "--mode dataset needs --method zssr")
    config = replace(config, zssr_select=False)  # one movie's held-out strip must not reset the shared network
    weights = None
    records = []
    for task in tasks:
        movie = read_movie(task.movie_path, **task.read_options)
        pixel_size_a = task.frame_pixel_size_a or movie.pixel_size_a
        if pixel_size_a is None:
            raise InputError(task.movie_path, "pixel size missing from the header; give it explicitly")
        if task.dose_per_frame is None:
            raise InputError(task.movie_path, "dose per frame is unknown; give it explicitly")
        shifts = None if task.shifts_yx_px is None else torch.tensor(task.shifts_yx_px, dtype=torch.float32, device=device)
        try:
            result = run_superres(
                movie.frames.to(device), pixel_size_a=pixel_size_a, dose_per_frame=task.dose_per_frame,
                config=config, shifts_yx_px=shifts, weights=weights,
            )
        except InputError as exc:
            if exc.path is None:
                raise InputError(task.movie_path, exc.problem) from exc
            raise
        weights = result.weights
        records.append({"movie": str(task.movie_path), "seconds": result.seconds, "info": result.info})
    if weights is None:
        raise InputError(None, "--mode dataset: no training movies")
    return weights, records
