"""Enhancement benchmark: cryosr enhance vs Topaz-Denoise vs a low-passed dose-weighted sum (vs zssr).

On held-out simulated movies (``cryosr simulate`` projects, other seed and protein than the
training data) every method is compared with the clean truth at the LR pixel (the simulator's
HR clean sum, 2x2 box-binned, mean-normalised like every output): PSNR and FRC pooled over three
bands (0-25 %, 25-50 %, 50-100 % of Nyquist). Seconds per megapixel of LR input on this machine.

Shifts are estimated from the movie (``estimate_shifts``) and their mean is set to the mean of
the true shifts, i.e. the aligned sums are registered to the truth's frame (estimate_shifts
returns mean-free shifts; the truth is motion-free in the simulator's frame).

Topaz-Denoise (``topaz-em`` 0.3.20, ``unet_L2_v0.2.2.sav`` loaded into
``UDenoiseNet(base_width=11, top_width=5)``) sees the dose-weighted sum, standardised like
``topaz.denoise.Denoise._denoise`` does. It is optional (skipped when not installed).

``--real MRC`` also runs cryosr enhance and Topaz on a real micrograph (2x binned first, as
Topaz users do with small pixels) and saves before/after PNG panels with power spectra.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_enhance.py --data HELDOUT_SIMDIR [--real MICROGRAPH.mrc] --png-dir DIR
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from cryosr.core.dose import dose_weighted_sum
from cryosr.core.enhance.checkpoint import load_checkpoint
from cryosr.core.enhance.dataset import read_true_shifts
from cryosr.core.enhance.infer import EnhanceConfig, enhance_micrograph, enhance_movie
from cryosr.core.enhance.losses import psnr
from cryosr.core.evaluate.frc import frc_band
from cryosr.core.fourier import bin_sum
from cryosr.core.io import read_micrograph, read_movie
from cryosr.core.shifts import fourier_shift
from cryosr.core.superres.engine import estimate_shifts

BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.0))


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


def bench_project(project: Path, model, topaz_net, zssr: bool) -> list[dict]:
    """Score every method on every movie of one held-out project."""
    params = json.loads((project / "truth" / "simulation.json").read_text())
    cfg = params.get("config", params)
    rows = []
    for path in sorted((project / "Movies").glob("*.mrcs")):
        movie = read_movie(path)
        frames, px = movie.frames, movie.pixel_size_a
        mp = frames.shape[-1] * frames.shape[-2] / 1e6
        truth = bin_sum(read_micrograph(project / "truth" / f"{path.stem}_clean.mrc").data, 2) / 4
        truth = truth / truth.mean()
        true_shifts = read_true_shifts(project / "truth" / f"{path.stem}_shifts.star")
        t0 = time.perf_counter()
        shifts = estimate_shifts(frames)
        t_align = time.perf_counter() - t0
        shifts = shifts - shifts.mean(0) + true_shifts.mean(0)
        aligned = fourier_shift(frames, -shifts)
        res = {"movie": f"{project.name}/{path.stem}", "size": tuple(frames.shape)}

        def add(name, image, seconds, res=res, truth=truth, mp=mp):
            rows.append({**res, "method": name, **_scores(image, truth), "s_per_mp": seconds / mp})

        add("plain sum", aligned.sum(0), t_align)
        t0 = time.perf_counter()
        dw = dose_weighted_sum(aligned, cfg["dose_per_frame"], px, voltage_kv=cfg.get("voltage_kv", 300.0))
        t_dw = time.perf_counter() - t0 + t_align
        # the trivial baseline, with its sigma tuned against the truth (its best case)
        best = max((_scores(gaussian_lowpass(dw, s), truth)["psnr_db"], s) for s in (0.5, 0.75, 1, 1.5, 2, 3, 4))
        add("dose-weighted + Gaussian (oracle sigma)", gaussian_lowpass(dw, best[1]), t_dw)
        rows[-1]["sigma_px"] = best[1]
        t0 = time.perf_counter()
        out = enhance_movie(frames, model, EnhanceConfig(), shifts_yx_px=shifts)
        add("cryosr enhance (movie window)", out.image, time.perf_counter() - t0 + t_align)
        t0 = time.perf_counter()
        out = enhance_micrograph(dw, model, EnhanceConfig())
        add("cryosr enhance (on dose-weighted sum)", out.image, time.perf_counter() - t0 + t_dw)
        if topaz_net is not None:
            t0 = time.perf_counter()
            add("Topaz-Denoise unet_L2 v0.2.2", topaz_denoise(topaz_net, dw), time.perf_counter() - t0 + t_dw)
        if zssr:
            from cryosr.core.superres.engine import SuperresConfig, run_superres

            t0 = time.perf_counter()
            sr = run_superres(frames, pixel_size_a=px, dose_per_frame=cfg["dose_per_frame"],
                              config=SuperresConfig(method="zssr"), shifts_yx_px=shifts)
            add("zssr 2x, binned to 1x", bin_sum(sr.image, 2) / 4, time.perf_counter() - t0)
    return rows


def real_panels(path: Path, model, topaz_net, png_dir: Path) -> dict:
    """Enhance a real micrograph (2x binned) with cryosr and Topaz; save PNG panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mic = read_micrograph(path)
    image = bin_sum(mic.data, 2) / 4
    px = (mic.pixel_size_a or 1.0) * 2
    mp = image.numel() / 1e6
    results = {"input": image}
    seconds = {}
    t0 = time.perf_counter()
    results["cryosr enhance"] = enhance_micrograph(image, model, EnhanceConfig()).image
    seconds["cryosr enhance"] = (time.perf_counter() - t0) / mp
    if topaz_net is not None:
        t0 = time.perf_counter()
        results["Topaz unet_L2"] = topaz_denoise(topaz_net, image)
        seconds["Topaz unet_L2"] = (time.perf_counter() - t0) / mp
    png_dir.mkdir(parents=True, exist_ok=True)
    n = len(results)
    fig, axes = plt.subplots(2, n, figsize=(5 * n, 10))
    c = image.shape[0] // 2
    for ax, (name, img) in zip(axes.T, results.items()):
        crop = img[c - 256 : c + 256, c - 256 : c + 256]
        lo, hi = torch.quantile(crop.flatten(), torch.tensor([0.01, 0.99]))
        ax[0].imshow(crop.numpy(), cmap="gray", vmin=float(lo), vmax=float(hi))
        ax[0].set_title(f"{name} (512 px crop, {px:.2f} Å/px)")
        spec = torch.fft.fftshift(torch.fft.fft2(img - img.mean())).abs().pow(2).log10()
        slo, shi = torch.quantile(spec[::4, ::4].flatten(), torch.tensor([0.05, 0.999]))
        ax[1].imshow(spec.numpy(), cmap="gray", vmin=float(slo), vmax=float(shi))
        ax[1].set_title("log power spectrum")
        for a in ax:
            a.axis("off")
    fig.tight_layout()
    out = png_dir / f"enhance_real_{path.stem}.png"
    fig.savefig(out, dpi=60)
    plt.close(fig)
    return {"png": str(out), "s_per_mp": seconds, "pixel_size_a": px, "shape": tuple(image.shape)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the side-by-side table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="held-out cryosr simulate projects")
    parser.add_argument("--model", default="default")
    parser.add_argument("--real", type=Path, help="a real micrograph for the before/after panels")
    parser.add_argument("--png-dir", type=Path, default=Path("bench_enhance_png"))
    parser.add_argument("--no-topaz", action="store_true")
    parser.add_argument("--zssr", action="store_true", help="also run the zssr SR method (slow)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.model)
    topaz_net = None if args.no_topaz else load_topaz()
    if topaz_net is None and not args.no_topaz:
        print("topaz-em not installed: Topaz rows skipped", file=sys.stderr)
    rows = []
    for project in args.data:
        rows += bench_project(project, model, topaz_net, args.zssr)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    keys = ["psnr_db"] + [f"frc_{int(lo * 100)}_{int(hi * 100)}" for lo, hi in BANDS] + ["s_per_mp"]
    n_movies = len({r["movie"] for r in rows})
    sigmas = [r["sigma_px"] for r in rows if "sigma_px" in r]
    print(f"{n_movies} held-out movies, means over movies; FRC vs truth in bands of Nyquist; "
          f"oracle Gaussian sigmas {sigmas} px")
    print(f"| method | {' | '.join(keys)} |")
    print("|" + "---|" * (len(keys) + 1))
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        vals = [sum(r[k] for r in sel) / len(sel) for k in keys]
        print(f"| {m} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    if args.real is not None:
        info = real_panels(args.real, model, topaz_net, args.png_dir)
        print(f"real micrograph {args.real.name} ({info['shape']}, {info['pixel_size_a']:.3f} Å/px): "
              f"s/MP {json.dumps({k: round(v, 2) for k, v in info['s_per_mp'].items()})}, panels in {info['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
