"""Write a simulated RELION 3.1+ project (movies, truths, STAR files, JSON) with relative paths.

Layout under ``DIR``::

    Movies/movie_0001.mrcs                LR movie (counts), header pixel = LR pixel; .tif (--format tiff:
                                          integer counts, LZW, rows stored flipped as RELION reads TIFF) or
                                          .eer (--format eer: electron events, 4096^2 for RELION 3.1)
    Movies/gain.mrc                       (--gain-sigma/--dead-columns) gain reference in RELION's convention:
                                          MRC/TIFF movies 1/sensitivity (multiplied), EER the sensitivity itself
    Movies/defects.txt                    (--hot-pixels/--dead-columns) RELION/MotionCor2 defect file, x y w h
                                          (EER: for upsampling 1; defects_eer_upsampling2.txt for the 2x grid)
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
from cryosr.core.acquisition import Acquisition
from cryosr.core.errors import InputError
from cryosr.core.fourier import bin_sum
from cryosr.core.io.atomic import atomic_path
from cryosr.core.io.eer import rendered_acquisition, write_eer
from cryosr.core.io.movie import write_defects, write_tiff_movie
from cryosr.core.io.mrc import write_mrc
from cryosr.core.io.star import read_star, write_star
from cryosr.core.simulate.config import SimulationConfig
from cryosr.core.simulate.detector import eer_events
from cryosr.core.simulate.movie import SimulatedMovie, camera_for

__all__ = [
    "SHIFT_CONVENTION",
    "movie_file",
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


#: File suffix of the LR movie per ``SimulationConfig.movie_format``.
MOVIE_SUFFIXES = {"mrc": ".mrcs", "tiff": ".tif", "eer": ".eer"}


def movie_file(config: SimulationConfig, index: int) -> str:
    """The LR movie of movie ``index``, relative to the project: ``Movies/movie_0001.mrcs`` (or .tif, .eer)."""
    return f"Movies/{movie_name(index)}{MOVIE_SUFFIXES[config.movie_format]}"


def _eer_frames(sim: SimulatedMovie, config: SimulationConfig, stats: dict):
    """The EER detector frames of ``sim``: ``eer_frames_per_fraction`` draws of each fraction's HR expectation."""
    n = config.eer_frames_per_fraction
    camera = camera_for(config)
    expected = sim.eer_expected_hr
    gen = torch.Generator(device=expected.device).manual_seed(sim.eer_seed)
    for j in range(expected.shape[0]):
        per_frame = expected[j] / n  # the motion is constant within a fraction
        for _ in range(n):
            events, lost = eer_events(per_frame, camera, gen)
            stats["events"] += len(events)
            stats["coincidence_lost"] += lost
            yield events.cpu()


def _write_lr_movie(out: Path, index: int, sim: SimulatedMovie, config: SimulationConfig) -> Path:
    """The LR movie in ``config.movie_format`` (EER: the events are drawn here; their counts go to ``sim.info``)."""
    target = out / movie_file(config, index)
    if config.movie_format == "tiff":
        return write_tiff_movie(target, sim.lr_frames, overwrite=True)
    if config.movie_format != "eer":
        return write_mrc(target, sim.lr_frames, config.pixel_size_a, overwrite=True)
    if sim.eer_expected_hr is None:
        raise InputError(target, "the simulation kept no EER intensities (movie_format was not eer)")
    stats = {"events": 0, "coincidence_lost": 0}
    n_frames = sim.eer_expected_hr.shape[0] * config.eer_frames_per_fraction
    write_eer(target, _eer_frames(sim, config, stats), (config.size, config.size), n_frames,
              pixel_size_a=config.pixel_size_a, compression=config.eer_compression, overwrite=True)  # fmt: skip
    sim.info.update(eer_detector_frames=n_frames, eer_events=stats["events"], eer_coincidence_lost=stats["coincidence_lost"])
    return target


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
        _write_lr_movie(out, index, sim, config),
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
        "rlnMicrographMovieName": movie_file(config, index),
        "rlnMicrographBinning": 1.0,
        "rlnMicrographOriginalPixelSize": px,
        "rlnMicrographDoseRate": config.dose_per_frame,
        "rlnMicrographPreExposure": 0.0,
        "rlnVoltage": config.voltage_kv,
        "rlnMicrographStartFrame": 1,
    }
    if config.movie_format == "eer":  # the fractions are RELION's EER grouping of the detector frames, at 1x
        general.update(rlnEERUpsampling=1, rlnEERGrouping=config.eer_frames_per_fraction)
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


def _write_camera_files(out: Path, config: SimulationConfig) -> list[Path]:
    """``Movies/gain.mrc`` and ``Movies/defects.txt`` of an imperfect camera (RELION's conventions, see the module)."""
    camera = camera_for(config)
    if camera is None:
        return []
    written = []
    if camera.sensitivity is not None:  # EER gains hold the sensitivity (RELION inverts them), others multiply
        gain = camera.sensitivity if config.movie_format == "eer" else camera.gain_reference
        written.append(write_mrc(out / "Movies" / "gain.mrc", gain, config.pixel_size_a, overwrite=True))
    if config.has_defects:
        written.append(write_defects(out / "Movies" / "defects.txt", camera.defect_rectangles(config.size), overwrite=True))
    if config.has_defects and config.movie_format == "eer":  # RELION applies the rectangles to the rendered frames
        written.append(write_defects(out / "Movies" / "defects_eer_upsampling2.txt", camera.defect_rectangles(config.size, 2),
                                     overwrite=True))  # fmt: skip
    return written


def _detector_meta(config: SimulationConfig, written: list[Path], out: Path) -> dict:
    """The ``detector`` section of simulation.json: format, camera files, EER fractions and their dose."""
    files = {p.name: p.relative_to(out).as_posix() for p in written}
    meta = {"movie_format": config.movie_format, "gain_reference": files.get("gain.mrc"),
            "defect_file": files.get("defects.txt")}  # fmt: skip
    if "defects_eer_upsampling2.txt" in files:
        meta["defect_file_eer_upsampling2"] = files["defects_eer_upsampling2.txt"]
    if "gain.mrc" in files:
        meta["gain_convention"] = ("EER: the relative sensitivity, RELION applies mean/gain (0 = defect)"
                                   if config.movie_format == "eer" else "multiplicative: raw x gain = counts (RELION --gainref)")  # fmt: skip
    if config.movie_format == "eer":
        n = config.eer_frames_per_fraction
        frame = Acquisition(config.pixel_size_a, config.dose_per_frame / n, voltage_kv=config.voltage_kv)
        fraction = rendered_acquisition(frame, grouping=n, upsampling=1)
        meta["eer"] = {"detector_frames_per_fraction": n, "compression": config.eer_compression,
                       "dose_per_detector_frame_e_a2": frame.dose_per_frame_e_a2,
                       "dose_per_fraction_e_a2": fraction.dose_per_frame_e_a2,
                       "relion": f"--eer_grouping {n} --dose_per_frame {fraction.dose_per_frame_e_a2:g} (per fraction)"}  # fmt: skip
    return meta


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
    written: list[Path] = _write_camera_files(out, config)
    detector = _detector_meta(config, written, out)
    if mtf_path is not None:
        mtf_file = Path(mtf_path).name
        table = pd.DataFrame({"rlnResolutionInversePixel": config.mtf_frequencies, "rlnMtfValue": config.mtf_values})
        for where in (out, out / "HR"):
            written.append(write_star(where / mtf_file, {Path(mtf_file).stem: table}))
    for where, px, files in ((out, config.pixel_size_a, [movie_file(config, i) for i in range(len(sims))]),
                             (out / "HR", config.hr_pixel_size_a, [f"Movies/{n}.mrcs" for n in names])):  # fmt: skip
        movies = pd.DataFrame({"rlnMicrographMovieName": files, "rlnOpticsGroup": 1})
        written.append(write_star(where / "movies.star", {"optics": _optics(config, px, mtf_file, micrograph=False), "movies": movies}))

    rows = []
    box_lr = int(2 * round(sims[0]["particle_radius_a"] * 1.5 / config.pixel_size_a)) if sims else 64
    for index, (name, s) in enumerate(zip(names, sims)):
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
                    "cryosrMovieName": movie_file(config, index),
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
        "detector": detector,
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
