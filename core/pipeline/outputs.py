"""The last stages of the movie pipeline: when an output counts as done, writing it, and its record."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from cryosr.core.errors import InputError
from cryosr.core.io import read_mrc_header, write_mrc
from cryosr.core.pipeline.task import MovieTask

logger = logging.getLogger(__name__)

__all__ = ["output_complete", "skip_if_done", "write_output"]


def output_complete(path: Path, pixel_size_a: float) -> bool:
    """Whether ``path`` is a finished output: a readable float32 MRC with the expected pixel size.

    The one resume rule of every command and adapter: outputs are written atomically (temp file +
    rename), so a file with the right header is complete; anything else is recomputed.
    """
    if not path.exists():
        return False
    try:
        header = read_mrc_header(path)
    except InputError:
        return False
    px = header["pixel_size_a"]
    return px is not None and abs(px - pixel_size_a) <= 1e-3 * pixel_size_a and header["mode"] == 2


def skip_if_done(task: MovieTask, out_pixel_size_a: float, overwrite: bool) -> dict | None:
    """The record of a task whose output is finished already (None: compute it)."""
    if overwrite:
        return None
    if output_complete(task.out_path, out_pixel_size_a):
        logger.info("%s exists, skipping", task.out_path)
        return {"movie": str(task.movie_path), "output": str(task.out_path), "skipped": True}
    if task.out_path.exists():
        logger.warning("%s is incomplete or has another pixel size; recomputing it", task.out_path)
    return None


def write_output(path: Path, image: torch.Tensor, pixel_size_a: float) -> None:
    """Write one output micrograph atomically (float32 MRC, replacing an earlier one)."""
    write_mrc(path, image, pixel_size_a, overwrite=True)
