"""Throughput of ``cryosr superres``: seconds per stage, movies per hour and peak memory per movie size.

Tables (markdown, with the date, load average and thread count of the run):

1. Sizes: each movie size runs in a fresh process (so ``ru_maxrss`` is that size's peak). A
   synthetic drifting Poisson movie is written by one process (not timed), then a second process
   runs ``process_superres`` on it ``--repeats`` times (median seconds per stage).
2. Prefetch: ``--prefetch-movies`` movies with known shifts (the RELION-adapter path, where reading
   is the largest share), evicted from the page cache (``posix_fadvise``) before each run, through
   the in-process loop with and without the reader thread.
3. Dask workers (``--workers N``): the same movies through ``MovieRunner`` with 1 and N
   workers, and dataset mode (``--dataset``: train zssr once, broadcast, fine-tune per movie).
4. Network inference, seconds per output megapixel on one tile, same process and threads:
   cryosr's enhancement network (shipped weights), the zssr network, and the Topaz-Denoise U-Net
   (``unet_L2_v0.2.2``, when ``topaz-em`` is installed: ``pip install --no-deps topaz-em==0.3.20``).

Usage::

    python benchmarks/bench_throughput.py                        # 512, 1024, 2048 px x 40 frames
    python benchmarks/bench_throughput.py --sizes 512 --workers 2 --dataset
    python benchmarks/bench_throughput.py --sizes 2048 --include-4k --no-prefetch --net-size 0
    python benchmarks/bench_throughput.py --include-4k --workers 2 --dataset --docs   # also write docs/benchmarks/throughput.md
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

try:
    from _provenance import DocsPage  # run as a script: benchmarks/ is sys.path[0]
except ImportError:  # loaded from the repository root (tests)
    from benchmarks._provenance import DocsPage

STAGES = ("read", "align", "lr_sum", "reconstruct", "write")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


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
    del noise, smooth
    movie = torch.empty(frames, size, size)
    for i in range(frames):  # frame by frame: keeps the generator's memory at one movie
        shift = torch.tensor([[0.4 * i, -0.25 * i]])
        movie[i] = torch.poisson(fourier_shift(specimen[None], shift)[0].clamp_min(0), generator=g)
    write_mrc(path, movie, 1.0, overwrite=True)


def _true_shifts(frames: int) -> torch.Tensor:
    i = torch.arange(frames, dtype=torch.float32)
    shifts = torch.stack([0.4 * i, -0.25 * i], 1)
    return shifts - shifts.mean(0)


def _evict(paths: list[Path]) -> None:
    """Drop files from the OS page cache (clean pages only; no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _acquisition(path: str | Path):
    """The benchmark movies' acquisition: the header's pixel size, 1 e/Å² per frame."""
    from cryosr.core.acquisition import Acquisition
    from cryosr.core.io import read_movie_header

    return Acquisition(read_movie_header(path).pixel_size_a or 1.0, 1.0)


def _time_movie(path: str, out_dir: str, method: str, device_spec: str, repeats: int, threads: int) -> dict:
    from cryosr.core.device import resolve_device
    from cryosr.core.pipeline import MovieTask, process_superres
    from cryosr.core.superres.reconstruct import SuperresConfig

    torch.set_num_threads(threads)
    device = resolve_device(device_spec)
    task = MovieTask(Path(path), Path(out_dir) / "sr.mrc", _acquisition(path), lr_sum_path=Path(out_dir) / "sum.mrc")
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        record = process_superres(task, SuperresConfig(method=method), device=device, overwrite=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = {k: record["seconds"].get(k, 0.0) for k in STAGES}
        seconds["other"] = sum(v for k, v in record["seconds"].items() if k not in STAGES)
        seconds["total"] = time.perf_counter() - t0
        runs.append(seconds)
        frames = record["n_frames"]
        err = (torch.tensor(record["shifts_yx_px"]) - _true_shifts(frames)).pow(2).sum(1).mean().sqrt()
    result = {k: statistics.median(r[k] for r in runs) for k in (*STAGES, "other", "total")}
    result["shift_rms_px"] = float(err)
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
        print(f"  {size}^2 x {args.frames}: {r['total']:.2f} s, {r['peak_rss_gb']:.2f} GiB", file=sys.stderr, flush=True)
        movie.unlink()
    return rows


def _time_prefetch(paths: list[str], out_dir: str, frames: int, prefetch: bool, threads: int) -> dict:
    from cryosr.core.batch import MovieRunner
    from cryosr.core.pipeline import MovieTask, process_superres
    from cryosr.core.superres.reconstruct import SuperresConfig

    torch.set_num_threads(threads)
    shifts = tuple(map(tuple, _true_shifts(frames).tolist()))
    tasks = [
        MovieTask(Path(p), Path(out_dir) / f"{Path(p).stem}_sr.mrc", _acquisition(p), shifts_yx_px=shifts)
        for p in paths
    ]
    _evict([Path(p) for p in paths])
    t0 = time.perf_counter()
    with MovieRunner(device_spec="cpu", progress=False, prefetch=prefetch) as runner:
        records = runner.run(tasks, SuperresConfig(method="fourier"), process_fn=process_superres, overwrite=True)
    wall = time.perf_counter() - t0
    assert all("error" not in r for r in records), records
    reads = [r["seconds"]["read"] for r in records]
    return {"wall": wall, "read_first": reads[0], "read_rest": statistics.mean(reads[1:]) if len(reads) > 1 else 0.0,
            "compute": statistics.mean(sum(v for k, v in r["seconds"].items() if k != "read") for r in records)}


def bench_prefetch(args: argparse.Namespace, scratch: Path) -> list[dict]:
    size = args.prefetch_size
    paths = [str(scratch / f"p_{i}.mrcs") for i in range(args.prefetch_movies)]
    for i, p in enumerate(paths):
        _in_child(_write_movie, p, size, args.frames, 200 + i)
    rows = []
    for prefetch in (False, True):
        out = scratch / f"prefetch_{prefetch}"
        out.mkdir()
        r = _in_child(_time_prefetch, paths, str(out), args.frames, prefetch, args.threads)
        r.update(prefetch=prefetch, movies=len(paths), size=size, mb=Path(paths[0]).stat().st_size / 1e6)
        rows.append(r)
    for p in paths:
        Path(p).unlink()
    return rows


def _time_workers(paths: list[str], out_dir: str, method: str, workers: int) -> float:
    from cryosr.core.batch import MovieRunner
    from cryosr.core.pipeline import MovieTask, process_superres
    from cryosr.core.superres.reconstruct import SuperresConfig

    tasks = [MovieTask(Path(p), Path(out_dir) / f"{Path(p).stem}_sr.mrc", _acquisition(p)) for p in paths]
    t0 = time.perf_counter()
    with MovieRunner(device_spec="cpu", workers=workers, progress=False) as runner:
        records = runner.run(tasks, SuperresConfig(method=method), process_fn=process_superres)
    wall = time.perf_counter() - t0
    assert all("error" not in r for r in records), records
    return wall


def _time_dataset(paths: list[str], out_dir: str, workers: int, iterations: int, train_iterations: int) -> dict:
    """Dataset mode: train zssr once on the first movie, broadcast, fine-tune + infer every movie."""
    from cryosr.core.batch import MovieRunner
    from cryosr.core.pipeline import MovieTask, process_superres, train_zssr_dataset
    from cryosr.core.superres.reconstruct import SuperresConfig

    tasks = [MovieTask(Path(p), Path(out_dir) / f"{Path(p).stem}_sr.mrc", _acquisition(p)) for p in paths]
    t0 = time.perf_counter()
    with MovieRunner(device_spec="cpu", workers=workers, progress=False) as runner:
        weights, _ = runner.train(tasks[:1], SuperresConfig(method="zssr", iterations=train_iterations), train_fn=train_zssr_dataset)
        t1 = time.perf_counter()
        records = runner.run(tasks, SuperresConfig(method="zssr", iterations=iterations), process_fn=process_superres, weights=weights)
    wall = time.perf_counter() - t0
    assert all("error" not in r for r in records), records
    return {"wall": wall, "train": t1 - t0, "per_movie": (time.perf_counter() - t1) / len(tasks)}


def bench_workers(args: argparse.Namespace, scratch: Path) -> tuple[list[dict], list[dict]]:
    size = args.sizes[0]
    paths = [str(scratch / f"w_{i}.mrcs") for i in range(args.worker_movies)]
    for i, p in enumerate(paths):
        _in_child(_write_movie, p, size, args.frames, 100 + i)
    rows, dataset_rows = [], []
    for workers in sorted({1, args.workers}):
        out = scratch / f"workers_{workers}"
        out.mkdir()
        wall = _in_child(_time_workers, paths, str(out), args.method, workers)
        rows.append({"workers": workers, "movies": len(paths), "size": size, "wall": wall})
        if args.dataset:
            out = scratch / f"dataset_{workers}"
            out.mkdir()
            r = _in_child(_time_dataset, paths, str(out), workers, args.dataset_iterations, args.dataset_train_iterations)
            r.update(workers=workers, movies=len(paths), size=size)
            dataset_rows.append(r)
    return rows, dataset_rows


def _net_seconds(fn, repeats: int) -> float:
    with torch.inference_mode():
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _load_topaz():
    """``benchmarks/bench_enhance.py``'s Topaz loader (shared so both benchmarks time the same network)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from bench_enhance import load_topaz
    finally:
        sys.path.pop(0)
    return load_topaz()


def bench_networks(args: argparse.Namespace) -> list[dict]:
    """Seconds per output megapixel on one `(size, size)` input tile, same process, same threads."""
    torch.set_num_threads(args.threads)
    size = args.net_size
    g = torch.Generator().manual_seed(0)
    rows = []
    from cryosr.core.enhance.checkpoint import load_checkpoint

    model, _ = load_checkpoint("default", "cpu")
    model.eval()
    x = torch.rand(1, model.config.frames, size, size, generator=g) + 0.5
    for scale in model.config.scales:
        s = _net_seconds(lambda scale=scale: model(x, scale=scale), args.repeats)
        rows.append({"net": f"cryosr enhance DSTNet, shipped weights, {model.config.frames}-frame window, {scale}x",
                     "mpix": (size * scale) ** 2 / 1e6, "s": s})
    from cryosr.core.superres.zssr import ZssrConfig, make_net

    zcfg = ZssrConfig()
    net = make_net(zcfg).eval()
    xz = torch.randn(1, zcfg.in_channels, 2 * size, 2 * size, generator=g)  # the 2x grid of a size^2 LR tile
    s = _net_seconds(lambda: net(xz), args.repeats)
    rows.append({"net": f"cryosr zssr network ({zcfg.pairing} pairing), 2x grid", "mpix": (2 * size) ** 2 / 1e6, "s": s})
    topaz = _load_topaz()
    if topaz is None:
        rows.append({"net": "Topaz-Denoise U-Net", "note": "topaz-em not installed: row skipped"})
    else:
        xt = torch.randn(1, 1, size, size, generator=g)
        s = _net_seconds(lambda: topaz(xt), args.repeats)
        rows.append({"net": "Topaz-Denoise U-Net (unet_L2 v0.2.2), 1x", "mpix": size * size / 1e6, "s": s})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048], help="movie edge lengths (px)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--include-4k", action="store_true", help="add the 4096^2 target size (~2.7 GB per movie)")
    parser.add_argument("--method", default=None, help="SuperresConfig method (default: the engine's default)")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads per process")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-prefetch", action="store_true", help="skip the prefetch table")
    parser.add_argument("--prefetch-movies", type=int, default=4)
    parser.add_argument("--prefetch-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=0, help="also time 1 vs N Dask workers (0: skip)")
    parser.add_argument("--worker-movies", type=int, default=4, help="movies (smallest size) for the workers rows")
    parser.add_argument("--dataset", action="store_true", help="with --workers: dataset-mode zssr rows")
    parser.add_argument("--dataset-iterations", type=int, default=10, help="zssr fine-tune steps per movie")
    parser.add_argument("--dataset-train-iterations", type=int, default=150, help="zssr steps of the shared training")
    parser.add_argument("--net-size", type=int, default=512, help="input tile edge for the network rows (0: skip)")
    parser.add_argument("--scratch", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--docs", action="store_true", help="also write docs/benchmarks/throughput.md")
    args = parser.parse_args(argv)
    page = DocsPage("throughput", "Benchmark: throughput, memory and scaling", enabled=args.docs,
                    argv=None if argv is None else ["benchmarks/bench_throughput.py", *argv])  # fmt: skip
    if args.method is None:
        from cryosr.core.superres.reconstruct import DEFAULT_METHOD

        args.method = DEFAULT_METHOD

    start = f"{datetime.datetime.now():%Y-%m-%d %H:%M}, load average {_load()}"
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        scratch = Path(tmp)
        rows = bench_sizes(args, scratch)
        prefetch_rows = [] if args.no_prefetch else bench_prefetch(args, scratch)
        worker_rows, dataset_rows = bench_workers(args, scratch) if args.workers > 1 else ([], [])
    net_rows = bench_networks(args) if args.net_size > 0 else []

    cuda = args.device != "cpu" and torch.cuda.is_available()
    with page.section("Run"):
        print(
            f"started {start}; ended load average {_load()}; device {torch.cuda.get_device_name() if cuda else 'CPU'}, "
            f"{os.cpu_count()} cores, torch threads {args.threads}, method {args.method}, median of {args.repeats}"
        )
    with page.section("Seconds per stage, by movie size"):
        print(
            "\n| movie | read s | align s | lr_sum s | reconstruct s | write s | total s | movies/h | s per Gpix-frame "
            "| shift RMS px | peak RSS GiB | CUDA peak GiB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            cuda_peak = "-" if r["cuda_peak_gb"] is None else f"{r['cuda_peak_gb']:.2f}"
            print(
                f"| {r['size']}² x {r['frames']} | {r['read']:.2f} | {r['align']:.1f} | {r['lr_sum']:.2f} "
                f"| {r['reconstruct'] + r['other']:.1f} | {r['write']:.2f} | {r['total']:.1f} | {3600 / r['total']:.0f} "
                f"| {r['total'] / r['gpix_frames']:.0f} | {r['shift_rms_px']:.4f} | {r['peak_rss_gb']:.2f} | {cuda_peak} |"
            )
    if prefetch_rows:
        with page.section("Reader thread"):
            p0 = prefetch_rows[0]
            print(f"\nprefetch: {p0['movies']} movies of {p0['size']}² x {args.frames} ({p0['mb']:.0f} MB each), known "
                  "shifts, method fourier, page cache dropped before each run")
            print("| reader thread | wall s | read s, first movie | read s, later movies (mean) | compute s per movie |")
            print("|---|---|---|---|---|")
            for p in prefetch_rows:
                print(f"| {'on' if p['prefetch'] else 'off'} | {p['wall']:.2f} | {p['read_first']:.3f} "
                      f"| {p['read_rest']:.3f} | {p['compute']:.2f} |")
    if worker_rows:
        with page.section("Dask workers"):
            print("\n| Dask workers | movies | movie size | method | wall s (incl. cluster start) | movies/h |")
            print("|---|---|---|---|---|---|")
            for w in worker_rows:
                print(f"| {w['workers']} | {w['movies']} | {w['size']}² x {args.frames} | {args.method} | {w['wall']:.1f} "
                      f"| {3600 * w['movies'] / w['wall']:.0f} |")
    if dataset_rows:
        with page.section("Dataset mode (zssr)"):
            print(f"\n| dataset mode (zssr), Dask workers | movies | train s (once, {args.dataset_train_iterations} steps) "
                  f"| fine-tune + infer s per movie ({args.dataset_iterations} steps), amortized | wall s |")
            print("|---|---|---|---|---|")
            for d in dataset_rows:
                print(f"| {d['workers']} | {d['movies']} x {d['size']}² | {d['train']:.1f} | {d['per_movie']:.1f} "
                      f"| {d['wall']:.1f} |")
    if net_rows:
        with page.section("Network inference"):
            print(f"\n| network inference ({args.net_size}² input tile, CPU fp32) | s per output Mpix |")
            print("|---|---|")
            for n in net_rows:
                print(f"| {n['net']} | {n.get('note') or format(n['s'] / n['mpix'], '.3f')} |")
    page.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
