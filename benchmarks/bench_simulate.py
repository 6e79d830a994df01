"""Seconds per simulated movie, and how they scale with movie size and frame count.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_simulate.py --repeats 3   # full: 1024² x 40 + scaling
    python benchmarks/bench_simulate.py --quick                        # small sizes only
    python benchmarks/bench_simulate.py --device cuda
    OMP_NUM_THREADS=2 python benchmarks/bench_simulate.py --repeats 2 --docs   # also write docs/benchmarks/simulate.md

Times ``simulate_movie`` in memory (rendering, motion, damage, CTF, detector for LR and HR);
writing MRCs is not included. Particles follow the CLI default density (120 per (1024 Å)²).
Each case reports the best of ``--repeats`` runs and the 1-minute load average around it (the
machine may be shared: on a loaded machine the times are upper bounds). The last line fits
``seconds = c + a · pixels + b · pixels · frames`` (start-up, a per-movie part that grows with the
field, and a per-frame part) and gives the largest relative deviation from that fit.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from cryosr.core.device import resolve_device
from cryosr.core.simulate import SimulationConfig, simulate_movie
from cryosr.core.simulate.model_io import load_default_model

try:
    from _provenance import DocsPage  # run as a script: benchmarks/ is sys.path[0]
except ImportError:  # loaded from the repository root (tests)
    from benchmarks._provenance import DocsPage


def _time(model, size: int, frames: int, device: torch.device, repeats: int) -> tuple[float, float]:
    """Best wall time and the CPU time of that run."""
    particles = max(1, int(120 * (size / 1024) ** 2))
    cfg = SimulationConfig(size=size, frames=frames, particles=particles, seed=0)
    best, cpu = float("inf"), 0.0
    for r in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        simulate_movie(model, cfg, r, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        if seconds < best:
            best, cpu = seconds, time.process_time() - c0
    return best, cpu


def _fit(rows: list[dict]) -> dict:
    """Least-squares ``seconds = c + a·P + b·P·T`` (P = LR pixels, T = frames) and its worst relative error."""
    x = torch.tensor([[1.0, r["size"] ** 2, r["size"] ** 2 * r["frames"]] for r in rows], dtype=torch.float64)
    y = torch.tensor([r["seconds"] for r in rows], dtype=torch.float64)
    coef = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
    rel = ((x @ coef - y) / y).abs().max()
    return {
        "fit": "seconds = c + a * lr_pixels + b * lr_pixels * frames",
        "c_seconds": round(float(coef[0]), 2),
        "a_ns_per_lr_pixel": round(float(coef[1]) * 1e9, 1),
        "b_ns_per_lr_pixel_frame": round(float(coef[2]) * 1e9, 1),
        "max_relative_deviation": round(float(rel), 3),
    }


def main() -> None:
    """Run the benchmark and print one JSON line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--docs", action="store_true", help="also write docs/benchmarks/simulate.md")
    args = parser.parse_args()
    page = DocsPage("simulate", "Benchmark: simulator speed", enabled=args.docs)
    device = resolve_device(args.device)
    model = load_default_model()
    _time(model, 64, 2, device, 1)  # warm-up
    cases = [(256, 10), (512, 10), (512, 20)] if args.quick else [
        (256, 10), (512, 10), (1024, 10), (512, 20), (512, 40), (1024, 20), (1024, 40)
    ]
    print(json.dumps({"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}))
    rows = []
    for size, frames in cases:
        load_before = os.getloadavg()[0]
        seconds, cpu = _time(model, size, frames, device, args.repeats)
        mpix = size * size * frames / 1e6
        rows.append({"size": size, "frames": frames, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                     "ns_per_lr_pixel_frame": round(seconds / mpix * 1e3, 1),
                     "load_avg_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)]})
        print(json.dumps(rows[-1]), flush=True)
    fit = _fit(rows)
    print(json.dumps(fit))
    page.add("Seconds per movie", _markdown_table(rows, args.repeats, device))
    page.add("Linear fit", f"{fit['fit']}: c = {fit['c_seconds']} s, a = {fit['a_ns_per_lr_pixel']} ns per LR pixel, "
                           f"b = {fit['b_ns_per_lr_pixel_frame']} ns per LR pixel and frame; largest deviation from "
                           f"the fit {fit['max_relative_deviation'] * 100:.0f} %.")  # fmt: skip
    page.write()


def _markdown_table(rows: list[dict], repeats: int, device: torch.device) -> str:
    """The rows as the Markdown table of docs/benchmarks/simulate.md."""
    lines = [f"`simulate_movie` in memory on {device}: LR and HR movies and all truths (writing MRCs is not "
             f"included), best of {repeats} run(s) per case, particles at the CLI default density (120 per "
             "(1024 Å)²).", "",
             "| LR size x frames (HR 2x) | seconds | CPU seconds | ns per LR pixel·frame | 1-min load before / after |",
             "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['size']}² x {r['frames']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
              f"{r['ns_per_lr_pixel_frame']:.0f} | {r['load_avg_1min'][0]} / {r['load_avg_1min'][1]} |"
              for r in sorted(rows, key=lambda r: (r["size"], r["frames"]))]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
