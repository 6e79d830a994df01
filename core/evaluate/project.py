"""``cryosr evaluate``: score prediction folders against a simulated project's truth and write a report.

For each prediction folder (``DIR/<stem>.mrc`` from ``cryosr superres`` / ``cryosr enhance``) and each
truth micrograph (``SIMDIR/truth/<stem>_clean.mrc``, noise-free and CTF-modulated, at the HR
sampling): global registration, FRC curve, FRC pooled below the LR Nyquist and beyond it (outside the
LR Fourier square: only a method that recovers aliased information scores there), PSNR/SSIM after an
affine intensity fit, and the CTF fit (defocus, fit resolution). Without truth (real data) only the
CTF fit and the pictures are produced. A prediction at the LR size is sinc-upsampled for the
comparison (it then carries nothing beyond the LR Nyquist, which is the honest baseline).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cryosr.core.ctf.fit import CtfFit, CtfFitConfig, fit_ctf
from cryosr.core.errors import InputError
from cryosr.core.evaluate.frc import frc_band, frc_curve
from cryosr.core.evaluate.metrics import affine_fit, psnr, register_to, ssim
from cryosr.core.evaluate.report import (
    ctf_diagnostic_figure,
    frc_figure,
    html_report,
    html_table,
    panels_figure,
    radial_power,
    save_figure,
    spectrum_figure,
)
from cryosr.core.fourier import fourier_pad
from cryosr.core.io import atomic_path, read_micrograph, read_movie, read_star
from cryosr.core.shifts import cross_correlation_shift, fourier_shift

logger = logging.getLogger(__name__)

__all__ = ["EvaluateConfig", "evaluate_project", "find_truth"]

SUMMARY_COLUMNS = (
    "method",
    "n",
    "frc_below_lr_nyquist",
    "frc_beyond_lr_nyquist",
    "psnr_db",
    "ssim",
    "ctf_fit_resolution_a",
    "ctf_defocus_error_a",
    "shift_px",
)


@dataclass(frozen=True)
class EvaluateConfig:
    """Settings of ``evaluate_project``.

    Attributes
    ----------
    scale : int
        HR/LR sampling factor (the LR Nyquist is ``0.5 / scale`` cycles per HR pixel).
    ctf : CtfFitConfig | None
        CTF-fit settings; None skips the CTF fit.
    register : bool
        Remove a global translation of each prediction before comparing.
    max_movies : int | None
        Evaluate at most this many micrographs per folder.
    panel_px : int
        Crop size (HR pixels) of the before/after panels.
    n_panels : int
        Micrographs shown as panels and CTF diagnostics.
    """

    scale: int = 2
    ctf: CtfFitConfig | None = field(default_factory=lambda: CtfFitConfig(tile_px=256))
    register: bool = True
    max_movies: int | None = None
    panel_px: int = 256
    n_panels: int = 1

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")
        if self.max_movies is not None and self.max_movies < 1:
            raise ValueError(f"max_movies must be >= 1, got {self.max_movies}")
        if self.panel_px < 16 or self.n_panels < 0:
            raise ValueError("panel_px must be >= 16 and n_panels >= 0")


def find_truth(sim_dir: Path) -> dict[str, Path]:
    """``stem -> SIMDIR/truth/<stem>_clean.mrc`` (sorted); raises ``InputError`` if there is none."""
    truth_dir = sim_dir / "truth"
    if not truth_dir.is_dir():
        raise InputError(sim_dir, "no truth/ folder (expected a `cryosr simulate` project)")
    found = {p.name[: -len("_clean.mrc")]: p for p in sorted(truth_dir.glob("*_clean.mrc"))}
    if not found:
        raise InputError(truth_dir, "no *_clean.mrc truth micrographs")
    return found


def _method_names(pred_dirs: list[Path]) -> list[str]:
    names = [p.resolve().name for p in pred_dirs]
    if len(set(names)) < len(names):
        names = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in pred_dirs]
    if len(set(names)) < len(names):
        raise InputError(None, "prediction folders must have distinct names")
    return names


def _lr_sum(sim_dir: Path, stem: str, pred_dirs: list[Path]) -> torch.Tensor | None:
    """The LR sum for the panels: ``<stem>_lr_sum.mrc`` written by ``cryosr superres`` in a prediction
    folder, else a frame-aligned sum of the LR movie (one pass against the plain mean)."""
    for d in pred_dirs:
        if (d / f"{stem}_lr_sum.mrc").exists():
            return read_micrograph(d / f"{stem}_lr_sum.mrc").data.to(torch.float64)
    for name in (f"{stem}.mrcs", f"{stem}.mrc", f"{stem}.tif", f"{stem}.tiff"):
        path = sim_dir / "Movies" / name
        if path.exists():
            frames = read_movie(path).frames.to(torch.float64)
            if frames.shape[0] > 1:
                s = cross_correlation_shift(frames.mean(0), frames, max_shift_px=32)
                frames = fourier_shift(frames, -s)
            return frames.sum(0)
    return None


def _read_sim_optics(sim_dir: Path) -> dict:
    """Voltage/Cs/Q0/defocus of the simulation from ``simulation.json`` when present (keys searched loosely)."""
    path = next((p for p in (sim_dir / "truth" / "simulation.json", sim_dir / "simulation.json") if p.exists()), None)
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        logger.warning("%s: unreadable, using default optics", path)
        return {}
    flat: dict = {}

    def walk(d) -> None:
        if isinstance(d, dict):
            for k, v in d.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    flat.setdefault(k, float(v))
                else:
                    walk(v)

    walk(data)
    out = {}
    for key, names in {
        "voltage_kv": ("voltage_kv",),
        "cs_mm": ("cs_mm", "spherical_aberration_mm"),
        "amplitude_contrast": ("amplitude_contrast", "amp_contrast"),
    }.items():
        for n in names:
            if n in flat:
                out[key] = flat[n]
                break
    return out


def _true_defocus(sim_dir: Path) -> dict[str, tuple[float, float]]:
    """``stem -> (defocus U, V)`` in Å from ``truth/particles.star`` (mean over each micrograph's particles)."""
    path = sim_dir / "truth" / "particles.star"
    if not path.exists():
        return {}
    blocks = read_star(path)
    parts = blocks.get("particles")
    if parts is None or not {"rlnMicrographName", "rlnDefocusU", "rlnDefocusV"} <= set(parts.columns):
        return {}
    key = "cryosrMovieName" if "cryosrMovieName" in parts.columns else "rlnMicrographName"
    out = {}
    for name, grp in parts.groupby(key):
        stem = Path(str(name)).stem
        for suffix in ("_clean_lr", "_clean_noctf", "_clean"):
            stem = stem.removesuffix(suffix)
        out[stem] = (float(grp["rlnDefocusU"].mean()), float(grp["rlnDefocusV"].mean()))
    return out


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return sum(v) / len(v) if v else float("nan")


@dataclass
class _Scores:
    """Everything ``evaluate_project`` computes before it writes anything."""

    rows: list[dict] = field(default_factory=list)
    curves: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    spectra: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    figures_ctf: list = field(default_factory=list)
    panel_figs: list = field(default_factory=list)
    freq_axis: torch.Tensor | None = None
    hr_px: float | None = None
    truth_ctf: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class _Inputs:
    """The validated inputs: method names, micrographs, truth files and the CTF settings."""

    pred_dirs: list[Path]
    names: list[str]
    stems: list[str]
    truth: dict[str, Path | None]
    truth_dir: Path | None
    ctf: CtfFitConfig | None
    true_defocus: dict[str, tuple[float, float]]


def _inputs(pred_dirs: list[Path], truth_dir: Path | None, config: EvaluateConfig) -> _Inputs:
    """Check the folders and that every prediction exists, before computing anything."""
    if not pred_dirs:
        raise InputError(None, "give at least one prediction folder")
    for d in pred_dirs:
        if not d.is_dir():
            raise InputError(d, "prediction folder does not exist")
    ctf_cfg = config.ctf
    if ctf_cfg is not None and truth_dir is not None:
        optics = _read_sim_optics(truth_dir)
        if optics:
            ctf_cfg = CtfFitConfig(**{**ctf_cfg.__dict__, **optics})
    if truth_dir is not None:
        truth = find_truth(truth_dir)
    else:
        stems = sorted({p.stem for d in pred_dirs for p in d.glob("*.mrc") if not p.stem.endswith("_lr_sum")})
        if not stems:
            raise InputError(pred_dirs[0], "no *.mrc micrographs in the prediction folders")
        truth = dict.fromkeys(stems)
    stems = list(truth)[: config.max_movies] if config.max_movies else list(truth)
    missing = [str(d / f"{s}.mrc") for d in pred_dirs for s in stems if not (d / f"{s}.mrc").exists()]
    if truth_dir is not None and missing:
        raise InputError(missing[0], f"missing prediction ({len(missing)} missing in all)")
    true_df = _true_defocus(truth_dir) if truth_dir is not None else {}
    return _Inputs(pred_dirs, _method_names(pred_dirs), stems, truth, truth_dir, ctf_cfg, true_df)


def _defocus_error(fit: CtfFit, reference: tuple[float, float] | None) -> dict:
    if reference is None:
        return {}
    return {"ctf_defocus_error_a": (abs(fit.defocus_u_a - reference[0]) + abs(fit.defocus_v_a - reference[1])) / 2}


def _score_truth(stem: str, inp: _Inputs, sc: _Scores, device, first: bool) -> torch.Tensor | None:
    """Read the truth micrograph (and CTF-fit it: the pipeline's own ceiling); None for real data."""
    if inp.truth[stem] is None:
        return None
    t_mic = read_micrograph(inp.truth[stem])
    t_img = t_mic.data.to(device, torch.float64)
    sc.hr_px = t_mic.pixel_size_a or sc.hr_px
    if inp.ctf is not None and sc.hr_px:
        tf = fit_ctf(t_img.float(), sc.hr_px, inp.ctf)
        sc.truth_ctf[stem] = inp.true_defocus.get(stem, (tf.defocus_u_a, tf.defocus_v_a))
        sc.rows.append({"method": "truth", "micrograph": stem, "ctf_fit_resolution_a": tf.fit_resolution_a,
                        "ctf_defocus_u_a": tf.defocus_u_a, "ctf_defocus_v_a": tf.defocus_v_a,
                        **_defocus_error(tf, inp.true_defocus.get(stem))})  # fmt: skip
    if first:
        sc.spectra["truth"] = radial_power(t_img)
    return t_img


def _on_truth_grid(img: torch.Tensor, t_img: torch.Tensor, path: Path, row: dict) -> torch.Tensor:
    """A prediction at a coarser pixel, Fourier-padded onto the truth's grid (an integer factor)."""
    if img.shape == t_img.shape:
        return img
    factor = t_img.shape[-1] / img.shape[-1]
    if abs(factor - round(factor)) > 1e-6 or round(factor) < 2 or t_img.shape[-2] != round(img.shape[-2] * factor):
        raise InputError(path, f"size {tuple(img.shape)} does not match truth {tuple(t_img.shape)}")
    row["upsampled_for_comparison"] = float(factor)
    return fourier_pad(img, factor)


def _compare(name: str, img: torch.Tensor, t_img: torch.Tensor, path: Path, row: dict, sc: _Scores,
             config: EvaluateConfig, first: bool) -> None:  # fmt: skip
    """FRC bands, PSNR and SSIM of one prediction against the truth (into ``row``)."""
    lr_nyq = 0.5 / config.scale
    cmp_img = _on_truth_grid(img, t_img, path, row)
    if config.register:
        cmp_img, shift = register_to(t_img, cmp_img)
        row["shift_px"] = float(shift.norm())
    freq, frc = frc_curve(cmp_img, t_img)
    sc.freq_axis = freq
    sc.curves.setdefault(name, []).append(frc)
    row["frc_below_lr_nyquist"] = float(frc_band(cmp_img, t_img, 0.0, 1.0, nyquist=lr_nyq))
    beyond = frc_band(cmp_img, t_img, 1.0, 2.0, nyquist=lr_nyq, outside_square=True) if config.scale > 1 else math.nan
    row["frc_beyond_lr_nyquist"] = float(beyond)
    fitted = affine_fit(cmp_img, t_img)
    row["psnr_db"] = psnr(fitted, t_img)
    row["ssim"] = ssim(fitted, t_img)
    if first:
        sc.spectra[name] = radial_power(cmp_img)


def _score_prediction(name: str, path: Path, stem: str, t_img, inp: _Inputs, sc: _Scores, config: EvaluateConfig,
                      device, si: int) -> torch.Tensor:  # fmt: skip
    """Score one predicted micrograph (truth comparison, CTF fit); returns its image for the panels."""
    mic = read_micrograph(path)
    img = mic.data.to(device, torch.float64)
    px = mic.pixel_size_a or (sc.hr_px * img.shape[-1] / t_img.shape[-1] if sc.hr_px and t_img is not None else None)
    row: dict = {"method": name, "micrograph": stem}
    if t_img is not None:
        _compare(name, img, t_img, path, row, sc, config, si == 0)
    elif si == 0:
        sc.spectra[name] = radial_power(img)
    if inp.ctf is not None and px:
        fit = fit_ctf(img.float(), px, inp.ctf)
        row.update(ctf_fit_resolution_a=fit.fit_resolution_a, ctf_defocus_u_a=fit.defocus_u_a,
                   ctf_defocus_v_a=fit.defocus_v_a, ctf_figure_of_merit=fit.score)  # fmt: skip
        row.update(_defocus_error(fit, sc.truth_ctf.get(stem)))
        if si < config.n_panels:
            sc.figures_ctf.append((f"ctf_{name.replace('/', '_')}_{stem}.png", ctf_diagnostic_figure(fit, f"{name}: {stem}")))
    sc.rows.append(row)
    logger.info("%s %s: %s", name, stem, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
    return img


def _score_stem(si: int, stem: str, inp: _Inputs, sc: _Scores, config: EvaluateConfig, device) -> None:
    t_img = _score_truth(stem, inp, sc, device, si == 0)
    panels: dict[str, torch.Tensor] = {}
    if inp.truth_dir is not None and si < config.n_panels:
        lr = _lr_sum(inp.truth_dir, stem, inp.pred_dirs)
        if lr is not None:
            panels["LR sum"] = lr
    for name, d in zip(inp.names, inp.pred_dirs, strict=True):
        path = d / f"{stem}.mrc"
        if not path.exists():
            logger.warning("%s: missing, skipped", path)
            continue
        img = _score_prediction(name, path, stem, t_img, inp, sc, config, device, si)
        if si < config.n_panels:
            panels[name] = img
    if si < config.n_panels:
        if t_img is not None:
            panels["truth"] = t_img
        if panels:
            sc.panel_figs.append((f"panels_{stem}.png", panels_figure(panels, title=stem, size_px=config.panel_px)))


def _summarise(sc: _Scores, names: list[str]) -> list[dict]:
    summary = []
    for name in (["truth"] if sc.truth_ctf else []) + names:
        mine = [r for r in sc.rows if r["method"] == name]
        s = {"method": name, "n": len(mine)}
        for col in SUMMARY_COLUMNS[2:]:
            s[col] = _nanmean([r.get(col, float("nan")) for r in mine])
        summary.append(s)
    return summary


def _figures(sc: _Scores, out_dir: Path, config: EvaluateConfig, result: dict) -> list:
    """FRC and power-spectrum figures (files and page bytes); the mean FRC curves go into ``result``."""
    lr_nyq = 0.5 / config.scale if config.scale > 1 else None
    report_figs = []
    if sc.curves and sc.freq_axis is not None and sc.hr_px:
        mean_curves = {n: (sc.freq_axis, torch.stack(c).mean(0)) for n, c in sc.curves.items()}
        fig = frc_figure(mean_curves, pixel_size_a=sc.hr_px, lr_nyquist=lr_nyq)
        report_figs.append(("FRC against truth (mean over micrographs)", save_figure(fig, out_dir / "frc.png")))
        result["frc"] = {"freq_per_a": (sc.freq_axis / sc.hr_px).tolist(),
                         **{n: c.tolist() for n, (_, c) in mean_curves.items()}}  # fmt: skip
    if sc.spectra:
        fig = spectrum_figure(sc.spectra, pixel_size_a=sc.hr_px or 1.0, lr_nyquist=lr_nyq)
        report_figs.append(("Power spectra (first micrograph)", save_figure(fig, out_dir / "power_spectra.png")))
    return report_figs


def _write_tables(out_dir: Path, result: dict, summary: list[dict], rows: list[dict]) -> None:
    with atomic_path(out_dir / "metrics.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=float))
    with atomic_path(out_dir / "metrics.csv", overwrite=True) as tmp:
        cols = list(dict.fromkeys(["method", "micrograph", *SUMMARY_COLUMNS[2:], *(k for r in rows for k in r)]))
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for s in summary:
                w.writerow({**s, "micrograph": "ALL"})
            for r in rows:
                w.writerow(r)


def _write_report(sc: _Scores, summary: list[dict], inp: _Inputs, out_dir: Path, config: EvaluateConfig) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "summary": summary,
        "per_micrograph": sc.rows,
        "scale": config.scale,
        "truth": None if inp.truth_dir is None else str(inp.truth_dir),
        "predictions": [str(d) for d in inp.pred_dirs],
    }
    report_figs = _figures(sc, out_dir, config, result)
    # each figure is rendered once: the PNG file and the page embed the same bytes
    panel_figs = [(fname, save_figure(fig, out_dir / fname)) for fname, fig in sc.panel_figs]
    figures_ctf = [(fname, save_figure(fig, out_dir / fname)) for fname, fig in sc.figures_ctf]
    _write_tables(out_dir, result, summary, sc.rows)
    sections = [
        (
            "Summary (means over micrographs)",
            html_table(summary, SUMMARY_COLUMNS)
            + "<p>FRC bands are pooled correlations with the noise-free truth: below the LR Nyquist, and beyond it "
            "outside the LR Fourier square. PSNR/SSIM after an affine intensity fit. CTF fit resolution: CC_fit "
            "0.75 criterion (CTFFIND4).</p>",
            [f for _, f in report_figs],
        ),
        ("Before / after", "", [f for _, f in panel_figs]),
        ("CTF fits", "", [f for _, f in figures_ctf]),
        ("Per micrograph", html_table(sc.rows), []),
    ]
    report = html_report(out_dir / "report.html", title="cryosr evaluation report", sections=sections)
    result["report"] = str(report)
    logger.info("report: %s", report)
    return result


def evaluate_project(
    pred_dirs: list[Path],
    out_dir: Path,
    *,
    truth_dir: Path | None = None,
    config: EvaluateConfig | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """Score every prediction folder and write the report: inputs -> score each micrograph -> summarise -> write.

    Parameters
    ----------
    pred_dirs : list[Path]
        Folders holding ``<stem>.mrc``.
    out_dir : Path
        Report folder: ``report.html``, ``metrics.json``, ``metrics.csv``, ``frc.png``,
        ``power_spectra.png``, ``panels_<stem>.png``, ``ctf_<method>_<stem>.png``.
    truth_dir : Path | None
        The ``cryosr simulate`` project; None for real data (CTF fit and pictures only).
    config : EvaluateConfig | None
        Settings.
    device : torch.device | str
        Where the numerics run.

    Returns
    -------
    result : dict
        ``{"summary": [...], "per_micrograph": [...], "report": path}`` (also in ``metrics.json``).
    """
    config = config or EvaluateConfig()
    inp = _inputs(pred_dirs, truth_dir, config)
    sc = _Scores()
    for si, stem in enumerate(inp.stems):
        _score_stem(si, stem, inp, sc, config, device)
    return _write_report(sc, _summarise(sc, inp.names), inp, out_dir, config)
