"""The acquisition parameters of a movie, filled once (from the header, a STAR file or the command line).

One frozen ``Acquisition`` travels through alignment, dose weighting, super-resolution and
enhancement instead of four loose numbers. Units are in the field names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from cryosr.core.errors import InputError

__all__ = ["DEFAULT_VOLTAGE_KV", "Acquisition"]

#: Acceleration voltage assumed when no header, STAR file or option gives one.
DEFAULT_VOLTAGE_KV = 300.0


@dataclass(frozen=True)
class Acquisition:
    """How a movie was recorded.

    Attributes
    ----------
    pixel_size_a : float
        Pixel size of the frames in Å.
    dose_per_frame_e_a2 : float | None
        Exposure per frame in e/Å²; None when unknown (a single micrograph, or to be estimated
        from the counts).
    pre_exposure_e_a2 : float
        Exposure before the first frame in e/Å².
    voltage_kv : float
        Acceleration voltage in kV.
    frame_numbers : tuple[int, ...] | None
        0-based positions in the exposure of the frames processed, when frames were left out
        (``--exclude-frames``): frame ``i`` received the dose of interval ``frame_numbers[i]``.
        None: the frames are ``0 .. t-1``.
    """

    pixel_size_a: float
    dose_per_frame_e_a2: float | None = None
    pre_exposure_e_a2: float = 0.0
    voltage_kv: float = DEFAULT_VOLTAGE_KV
    frame_numbers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.pixel_size_a, (int, float)) and math.isfinite(self.pixel_size_a) and self.pixel_size_a > 0):
            raise InputError(None, f"pixel size {self.pixel_size_a} Å is not valid (must be positive)")
        dose = self.dose_per_frame_e_a2
        if dose is not None and not (math.isfinite(dose) and dose > 0):
            raise InputError(None, f"dose per frame {dose} e/Å² is not valid (must be positive)")
        if not (math.isfinite(self.pre_exposure_e_a2) and self.pre_exposure_e_a2 >= 0):
            raise InputError(None, f"pre-exposure {self.pre_exposure_e_a2} e/Å² is not valid (must be >= 0)")
        if not (math.isfinite(self.voltage_kv) and self.voltage_kv > 0):
            raise InputError(None, f"voltage {self.voltage_kv} kV is not valid (must be positive)")
        if self.frame_numbers is not None:
            numbers = tuple(int(i) for i in self.frame_numbers)
            if any(i < 0 for i in numbers) or any(b <= a for a, b in zip(numbers, numbers[1:])):
                raise InputError(None, f"frame numbers {numbers} must be increasing and >= 0")
            object.__setattr__(self, "frame_numbers", numbers)

    @property
    def dose_known(self) -> bool:
        """Whether the exposure per frame is known (needed for dose weighting)."""
        return self.dose_per_frame_e_a2 is not None

    def total_dose_e_a2(self, n_frames: int) -> float | None:
        """Exposure of ``n_frames`` frames (pre-exposure not included), or None when the dose is unknown."""
        return None if self.dose_per_frame_e_a2 is None else self.dose_per_frame_e_a2 * n_frames

    def with_dose(self, dose_per_frame_e_a2: float | None) -> Acquisition:
        """A copy with another exposure per frame."""
        return replace(self, dose_per_frame_e_a2=dose_per_frame_e_a2)

    def without_frames(self, excluded: set[int], n_frames: int) -> Acquisition:
        """The acquisition of the ``n_frames`` movie after leaving out the 0-based frames ``excluded``."""
        positions = self.frame_numbers or tuple(range(n_frames))
        kept = tuple(p for i, p in enumerate(positions) if i not in excluded)
        return replace(self, frame_numbers=kept)

    def binned(self, factor: float) -> Acquisition:
        """The same acquisition seen on a grid ``factor`` times coarser (``factor`` 0.5: the 2x grid)."""
        return replace(self, pixel_size_a=self.pixel_size_a * factor)
