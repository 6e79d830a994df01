"""RELION CtfFind-format STAR (``micrographs_ctf.star``): optics block + micrographs block.

Column order follows RELION's ``CtffindRunner`` (3.1-5.0): ``rlnMicrographName, rlnOpticsGroup,
rlnCtfImage, rlnDefocusU, rlnDefocusV, rlnCtfAstigmatism, rlnDefocusAngle, rlnCtfFigureOfMerit,
rlnCtfMaxResolution``; defocus in Å, angle in degrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cryosr.core.errors import InputError
from cryosr.core.io.star import read_star, write_star

__all__ = ["CtfRow", "read_ctf_star", "write_ctf_star"]

MICROGRAPH_COLUMNS = (
    "rlnMicrographName",
    "rlnOpticsGroup",
    "rlnCtfImage",
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnCtfAstigmatism",
    "rlnDefocusAngle",
    "rlnCtfFigureOfMerit",
    "rlnCtfMaxResolution",
)


@dataclass(frozen=True)
class CtfRow:
    """One micrograph's CTF fit as RELION stores it.

    Attributes
    ----------
    micrograph_name : str
        Path as written in ``rlnMicrographName`` (keep it relative to the RELION project).
    ctf_image : str
        ``rlnCtfImage`` (``<file>.ctf:mrc``).
    pixel_size_a : float
        Micrograph pixel size (selects the optics group).
    defocus_u_a, defocus_v_a, defocus_angle_deg, figure_of_merit, max_resolution_a : float
        The fit.
    """

    micrograph_name: str
    ctf_image: str
    pixel_size_a: float
    defocus_u_a: float
    defocus_v_a: float
    defocus_angle_deg: float
    figure_of_merit: float
    max_resolution_a: float


def write_ctf_star(
    path: str | Path,
    rows: list[CtfRow],
    *,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    original_pixel_size_a: float | None = None,
) -> Path:
    """Write ``micrographs_ctf.star`` atomically; one optics group per distinct pixel size.

    Parameters
    ----------
    path : str | Path
        Destination.
    rows : list[CtfRow]
        One per micrograph, in output order.
    voltage_kv, cs_mm, amplitude_contrast : float
        Optics constants written per group.
    original_pixel_size_a : float | None
        ``rlnMicrographOriginalPixelSize`` (the movie pixel size); defaults to each group's pixel size.
    """
    if not rows:
        raise InputError(path, "no micrographs to write")
    sizes: list[float] = []
    for row in rows:
        if not any(abs(row.pixel_size_a - s) < 1e-4 for s in sizes):
            sizes.append(row.pixel_size_a)
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": [f"opticsGroup{i + 1}" for i in range(len(sizes))],
            "rlnOpticsGroup": list(range(1, len(sizes) + 1)),
            "rlnMicrographOriginalPixelSize": [original_pixel_size_a or s for s in sizes],
            "rlnVoltage": [float(voltage_kv)] * len(sizes),
            "rlnSphericalAberration": [float(cs_mm)] * len(sizes),
            "rlnAmplitudeContrast": [float(amplitude_contrast)] * len(sizes),
            "rlnMicrographPixelSize": sizes,
        }
    )

    def group(px: float) -> int:
        return next(i + 1 for i, s in enumerate(sizes) if abs(px - s) < 1e-4)

    mics = pd.DataFrame(
        [
            (
                r.micrograph_name,
                group(r.pixel_size_a),
                r.ctf_image,
                r.defocus_u_a,
                r.defocus_v_a,
                r.defocus_u_a - r.defocus_v_a,
                r.defocus_angle_deg,
                r.figure_of_merit,
                r.max_resolution_a,
            )
            for r in rows
        ],
        columns=list(MICROGRAPH_COLUMNS),
    )
    return write_star(path, {"optics": optics, "micrographs": mics})


def read_ctf_star(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a CtfFind-format STAR.

    Returns
    -------
    optics, micrographs : pandas.DataFrame
        The two blocks; raises ``InputError`` if a CTF column is missing.
    """
    blocks = read_star(path)
    if "micrographs" not in blocks or not isinstance(blocks["micrographs"], pd.DataFrame):
        raise InputError(path, "no data_micrographs loop")
    mics = blocks["micrographs"]
    missing = [c for c in ("rlnMicrographName", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle") if c not in mics]
    if missing:
        raise InputError(path, f"missing CTF columns {', '.join(missing)}")
    optics = blocks.get("optics")
    return (optics if isinstance(optics, pd.DataFrame) else pd.DataFrame()), mics
