"""Write a simulated RELION 3.1+ project (movies, truths, STAR files, JSON) with relative paths.

Layout under ``DIR``::

    Movies/movie_0001.mrcs                LR movie (counts), header pixel = LR pixel
    movies.star                           RELION import format (data_optics + data_movies)
    HR/Movies/movie_0001.mrcs, HR/movies.star   the same specimen recorded at the HR pixel
    truth/movie_0001_clean.mrc            noise-free, motion-free, dose-weighted, CTF sum (HR pixel)
    truth/movie_0001_clean_noctf.mrc      the same without CTF (phase, rad)
    truth/movie_0001_clean_lr.mrc         clean, 2x2 box-summed to the LR pixel (for extraction)
    truth/movie_0001_shifts.star          true per-frame shifts: a RELION motion STAR (LR px, RELION's sign) + Å
    truth/movie_0001_clean_frames.mrcs    (--save-clean-frames) per-frame expected counts, LR
    truth/movie_0001_clean_frames_hr.mrcs (--save-clean-frames) the same at the HR pixel
    truth/particles.star                  coordinates, angles, CTF (+ optics)
    truth/micrographs_ctf.star            the clean LR micrographs with their true CTF (for relion_preprocess)
    truth/map.mrc                         3-D potential at the HR pixel
    truth/simulation.json                 every parameter, seed, version, conventions
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryosr.core import __version__
from cryosr.core.errors import InputError
from cryosr.core.fourier import bin_sum
from cryosr.core.io.atomic import atomic_path
from cryosr.core.io.mrc import write_mrc
from cryosr.core.io.star import read_star, write_star
from cryosr.core.simulate.config import SimulationConfig
from cryosr.core.simulate.movie import SimulatedMovie

__all__ = [
    "SHIFT_CONVENTION",
    "movie_name",
    "read_mtf",
    "read_true_shifts",
    "summary",
    "write_movie_files",
    "write_project_files",
]

SHIFT_CONVENTION = (
    "cryosrShiftX/YAngst (Å) is the displacement of frame i's content relative to the reference "
    "(motion-free) specimen: frame_i = fourier_shift(reference, +shift / pixel); positive moves content to "
    "larger pixel indices; frame 1 is the reference (0, 0). rlnMicrographShiftX/Y (LR pixels) has RELION's "
    "motion-STAR sign, the correction applied to the frame (= -displacement), so the file is a RELION "
    "per-micrograph motion STAR that RELION and `cryosr superres --shifts` read as is. Frame numbers are 1-based."
)


def read_true_shifts(path: str | Path) -> torch.Tensor:
    """The simulator's true per-frame shifts in LR pixels, in cryosr's convention (content moved by +s).

    Read from ``cryosrShiftY/XAngst`` divided by the general block's ``rlnMicrographOriginalPixelSize``
    (their meaning never changed); a plain RELION motion STAR without them is read with RELION's sign
    (``-rlnMicrographShiftY/X``).

    Parameters
    ----------
    path : str | Path
        ``truth/<movie>_shifts.star``.

    Returns
    -------
    shifts_yx_px : torch.Tensor
        `(t, 2)` float32.
    """
    path = Path(path)
    blocks = read_star(path)
    table = blocks.get("global_shift")
    if not isinstance(table, pd.DataFrame):
        raise InputError(path, "no data_global_shift table")
    general = blocks.get("general")
    if isinstance(general, pd.DataFrame):
        general = general.iloc[0].to_dict() if len(general) else {}
    angst = ("cryosrShiftYAngst", "cryosrShiftXAngst")
    pixel = (general or {}).get("rlnMicrographOriginalPixelSize")
    if all(c in table.columns for c in angst) and pixel:
        values = table[list(angst)].astype(float).to_numpy() / float(pixel)
    elif all(c in table.columns for c in ("rlnMicrographShiftY", "rlnMicrographShiftX")):
        values = 0.0 - table[["rlnMicrographShiftY", "rlnMicrographShiftX"]].astype(float).to_numpy()
    else:
        raise InputError(path, "no true shifts (cryosrShiftX/YAngst or rlnMicrographShiftX/Y)")
    return torch.tensor(values, dtype=torch.float32)


def movie_name(index: int) -> str:
    """``movie_0001`` for the 0-based movie ``index``."""
    return f"movie_{index + 1:04d}"


def read_mtf(path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Read a RELION MTF STAR (``rlnResolutionInversePixel``, ``rlnMtfValue``).

    Returns
    -------
    frequencies, values : tuple[float, ...]
        Increasing frequencies in cycles per pixel and the MTF there.
    """
    path = Path(path)
    blocks = read_star(path)
    table = next((b for b in blocks.values() if isinstance(b, pd.DataFrame)), None)
    cols = ("rlnResolutionInversePixel", "rlnMtfValue")
    if table is None or not all(c in table.columns for c in cols):
        raise InputError(path, "not an MTF STAR file (needs rlnResolutionInversePixel and rlnMtfValue)")
    f = table[cols[0]].to_numpy(dtype=np.float64)
    v = table[cols[1]].to_numpy(dtype=np.float64)
    if len(f) < 2 or np.any(np.diff(f) <= 0) or not np.all(np.isfinite(v)) or f[0] < 0:
        raise InputError(path, "MTF frequencies must be >= 0 and strictly increasing, values finite")
    return tuple(float(x) for x in f), tuple(float(x) for x in v)


def _optics(config: SimulationConfig, pixel_size_a: float, mtf_file: str | None, *, micrograph: bool) -> pd.DataFrame:
    row: dict = {"rlnOpticsGroupName": "opticsGroup1", "rlnOpticsGroup": 1}
    if mtf_file:
        row["rlnMtfFileName"] = mtf_file
    row["rlnMicrographOriginalPixelSize"] = pixel_size_a
    if micrograph:
        row["rlnMicrographPixelSize"] = pixel_size_a
    row["rlnVoltage"] = config.voltage_kv
    row["rlnSphericalAberration"] = config.cs_mm
    row["rlnAmplitudeContrast"] = config.amp_contrast
    return pd.DataFrame([row])


def write_movie_files(out_dir: str | Path, index: int, sim: SimulatedMovie, config: SimulationConfig) -> list[Path]:
    """Write one movie's MRCs and its shift STAR (atomically; existing files are replaced).

    Parameters
    ----------
    out_dir : str | Path
        Project directory ``DIR``.
    index : int
        0-based movie number.
    sim : SimulatedMovie
        The simulated movie.
    config : SimulationConfig
        Its configuration.

    Returns
    -------
    paths : list[Path]
        Files written.
    """
    out = Path(out_dir)
    name = movie_name(index)
    px, px_hr = config.pixel_size_a, config.hr_pixel_size_a
    written = [
        write_mrc(out / "Movies" / f"{name}.mrcs", sim.lr_frames, px, overwrite=True),
        write_mrc(out / "HR" / "Movies" / f"{name}.mrcs", sim.hr_frames, px_hr, overwrite=True),
        write_mrc(out / "truth" / f"{name}_clean.mrc", sim.clean_hr, px_hr, overwrite=True),
        write_mrc(out / "truth" / f"{name}_clean_noctf.mrc", sim.clean_hr_noctf, px_hr, overwrite=True),
        write_mrc(out / "truth" / f"{name}_clean_lr.mrc", bin_sum(sim.clean_hr, config.bin_factor), px, overwrite=True),
    ]
    if sim.clean_lr_frames is not None and sim.clean_hr_frames is not None:
        written.append(write_mrc(out / "truth" / f"{name}_clean_frames.mrcs", sim.clean_lr_frames, px, overwrite=True))
        written.append(write_mrc(out / "truth" / f"{name}_clean_frames_hr.mrcs", sim.clean_hr_frames, px_hr, overwrite=True))
    shifts_a = sim.shifts_a.cpu().numpy()
    shifts_px = sim.shifts_lr_px.cpu().numpy()
    t = shifts_a.shape[0]
    general = {
        "rlnImageSizeX": config.size,
        "rlnImageSizeY": config.size,
        "rlnImageSizeZ": t,
        "rlnMicrographMovieName": f"Movies/{name}.mrcs",
        "rlnMicrographBinning": 1.0,
        "rlnMicrographOriginalPixelSize": px,
        "rlnMicrographDoseRate": config.dose_per_frame,
        "rlnMicrographPreExposure": 0.0,
        "rlnVoltage": config.voltage_kv,
        "rlnMicrographStartFrame": 1,
    }
    shifts = pd.DataFrame(
        {
            "rlnMicrographFrameNumber": np.arange(1, t + 1),
            "rlnMicrographShiftX": 0.0 - shifts_px[:, 1],  # RELION's sign: the correction (0 - x keeps +0.0)
            "rlnMicrographShiftY": 0.0 - shifts_px[:, 0],
            "cryosrShiftXAngst": shifts_a[:, 1],
            "cryosrShiftYAngst": shifts_a[:, 0],
        }
    )
    written.append(write_star(out / "truth" / f"{name}_shifts.star", {"general": general, "global_shift": shifts}))
    return written


def write_project_files(
    out_dir: str | Path,
    sims: list[dict],
    config: SimulationConfig,
    *,
    map_volume: torch.Tensor,
    model_name: str,
    mtf_path: str | Path | None = None,
    argv: list[str] | None = None,
    device: str = "cpu",
    seconds: float = 0.0,
) -> list[Path]:
    """Write the project-level files: movies STARs, particles STAR, map and JSON.

    Parameters
    ----------
    out_dir : str | Path
        Project directory ``DIR``.
    sims : list[dict]
        Per movie (in order): ``summary(sim)`` dictionaries.
    config : SimulationConfig
        The configuration.
    map_volume : torch.Tensor
        `(d, d, d)` 3-D potential at the HR pixel.
    model_name : str
        Model description for the JSON.
    mtf_path : str | Path | None
        MTF file given on the command line; copied next to each movies.star.
    argv : list[str] | None
        Command line, for provenance.
    device : str
        Device used.
    seconds : float
        Total simulation time.
    """
    out = Path(out_dir)
    names = [movie_name(i) for i in range(len(sims))]
    mtf_file = None
    written: list[Path] = []
    if mtf_path is not None:
        mtf_file = Path(mtf_path).name
        table = pd.DataFrame({"rlnResolutionInversePixel": config.mtf_frequencies, "rlnMtfValue": config.mtf_values})
        for where in (out, out / "HR"):
            written.append(write_star(where / mtf_file, {Path(mtf_file).stem: table}))
    for where, px in ((out, config.pixel_size_a), (out / "HR", config.hr_pixel_size_a)):
        movies = pd.DataFrame({"rlnMicrographMovieName": [f"Movies/{n}.mrcs" for n in names], "rlnOpticsGroup": 1})
        written.append(write_star(where / "movies.star", {"optics": _optics(config, px, mtf_file, micrograph=False), "movies": movies}))

    rows = []
    box_lr = int(2 * round(sims[0]["particle_radius_a"] * 1.5 / config.pixel_size_a)) if sims else 64
    for name, s in zip(names, sims):
        for (y_lr, x_lr), (y_hr, x_hr), (rot, tilt, psi) in zip(s["yx_lr"], s["yx_hr"], s["angles"]):
            rows.append(
                {
                    "rlnMicrographName": f"truth/{name}_clean_lr.mrc",
                    "rlnCoordinateX": x_lr,
                    "rlnCoordinateY": y_lr,
                    "rlnAngleRot": rot,
                    "rlnAngleTilt": tilt,
                    "rlnAnglePsi": psi,
                    "rlnDefocusU": s["defocus_u_a"],
                    "rlnDefocusV": s["defocus_v_a"],
                    "rlnDefocusAngle": s["defocus_angle_deg"],
                    "rlnOpticsGroup": 1,
                    "cryosrMovieName": f"Movies/{name}.mrcs",
                    "cryosrCoordinateXHr": x_hr,
                    "cryosrCoordinateYHr": y_hr,
                }
            )
    optics = _optics(config, config.pixel_size_a, None, micrograph=True)
    optics["rlnImagePixelSize"] = config.pixel_size_a
    optics["rlnImageSize"] = max(box_lr, 16)
    optics["rlnImageDimensionality"] = 2
    written.append(write_star(out / "truth" / "particles.star", {"optics": optics, "particles": pd.DataFrame(rows)}))
    # the clean LR micrographs with their true CTF, so that particles.star can be used as is:
    # relion_preprocess --i truth/micrographs_ctf.star --reextract_data_star truth/particles.star --extract ...
    mics = pd.DataFrame(
        {
            "rlnMicrographName": [f"truth/{name}_clean_lr.mrc" for name in names],
            "rlnOpticsGroup": 1,
            "rlnDefocusU": [s["defocus_u_a"] for s in sims],
            "rlnDefocusV": [s["defocus_v_a"] for s in sims],
            "rlnCtfAstigmatism": [s["defocus_u_a"] - s["defocus_v_a"] for s in sims],
            "rlnDefocusAngle": [s["defocus_angle_deg"] for s in sims],
            "rlnCtfFigureOfMerit": 1.0,
            "rlnCtfMaxResolution": 2 * config.pixel_size_a,
        }
    )
    mic_optics = _optics(config, config.pixel_size_a, None, micrograph=True)
    written.append(write_star(out / "truth" / "micrographs_ctf.star", {"optics": mic_optics, "micrographs": mics}))
    written.append(write_mrc(out / "truth" / "map.mrc", map_volume, config.hr_pixel_size_a, overwrite=True))

    meta = {
        "cryosr_version": __version__,
        "command": "cryosr simulate",
        "argv": list(argv) if argv is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": device,
        "seconds": round(seconds, 3),
        "model": model_name,
        "config": config.to_dict(),
        "hr_pixel_size_a": config.hr_pixel_size_a,
        "hr_size": config.hr_size,
        "conventions": {
            "shifts": SHIFT_CONVENTION,
            "coordinates": "rlnCoordinateX/Y: LR pixels of the LR micrograph, pixel centres at integers from the "
            "first array element; HR coordinates (cryosrCoordinateX/YHr) = 2 * LR + 0.5",
            "angles": "RELION ZYZ (rot, tilt, psi); a map point r appears in the image at A(rot, tilt, psi) @ r",
            "defocus": "RELION: DefocusU >= DefocusV in Å (underfocus positive), angle of U from the x axis",
            "units": "movies and clean*.mrc: electron counts per pixel; clean_noctf: phase in rad (mean removed); "
            "map.mrc: potential in V relative to the ice",
        },
        "movies": [
            {"name": n, **{k: v for k, v in s.items() if k not in ("yx_lr", "yx_hr", "angles")}} for n, s in zip(names, sims)
        ],
    }
    path = out / "truth" / "simulation.json"
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    written.append(path)
    return written


def summary(sim: SimulatedMovie) -> dict:
    """The light, JSON-able part of a ``SimulatedMovie`` kept for the project files."""
    return {
        "defocus_u_a": float(sim.defocus_u_a),
        "defocus_v_a": float(sim.defocus_v_a),
        "defocus_angle_deg": float(sim.defocus_angle_deg),
        "total_shift_a": float(sim.shifts_a[-1].norm()),
        "seconds": round(sim.seconds, 3),
        "particle_radius_a": float(sim.info.get("particle_radius_a", 0.0)),
        "info": {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in sim.info.items()},
        "yx_lr": sim.particle_yx_lr_px.tolist(),
        "yx_hr": sim.particle_yx_hr_px.tolist(),
        "angles": sim.particle_angles_deg.tolist(),
    }
