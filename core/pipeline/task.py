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
        Input pixel size in Å (None: from the file header); for EER the physical pixel (as RELION's
        ``rlnMicrographOriginalPixelSize``), see ``frame_pixel_size_a``.
    dose_per_frame : float | None
        e/Å² per frame (required for movies); for EER per rendered fraction (RELION's convention).
    gain_path : Path | None
        Gain reference, with RELION-style ``gain_rotate``/``gain_flip``.
    shifts_yx_px : tuple | None
        Known per-frame shifts in input pixels, ``((y0, x0), (y1, x1), ...)``.
    eer_grouping, eer_upsampling : int
        EER movies only: detector frames per fraction (0: RELION's default) and rendering grid
        (1 physical, 2 the 2x grid); see ``cryosr.core.io.read_movie``.
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
    eer_grouping: int = 0
    eer_upsampling: int = 1
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def frame_pixel_size_a(self) -> float | None:
        """``pixel_size_a`` on the grid of the frames as read: an EER movie at ``eer_upsampling`` 2 has half the pixel."""
        if self.pixel_size_a is None or self.movie_path.suffix.lower() != ".eer":
            return self.pixel_size_a
        return self.pixel_size_a / self.eer_upsampling

    @property
    def read_options(self) -> dict:
        """Keywords of ``cryosr.core.io.read_movie`` for this task's movie (gain, its orientation, EER rendering)."""
        return {"gain": self.gain_path, "gain_rotate": self.gain_rotate, "gain_flip": self.gain_flip,
                "eer_grouping": self.eer_grouping, "eer_upsampling": self.eer_upsampling}  # fmt: skip

    @property
    def input_paths(self) -> tuple[Path, ...]:
        """The files this task reads: the movie and its gain reference."""
        return (self.movie_path,) + (() if self.gain_path is None else (self.gain_path,))

    @property
    def output_paths(self) -> tuple[Path, ...]:
        """The files this task writes."""
        return (self.out_path,) + (() if self.lr_sum_path is None else (self.lr_sum_path,))
