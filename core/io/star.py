"""STAR files via starfile: always a dict of blocks; atomic writes that keep every block and column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import starfile

from cryosr.core.errors import InputError
from cryosr.core.io.atomic import atomic_path

__all__ = ["read_star", "write_star"]


def read_star(path: str | Path) -> dict[str, pd.DataFrame | dict]:
    """Read every data block of a STAR file.

    Returns
    -------
    blocks : dict
        Block name (without ``data_``) -> DataFrame (loop) or dict (single values), in file order.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such STAR file")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:
        raise InputError(path, f"not a readable STAR file ({exc})") from exc
    if not blocks:
        raise InputError(path, "STAR file has no data blocks")
    return dict(blocks)


def write_star(path: str | Path, blocks: dict[str, pd.DataFrame | dict], *, overwrite: bool = True) -> Path:
    """Write STAR blocks atomically (temp file + rename), in the order given.

    Parameters
    ----------
    path : str | Path
        Destination.
    blocks : dict
        Block name (without ``data_``) -> DataFrame or dict.
    overwrite : bool
        Replace an existing file (default, as STAR outputs are regenerated).
    """
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        starfile.write(blocks, tmp)
    return path
