"""Training examples for the enhancement network: frame windows and clean targets, as patches.

A ``TrainingMovie`` holds one movie already aligned (with the simulator's true shifts), grouped
into the network's frame window and mean-normalised (see ``cryosr.core.enhance.window``), plus
its clean targets normalised to mean 1:

- 1x target: the simulator's noise-free, motion-free, dose-weighted, CTF-modulated clean sum at
  the HR pixel, **2x2 box-binned** to the LR pixel (``bin_sum / 4``), the same integration the
  simulator's LR detector performs;
- 2x target: the clean sum at the HR pixel itself.

``sample_batch`` draws random patches with random 90-degree rotations and flips. With
probability ``p_single`` a whole batch uses a one-frame window (the mean of the groups), so the
same network also enhances single micrographs.

The Wiener anchor of a movie window uses the noise estimate the network is trained for
(``noise``: ``corner`` or ``frames``, the even/odd noise power of ``cryosr.core.enhance.window.frame_window``), like inference; a one-frame window always gets the corner-level anchor, like a
micrograph at inference.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from cryosr.core.acquisition import DEFAULT_VOLTAGE_KV, Acquisition
from cryosr.core.enhance.prefilter import wiener_anchor
from cryosr.core.enhance.window import frame_window
from cryosr.core.errors import InputError
from cryosr.core.fourier import bin_sum
from cryosr.core.io import read_micrograph, read_movie
from cryosr.core.simulate.project import read_true_shifts

logger = logging.getLogger(__name__)

__all__ = ["TrainingMovie", "load_sim_projects", "make_training_movie", "sample_batch"]


@dataclass
class TrainingMovie:
    """One movie ready for patch sampling.

    Attributes
    ----------
    window : torch.Tensor
        `(n, h, w)` normalised aligned frame groups.
    target1 : torch.Tensor
        `(h, w)` clean truth at the LR pixel, mean 1.
    target2 : torch.Tensor | None
        `(2h, 2w)` clean truth at the HR pixel, mean 1 (None when not needed).
    pixel_size_a : float
        LR pixel size in Å.
    anchor : torch.Tensor | None
        `(h, w)` Wiener anchor of the window mean (``wiener_anchor``), computed on the whole movie
        like inference does, with the movie's noise estimate.
    name : str
        Where it came from (for logs).
    anchor_single : torch.Tensor | None
        `(h, w)` anchor of the one-frame window (the mean of the groups) with the corner noise
        level, as a micrograph gets at inference; None: the same as ``anchor``.
    """

    window: torch.Tensor
    target1: torch.Tensor
    target2: torch.Tensor | None
    pixel_size_a: float
    anchor: torch.Tensor | None = None
    name: str = ""
    anchor_single: torch.Tensor | None = None


def make_training_movie(
    frames: torch.Tensor,
    clean_hr: torch.Tensor,
    *,
    n_groups: int,
    acq: Acquisition,
    shifts_yx_px: torch.Tensor | None = None,
    keep_hr: bool = False,
    noise: str = "corner",
    name: str = "",
) -> TrainingMovie:
    """Align, group and normalise a simulated movie and its clean truth.

    Parameters
    ----------
    frames : torch.Tensor
        `(t, h, w)` LR movie in counts.
    clean_hr : torch.Tensor
        `(2h, 2w)` clean dose-weighted sum at the HR pixel (any positive scale).
    n_groups : int
        Network window length.
    acq : Acquisition
        LR pixel size; with a known dose per frame the groups are dose-weighted (else plain).
    shifts_yx_px : torch.Tensor | None
        `(t, 2)` true shifts in LR pixels (frame i content = reference moved by s_i); None if the
        movie has no motion.
    keep_hr : bool
        Keep the HR target (for training the 2x head).
    noise : str
        Noise estimate of the movie window's Wiener anchor: ``corner`` or ``frames`` (even/odd
        frame sums of the aligned frames, as ``enhance_movie`` does).
    name : str
        Label for logs.

    Returns
    -------
    movie : TrainingMovie
    """
    t, h, w = frames.shape
    if tuple(clean_hr.shape) != (2 * h, 2 * w):
        raise InputError(name or None, f"clean truth {tuple(clean_hr.shape)} is not twice the movie size {(h, w)}")
    if noise not in ("corner", "frames"):
        raise InputError(None, f"unknown noise estimate {noise!r}")
    shifts = None if shifts_yx_px is None else shifts_yx_px.to(frames.dtype)
    fw = frame_window(frames, n_groups, acq, shifts_yx_px=shifts, noise=noise == "frames")
    window, noise_power = fw.window, fw.noise_power
    clean_hr = clean_hr.to(torch.float32)
    target1 = bin_sum(clean_hr, 2) / 4
    mean = float(target1.mean())
    if not mean > 0:
        raise InputError(name or None, "clean truth has a non-positive mean")
    window = window.float()
    anchor_single = wiener_anchor(window.mean(0))
    anchor = anchor_single
    if noise_power is not None:
        anchor = wiener_anchor(window.mean(0), noise_power=noise_power)
    return TrainingMovie(
        window=window,
        target1=target1 / mean,
        target2=clean_hr / mean if keep_hr else None,
        pixel_size_a=float(acq.pixel_size_a),
        anchor=anchor,
        name=name,
        anchor_single=None if anchor is anchor_single else anchor_single,
    )


def _augment(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def sample_batch(
    movies: list[TrainingMovie],
    *,
    batch: int,
    patch: int,
    generator: torch.Generator,
    scales: tuple[int, ...] = (1,),
    p_single: float = 0.2,
) -> tuple[torch.Tensor, dict[int, torch.Tensor], torch.Tensor]:
    """Random patches from random movies.

    Parameters
    ----------
    movies : list[TrainingMovie]
        Sources (all with the same window length).
    batch : int
        Patches per batch.
    patch : int
        Patch edge in LR pixels.
    generator : torch.Generator
        CPU generator (seeded by the caller).
    scales : tuple[int, ...]
        Targets to return.
    p_single : float
        Probability that the batch uses a one-frame window.

    Returns
    -------
    window : torch.Tensor
        `(batch, n, patch, patch)` with ``n`` the window length or 1.
    targets : dict[int, torch.Tensor]
        Scale -> `(batch, patch * scale, patch * scale)`.
    anchor : torch.Tensor
        `(batch, patch, patch)` Wiener anchors (of the whole movies, cut like the windows; the
        corner-level ``anchor_single`` for a one-frame batch).
    """
    single = bool(torch.rand((), generator=generator) < p_single)
    wins, anchors, tg = [], [], {s: [] for s in scales}
    for _ in range(batch):
        mv = movies[int(torch.randint(len(movies), (), generator=generator))]
        n, h, w = mv.window.shape
        if patch > min(h, w):
            raise InputError(mv.name or None, f"--patch {patch} is larger than the movie ({h}x{w})")
        y0 = int(torch.randint(h - patch + 1, (), generator=generator))
        x0 = int(torch.randint(w - patch + 1, (), generator=generator))
        k = int(torch.randint(4, (), generator=generator))
        flip = bool(torch.randint(2, (), generator=generator))
        win = mv.window[:, y0 : y0 + patch, x0 : x0 + patch]
        if single:
            win = win.mean(0, keepdim=True)
        wins.append(_augment(win, k, flip))
        anchor = mv.anchor_single if single and mv.anchor_single is not None else mv.anchor
        if anchor is None:
            anchor = wiener_anchor(mv.window.mean(0))
        anchors.append(_augment(anchor[y0 : y0 + patch, x0 : x0 + patch], k, flip))
        for s in scales:
            target = mv.target1 if s == 1 else mv.target2
            if target is None:
                raise InputError(mv.name or None, f"no {s}x target kept for this movie")
            tg[s].append(_augment(target[y0 * s : (y0 + patch) * s, x0 * s : (x0 + patch) * s], k, flip))
    return torch.stack(wins), {s: torch.stack(v) for s, v in tg.items()}, torch.stack(anchors)


def load_sim_projects(
    dirs: list[Path], *, n_groups: int, keep_hr: bool = False, dose_weighted: bool = False, noise: str = "corner"
) -> tuple[list[TrainingMovie], list[dict]]:
    """Read ``cryosr simulate`` projects as training movies.

    Per movie ``Movies/<name>.mrcs`` (LR counts), ``truth/<name>_clean.mrc`` (clean dose-weighted
    sum at the HR pixel) and ``truth/<name>_shifts.star`` (true shifts) are read; the project's
    ``truth/simulation.json`` supplies the parameters recorded for provenance.

    Parameters
    ----------
    dirs : list[Path]
        Project folders.
    n_groups : int
        Network window length.
    keep_hr : bool
        Keep the HR targets (2x head).
    dose_weighted : bool
        Dose-weight the frame groups with the project's ``dose_per_frame`` and ``voltage_kv``.
    noise : str
        Noise estimate of the movie windows' Wiener anchors (``make_training_movie``).

    Returns
    -------
    movies : list[TrainingMovie]
    info : list[dict]
        Per project: folder name, movie count and the simulation parameters that matter for
        generalisation (pixel size, dose, defocus, ice, model).
    """
    movies: list[TrainingMovie] = []
    info: list[dict] = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise InputError(d, "not a folder (expected a cryosr simulate project)")
        sim_json = d / "truth" / "simulation.json"
        if not sim_json.is_file():
            raise InputError(d, "no truth/simulation.json: not a cryosr simulate project")
        try:
            params = json.loads(sim_json.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(sim_json, f"unreadable JSON ({exc.msg})") from exc
        flat = params.get("config", params) if isinstance(params, dict) else {}
        if dose_weighted and "dose_per_frame" not in flat:
            raise InputError(sim_json, "no dose_per_frame recorded (needed for dose-weighted windows)")
        dose = float(flat["dose_per_frame"]) if dose_weighted else None
        voltage = float(flat.get("voltage_kv", DEFAULT_VOLTAGE_KV))
        paths = sorted((d / "Movies").glob("*.mrcs"))
        if not paths:
            raise InputError(d, "no Movies/*.mrcs")
        for path in paths:
            clean = d / "truth" / f"{path.stem}_clean.mrc"
            shifts_star = d / "truth" / f"{path.stem}_shifts.star"
            for p in (clean, shifts_star):
                if not p.is_file():
                    raise InputError(p, "missing (needed for training)")
            movie = read_movie(path)
            shifts = read_true_shifts(shifts_star)
            if shifts.shape[0] != movie.frames.shape[0]:
                raise InputError(shifts_star, f"{shifts.shape[0]} shifts for {movie.frames.shape[0]} frames")
            px = movie.pixel_size_a
            if not px:
                raise InputError(path, "no pixel size in the header")
            acq = Acquisition(pixel_size_a=px, dose_per_frame_e_a2=dose, voltage_kv=voltage)
            movies.append(
                make_training_movie(
                    movie.frames, read_micrograph(clean).data, n_groups=n_groups, acq=acq,
                    shifts_yx_px=shifts, keep_hr=keep_hr, noise=noise, name=str(path),
                )
            )
        keys = ("size", "pixel_size_a", "dose_per_frame", "frames", "particles", "defocus_min_a", "defocus_max_a",
                "ice_thickness_a", "energy_filter", "voltage_kv", "mtf_name", "noise_mtf", "motion", "seed", "model")
        summary = {k: flat[k] for k in keys if k in flat}
        if "model" in params and "model" not in summary:
            summary["model"] = params["model"]
        info.append({"project": d.name, "movies": len(paths), **summary})
    return movies, info
