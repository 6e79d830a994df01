"""RELION per-micrograph motion metadata (``rlnMicrographMetadata`` -> ``<root>.star``) as per-frame shifts.

RELION's MotionCorr (own implementation and the MotionCor2 wrapper) stores in ``data_global_shift`` the
shift it *applies to each frame to align it* (``shiftNonSquareImageInFourierTransform(frame, -s)`` of the
measured cross-correlation offset), in unbinned movie pixels, relative to the first frame. cryosr's
convention is the opposite one: frame i content = reference moved by ``+s_i`` (``fourier_shift``), so
``shifts_yx_px = -(rlnMicrographShiftY, rlnMicrographShiftX)``. Only the global (whole-frame) shifts are
read; the local motion model is reported as present but not applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from cryosr.core.errors import InputError
from cryosr.core.io.star import read_star

__all__ = ["RelionMotion", "read_relion_motion"]


@dataclass(frozen=True)
class RelionMotion:
    """Global motion of one movie as RELION's MotionCorr recorded it.

    Attributes
    ----------
    shifts_yx_px : torch.Tensor
        `(t, 2)` float32 per-frame shifts in unbinned movie pixels, cryosr convention (frame content =
        reference moved by ``+s``), for frames ``start_frame .. start_frame + t - 1``.
    movie_name : str
        ``rlnMicrographMovieName`` as written (relative to the RELION project directory).
    binning : float
        ``rlnMicrographBinning`` (MotionCorr bin factor; 1 when absent).
    pixel_size_a : float | None
        ``rlnMicrographOriginalPixelSize`` (movie pixel, Å).
    dose_per_frame : float | None
        ``rlnMicrographDoseRate`` (e/Å² per frame).
    pre_exposure : float
        ``rlnMicrographPreExposure`` (e/Å²).
    voltage_kv : float | None
        ``rlnVoltage``.
    gain_name : str | None
        ``rlnMicrographGainName``.
    defect_name : str | None
        ``rlnMicrographDefectFile``.
    image_size_yx : tuple[int, int] | None
        Unbinned movie size ``(rlnImageSizeY, rlnImageSizeX)``.
    n_frames_movie : int | None
        ``rlnImageSizeZ``.
    start_frame : int
        1-based first frame the shifts refer to (``rlnMicrographStartFrame``).
    has_local_motion : bool
        Whether a local motion model or local shifts are stored (not applied by cryosr).
    eer_grouping, eer_upsampling : int
        ``rlnEERGrouping``/``rlnEERUpsampling`` of an EER movie (0 and 1 when absent); RELION's
        shifts are then in pixels of the rendered grid and the dose is per fraction.
    path : str
        The metadata file.
    """

    shifts_yx_px: torch.Tensor
    movie_name: str
    binning: float = 1.0
    pixel_size_a: float | None = None
    dose_per_frame: float | None = None
    pre_exposure: float = 0.0
    voltage_kv: float | None = None
    gain_name: str | None = None
    defect_name: str | None = None
    image_size_yx: tuple[int, int] | None = None
    n_frames_movie: int | None = None
    start_frame: int = 1
    has_local_motion: bool = False
    eer_grouping: int = 0
    eer_upsampling: int = 1
    path: str = ""

    def shifts_for_eer_upsampling(self, eer_upsampling: int) -> torch.Tensor:
        """``shifts_yx_px`` on the grid of an EER movie rendered at ``eer_upsampling`` (RELION's are on its own grid)."""
        return self.shifts_yx_px * (eer_upsampling / self.eer_upsampling)

    def matches_movie(self, movie_path: str | Path) -> bool:
        """Whether ``movie_path`` names the same movie file (compared by file name without directories)."""
        return Path(self.movie_name).name == Path(movie_path).name


def _number(general: dict, key: str, path: Path, *, required: bool = False) -> float | None:
    value = general.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InputError(path, f"motion metadata lacks {key}")
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"{key} = {value!r} is not a number") from exc
    if not math.isfinite(number):
        raise InputError(path, f"{key} is not finite")
    return number


def read_relion_motion(path: str | Path) -> RelionMotion:
    """Read a RELION per-micrograph motion STAR file.

    Parameters
    ----------
    path : str | Path
        ``<root>.star`` written by RELION's MotionCorr (``rlnMicrographMetadata`` of
        ``corrected_micrographs.star``).

    Returns
    -------
    motion : RelionMotion
        Shifts in cryosr's convention and unbinned movie pixels, plus the acquisition parameters.

    Raises
    ------
    InputError
        Missing blocks or columns, non-finite shifts, frame numbers that are not consecutive.
    """
    path = Path(path)
    blocks = read_star(path)
    general = blocks.get("general")
    if isinstance(general, pd.DataFrame):  # a one-row loop instead of key/value pairs
        general = general.iloc[0].to_dict() if len(general) else {}
    if not isinstance(general, dict):
        raise InputError(path, "not a RELION motion metadata file (no data_general block)")
    shifts_table = blocks.get("global_shift")
    if not isinstance(shifts_table, pd.DataFrame) or len(shifts_table) == 0:
        raise InputError(path, "no data_global_shift table")
    for column in ("rlnMicrographFrameNumber", "rlnMicrographShiftX", "rlnMicrographShiftY"):
        if column not in shifts_table.columns:
            raise InputError(path, f"data_global_shift lacks {column}")
    table = shifts_table.sort_values("rlnMicrographFrameNumber")
    frame_numbers = table["rlnMicrographFrameNumber"].astype(int).to_numpy()
    if (frame_numbers[1:] - frame_numbers[:-1] != 1).any():
        raise InputError(path, "rlnMicrographFrameNumber is not consecutive")
    try:
        relion_xy = torch.tensor(
            table[["rlnMicrographShiftY", "rlnMicrographShiftX"]].astype(float).to_numpy(), dtype=torch.float32
        )
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"shifts are not numbers ({exc})") from exc
    if not torch.isfinite(relion_xy).all():
        raise InputError(path, "shifts contain NaN or infinity")
    # RELION stores the correction applied to a frame; ours is the content motion (0 - x keeps +0.0)
    shifts_yx_px = 0.0 - relion_xy
    movie_name = general.get("rlnMicrographMovieName")
    if not movie_name:
        raise InputError(path, "motion metadata lacks rlnMicrographMovieName")
    size_x = _number(general, "rlnImageSizeX", path)
    size_y = _number(general, "rlnImageSizeY", path)
    n_frames_movie = _number(general, "rlnImageSizeZ", path)
    start = _number(general, "rlnMicrographStartFrame", path)
    binning = _number(general, "rlnMicrographBinning", path)
    gain = general.get("rlnMicrographGainName")
    defect = general.get("rlnMicrographDefectFile")
    start_frame = int(start) if start is not None else int(frame_numbers[0])
    return RelionMotion(
        shifts_yx_px=shifts_yx_px,
        movie_name=str(movie_name),
        binning=1.0 if binning is None else binning,
        pixel_size_a=_number(general, "rlnMicrographOriginalPixelSize", path),
        dose_per_frame=_number(general, "rlnMicrographDoseRate", path),
        pre_exposure=_number(general, "rlnMicrographPreExposure", path) or 0.0,
        voltage_kv=_number(general, "rlnVoltage", path),
        gain_name=str(gain) if gain else None,
        defect_name=str(defect) if defect else None,
        image_size_yx=None if size_x is None or size_y is None else (int(size_y), int(size_x)),
        n_frames_movie=None if n_frames_movie is None else int(n_frames_movie),
        start_frame=start_frame,
        has_local_motion=any(k in blocks for k in ("local_motion_model", "local_shift")),
        eer_grouping=int(_number(general, "rlnEERGrouping", path) or 0),
        eer_upsampling=int(_number(general, "rlnEERUpsampling", path) or 1),
        path=str(path),
    )
