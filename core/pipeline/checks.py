"""Checks that a readable movie describes a coherent acquisition (docs/inputs.md, "Checks on inputs").

Each check names the file and the numbers. Errors (``InputError``) fail that movie only; in a
batch the other movies complete and the summary counts the failures.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "DOSE_RATIO_TOLERANCE",
    "FRAME_TOTAL_RANGE",
    "PIXEL_SIZE_TOLERANCE",
    "check_counts",
    "check_dose",
    "check_frame_totals",
    "check_gain_on_float",
    "check_pixel_size",
]

#: A stated dose and the dose the counts imply may differ by this factor (coincidence loss, DQE, a
#: gain normalised to another mean) before dose weighting is called wrong (docs/inputs.md).
DOSE_RATIO_TOLERANCE = 1.5
#: A frame whose total counts lie outside this range around the median frame is reported.
FRAME_TOTAL_RANGE = (0.2, 5.0)
#: Relative difference between the header's pixel size and the one used that is reported.
PIXEL_SIZE_TOLERANCE = 0.01
#: Mean counts per pixel per frame below which an exposure counts as empty (no electrons).
EMPTY_COUNTS_PER_PIXEL = 1e-4


def check_counts(frames: torch.Tensor, path: Path) -> None:
    """Refuse an empty (no counts) or dead (one constant value) exposure."""
    mean = float(frames.mean(dtype=torch.float64))
    if not abs(mean) > EMPTY_COUNTS_PER_PIXEL:
        raise InputError(path, f"no counts: mean {mean:.3g} per pixel per frame (a blank exposure or a camera dropout)")
    lo, hi = float(frames.min()), float(frames.max())
    if lo == hi:
        raise InputError(path, f"every pixel of every frame is {lo:g}: a dead exposure")


def check_frame_totals(frames: torch.Tensor, path: Path) -> list[dict]:
    """Warn about frames whose total counts are far from the median frame's (e.g. a dropped frame).

    Returns
    -------
    outliers : list[dict]
        ``{"frame": 1-based number, "ratio": total / median}`` of every outlier.
    """
    if frames.shape[0] < 3:
        return []
    totals = frames.sum(dim=(-2, -1), dtype=torch.float64)
    median = float(totals.median())
    if not median > 0:
        return []
    lo, hi = FRAME_TOTAL_RANGE
    ratios = totals / median
    outliers = [{"frame": i + 1, "ratio": round(float(r), 3)} for i, r in enumerate(ratios) if not lo <= r <= hi]
    if outliers:
        listed = ", ".join(f"frame {o['frame']} ({o['ratio']:g}x)" for o in outliers[:8])
        logger.warning(
            "%s: %d frame(s) with total counts outside %g-%gx the median frame: %s; leave them out with "
            "--exclude-frames", path, len(outliers), lo, hi, listed,
        )  # fmt: skip
    return outliers


def check_dose(frames: torch.Tensor, acq: Acquisition, path: Path, *, integer_counts: bool) -> dict | None:
    """Compare the stated dose per frame with the one the counts imply (counting movies only).

    For a gain-corrected counting movie every count is an electron, so the mean counts per pixel
    per frame over the pixel area is the dose per frame in e/Å².

    Returns
    -------
    record : dict | None
        ``{"stated_e_a2", "from_counts_e_a2", "ratio"}``, or None when there is nothing to compare
        (no stated dose, or not integer counts).
    """
    if not integer_counts or not acq.dose_known:
        return None
    implied = float(frames.mean(dtype=torch.float64)) / acq.pixel_size_a**2
    stated = float(acq.dose_per_frame_e_a2)
    ratio = implied / stated
    record = {"stated_e_a2": stated, "from_counts_e_a2": round(implied, 4), "ratio": round(ratio, 3)}
    if not 1 / DOSE_RATIO_TOLERANCE <= ratio <= DOSE_RATIO_TOLERANCE:
        logger.warning(
            "%s: the counts imply %.3g e/Å² per frame (%.3g counts per %.3g Å pixel), but %.3g e/Å² was given: "
            "the dose weighting will be wrong unless the given dose is right and the movie is not in counts",
            path, implied, implied * acq.pixel_size_a**2, acq.pixel_size_a, stated,
        )  # fmt: skip
    return record


def check_gain_on_float(path: Path, *, integer_counts: bool, gain_given: bool) -> bool:
    """Warn when a gain is applied to a movie whose values are not integer counts (gain-normalised already?).

    Returns whether the warning was given.
    """
    if integer_counts or not gain_given:
        return False
    logger.warning(
        "%s: the movie holds non-integer values, which a gain-normalised movie does, and a gain reference was "
        "given too: the gain may be applied twice (leave out --gain for gain-normalised movies)", path,
    )  # fmt: skip
    return True


def check_pixel_size(path: Path, used_a: float, header_a: float | None, source: str) -> None:
    """Say which pixel size is used when the header's differs from it by more than ``PIXEL_SIZE_TOLERANCE``."""
    if header_a is None or header_a <= 0:
        return
    if abs(header_a - used_a) > PIXEL_SIZE_TOLERANCE * used_a:
        logger.warning("%s: header pixel size %.4g Å differs from the %s's %.4g Å by %.1f %%; using %.4g Å (%s)",
                       path, header_a, source, used_a, 100 * abs(header_a - used_a) / used_a, used_a, source)  # fmt: skip
