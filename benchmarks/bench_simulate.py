"""Seconds per simulated movie, and how they scale with movie size and frame count.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_simulate.py            # full: 1024² x 40 + scaling
    python benchmarks/bench_simulate.py --quick                      # small sizes only
    python benchmarks/bench_simulate.py --device cuda

Times ``simulate_movie`` in memory (rendering, motion, damage, CTF, detector for LR and HR);
writing MRCs is not included. Particles follow the CLI default density (120 per (1024 Å)²).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cryosr.core.device import resolve_device
from cryosr.core.io.model import load_default_model
from cryosr.core.simulate import SimulationConfig, simulate_movie


def _time(model, size: int, frames: int, device: torch.device, repeats: int) -> float:
    particles = max(1, int(120 * (size / 1024) ** 2))
    cfg = SimulationConfig(size=size, frames=frames, particles=particles, seed=0)
    best = float("inf")
    for r in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        simulate_movie(model, cfg, r, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    """Run the benchmark and print one JSON line per measurement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = load_default_model()
    _time(model, 64, 2, device, 1)  # warm-up
    cases = [(256, 10), (512, 10), (512, 20)] if args.quick else [
        (256, 10), (512, 10), (1024, 10), (512, 20), (512, 40), (1024, 40)
    ]
    print(json.dumps({"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__}))
    for size, frames in cases:
        s = _time(model, size, frames, device, args.repeats)
        mpix = size * size * frames / 1e6
        print(json.dumps({"size": size, "frames": frames, "seconds": round(s, 2),
                          "ns_per_lr_pixel_frame": round(s / mpix * 1e3, 1)}), flush=True)


if __name__ == "__main__":
    main()
