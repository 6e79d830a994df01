"""One unit of work of the movie pipeline: a movie, its acquisition parameters and where its outputs go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MovieTask"]


@dataclass(frozen=True)
class MovieTask:
    """One unit of work: a movie (or a single micrograph) and where its outputs go.

    Attributes
    ----------
    movie_path : Path
        Input movie (``.mrcs``/``.mrc``/``.tif``) or a single-frame micrograph.
    out_path : Path
        Super-resolved micrograph to write.
    lr_sum_path : Path | None
        Where to write the aligned dose-weighted sum at the input pixel (None: don't).
    pixel_size_a : float | None
        Input pixel size in Å (None: from the file header).
    dose_per_frame : float | None
        e/Å² per frame (required for movies).
    gain_path : Path | None
        Gain reference, with RELION-style ``gain_rotate``/``gain_flip``.
    shifts_yx_px : tuple | None
        Known per-frame shifts in input pixels, ``((y0, x0), (y1, x1), ...)``.
    """

    movie_path: Path
    out_path: Path
    lr_sum_path: Path | None = None
    pixel_size_a: float | None = None
    dose_per_frame: float | None = None
    gain_path: Path | None = None
    gain_rotate: int = 0
    gain_flip: int = 0
    shifts_yx_px: tuple | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def input_paths(self) -> tuple[Path, ...]:
        """The files this task reads: the movie and its gain reference."""
        return (self.movie_path,) + (() if self.gain_path is None else (self.gain_path,))

    @property
    def output_paths(self) -> tuple[Path, ...]:
        """The files this task writes."""
        return (self.out_path,) + (() if self.lr_sum_path is None else (self.lr_sum_path,))
