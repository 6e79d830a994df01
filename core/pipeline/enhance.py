"""Enhancement of one movie or micrograph file: read -> align -> enhance -> write atomically -> record.

The same pipeline as ``process_superres`` (same inputs, checks, resume rule and record), used by
``cryosr enhance``, the RELION adapter (``enhance yes``) and the CryoSPARC adapter. The network is
loaded once per process and device.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from cryosr.core.enhance.checkpoint import load_checkpoint
from cryosr.core.enhance.infer import EnhanceConfig, enhance_micrograph, enhance_movie
from cryosr.core.enhance.model import DSTNet
from cryosr.core.errors import InputError
from cryosr.core.pipeline.inputs import load_movie
from cryosr.core.pipeline.outputs import skip_if_done, write_output
from cryosr.core.pipeline.task import MovieTask

__all__ = ["EnhanceRun", "load_model", "process_enhance"]

#: Warn when the input pixel size is this factor outside the model's training range.
PIXEL_SIZE_TOLERANCE = 1.5


@dataclass(frozen=True)
class EnhanceRun:
    """What ``process_enhance`` needs besides the task (picklable, for Dask workers).

    Attributes
    ----------
    model : str
        ``default`` (shipped weights) or a ``.pt`` written by ``cryosr train``.
    enhance : EnhanceConfig
        Scale, tiling and noise estimate.
    shift_bfactor_a2 : float
        B-factor of the coarse shift search.
    """

    model: str = "default"
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)
    shift_bfactor_a2: float = 500.0


@functools.lru_cache(maxsize=4)
def _cached_model(model: str, device: str) -> tuple[DSTNet, dict]:
    return load_checkpoint(model, torch.device(device))


def load_model(run: EnhanceRun, device: torch.device) -> tuple[DSTNet, dict]:
    """The network of ``run`` on ``device`` (loaded once per process) and its JSON sidecar; checks its scales."""
    model, meta = _cached_model(run.model, str(device))
    if run.enhance.scale not in model.config.scales:
        raise InputError(Path(run.model) if run.model != "default" else None,
                         f"model has no {run.enhance.scale}x head (trained for {list(model.config.scales)})")  # fmt: skip
    return model, meta


def pixel_size_warning(pixel_size_a: float, meta: dict) -> str | None:
    """Why ``pixel_size_a`` is far outside the model's training range, or None."""
    rng = meta.get("training_pixel_size_a")
    if not rng:
        return None
    lo, hi = float(min(rng)), float(max(rng))
    if lo / PIXEL_SIZE_TOLERANCE <= pixel_size_a <= hi * PIXEL_SIZE_TOLERANCE:
        return None
    return f"pixel size {pixel_size_a:.3g} Å is far outside the model's training range {lo:.3g}-{hi:.3g} Å; results may be poor"


def process_enhance(
    task: MovieTask, run: EnhanceRun, *, device: torch.device, overwrite: bool = False, weights: dict | None = None
) -> dict:
    """Enhance one movie (or a one-frame micrograph) and write ``task.out_path``.

    Parameters
    ----------
    task : MovieTask
        Input, output and acquisition (an unknown dose is estimated from the counts).
    run : EnhanceRun
        Model and options.
    device : torch.device
        Compute device.
    overwrite : bool
        Recompute a finished output (otherwise it is skipped: resumable runs).
    weights : dict | None
        Unused (the batch runner's shared-weights slot).

    Returns
    -------
    record : dict
        Paths, pixel sizes, checks, info and seconds per stage.
    """
    scale = run.enhance.scale
    out_px = task.acquisition.pixel_size_a / scale
    done = skip_if_done(task, out_px, overwrite)
    if done is not None:
        return done
    model, _ = load_model(run, device)
    t0 = time.perf_counter()
    try:
        movie = load_movie(task, device)
        read_s = time.perf_counter() - t0
        if movie.frames.shape[0] == 1:
            result = enhance_micrograph(movie.frames[0], model, run.enhance)
        else:
            result = enhance_movie(movie.frames, model, run.enhance, movie.acq, shifts_yx_px=movie.shifts,
                                   shift_bfactor_a2=run.shift_bfactor_a2)  # fmt: skip
    except InputError as exc:
        raise (exc if exc.path is not None else InputError(task.movie_path, exc.problem)) from exc
    t0 = time.perf_counter()
    write_output(task.out_path, result.image, out_px)
    seconds = {"read": read_s, **result.seconds, "write": time.perf_counter() - t0}
    return {
        "movie": str(task.movie_path),
        "output": str(task.out_path),
        "pixel_size_a": task.acquisition.pixel_size_a,
        "output_pixel_size_a": out_px,
        "n_frames": int(movie.frames.shape[0]),
        "device": str(device),
        "method": "enhance",
        "config": {"model": run.model, **asdict(run.enhance)},
        "shifts_yx_px": None if result.shifts_yx_px is None else result.shifts_yx_px.cpu().tolist(),
        "checks": movie.checks,
        "seconds": seconds,
        "info": result.info,
        "skipped": False,
    }
