"""One unit of work of the movie pipeline: a movie, its acquisition and where its outputs go."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryosr.core.acquisition import Acquisition

__all__ = ["MovieTask"]


@dataclass(frozen=True)
class MovieTask:
    """One movie (or a single micrograph) and where its outputs go.

    Attributes
    ----------
    movie_path : Path
        Input movie (``.mrcs``/``.mrc``/``.tif``/``.eer``) or a single-frame micrograph.
    out_path : Path
        The micrograph to write (super-resolved or enhanced).
    acquisition : Acquisition
        Pixel size, dose per frame, pre-exposure and voltage, filled once by whoever planned the
        task (header, STAR file or command line; ``cryosr.core.pipeline.inputs.plan_acquisition``).
    lr_sum_path : Path | None
        Where to write the aligned dose-weighted sum at the input pixel (None: don't).
    gain_path : Path | None
        Gain reference, with RELION-style ``gain_rotate``/``gain_flip``.
    shifts_yx_px : tuple | None
        Known per-frame shifts in input pixels for every frame of the file, ``((y0, x0), ...)``.
    exclude_frames : tuple[int, ...]
        0-based frames left out (``--exclude-frames``; their exposure still counts for the later frames).
    eer_grouping, eer_upsampling : int
        EER movies only: detector frames per fraction (0: RELION's default, 40) and rendering grid
        (1 physical, 2 the 2x grid; ``acquisition`` then holds the rendered pixel and the dose per
        fraction); see ``cryosr.core.io.read_movie``.
    extra : dict
        Adapter-specific values travelling with the task (not compared).
    """

    movie_path: Path
    out_path: Path
    acquisition: Acquisition
    lr_sum_path: Path | None = None
    gain_path: Path | None = None
    gain_rotate: int = 0
    gain_flip: int = 0
    shifts_yx_px: tuple | None = None
    exclude_frames: tuple[int, ...] = ()
    eer_grouping: int = 0
    eer_upsampling: int = 1
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def read_options(self) -> dict:
        """Keywords of ``cryosr.core.io.read_movie`` for this task's movie (gain, its orientation, EER rendering)."""
        return {"gain": self.gain_path, "gain_rotate": self.gain_rotate, "gain_flip": self.gain_flip,
                "eer_grouping": self.eer_grouping, "eer_upsampling": self.eer_upsampling}  # fmt: skip

    @property
    def header_options(self) -> dict:
        """Keywords of ``cryosr.core.io.read_movie_header`` for this task's movie (the EER rendering)."""
        return {"eer_grouping": self.eer_grouping, "eer_upsampling": self.eer_upsampling}

    @property
    def input_paths(self) -> tuple[Path, ...]:
        """The files this task reads: the movie and its gain reference."""
        return (self.movie_path,) + (() if self.gain_path is None else (self.gain_path,))

    @property
    def output_paths(self) -> tuple[Path, ...]:
        """The files this task writes."""
        return (self.out_path,) + (() if self.lr_sum_path is None else (self.lr_sum_path,))
