"""Pure transformations of RELION STAR blocks for a 2x super-resolution step (no file access).

The output copies the input completely (every optics column, every micrograph column, optics group
numbers unchanged) and changes only what the 2x step changes, following RELION's own MotionCorr binning
logic with factor 1/2 (../shared/docs/relion_external.md §2.3, §2.6):

* ``rlnMicrographPixelSize`` (optics) is the input micrograph pixel size / 2 (from movies: the movie pixel
  size ``rlnMicrographOriginalPixelSize`` / 2, added as a column as MotionCorr does);
  ``rlnMicrographOriginalPixelSize`` and ``rlnMtfFileName`` are kept (MTF correction needs them);
* ``rlnMicrographName`` points to ``<job dir>/<input sub-path below its own job dir>.mrc``, so the basename
  and sub-path survive (Polish matches micrographs by name after stripping ``<Type>/jobNNN/``);
* ``rlnMicrographNameNoDW`` is dropped: CTFFIND would read that original-size image with the halved pixel
  size and get the defocus wrong;
* ``rlnCtfPowerSpectrum`` is kept: CtfFind's default (4.0/5.0, "use power spectra from MotionCorr")
  estimates the CTF from MotionCorr's spectrum using that file's own header pixel size; defocus is in Å,
  so it applies unchanged to the super-resolved micrograph;
* ``rlnMicrographMetadata`` and ``rlnAccumMotion*`` are kept (Polish; motion in Å).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import pandas as pd

from cryosr.core.errors import InputError

__all__ = [
    "MicrographItem",
    "output_blocks",
    "output_name",
    "plan_items",
    "strip_job_prefix",
]

_JOB_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]*/job\d+/")
#: Columns that describe the non-dose-weighted sum at the old pixel size: dropped (see module docstring).
DROPPED_COLUMNS = ("rlnMicrographNameNoDW",)
_DATA_BLOCK = {"movies": "movies", "micrographs": "micrographs"}
_NAME_COLUMN = {"movies": "rlnMicrographMovieName", "micrographs": "rlnMicrographName"}
_PIXEL_COLUMN = {"movies": "rlnMicrographOriginalPixelSize", "micrographs": "rlnMicrographPixelSize"}


@dataclass(frozen=True)
class MicrographItem:
    """One row of the input table and where its output goes.

    Attributes
    ----------
    row : int
        Row position in the input data table.
    source : str
        Input movie or micrograph path, as written in the STAR file (relative to the project).
    metadata : str | None
        ``rlnMicrographMetadata`` (MotionCorr per-micrograph STAR) when present.
    output : str
        New ``rlnMicrographName`` (relative to the project).
    optics_group : int
        ``rlnOpticsGroup`` (1-based).
    pixel_size_a : float
        Input pixel size of this row's optics group (micrograph pixel, or movie pixel for movies).
    voltage_kv : float | None
        ``rlnVoltage`` of the optics group.
    """

    row: int
    source: str
    metadata: str | None
    output: str
    optics_group: int
    pixel_size_a: float
    voltage_kv: float | None


def strip_job_prefix(name: str) -> str:
    """``MotionCorr/job002/Movies/x.mrc`` -> ``Movies/x.mrc`` (RELION's ``decomposePipelineFileName``).

    Names without a job prefix are kept; absolute paths or paths leaving the project keep only the file name.
    """
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        return path.name
    return _JOB_PREFIX.sub("", str(path), count=1)


def output_name(source: str, job_dir: str, input_kind: str) -> str:
    """New micrograph name under the job directory, sub-path and basename preserved.

    A micrograph keeps its name; a movie gets MotionCorr's naming (extension replaced by ``.mrc``, other
    dots in the file name turned into ``_``).

    Parameters
    ----------
    source : str
        Input name from the STAR file.
    job_dir : str
        ``External/jobNNN`` (trailing slash optional).
    input_kind : str
        ``movies`` or ``micrographs``.
    """
    rel = PurePosixPath(strip_job_prefix(source))
    stem = rel.stem if input_kind == "micrographs" else rel.stem.replace(".", "_")
    return str(PurePosixPath(job_dir.rstrip("/")) / rel.parent / f"{stem}.mrc")


def _table(blocks: dict, name: str, star: str) -> pd.DataFrame:
    table = blocks.get(name)
    if not isinstance(table, pd.DataFrame) or table.empty:
        hint = " (a RELION 3.0-style file? re-run Import/MotionCorr in RELION >= 3.1)" if name == "optics" else ""
        raise InputError(star, f"no data_{name} table{hint}")
    return table


def _require(table: pd.DataFrame, columns: list[str], star: str, block: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(star, f"data_{block} lacks column(s) {', '.join('_' + c for c in missing)}")


def plan_items(blocks: dict, input_kind: str, job_dir: str, star: str = "input STAR") -> list[MicrographItem]:
    """Validate an input STAR and list every micrograph with its output name and optics parameters.

    Parameters
    ----------
    blocks : dict
        Blocks of the input STAR (``read_star``).
    input_kind : str
        ``movies`` (``--in_movies``) or ``micrographs`` (``--in_mics``).
    job_dir : str
        The job directory, relative to the project.
    star : str
        The STAR file's name, for error messages.

    Returns
    -------
    items : list[MicrographItem]

    Raises
    ------
    InputError
        Missing block or column, an optics group that is not in the optics table, a bad pixel size, or two
        inputs that would write the same output.
    """
    optics = _table(blocks, "optics", star)
    data = _table(blocks, _DATA_BLOCK[input_kind], star)
    name_col, px_col = _NAME_COLUMN[input_kind], _PIXEL_COLUMN[input_kind]
    _require(optics, ["rlnOpticsGroup", px_col], star, "optics")
    _require(data, [name_col, "rlnOpticsGroup"], star, _DATA_BLOCK[input_kind])
    by_group = {}
    for _, row in optics.iterrows():
        px = float(row[px_col])
        if not px > 0:
            raise InputError(star, f"optics group {row['rlnOpticsGroup']}: _{px_col} {px} is not positive")
        kv = float(row["rlnVoltage"]) if "rlnVoltage" in optics.columns else None
        by_group[int(row["rlnOpticsGroup"])] = (px, kv)
    items, seen = [], {}
    for i, (source, group, meta) in enumerate(
        zip(
            data[name_col].astype(str),
            data["rlnOpticsGroup"],
            data["rlnMicrographMetadata"].astype(str) if "rlnMicrographMetadata" in data.columns else [None] * len(data),
        )
    ):
        group = int(group)
        if group not in by_group:
            raise InputError(star, f"{source}: optics group {group} is not in the data_optics table")
        out = output_name(source, job_dir, input_kind)
        if out in seen:
            raise InputError(star, f"{source} and {seen[out]} would both be written to {out}")
        seen[out] = source
        px, kv = by_group[group]
        items.append(MicrographItem(i, source, meta, out, group, px, kv))
    return items


def output_blocks(
    blocks: dict, input_kind: str, items: list[MicrographItem], scale: int = 2
) -> dict[str, pd.DataFrame | dict]:
    """The output ``micrographs.star`` blocks: the input copied with only the 2x changes applied.

    Parameters
    ----------
    blocks : dict
        Blocks of the input STAR.
    input_kind : str
        ``movies`` or ``micrographs``.
    items : list[MicrographItem]
        From ``plan_items`` on the same blocks (one per data row).
    scale : int
        Super-resolution factor.

    Returns
    -------
    blocks : dict
        ``optics`` then ``micrographs``, then any other input blocks unchanged.
    """
    optics = blocks["optics"].copy()
    if input_kind == "micrographs":
        optics["rlnMicrographPixelSize"] = optics["rlnMicrographPixelSize"].astype(float) / scale
    else:
        optics["rlnMicrographPixelSize"] = optics["rlnMicrographOriginalPixelSize"].astype(float) / scale
    data = blocks[_DATA_BLOCK[input_kind]].copy()
    names = pd.Series([it.output for it in sorted(items, key=lambda it: it.row)], index=data.index)
    if len(names) != len(data):
        raise ValueError("one item per data row is expected")
    if input_kind == "micrographs":
        data["rlnMicrographName"] = names
        data = data.drop(columns=[c for c in DROPPED_COLUMNS if c in data.columns])
    else:
        data.insert(0, "rlnMicrographName", names)
    out: dict[str, pd.DataFrame | dict] = {"optics": optics, "micrographs": data}
    for key, block in blocks.items():
        if key not in ("optics", _DATA_BLOCK[input_kind]):
            out[key] = block
    return out
