"""Enhancement benchmark: cryosr enhance vs Topaz-Denoise vs a low-passed dose-weighted sum vs zssr.

On held-out simulated movies (``cryosr simulate`` projects, other seed and protein than the
training data) every method is compared with the clean truth at the LR pixel (the simulator's
HR clean sum, 2x2 box-binned, mean-normalised like every output): PSNR (``cryosr.core.evaluate.
metrics.psnr``) and FRC pooled over three bands (0-25 %, 25-50 %, 50-100 % of Nyquist), as
mean ± standard deviation over movies, plus the per-movie PSNR difference "movie window minus
one-frame window on the dose-weighted sum" (does the temporal input earn its place?). The
spectral Wiener filter row is the network's linear anchor alone (``wiener_anchor``), so the table
shows what the trained residual adds. Seconds per megapixel of LR input on this machine, shift
estimation included; the header line records the date and the load average.

Shifts are estimated from the movie (``estimate_shifts``) and their mean is set to the mean of
the true shifts, i.e. the aligned sums are registered to the truth's frame (estimate_shifts
returns mean-free shifts; the truth is motion-free in the simulator's frame). ``--true-shifts``
uses the simulator's shifts instead (isolates the network from alignment errors).

Topaz-Denoise (``topaz-em`` 0.3.20, ``unet_L2_v0.2.2.sav`` loaded into
``UDenoiseNet(base_width=11, top_width=5)``) sees the dose-weighted sum, standardised like
``topaz.denoise.Denoise._denoise`` does. It is optional (skipped when not installed). ``--zssr``
adds the super-resolution engine's zssr output (2x), box-binned back to 1x. ``--frames-noise``
adds the anchor with the colour-correct noise estimate from even/odd frame sums, and the movie
window with the noise estimate the weights were *not* trained with (``cryosr enhance
--noise-estimate corner|frames``) next to the default rows (the weights' own estimate).

``--real MRC`` also runs cryosr enhance and Topaz on a real micrograph (2x binned first, as
Topaz users do with small pixels), fits the CTF of each (``cryosr.core.ctf.fit``, tile
512) and saves a before/after PNG panel with power spectra.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_enhance.py --data HELDOUT_SIMDIR... \\
        [--model default OTHER.pt] [--real MICROGRAPH.mrc] [--png-dir benchmarks/images] [--zssr] \\
        [--json rows.json] [--docs]     # --docs also writes docs/benchmarks/enhance.md

The held-out projects of the table in docs/benchmarks/enhance.md: ``simulate_commands.held_out_for_bench_enhance`` in
``core/data/enhance_default.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.align import estimate_shifts
from cryosr.core.dose import dose_weighted_sum
from cryosr.core.enhance.checkpoint import load_checkpoint
from cryosr.core.enhance.infer import EnhanceConfig, enhance_micrograph, enhance_movie
from cryosr.core.enhance.prefilter import wiener_anchor
from cryosr.core.enhance.window import frame_window
from cryosr.core.evaluate.frc import frc_band
from cryosr.core.evaluate.metrics import psnr
from cryosr.core.fourier import bin_sum
from cryosr.core.io import read_micrograph, read_movie
from cryosr.core.shifts import fourier_shift
from cryosr.core.simulate.project import read_true_shifts

try:
    from _provenance import DocsPage  # run as a script: benchmarks/ is sys.path[0]
except ImportError:  # loaded from the repository root (tests)
    from benchmarks._provenance import DocsPage

BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.0))
WINDOW = "cryosr enhance, movie window"
SINGLE = "cryosr enhance, on the dose-weighted sum"


def gaussian_lowpass(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Gaussian low-pass with real-space sigma in pixels (applied in Fourier space)."""
    h, w = image.shape
    k2 = torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None] ** 2
    filt = torch.exp(-2 * math.pi**2 * sigma_px**2 * k2)
    return torch.fft.irfft2(torch.fft.rfft2(image) * filt, s=(h, w))


def load_topaz():
    """Topaz's pretrained U-Net, or None when topaz-em is not installed."""
    try:
        import topaz
        from topaz.denoising.models import UDenoiseNet
    except ImportError:
        return None
    weights = Path(topaz.__file__).parent / "pretrained" / "denoise" / "unet_L2_v0.2.2.sav"
    net = UDenoiseNet(base_width=11, top_width=5)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()


@torch.no_grad()
def topaz_denoise(net, image: torch.Tensor, patch: int = 1024, padding: int = 128) -> torch.Tensor:
    """Topaz ``denoise_patches``: standardise, U-Net per padded patch, un-standardise."""
    mu, std = image.mean(), image.std()
    x = (image - mu) / std
    out = torch.zeros_like(x)
    h, w = x.shape
    for i in range(0, h, patch):
        for j in range(0, w, patch):
            si, sj = max(0, i - padding), max(0, j - padding)
            ei, ej = min(h, i + patch + padding), min(w, j + patch + padding)
            y = net(x[None, None, si:ei, sj:ej])[0, 0]
            out[i : i + patch, j : j + patch] = y[i - si : i - si + patch, j - sj : j - sj + patch]
    return out * std + mu


def _scores(image: torch.Tensor, truth: torch.Tensor) -> dict:
    norm = image / image.mean()
    row = {"psnr_db": psnr(norm, truth)}
    for lo, hi in BANDS:
        row[f"frc_{int(lo * 100)}_{int(hi * 100)}"] = float(frc_band(norm, truth, lo, hi))
    return row


def bench_project(
    project: Path, models: dict, topaz_net, *, zssr: bool, true_shifts: bool, frames_noise: bool = False
) -> list[dict]:
    """Score every method on every movie of one held-out project."""
    params = json.loads((project / "truth" / "simulation.json").read_text())
    cfg = params.get("config", params)
    dose, voltage = float(cfg["dose_per_frame"]), float(cfg.get("voltage_kv", 300.0))
    rows = []
    for path in sorted((project / "Movies").glob("*.mrcs")):
        movie = read_movie(path)
        frames, px = movie.frames, movie.pixel_size_a
        acq = Acquisition(px, dose, voltage_kv=voltage)
        mp = frames.shape[-1] * frames.shape[-2] / 1e6
        truth = bin_sum(read_micrograph(project / "truth" / f"{path.stem}_clean.mrc").data, 2) / 4
        truth = truth / truth.mean()
        known = read_true_shifts(project / "truth" / f"{path.stem}_shifts.star")
        t0 = time.perf_counter()
        shifts = known if true_shifts else estimate_shifts(frames, acq)
        t_align = time.perf_counter() - t0
        shifts = shifts - shifts.mean(0) + known.mean(0)
        aligned = fourier_shift(frames, -shifts)
        res = {"movie": f"{project.name}/{path.stem}", "size": list(frames.shape), "pixel_size_a": px}

        def add(name, image, seconds, res=res, truth=truth, mp=mp):
            rows.append({**res, "method": name, **_scores(image, truth), "s_per_mp": seconds / mp})

        add("plain aligned sum", aligned.sum(0), t_align)
        t0 = time.perf_counter()
        dw = dose_weighted_sum(aligned, acq)
        t_dw = time.perf_counter() - t0 + t_align
        # the trivial baseline, with its sigma tuned against the truth (its best case)
        best = max((_scores(gaussian_lowpass(dw, s), truth)["psnr_db"], s) for s in (0.5, 0.75, 1, 1.5, 2, 3, 4))
        add("dose-weighted sum + Gaussian (sigma tuned on the truth)", gaussian_lowpass(dw, best[1]), t_dw)
        rows[-1]["sigma_px"] = best[1]
        t0 = time.perf_counter()  # the linear part of cryosr enhance (its anchor), no training, no truth
        add("spectral Wiener filter of the dose-weighted sum (the net's anchor)", wiener_anchor(dw / dw.mean()),
            time.perf_counter() - t0 + t_dw)
        if frames_noise:
            t0 = time.perf_counter()
            npow = frame_window(aligned, 1, acq, noise=True).noise_power
            add("spectral Wiener filter, noise from even/odd frames", wiener_anchor(dw / dw.mean(), noise_power=npow),
                time.perf_counter() - t0 + t_dw)
        for label, model in models.items():
            t0 = time.perf_counter()
            out = enhance_movie(frames, model, EnhanceConfig(), acq, shifts_yx_px=shifts)
            add(f"{WINDOW}{label}", out.image, time.perf_counter() - t0 + t_align)
            if frames_noise:  # the estimate the weights were not trained with (the default row has theirs)
                other = "corner" if model.config.noise == "frames" else "frames"
                t0 = time.perf_counter()
                out = enhance_movie(frames, model, EnhanceConfig(noise=other), acq, shifts_yx_px=shifts)
                what = "noise from even/odd frames" if other == "frames" else "white corner noise level"
                add(f"cryosr enhance, movie window, {what}{label}", out.image, time.perf_counter() - t0 + t_align)
            t0 = time.perf_counter()
            out = enhance_micrograph(dw, model, EnhanceConfig())
            add(f"{SINGLE}{label}", out.image, time.perf_counter() - t0 + t_dw)
        if topaz_net is not None:
            t0 = time.perf_counter()
            add("Topaz-Denoise unet_L2 v0.2.2 (on the dose-weighted sum)", topaz_denoise(topaz_net, dw),
                time.perf_counter() - t0 + t_dw)
        if zssr:
            from cryosr.core.superres.reconstruct import SuperresConfig, run_superres

            t0 = time.perf_counter()
            sr = run_superres(frames, acq, config=SuperresConfig(method="zssr"), shifts_yx_px=shifts)
            add("zssr 2x, box-binned to 1x", bin_sum(sr.image, 2) / 4, time.perf_counter() - t0 + t_align)
    return rows


def real_panels(path: Path, models: dict, topaz_net, png_dir: Path) -> dict:
    """Enhance a real micrograph (2x binned) with cryosr and Topaz; CTF-fit each; save a PNG panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cryosr.core.ctf.fit import CtfFitConfig, fit_ctf

    mic = read_micrograph(path)
    image = bin_sum(mic.data, 2) / 4
    px = (mic.pixel_size_a or 1.0) * 2
    mp = image.numel() / 1e6
    results = {"input (2x binned)": image}
    seconds = {}
    for label, model in models.items():
        t0 = time.perf_counter()
        results[f"cryosr enhance{label}"] = enhance_micrograph(image, model, EnhanceConfig()).image
        seconds[f"cryosr enhance{label}"] = (time.perf_counter() - t0) / mp
    if topaz_net is not None:
        t0 = time.perf_counter()
        results["Topaz unet_L2"] = topaz_denoise(topaz_net, image)
        seconds["Topaz unet_L2"] = (time.perf_counter() - t0) / mp
    ctf = {}
    for name, img in results.items():
        fit = fit_ctf(img, px, CtfFitConfig(tile_px=512))
        ctf[name] = {"fit_resolution_a": round(fit.fit_resolution_a, 2), "score": round(fit.score, 3),
                     "defocus_u_a": round(fit.defocus_u_a), "defocus_v_a": round(fit.defocus_v_a)}
    png_dir.mkdir(parents=True, exist_ok=True)
    n = len(results)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.6))
    c = image.shape[0] // 2
    for ax, (name, img) in zip(axes.T, results.items()):
        crop = img[c - 192 : c + 192, c - 192 : c + 192]
        lo, hi = torch.quantile(crop.flatten(), torch.tensor([0.01, 0.99]))
        ax[0].imshow(crop.numpy(), cmap="gray", vmin=float(lo), vmax=float(hi))
        ax[0].set_title(f"{name}\n384 px crop, {px:.2f} Å/px", fontsize=8)
        spec = torch.fft.fftshift(torch.fft.fft2(img - img.mean())).abs().pow(2)
        spec = bin_sum(spec, 4).log10()  # 512^2 display, less speckle
        slo, shi = torch.quantile(spec.flatten(), torch.tensor([0.05, 0.999]))
        ax[1].imshow(spec.numpy(), cmap="gray", vmin=float(slo), vmax=float(shi))
        ax[1].set_title(f"log power spectrum\nCTF fit resolution {ctf[name]['fit_resolution_a']:.1f} Å", fontsize=8)
        for a in ax:
            a.axis("off")
    fig.tight_layout()
    out = png_dir / f"enhance_real_{path.stem}.png"
    fig.savefig(out, dpi=55)
    plt.close(fig)
    return {"png": str(out), "s_per_mp": seconds, "pixel_size_a": px, "shape": list(image.shape), "ctf": ctf}


def sim_panel(project: Path, model, topaz_net, png_dir: Path) -> Path:
    """Before/after panel of the first held-out movie: plain sum, dose-weighted sum, cryosr, Topaz, truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = json.loads((project / "truth" / "simulation.json").read_text())["config"]
    path = sorted((project / "Movies").glob("*.mrcs"))[0]
    movie = read_movie(path)
    shifts = read_true_shifts(project / "truth" / f"{path.stem}_shifts.star")
    aligned = fourier_shift(movie.frames, -shifts)
    acq = Acquisition(movie.pixel_size_a, cfg["dose_per_frame"])
    dw = dose_weighted_sum(aligned, acq)
    images = {
        "plain sum": aligned.sum(0),
        "dose-weighted sum": dw,
        "cryosr enhance (window)": enhance_movie(movie.frames, model, EnhanceConfig(), acq, shifts_yx_px=shifts).image,
    }
    if topaz_net is not None:
        images["Topaz unet_L2"] = topaz_denoise(topaz_net, dw)
    images["clean truth"] = bin_sum(read_micrograph(project / "truth" / f"{path.stem}_clean.mrc").data, 2) / 4
    n = len(images)
    png_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, n, figsize=(3.0 * n, 6.2))
    for ax, (name, img) in zip(axes.T, images.items()):
        lo, hi = torch.quantile(img.flatten(), torch.tensor([0.01, 0.99]))
        ax[0].imshow(img.numpy(), cmap="gray", vmin=float(lo), vmax=float(hi))
        ax[0].set_title(name, fontsize=8)
        spec = torch.fft.fftshift(torch.fft.fft2(img - img.mean())).abs().pow(2).log10()
        slo, shi = torch.quantile(spec.flatten(), torch.tensor([0.05, 0.999]))
        ax[1].imshow(spec.numpy(), cmap="gray", vmin=float(slo), vmax=float(shi))
        ax[1].set_title("log power spectrum", fontsize=8)
        for a in ax:
            a.axis("off")
    fig.tight_layout()
    out = png_dir / f"enhance_sim_{project.name}_{path.stem}.png"
    fig.savefig(out, dpi=55)
    plt.close(fig)
    return out


def summarise(rows: list[dict]) -> list[str]:
    """Markdown table: mean ± standard deviation over movies per method, and the window-vs-sum gain."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    keys = ["psnr_db"] + [f"frc_{int(lo * 100)}_{int(hi * 100)}" for lo, hi in BANDS]
    lines = ["| method | PSNR dB | FRC 0-25 % | FRC 25-50 % | FRC 50-100 % | s/MP |", "|---|---|---|---|---|---|"]
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        cells = []
        for k in keys:
            vals = [r[k] for r in sel]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.2f} ± {sd:.2f}" if k == "psnr_db" else f"{statistics.mean(vals):.3f} ± {sd:.3f}")
        cells.append(f"{statistics.mean(r['s_per_mp'] for r in sel):.1f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for w in [m for m in methods if m.startswith(WINDOW)]:
        s = SINGLE + w[len(WINDOW):]
        by = {r["movie"]: r["psnr_db"] for r in rows if r["method"] == s}
        diffs = [r["psnr_db"] - by[r["movie"]] for r in rows if r["method"] == w and r["movie"] in by]
        if diffs:
            sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            lines.append(f"movie window - one-frame window on the dose-weighted sum{w[len(WINDOW):]}: "
                         f"{statistics.mean(diffs):+.3f} ± {sd:.3f} dB (per movie: {', '.join(f'{d:+.2f}' for d in diffs)})")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the side-by-side table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="held-out cryosr simulate projects")
    parser.add_argument("--model", nargs="+", default=["default"], help="checkpoints to compare (default: shipped)")
    parser.add_argument("--real", type=Path, help="a real micrograph for the before/after panels and CTF fits")
    parser.add_argument("--png-dir", type=Path, help="write PNG panels here (e.g. docs/images)")
    parser.add_argument("--no-topaz", action="store_true")
    parser.add_argument("--zssr", action="store_true", help="also run the zssr SR method")
    parser.add_argument("--true-shifts", action="store_true", help="use the simulator's shifts (no estimation)")
    parser.add_argument("--frames-noise", action="store_true",
                        help="also the anchor and the movie window with the noise estimated from even/odd frames")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every per-movie row here")
    parser.add_argument("--docs", action="store_true", help="also write docs/benchmarks/enhance.md")
    args = parser.parse_args(argv)
    page = DocsPage("enhance", "Benchmark: enhancement (denoising) on held-out movies", enabled=args.docs,
                    argv=None if argv is None else ["benchmarks/bench_enhance.py", *argv])  # fmt: skip
    torch.set_num_threads(args.threads)
    models = {}
    for spec in args.model:
        label = "" if len(args.model) == 1 else f" [{Path(spec).stem}]"
        models[label] = load_checkpoint(spec)[0]
    topaz_net = None if args.no_topaz else load_topaz()
    if topaz_net is None and not args.no_topaz:
        print("topaz-em not installed: Topaz rows skipped", file=sys.stderr)
    rows = []
    for project in args.data:
        rows += bench_project(project, models, topaz_net, zssr=args.zssr, true_shifts=args.true_shifts,
                              frames_noise=args.frames_noise)
    n_movies = len({r["movie"] for r in rows})
    sigmas = [r["sigma_px"] for r in rows if "sigma_px" in r]
    sizes = sorted({f"{r['size'][0]}x{r['size'][1]}x{r['size'][2]} at {r['pixel_size_a']:.2f} Å/px" for r in rows})
    with page.section("Held-out movies"):
        print(f"{datetime.date.today()}, load average {os.getloadavg()[0]:.1f}, {args.threads} torch threads; "
              f"{n_movies} held-out movies ({', '.join(sizes)}; {'true' if args.true_shifts else 'estimated'} shifts), "
              f"mean ± sd over movies; FRC vs truth in bands of Nyquist; tuned Gaussian sigmas {sigmas} px")
        print("\n".join(summarise(rows)))
    with page.section("PSNR per project"):
        for project in args.data:
            print(f"  {project.name}: " + "; ".join(
                f"{m}: {statistics.mean(r['psnr_db'] for r in rows if r['method'] == m and r['movie'].startswith(project.name + '/')):.2f} dB"
                for m in dict.fromkeys(r["method"] for r in rows)))
    out = {"rows": rows}
    if args.png_dir is not None:
        first_model = next(iter(models.values()))
        print(f"simulated panel: {sim_panel(args.data[0], first_model, topaz_net, args.png_dir)}")
    if args.real is not None:
        info = real_panels(args.real, models, topaz_net, args.png_dir or Path("."))
        out["real"] = info
        with page.section("Real micrograph"):
            _print_real(args.real, info)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    page.write()
    return 0


def _print_real(real: Path, info: dict) -> None:
    """The real-micrograph lines: seconds per megapixel and the CTF fit of each output."""
    print(f"real micrograph {real.name} ({info['shape']}, {info['pixel_size_a']:.3f} Å/px): "
          f"s/MP {json.dumps({k: round(v, 2) for k, v in info['s_per_mp'].items()})}, panel {info['png']}")
    for name, fit in info["ctf"].items():
        print(f"  CTF fit {name}: resolution {fit['fit_resolution_a']} Å, defocus U/V "
              f"{fit['defocus_u_a']}/{fit['defocus_v_a']} Å, score {fit['score']}")


if __name__ == "__main__":
    sys.exit(main())
