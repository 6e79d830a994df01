"""Pictures and the HTML report: CTF diagnostics, FRC and power-spectrum plots, before/after panels.

Figures are built with ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot, no global
backend switch) and written atomically as PNG. The HTML page embeds every PNG as a data URI so it is
one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from cryosr.core.ctf.fit import CtfFit
from cryosr.core.io.atomic import atomic_path
from cryosr.core.spectral import rfft_radius, ring_index, ring_mean

__all__ = [
    "ctf_diagnostic_figure",
    "figure_png_bytes",
    "frc_figure",
    "html_report",
    "html_table",
    "panels_figure",
    "radial_power",
    "save_figure",
    "save_png",
    "spectrum_figure",
]


def figure_png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_png(data: bytes, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write PNG bytes atomically (temp file + rename)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 90, overwrite: bool = True) -> bytes:
    """Write a figure as PNG atomically; returns the PNG bytes (to embed them without rendering again)."""
    data = figure_png_bytes(fig, dpi=dpi)
    save_png(data, path, overwrite=overwrite)
    return data


def _resolution_axis(ax, pixel_size_a: float | None = None) -> None:
    """Label a 1/Å x axis with spacings in Å on top."""
    top = ax.secondary_xaxis("top", functions=(lambda f: 1 / (f + 1e-9), lambda d: 1 / (d + 1e-9)))
    top.set_xlabel("resolution (Å)")
    lo, hi = ax.get_xlim()
    ticks = [d for d in (50, 20, 10, 8, 6, 5, 4, 3, 2.5, 2, 1.5, 1.2, 1) if lo < 1 / d < hi]
    top.set_xticks(ticks)
    top.set_xticklabels([f"{d:g}" for d in ticks])


def ctf_diagnostic_figure(fit: CtfFit, title: str = "") -> Figure:
    """Half measured spectrum / half model, and the equi-phase 1-D profiles with CC_fit.

    Parameters
    ----------
    fit : CtfFit
        Result of ``fit_ctf``.
    title : str
        Usually the micrograph name.
    """
    fig = Figure(figsize=(12, 5.2))
    ax_img, ax_1d = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.5]})
    t = fit.spectrum.shape[-1]
    spec = fit.spectrum.detach().cpu().clamp(-3, 3)
    model = (fit.model.detach().cpu() - 0.5) * 4  # CTF² in [0, 1] -> about the spectrum's range
    combo = spec.clone()
    combo[:, t // 2 :] = model[:, t // 2 :]
    # show out to the fit resolution (or at least 40% of Nyquist) so the rings are visible
    keep = min(t // 2, max(int(t * 0.1), int(t * fit.pixel_size_a / max(fit.fit_resolution_a, 1e-3) * 1.3)))
    sl = slice(t // 2 - keep, t // 2 + keep)
    ax_img.imshow(combo[sl, sl].numpy(), cmap="gray", vmin=-3, vmax=3, interpolation="nearest")
    ax_img.set_title("measured | model", fontsize=10)
    ax_img.set_axis_off()
    f = fit.freq_per_a.cpu().numpy()
    ax_1d.plot(f, fit.profile_spectrum.cpu().numpy(), lw=1, label="spectrum (equi-phase average)")
    pm = fit.profile_model.cpu()
    ax_1d.plot(
        f,
        ((pm - pm.mean()) / pm.std().clamp_min(1e-9) * fit.profile_spectrum.cpu().std()).numpy(),
        lw=1,
        label="CTF² model",
    )
    ax_1d.plot(f, fit.cc_fit.cpu().numpy(), lw=1.5, label="CC_fit")
    ax_1d.axhline(0.75, color="gray", ls=":", lw=1)
    ax_1d.axvline(
        1 / fit.fit_resolution_a, color="red", ls="--", lw=1, label=f"fit resolution {fit.fit_resolution_a:.2f} Å"
    )
    ax_1d.set_xlim(0, float(f[-1]))
    ax_1d.set_ylim(-2.5, 2.5)
    ax_1d.set_xlabel("spatial frequency (1/Å)")
    ax_1d.legend(fontsize=8, loc="lower left")
    _resolution_axis(ax_1d)
    fig.suptitle(
        f"{title}  U {fit.defocus_u_a:.0f} Å, V {fit.defocus_v_a:.0f} Å, angle {fit.defocus_angle_deg:.1f}°, "
        f"FOM {fit.score:.3f}",
        fontsize=10,
    )
    return fig


def frc_figure(
    curves: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    pixel_size_a: float,
    lr_nyquist: float | None = 0.25,
    title: str = "FRC against truth",
) -> Figure:
    """FRC curves of several predictions against the truth.

    Parameters
    ----------
    curves : dict
        Name -> (`(n,)` frequency in cycles/px, `(n,)` FRC).
    pixel_size_a : float
        Pixel size of the compared images (for the Å axis).
    lr_nyquist : float | None
        LR Nyquist in cycles/px, drawn as a line (0.25 for 2x).
    title : str
        Plot title.
    """
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    for name, (freq, frc) in curves.items():
        ax.plot((freq / pixel_size_a).cpu().numpy(), frc.cpu().numpy(), lw=1.3, label=name)
    if lr_nyquist:
        ax.axvline(lr_nyquist / pixel_size_a, color="gray", ls="--", lw=1, label="LR Nyquist")
    ax.axhline(0.143, color="gray", ls=":", lw=0.8)
    ax.axhline(0.5, color="gray", ls=":", lw=0.8)
    ax.set_xlim(0, 0.5 / pixel_size_a)
    ax.set_ylim(-0.1, 1.02)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FRC")
    ax.legend(fontsize=8)
    _resolution_axis(ax)
    ax.set_title(title, fontsize=10, pad=28)
    return fig


def radial_power(image: torch.Tensor, n_shells: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotationally averaged power spectrum.

    Parameters
    ----------
    image : torch.Tensor
        `(h, w)` image.
    n_shells : int | None
        Rings between 0 and 0.5 cycles/px (default ``min(h, w) // 2``).

    Returns
    -------
    freq, power : torch.Tensor
        `(n,)` ring centres (cycles/px) and `(n,)` mean power (float64).
    """
    h, w = image.shape[-2:]
    n = n_shells or min(h, w) // 2
    x = image.to(torch.float64)
    f = torch.fft.rfft2(x - x.mean())
    rings = ring_index(rfft_radius((h, w), device=x.device, dtype=torch.float32), n / 0.5, floor=True, n_rings=n + 1)
    power = ring_mean(f.abs() ** 2, rings, n + 1)
    freq = (torch.arange(n, dtype=torch.float64, device=x.device) + 0.5) * 0.5 / n
    return freq, power[:n] / (h * w)


def spectrum_figure(
    spectra: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    pixel_size_a: float,
    lr_nyquist: float | None = 0.25,
) -> Figure:
    """Rotationally averaged power spectra (each normalized to its low-frequency mean), log scale.

    Parameters
    ----------
    spectra : dict
        Name -> (`(n,)` frequency in cycles/px, `(n,)` power).
    pixel_size_a : float
        Pixel size (for the 1/Å axis).
    lr_nyquist : float | None
        LR Nyquist in cycles/px, drawn as a line.
    """
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    for name, (freq, power) in spectra.items():
        low = power[(freq > 0.02) & (freq < 0.1)].mean().clamp_min(1e-30)
        ax.semilogy(
            (freq / pixel_size_a).cpu().numpy(), (power / low).clamp_min(1e-12).cpu().numpy(), lw=1.1, label=name
        )
    if lr_nyquist:
        ax.axvline(lr_nyquist / pixel_size_a, color="gray", ls="--", lw=1, label="LR Nyquist")
    ax.set_xlim(0, 0.5 / pixel_size_a)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("power (normalized at low frequency)")
    ax.legend(fontsize=8)
    _resolution_axis(ax)
    ax.set_title("rotationally averaged power spectra", fontsize=10, pad=28)
    return fig


def panels_figure(panels: dict[str, torch.Tensor], *, title: str = "", size_px: int | None = None) -> Figure:
    """Side-by-side crops (same field of view, same contrast).

    Each image is standardized (zero mean, unit std over its crop) and shown on one grey scale
    ``[-3, 3]``; an image at a different sampling (e.g. the LR sum at half size) covers the same
    field of view by its extent.

    Parameters
    ----------
    panels : dict
        Name -> `(h, w)` image; the last one sets the reference size.
    title : str
        Figure title.
    size_px : int | None
        Crop size in pixels of the reference image (default: a centred quarter, at most 256).
    """
    names = list(panels)
    ref_h, ref_w = panels[names[-1]].shape[-2:]
    crop = size_px or min(256, max(32, min(ref_h, ref_w) // 2))
    n = len(names)
    fig = Figure(figsize=(3.0 * n, 3.3))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        img = panels[name].detach().cpu().to(torch.float64)
        s = img.shape[-1] / ref_w
        c = max(2, int(round(crop * s)))
        y0 = int(round((ref_h / 2) * s)) - c // 2
        x0 = int(round((ref_w / 2) * s)) - c // 2
        y0, x0 = max(0, y0), max(0, x0)
        sub = img[y0 : y0 + c, x0 : x0 + c]
        sub = (sub - sub.mean()) / sub.std().clamp_min(1e-12)
        ax.imshow(sub.numpy(), cmap="gray", vmin=-3, vmax=3, extent=(0, crop, crop, 0), interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4g}"
    return html.escape(str(v))


def html_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain HTML table of dict rows (floats to 4 significant digits).

    Without ``columns`` the columns are the union of the rows' keys in first-seen order (rows may
    differ: e.g. the truth rows carry only CTF numbers); a missing value is shown as an en dash.
    """
    if not rows:
        return "<p>(no rows)</p>"
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, float('nan')))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_report(
    path: str | Path,
    *,
    title: str,
    sections: Sequence[tuple[str, str, Sequence[Figure | bytes]]],
    overwrite: bool = True,
) -> Path:
    """Write a single self-contained HTML page (figures embedded as PNG data URIs).

    Parameters
    ----------
    path : str | Path
        Destination ``.html``.
    title : str
        Page title.
    sections : sequence
        ``(heading, html_fragment, figures)`` per section; the fragment is trusted HTML built by
        the caller (e.g. ``html_table``), headings are escaped; a figure is a ``Figure`` or its
        PNG bytes (``save_figure`` returns them).
    overwrite : bool
        Replace an existing page.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #bbb;padding:3px 7px;text-align:right}"
        "th{background:#eee}img{max-width:100%;margin:6px 0}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for heading, fragment, figures in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if fragment:
            parts.append(fragment)
        for fig in figures:
            png = fig if isinstance(fig, bytes) else figure_png_bytes(fig)
            data = base64.b64encode(png).decode("ascii")
            parts.append(f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    text = "\n".join(parts)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
