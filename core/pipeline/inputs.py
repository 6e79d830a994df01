"""The first stages of the movie pipeline: plan a task's acquisition, then read and check its movie.

One rule for every command and adapter:

- **Acquisition** (``plan_acquisition``): a value given explicitly (option, Params row, CryoSPARC
  field) wins over the motion STAR's, which wins over the file header's. A header pixel size more
  than 1 % off the one used is reported, naming both.
- **Shifts** (``match_motion``, ``motion_shifts``): RELION motion STARs are matched to movies by
  file name (``rlnMicrographMovieName``); shifts that do not cover exactly the movie's frames are
  not used (warning) and the movie is aligned instead.
- **Reading** (``load_movie``): gain, defects, frames left out, then the checks of
  ``cryosr.core.pipeline.checks``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cryosr.core.acquisition import DEFAULT_VOLTAGE_KV, Acquisition
from cryosr.core.errors import InputError
from cryosr.core.io import MovieHeader, RelionMotion, read_movie
from cryosr.core.pipeline.checks import (
    check_counts,
    check_dose,
    check_frame_totals,
    check_gain_on_float,
    check_pixel_size,
)
from cryosr.core.pipeline.task import MovieTask

logger = logging.getLogger(__name__)

__all__ = ["LoadedMovie", "load_movie", "match_motion", "motion_shifts", "parse_frame_list", "plan_acquisition"]


def plan_acquisition(
    header: MovieHeader,
    *,
    pixel_size_a: float | None = None,
    dose_per_frame_e_a2: float | None = None,
    pre_exposure_e_a2: float | None = None,
    voltage_kv: float | None = None,
    motion: RelionMotion | None = None,
    source: str = "option",
) -> Acquisition:
    """The movie's ``Acquisition``: explicit values, else the motion STAR's, else the header's.

    Parameters
    ----------
    header : MovieHeader
        The movie file's header (``cryosr.core.io.read_movie_header``).
    pixel_size_a, dose_per_frame_e_a2, pre_exposure_e_a2, voltage_kv : float | None
        Values given explicitly (None: not given).
    motion : RelionMotion | None
        The movie's RELION motion STAR, if any.
    source : str
        What the explicit values are called in messages (``--pixel-size``, ``micrographs STAR``, ...).

    Raises
    ------
    InputError
        No pixel size anywhere (naming the movie).
    """
    pixel, pixel_from = pixel_size_a, source
    if pixel is None and motion is not None and motion.pixel_size_a:
        pixel, pixel_from = motion.pixel_size_a, f"motion STAR {Path(motion.path).name}"
    if pixel is not None:  # given for the file: an EER movie's physical pixel, its frames are on a finer grid
        pixel = pixel / header.grid_upsampling
    if pixel is None:
        pixel, pixel_from = header.pixel_size_a, "header"
    if not pixel:
        raise InputError(header.path, "no pixel size in the header; give it explicitly (--pixel-size)")
    if pixel_from != "header":
        check_pixel_size(header.path, float(pixel), header.pixel_size_a, pixel_from)
    m = motion
    try:
        return Acquisition(
            pixel_size_a=float(pixel),
            dose_per_frame_e_a2=dose_per_frame_e_a2 if dose_per_frame_e_a2 is not None else (m.dose_per_frame if m else None),
            pre_exposure_e_a2=pre_exposure_e_a2 if pre_exposure_e_a2 is not None else (m.pre_exposure if m else 0.0),
            voltage_kv=voltage_kv if voltage_kv is not None else ((m.voltage_kv if m else None) or DEFAULT_VOLTAGE_KV),
        )
    except InputError as exc:
        raise InputError(header.path, exc.problem) from exc


def match_motion(movie: Path, motions: Sequence[RelionMotion]) -> RelionMotion | None:
    """The motion STAR of ``movie`` among ``motions`` (by file name), None when none was given.

    Raises
    ------
    InputError
        Motion STARs were given but none is for this movie.
    """
    if not motions:
        return None
    for motion in motions:
        if motion.matches_movie(movie):
            return motion
    if len(motions) == 1:
        raise InputError(Path(motions[0].path), f"shifts are for {motions[0].movie_name}, not for {movie.name}")
    raise InputError(movie, "none of the --shifts files is for this movie")


def motion_shifts(motion: RelionMotion | None, n_frames: int, eer_upsampling: int = 1) -> tuple | None:
    """The motion STAR's shifts as a task's ``shifts_yx_px``, or None (align) when they do not cover the movie.

    ``eer_upsampling``: the grid the movie is rendered on (RELION's EER shifts are on its own grid).
    """
    if motion is None:
        return None
    shifts = tuple(map(tuple, motion.shifts_for_eer_upsampling(eer_upsampling).tolist()))
    if motion.start_frame != 1 or len(shifts) != n_frames:
        last = motion.start_frame + len(shifts) - 1
        logger.warning("%s: shifts cover frames %d-%d of a %d-frame movie; aligning the movie instead",
                       motion.path, motion.start_frame, last, n_frames)  # fmt: skip
        return None
    return shifts


def parse_frame_list(text: str | None) -> tuple[int, ...]:
    """``"1,2,40"`` or ``"1-3,40"`` (1-based, RELION's frame numbers) -> sorted 0-based frame indices."""
    if not text:
        return ()
    frames: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or int(m.group(1)) < 1 or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise InputError(None, f"--exclude-frames {text!r}: expected 1-based frame numbers such as 1,2,40 or 1-3")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        frames.update(range(first - 1, last))
    return tuple(sorted(frames))


@dataclass
class LoadedMovie:
    """A movie read and checked, ready for the numerics.

    Attributes
    ----------
    frames : torch.Tensor
        `(t, h, w)` gain-corrected frames on the compute device (excluded frames removed).
    acq : Acquisition
        The task's acquisition (with ``frame_numbers`` when frames were left out).
    shifts : torch.Tensor | None
        `(t, 2)` given shifts of the kept frames, or None (to be estimated).
    header_pixel_size_a : float | None
        Pixel size in the file header.
    checks : dict
        What the checks found (dose from the counts, outlier frames, ...), for the record.
    """

    frames: torch.Tensor
    acq: Acquisition
    shifts: torch.Tensor | None
    header_pixel_size_a: float | None
    checks: dict = field(default_factory=dict)


def _exclude(task: MovieTask, frames: torch.Tensor, acq: Acquisition, shifts: torch.Tensor | None):
    t = frames.shape[0]
    bad = [i + 1 for i in task.exclude_frames if i >= t]
    if bad:
        raise InputError(task.movie_path, f"--exclude-frames {bad} beyond the movie's {t} frames")
    keep = torch.tensor([i for i in range(t) if i not in set(task.exclude_frames)], device=frames.device)
    if keep.numel() == 0:
        raise InputError(task.movie_path, "--exclude-frames leaves no frame")
    acq = acq.without_frames(set(task.exclude_frames), t)
    return frames[keep], acq, None if shifts is None else shifts[keep]


def load_movie(task: MovieTask, device: torch.device) -> LoadedMovie:
    """Read the task's movie (gain-corrected, frames left out) onto ``device`` and check it.

    Raises
    ------
    InputError
        Unreadable file, NaN frames, an empty or dead exposure, shifts for another frame count.
    """
    movie = read_movie(task.movie_path, **task.read_options)
    frames = movie.frames.to(device)
    check_counts(frames, task.movie_path)
    shifts = None
    if task.shifts_yx_px is not None:
        shifts = torch.tensor(task.shifts_yx_px, dtype=frames.dtype, device=device)
        if tuple(shifts.shape) != (movie.n_frames, 2):
            raise InputError(task.movie_path, f"{shifts.shape[0]} shifts given for {movie.n_frames} frames")
    acq = task.acquisition
    checks: dict = {}
    if task.exclude_frames:
        frames, acq, shifts = _exclude(task, frames, acq, shifts)
        checks["excluded_frames"] = [i + 1 for i in task.exclude_frames]
    outliers = check_frame_totals(frames, task.movie_path)
    if outliers:
        checks["frame_total_outliers"] = outliers
    dose = check_dose(frames, acq, task.movie_path, integer_counts=movie.integer_counts)
    if dose is not None:
        checks["dose"] = dose
    if check_gain_on_float(task.movie_path, integer_counts=movie.integer_counts, gain_given=task.gain_path is not None):
        checks["gain_on_non_integer_movie"] = True
    if frames.shape[0] == 1:
        logger.warning(
            "%s has a single frame: only interpolation is possible; no information beyond the input "
            "Nyquist frequency can be recovered from one image", task.movie_path,
        )  # fmt: skip
    return LoadedMovie(frames, acq, shifts, movie.pixel_size_a, checks)
