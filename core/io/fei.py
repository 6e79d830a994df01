"""Microscope metadata from the FEI/Thermo Fisher (EPU) extended header of an MRC file."""

from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile

__all__ = ["read_fei_metadata"]


def read_fei_metadata(path: str | Path) -> dict | None:
    """Nominal defocus, voltage and pixel size from an FEI1/FEI2 extended header.

    Parameters
    ----------
    path : str | Path
        MRC written by EPU (or any MRC; returns None when there is no FEI header).

    Returns
    -------
    meta : dict | None
        ``{"defocus_um": float, "applied_defocus_um": float, "voltage_kv": float, "pixel_size_a":
        float}`` (EPU's ``Defocus`` is positive for underfocus), or None.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.open(Path(path), mode="r", permissive=True, header_only=True) as mrc:
            exttyp = bytes(mrc.header.exttyp).decode("ascii", "replace")
            if not exttyp.startswith("FEI"):
                return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.mmap(Path(path), mode="r", permissive=True) as mrc:
            eh = mrc.indexed_extended_header
            if eh is None or len(eh) == 0:
                return None
            first = eh[0]
            return {
                "defocus_um": float(first["Defocus"]) * 1e6,
                "applied_defocus_um": float(first["Applied defocus"]) * 1e6,
                "voltage_kv": float(first["HT"]) / 1e3,
                "pixel_size_a": float(first["Pixel size X"]) * 1e10,
            }
