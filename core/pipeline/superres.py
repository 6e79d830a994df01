"""Super-resolution of one movie file: read -> align -> reconstruct -> write atomically -> record.

Resumable: a movie whose output is finished (``output_complete``) is skipped.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path

import torch

from cryosr.core.errors import InputError
from cryosr.core.pipeline.inputs import load_movie
from cryosr.core.pipeline.outputs import skip_if_done, write_output
from cryosr.core.pipeline.task import MovieTask
from cryosr.core.superres.reconstruct import SuperresConfig, run_superres
from cryosr.core.superres.zssr import ZssrConfig, ZssrNet

__all__ = ["default_zssr_weights_path", "load_zssr_weights", "process_superres", "train_zssr_dataset"]


def default_zssr_weights_path() -> Path:
    """The shipped pretrained zssr weights (``cryosr.core.data/zssr_default.pt``)."""
    return Path(str(resources.files("cryosr.core.data").joinpath("zssr_default.pt")))


@functools.lru_cache(maxsize=4)
def load_zssr_weights(init: str) -> dict | None:
    """zssr start weights of ``SuperresConfig.init``: ``none`` -> None, ``default`` -> shipped, else a file."""
    if init == "none":
        return None
    path = default_zssr_weights_path() if init == "default" else Path(init)
    if not path.exists():
        raise InputError(path, "zssr weights not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(path, f"not a readable weights file ({type(exc).__name__})") from exc
    zcfg = ZssrConfig()
    try:
        ZssrNet(zcfg.in_channels, zcfg.features, zcfg.depth).load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise InputError(path, "weights do not fit the zssr network") from exc
    return state


def _named(task: MovieTask, exc: InputError) -> InputError:
    return exc if exc.path is not None else InputError(task.movie_path, exc.problem)


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
        Input and output paths and the acquisition.
    config : SuperresConfig
        Method options.
    device : torch.device
        Compute device.
    overwrite : bool
        Recompute even when the output is finished (otherwise it is skipped: resumable runs).
    weights : dict | None
        zssr start weights (dataset mode); None: ``config.init``.
    callback : Callable[[str, int, int], None] | None
        Progress of long stages, ``callback(stage, step, total)`` (see ``run_superres``).

    Returns
    -------
    record : dict
        JSON-serialisable summary: paths, pixel sizes, method, shifts, checks, seconds per stage.
    """
    out_px = task.acquisition.pixel_size_a / config.scale
    done = skip_if_done(task, out_px, overwrite)
    if done is not None:
        return done
    t0 = time.perf_counter()
    try:
        movie = load_movie(task, device)
        seconds = {"read": time.perf_counter() - t0}
        if movie.frames.shape[0] > 1 and not movie.acq.dose_known:
            raise InputError(task.movie_path, "dose per frame is unknown; give it explicitly (--dose-per-frame)")
        start = weights if weights is not None or config.method != "zssr" else load_zssr_weights(config.init)
        result = run_superres(movie.frames, movie.acq, config=config, shifts_yx_px=movie.shifts, weights=start,
                              callback=callback)  # fmt: skip
    except InputError as exc:
        raise _named(task, exc) from exc
    seconds.update(result.seconds)
    t0 = time.perf_counter()
    if task.lr_sum_path is not None:
        write_output(task.lr_sum_path, result.lr_sum, task.acquisition.pixel_size_a)
    write_output(task.out_path, result.image, out_px)
    seconds["write"] = time.perf_counter() - t0
    return {
        "movie": str(task.movie_path),
        "output": str(task.out_path),
        "lr_sum": None if task.lr_sum_path is None else str(task.lr_sum_path),
        "pixel_size_a": task.acquisition.pixel_size_a,
        "output_pixel_size_a": out_px,
        "n_frames": int(movie.frames.shape[0]),
        "device": str(device),
        "config": asdict(config),
        "shifts_yx_px": result.shifts_yx_px.cpu().tolist(),
        "checks": movie.checks,
        "seconds": seconds,
        "info": result.info,
        "skipped": False,
    }


def train_zssr_dataset(tasks: list[MovieTask], config: SuperresConfig, *, device: torch.device) -> tuple[dict, list[dict]]:
    """Experimental zssr dataset mode: train once over a few movies (each fine-tunes the previous weights).

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
    weights = load_zssr_weights(config.init)
    records = []
    for task in tasks:
        try:
            movie = load_movie(task, device)
            result = run_superres(movie.frames, movie.acq, config=config, shifts_yx_px=movie.shifts, weights=weights)
        except InputError as exc:
            raise _named(task, exc) from exc
        weights = result.weights
        records.append({"movie": str(task.movie_path), "seconds": result.seconds, "info": result.info})
    if weights is None:
        raise InputError(None, "--mode dataset: no training movies")
    return weights, records
