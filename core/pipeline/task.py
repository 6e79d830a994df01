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
        Input movie (``.mrcs``/``.mrc``/``.tif``) or a single-frame micrograph.
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
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def input_paths(self) -> tuple[Path, ...]:
        """The files this task reads: the movie and its gain reference."""
        return (self.movie_path,) + (() if self.gain_path is None else (self.gain_path,))

    @property
    def output_paths(self) -> tuple[Path, ...]:
        """The files this task writes."""
        return (self.out_path,) + (() if self.lr_sum_path is None else (self.lr_sum_path,))
