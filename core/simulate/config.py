"""The frozen configuration of a simulation run (mirrors ``cryosr simulate`` options)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cryosr.core.errors import InputError

__all__ = ["LR_OPERATORS", "MOTION_MODELS", "MOVIE_FORMATS", "SimulationConfig"]

MOTION_MODELS = ("none", "drift", "relion-like")
LR_OPERATORS = ("box", "fourier")
#: File formats of the LR movie (``Movies/``): float MRC stack, integer LZW TIFF, electron events.
MOVIE_FORMATS = ("mrc", "tiff", "eer")


@dataclass(frozen=True)
class SimulationConfig:
    """Every physical and numerical parameter of a synthetic movie (units in the names).

    Attributes
    ----------
    size : int
        LR movie size in pixels (square, even).
    pixel_size_a : float
        LR pixel size in Å; the HR truth is rendered at ``pixel_size_a / bin_factor``.
    bin_factor : int
        HR pixels per LR pixel along each axis (only 2 is supported).
    frames : int
        Frames per movie.
    dose_per_frame : float
        Exposure per frame in e/Å² (as calibrated over vacuum).
    particles : int
        Particles per micrograph (random, non-overlapping in projection).
    defocus_min_a, defocus_max_a : float
        Range of the mean defocus (Å, underfocus positive), drawn uniformly per movie.
    astigmatism_a : float
        Largest ``(DefocusU - DefocusV) / 2`` in Å; the astigmatism is drawn in ``[0, astigmatism_a]``.
    voltage_kv, cs_mm, amp_contrast : float
        Microscope optics.
    ice_thickness_a : float
        Thickness of the vitreous-ice slab in Å (solvent background and attenuation).
    energy_filter : bool
        Zero-loss energy filtering: inelastically scattered electrons are removed (fewer counts);
        without it they reach the detector as a structureless background (counts conserved).
    motion : str
        ``none``, ``drift`` (constant velocity) or ``relion-like`` (fast early drift that slows).
    drift_a_per_dose : float
        Global drift speed in Å per e/Å² of exposure (RELION tutorial track: about 0.37).
    jitter_a : float
        Per-particle random-walk step (Å per frame, rms per axis) added on top of the drift.
    lr_operator : str
        ``box`` (2x2 pixel integration, a physically larger detector pixel) or ``fourier`` (crop).
    mtf_frequencies, mtf_values : tuple[float, ...]
        Detector MTF table (frequency in cycles per detector pixel, value); empty = perfect detector.
    mtf_name : str
        File name of the MTF (written to ``rlnMtfFileName``); empty if none.
    noise_mtf : bool
        Apply the MTF to the Poisson-sampled counts of each frame instead of to the expected
        counts (charge spreading after detection: signal and noise both blurred, so the noise
        power falls like MTF²); the signal is blurred once either way. Needs an MTF table.
        Off: the noise is white (only the expectation is filtered).
    b_factor_a2 : float | None
        B-factor (Å²) for every atom; None uses the model's per-element mean B.
    seed : int
        Master seed; movie ``i`` uses an independent stream derived from ``(seed, i)``.
    save_clean_frames : bool
        Keep the noise-free per-frame frames (LR and HR expected counts).
    movie_format : str
        ``mrc`` (float32 stack), ``tiff`` (integer counts, LZW, Y flipped in the file as EPU/SerialEM
        movies are read by RELION) or ``eer`` (electron events on the 4x sub-pixel grid, drawn from the
        HR expectation: ``eer_frames_per_fraction`` detector frames per frame of the other movies).
        Applies to the LR movie in ``Movies/``; the HR movie stays MRC.
    eer_frames_per_fraction : int
        EER detector frames per fraction (RELION's ``--eer_grouping`` that gives back the fractions).
    eer_compression : int
        65001 (RELION 3.1 reads it) or 65002.
    gain_sigma : float
        Relative rms of the LR detector's per-pixel sensitivity (mean 1, clipped to [0.2, 3]); its gain
        reference is written to ``Movies/gain.mrc``. 0: a uniform detector.
    hot_pixels : int
        LR pixels that fire on every frame (``hot_pixel_rate`` times the mean counts per frame, EER:
        one event per detector frame); listed in ``Movies/defects.txt``.
    dead_columns : int
        LR columns that record nothing; listed in ``Movies/defects.txt``.
    hot_pixel_rate : float
        Expected counts per frame of a hot pixel, in units of the mean counts per LR pixel and frame.
    """

    size: int = 1024
    pixel_size_a: float = 1.0
    bin_factor: int = 2
    frames: int = 40
    dose_per_frame: float = 1.25
    particles: int = 120
    defocus_min_a: float = 8000.0
    defocus_max_a: float = 25000.0
    astigmatism_a: float = 200.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amp_contrast: float = 0.07
    ice_thickness_a: float = 300.0
    energy_filter: bool = False
    motion: str = "relion-like"
    drift_a_per_dose: float = 0.37
    jitter_a: float = 0.05
    lr_operator: str = "box"
    mtf_frequencies: tuple[float, ...] = ()
    mtf_values: tuple[float, ...] = ()
    mtf_name: str = ""
    noise_mtf: bool = False
    b_factor_a2: float | None = None
    seed: int = 0
    save_clean_frames: bool = False
    movie_format: str = "mrc"
    eer_frames_per_fraction: int = 10
    eer_compression: int = 65001
    gain_sigma: float = 0.0
    hot_pixels: int = 0
    dead_columns: int = 0
    hot_pixel_rate: float = 20.0

    def __post_init__(self) -> None:
        for failed, problem in self._checks():
            if failed:
                raise InputError(None, problem)

    def _checks(self) -> list[tuple[bool, str]]:
        """Every validity rule as ``(violated, message)``, in the order they are reported."""
        d_lo, d_hi = self.defocus_min_a, self.defocus_max_a
        return self._physics_checks(d_lo, d_hi) + self._camera_checks()

    def _camera_checks(self) -> list[tuple[bool, str]]:
        """The rules of the camera and file-format options."""
        return [
            (self.movie_format not in MOVIE_FORMATS, f"--format {self.movie_format!r}: choose one of {', '.join(MOVIE_FORMATS)}"),
            (self.movie_format == "tiff" and self.noise_mtf, "--format tiff stores integer counts; --noise-mtf makes them non-integer"),
            (self.eer_frames_per_fraction < 1 or self.eer_compression not in (65001, 65002),
             "--eer-frames-per-fraction must be >= 1 and --eer-compression 65001 or 65002"),
            (not 0 <= self.gain_sigma <= 1, f"--gain-sigma {self.gain_sigma}: must be in [0, 1]"),
            (self.hot_pixels < 0 or self.dead_columns < 0 or self.dead_columns > self.size // 2,
             "--hot-pixels and --dead-columns must be >= 0 (at most half the columns dead)"),
            (self.hot_pixels > self.size**2 // 100 or not self.hot_pixel_rate > 0,
             "--hot-pixels: at most 1% of the pixels; the hot-pixel rate must be positive"),
        ]  # fmt: skip

    def _physics_checks(self, d_lo: float, d_hi: float) -> list[tuple[bool, str]]:
        """The rules of the specimen, optics, motion and MTF options."""
        return [
            (self.size < 16 or self.size % 2, f"--size {self.size}: must be an even number of pixels >= 16"),
            (not self.pixel_size_a > 0, f"--pixel-size {self.pixel_size_a}: must be positive"),
            (self.bin_factor != 2, f"--bin {self.bin_factor}: only 2 is supported"),
            (self.frames < 1, f"--frames {self.frames}: must be >= 1"),
            (not self.dose_per_frame > 0, f"--dose-per-frame {self.dose_per_frame}: must be positive"),
            (self.particles < 0, f"--particles {self.particles}: must be >= 0"),
            (d_lo <= 0 or d_hi <= 0, "--defocus: values must be positive (underfocus)"),
            (d_lo > d_hi, f"--defocus {d_lo / 1e4:g}:{d_hi / 1e4:g}: range is reversed (give MIN:MAX in µm)"),
            (self.astigmatism_a < 0 or self.astigmatism_a >= d_lo,
             f"astigmatism {self.astigmatism_a} Å must be in [0, min defocus)"),
            (not self.voltage_kv > 0, f"--voltage {self.voltage_kv}: must be positive"),
            (self.cs_mm < 0, f"--cs {self.cs_mm}: must be >= 0"),
            (not 0 <= self.amp_contrast < 1, f"--amp-contrast {self.amp_contrast}: must be in [0, 1)"),
            (self.ice_thickness_a < 0, f"--ice-thickness {self.ice_thickness_a}: must be >= 0"),
            (self.motion not in MOTION_MODELS, f"--motion {self.motion!r}: choose one of {', '.join(MOTION_MODELS)}"),
            (self.drift_a_per_dose < 0 or self.jitter_a < 0, "drift and jitter must be >= 0"),
            (self.lr_operator not in LR_OPERATORS,
             f"--lr-operator {self.lr_operator!r}: choose one of {', '.join(LR_OPERATORS)}"),
            (len(self.mtf_frequencies) != len(self.mtf_values), "MTF table: frequencies and values differ in length"),
            (self.noise_mtf and not self.mtf_frequencies, "--noise-mtf needs a detector MTF (--mtf FILE.star)"),
            (self.b_factor_a2 is not None and self.b_factor_a2 < 0, f"B-factor {self.b_factor_a2}: must be >= 0"),
        ]  # fmt: skip

    @property
    def has_defects(self) -> bool:
        """Whether the LR detector has hot pixels or dead columns."""
        return self.hot_pixels > 0 or self.dead_columns > 0

    @property
    def hr_size(self) -> int:
        """HR grid size in pixels."""
        return self.size * self.bin_factor

    @property
    def hr_pixel_size_a(self) -> float:
        """HR pixel size in Å."""
        return self.pixel_size_a / self.bin_factor

    @property
    def total_dose(self) -> float:
        """Exposure of the whole movie in e/Å²."""
        return self.frames * self.dose_per_frame

    def to_dict(self) -> dict:
        """Plain-JSON view of every field."""
        d = asdict(self)
        d["mtf_frequencies"] = list(self.mtf_frequencies)
        d["mtf_values"] = list(self.mtf_values)
        return d
