"""Throughput of ``cryosr superres``: movies per hour, seconds per stage and peak memory per movie size.

Each movie size runs in a fresh process (so ``ru_maxrss`` is that size's peak): a synthetic
drifting Poisson movie is written to a scratch folder by one process (not timed), then a second
process runs ``process_movie`` on it ``--repeats`` times (median seconds per stage: read, align,
reconstruct, write). Optional rows: the same movies through ``run_movie_tasks`` with 1 and N Dask
workers (``--workers N``), and network inference seconds per output megapixel of the cryosr
enhancement network against the Topaz-Denoise U-Net (when ``topaz`` is importable).

Usage::

    python benchmarks/bench_throughput.py                       # 512, 1024, 2048 px x 40 frames
    python benchmarks/bench_throughput.py --sizes 512 1024 --frames 20 --workers 2
    python benchmarks/bench_throughput.py --include-4k          # adds 4096^2 x 40 (~2.7 GB, minutes on CPU)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

STAGES = ("read", "align", "reconstruct", "write")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def _write_movie(path: str, size: int, frames: int, seed: int) -> None:
    """Synthetic movie: smooth specimen drifting 0.4 px/frame, Poisson ~1 count/pixel/frame."""
    from cryosr.core.io import write_mrc
    from cryosr.core.shifts import fourier_shift

    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(size, size, generator=g)
    ky = torch.fft.fftfreq(size)[:, None]
    kx = torch.fft.rfftfreq(size)[None, :]
    smooth = torch.fft.irfft2(torch.fft.rfft2(noise) * torch.exp(-(ky**2 + kx**2) / (2 * 0.05**2)), s=(size, size))
    specimen = 1.0 + 0.3 * smooth / smooth.std()
    movie = torch.empty(frames, size, size)
    for i in range(frames):  # frame by frame: keeps the generator's memory at one movie
        shift = torch.tensor([[0.4 * i, -0.25 * i]])
        movie[i] = torch.poisson(fourier_shift(specimen[None], shift)[0].clamp_min(0), generator=g)
    write_mrc(path, movie, 1.0, overwrite=True)


def _time_movie(path: str, out_dir: str, method: str, device_spec: str, repeats: int, threads: int) -> dict:
    from cryosr.core.device import resolve_device
    from cryosr.core.superres.engine import SuperresConfig
    from cryosr.core.superres.pipeline import MovieTask, process_movie

    torch.set_num_threads(threads)
    device = resolve_device(device_spec)
    task = MovieTask(Path(path), Path(out_dir) / "sr.mrc", lr_sum_path=Path(out_dir) / "sum.mrc", dose_per_frame=1.0)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        record = process_movie(task, SuperresConfig(method=method), device=device, overwrite=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = {k: record["seconds"].get(k, 0.0) for k in STAGES}
        seconds["total"] = time.perf_counter() - t0
        runs.append(seconds)
    result = {k: statistics.median(r[k] for r in runs) for k in (*STAGES, "total")}
    result["peak_rss_gb"] = _peak_rss_gb()
    result["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else None
    return result


def _in_child(fn, *args):  # benchmark helper: run fn in a fresh process
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def bench_sizes(args: argparse.Namespace, scratch: Path) -> list[dict]:
    rows = []
    sizes = list(args.sizes) + ([4096] if args.include_4k else [])
    for size in sizes:
        movie = scratch / f"movie_{size}.mrcs"
        _in_child(_write_movie, str(movie), size, args.frames, size)
        out = scratch / f"out_{size}"
        out.mkdir(exist_ok=True)
        r = _in_child(_time_movie, str(movie), str(out), args.method, args.device, args.repeats, args.threads)
        r.update(size=size, frames=args.frames, gpix_frames=size * size * args.frames / 1e9)
        rows.append(r)
        print(f"  {size}^2 x {args.frames}: {r['total']:.2f} s", file=sys.stderr, flush=True)
        movie.unlink()
    return rows


def _time_workers(paths: list[str], out_dir: str, method: str, workers: int) -> float:
    from cryosr.core.scale.runner import run_movie_tasks
    from cryosr.core.superres.engine import SuperresConfig
    from cryosr.core.superres.pipeline import MovieTask

    tasks = [MovieTask(Path(p), Path(out_dir) / f"{Path(p).stem}_sr.mrc", dose_per_frame=1.0) for p in paths]
    t0 = time.perf_counter()
    records = run_movie_tasks(tasks, SuperresConfig(method=method), device_spec="cpu", workers=workers, progress=False)
    wall = time.perf_counter() - t0
    assert all("error" not in r for r in records), records
    return wall


def bench_workers(args: argparse.Namespace, scratch: Path) -> list[dict]:
    size = args.sizes[0]
    paths = [str(scratch / f"w_{i}.mrcs") for i in range(args.worker_movies)]
    for i, p in enumerate(paths):
        _in_child(_write_movie, p, size, args.frames, 100 + i)
    rows = []
    for workers in sorted({1, args.workers}):
        out = scratch / f"workers_{workers}"
        out.mkdir()
        wall = _in_child(_time_workers, paths, str(out), args.method, workers)
        rows.append({"workers": workers, "movies": len(paths), "size": size, "wall": wall})
    return rows


def _net_seconds(net: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    net.eval()
    with torch.inference_mode():
        net(x)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_networks(args: argparse.Namespace) -> list[dict]:
    """Seconds per output megapixel on one `(size, size)` tile, same process, same threads."""
    torch.set_num_threads(args.threads)
    size = args.net_size
    rows = []
    try:
        from cryosr.core.enhance.model import DSTNet, EnhanceNetConfig
    except ImportError as exc:
        rows.append({"net": "cryosr DSTNet", "note": f"not available ({exc})"})
    else:
        config = EnhanceNetConfig()
        net = DSTNet(config)
        x = torch.rand(1, config.frames, size, size, generator=torch.Generator().manual_seed(0)) + 0.5
        s = _net_seconds(net, x, args.repeats)
        rows.append({"net": f"cryosr DSTNet ({config.frames}-frame window, 1x)", "s_per_mpix": s / (size * size / 1e6)})
    try:
        from topaz.denoise import UDenoiseNet
    except ImportError:
        rows.append({"net": "Topaz-Denoise U-Net", "note": "topaz not importable here: row skipped"})
    else:
        net = UDenoiseNet()
        x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
        s = _net_seconds(net, x, args.repeats)
        rows.append({"net": "Topaz-Denoise U-Net (UDenoiseNet)", "s_per_mpix": s / (size * size / 1e6)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048], help="movie edge lengths (px)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--include-4k", action="store_true", help="add the 4096^2 target size (~2.7 GB per movie)")
    parser.add_argument("--method", default="fourier", help="SuperresConfig method")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads per process")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="also time 1 vs N Dask workers (0: skip)")
    parser.add_argument("--worker-movies", type=int, default=4, help="movies (smallest size) for the workers row")
    parser.add_argument("--net-size", type=int, default=512, help="tile edge for the network rows (0: skip)")
    parser.add_argument("--scratch", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        scratch = Path(tmp)
        rows = bench_sizes(args, scratch)
        worker_rows = bench_workers(args, scratch) if args.workers > 1 else []
    net_rows = bench_networks(args) if args.net_size > 0 else []

    cuda = args.device != "cpu" and torch.cuda.is_available()
    print(
        f"device: {torch.cuda.get_device_name() if cuda else 'CPU'}, torch threads {args.threads}, "
        f"method {args.method}, median of {args.repeats}"
    )
    print(
        "| movie | read s | align s | reconstruct s | write s | total s | movies/h | s per Gpix-frame "
        "| peak RSS GiB | CUDA peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cuda_peak = "-" if r["cuda_peak_gb"] is None else f"{r['cuda_peak_gb']:.2f}"
        print(
            f"| {r['size']}² x {r['frames']} | {r['read']:.2f} | {r['align']:.2f} | {r['reconstruct']:.2f} "
            f"| {r['write']:.2f} | {r['total']:.2f} | {3600 / r['total']:.0f} | {r['total'] / r['gpix_frames']:.1f} "
            f"| {r['peak_rss_gb']:.2f} | {cuda_peak} |"
        )
    if worker_rows:
        print("\n| Dask workers | movies | movie size | wall s (incl. cluster start) | movies/h |")
        print("|---|---|---|---|---|")
        for w in worker_rows:
            print(
                f"| {w['workers']} | {w['movies']} | {w['size']}² x {args.frames} | {w['wall']:.1f} "
                f"| {3600 * w['movies'] / w['wall']:.0f} |"
            )
    if net_rows:
        print(f"\n| network inference ({args.net_size}² tile) | s per output Mpix |")
        print("|---|---|")
        for n in net_rows:
            print(f"| {n['net']} | {n.get('note') or format(n['s_per_mpix'], '.3f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
