"""Scaling: in-process loop vs a 2-worker Dask LocalCluster, retries, killed workers, bad inputs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cryosr.core.acquisition import Acquisition
from cryosr.core.batch import ClusterConfig, MovieRunner, remove_stale_temps
from cryosr.core.batch.cluster import jobqueue_kwargs, make_jobqueue_cluster
from cryosr.core.batch.prefetch import Prefetcher, read_ahead
from cryosr.core.errors import InputError
from cryosr.core.io import atomic_path, read_micrograph, write_mrc
from cryosr.core.pipeline import MovieTask, process_superres
from cryosr.core.shifts import fourier_shift
from cryosr.core.superres.reconstruct import SuperresConfig

PIXEL_SIZE_A = 1.0
ACQ = Acquisition(PIXEL_SIZE_A, 1.0)
NO_DOSE = Acquisition(PIXEL_SIZE_A)


def run_movie_tasks(tasks, config, *, process_fn=process_superres, overwrite=False, on_record=None, **runner_kw):
    """One ``MovieRunner`` run over ``tasks`` (the runner options in ``runner_kw``)."""
    with MovieRunner(**runner_kw) as runner:
        return runner.run(tasks, config, process_fn=process_fn, overwrite=overwrite, on_record=on_record)
N_FRAMES, SIZE = 8, 64
CONFIG = SuperresConfig(method="fourier")

# Dask logs (not warns) about restarted workers; these cover the warnings it can emit on teardown.
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:distributed"),
    pytest.mark.filterwarnings("ignore::UserWarning:distributed"),
    pytest.mark.filterwarnings("ignore:.*Port.*already in use:UserWarning"),
]


def true_shifts(index: int) -> torch.Tensor:
    """Known drift of movie ``index``: a straight line, mean-free, `(t, 2)` pixels."""
    t = torch.arange(N_FRAMES, dtype=torch.float32)
    shifts = torch.stack([(0.4 + 0.1 * index) * t, (-0.3 + 0.05 * index) * t], dim=1)
    return shifts - shifts.mean(0)


def make_movie(path: Path, index: int) -> None:
    """A smooth random specimen drifting by ``true_shifts(index)``, Poisson counts (~20/pixel/frame)."""
    g = torch.Generator().manual_seed(1000 + index)
    noise = torch.randn(SIZE, SIZE, generator=g)
    ky = torch.fft.fftfreq(SIZE)[:, None]
    kx = torch.fft.rfftfreq(SIZE)[None, :]
    smooth = torch.fft.irfft2(torch.fft.rfft2(noise) * torch.exp(-(ky**2 + kx**2) / (2 * 0.06**2)), s=(SIZE, SIZE))
    specimen = 20.0 * (1.0 + 0.5 * smooth / smooth.std())
    clean = fourier_shift(specimen.expand(N_FRAMES, SIZE, SIZE), true_shifts(index)).clamp_min(0)
    write_mrc(path, torch.poisson(clean, generator=g), PIXEL_SIZE_A)


def make_tasks(movie_dir: Path, out_dir: Path, n: int) -> list[MovieTask]:
    return [
        MovieTask(
            movie_path=movie_dir / f"movie_{i:04d}.mrcs",
            out_path=out_dir / f"movie_{i:04d}_sr.mrc",
            lr_sum_path=out_dir / f"movie_{i:04d}_sum.mrc",
            acquisition=ACQ,
        )
        for i in range(n)
    ]


def faulty_process(
    task: MovieTask, config: SuperresConfig, *, device: torch.device, overwrite: bool = False, weights: dict | None = None
) -> dict:
    """``process_superres`` with injected faults, chosen by ``task.extra['fault']``.

    ``die_once``: on the first attempt, start writing the output, then kill the worker process
    mid-write (``os._exit`` runs no cleanup, like SIGKILL or the OOM killer). ``always_fail``:
    raise on every attempt (each attempt appends a line to ``task.extra['counter']``).
    """
    fault = task.extra.get("fault")
    if fault == "die_once":
        marker = Path(task.extra["marker"])
        if not marker.exists():
            marker.touch()
            with atomic_path(task.out_path) as tmp:
                tmp.write_bytes(b"\0" * 4096)  # half-written output
                os._exit(1)
    elif fault == "always_fail":
        with open(task.extra["counter"], "a") as f:
            f.write("attempt\n")
        raise RuntimeError("injected failure")
    return process_superres(task, config, device=device, overwrite=overwrite)


@pytest.fixture(scope="module")
def movie_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("movies")
    for i in range(5):
        make_movie(root / f"movie_{i:04d}.mrcs", i)
    (root / "movie_0005.mrcs").write_bytes(b"this is not an MRC file")
    return root


@pytest.fixture(scope="module")
def in_process_run(movie_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("inproc")
    tasks = make_tasks(movie_dir, out, 3)
    return tasks, run_movie_tasks(tasks, CONFIG, device_spec="cpu", workers=1, progress=False)


@pytest.fixture(scope="module")
def cluster_run(movie_dir, tmp_path_factory):
    """One 2-worker LocalCluster run over 6 movies: 3 normal, 1 killed once, 1 always failing, 1 bad file."""
    pytest.importorskip("distributed")
    import cloudpickle

    out = tmp_path_factory.mktemp("dask")
    tasks = make_tasks(movie_dir, out, 3)
    tasks.append(
        MovieTask(
            movie_path=movie_dir / "movie_0003.mrcs",
            out_path=out / "movie_0003_sr.mrc",
            acquisition=ACQ,
            extra={"fault": "die_once", "marker": str(out / "die_once.marker")},
        )
    )
    tasks.append(
        MovieTask(
            movie_path=movie_dir / "movie_0004.mrcs",
            out_path=out / "movie_0004_sr.mrc",
            acquisition=ACQ,
            extra={"fault": "always_fail", "counter": str(out / "always_fail.count")},
        )
    )
    tasks.append(MovieTask(movie_path=movie_dir / "movie_0005.mrcs", out_path=out / "movie_0005_sr.mrc", acquisition=NO_DOSE))
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # workers cannot import the test module
    try:
        records = run_movie_tasks(
            tasks, CONFIG, device_spec="cpu", workers=2, retries=1, progress=False, process_fn=faulty_process
        )
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    return out, tasks, records


def test_in_process_recovers_known_drift(in_process_run):
    tasks, records = in_process_run
    assert [r["movie"] for r in records] == [str(t.movie_path) for t in tasks]
    for i, record in enumerate(records):
        assert not record["skipped"]
        estimated = torch.tensor(record["shifts_yx_px"])
        assert torch.allclose(estimated, true_shifts(i), atol=0.15), (i, estimated, true_shifts(i))
        assert set(record["seconds"]) >= {"read", "align", "reconstruct", "write"}
        sr = read_micrograph(tasks[i].out_path)
        assert sr.data.shape == (2 * SIZE, 2 * SIZE)
        assert sr.pixel_size_a == pytest.approx(PIXEL_SIZE_A / 2)


def test_dask_outputs_equal_in_process_outputs(cluster_run, in_process_run):
    out, tasks, records = cluster_run
    ref_tasks, ref_records = in_process_run
    assert [r["movie"] for r in records] == [str(t.movie_path) for t in tasks]  # in task order
    for task, ref_task, record, ref in zip(tasks[:3], ref_tasks, records[:3], ref_records, strict=True):
        assert "error" not in record
        assert np.allclose(record["shifts_yx_px"], ref["shifts_yx_px"], atol=1e-4)
        for path, ref_path in ((task.out_path, ref_task.out_path), (task.lr_sum_path, ref_task.lr_sum_path)):
            got, want = read_micrograph(path).data, read_micrograph(ref_path).data
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-4 * float(want.abs().max()))


def test_killed_worker_is_retried_without_partial_files(cluster_run):
    out, tasks, records = cluster_run
    record = records[3]
    assert (out / "die_once.marker").exists()  # the first attempt really died mid-write
    assert "error" not in record, record
    assert torch.allclose(torch.tensor(record["shifts_yx_px"]), true_shifts(3), atol=0.15)
    assert read_micrograph(tasks[3].out_path).data.shape == (2 * SIZE, 2 * SIZE)
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_movie_failing_twice_is_reported_and_others_complete(cluster_run):
    out, tasks, records = cluster_run
    failed = records[4]
    assert failed["movie"] == str(tasks[4].movie_path)
    assert "injected failure" in failed["error"]
    assert failed["attempts"] == 2
    assert (out / "always_fail.count").read_text().count("attempt") == 2
    assert not tasks[4].out_path.exists()
    assert all("error" not in r for r in records[:4])


def test_bad_movie_is_reported_without_retry(cluster_run):
    out, tasks, records = cluster_run
    bad = records[5]
    assert bad["attempts"] == 1
    assert "movie_0005.mrcs" in bad["error"]
    assert not tasks[5].out_path.exists()


def test_second_run_resumes_and_skips_finished_movies(in_process_run):
    tasks, _ = in_process_run
    before = [t.out_path.stat().st_mtime_ns for t in tasks]
    records = run_movie_tasks(tasks, CONFIG, device_spec="cpu", progress=False)
    assert [r["skipped"] for r in records] == [True, True, True]
    assert [t.out_path.stat().st_mtime_ns for t in tasks] == before


calls: dict[str, int] = {}


def flaky_in_process(
    task: MovieTask, config: SuperresConfig, *, device: torch.device, overwrite: bool = False, weights: dict | None = None
) -> dict:
    """Fails the first ``task.extra['failures']`` calls for a movie, then runs ``process_superres``."""
    key = str(task.movie_path)
    calls[key] = calls.get(key, 0) + 1
    if calls[key] <= task.extra.get("failures", 0):
        with atomic_path(task.out_path) as tmp:
            tmp.write_bytes(b"partial")
            raise MemoryError("injected")
    return process_superres(task, config, device=device, overwrite=overwrite)


def test_in_process_retry_once_then_report(movie_dir, tmp_path):
    calls.clear()
    tasks = [
        MovieTask(movie_dir / "movie_0000.mrcs", tmp_path / "a.mrc", ACQ, extra={"failures": 1}),
        MovieTask(movie_dir / "movie_0001.mrcs", tmp_path / "b.mrc", ACQ, extra={"failures": 2}),
        MovieTask(movie_dir / "movie_0002.mrcs", tmp_path / "c.mrc", ACQ),
    ]
    records = run_movie_tasks(tasks, CONFIG, device_spec="cpu", progress=False, process_fn=flaky_in_process)
    assert "error" not in records[0] and tasks[0].out_path.exists()
    assert records[1]["attempts"] == 2 and "MemoryError" in records[1]["error"]
    assert not tasks[1].out_path.exists()
    assert "error" not in records[2] and tasks[2].out_path.exists()
    assert calls == {str(t.movie_path): n for t, n in zip(tasks, (2, 2, 1))}
    assert list(tmp_path.glob(".*.tmp")) == []


def test_remove_stale_temps_only_touches_this_movies_outputs(tmp_path):
    task = MovieTask(tmp_path / "m.mrcs", tmp_path / "m_sr.mrc", ACQ, lr_sum_path=tmp_path / "m_sum.mrc")
    orphans = [tmp_path / ".m_sr.mrc.abc123.tmp", tmp_path / ".m_sum.mrc.x.tmp"]
    keep = [tmp_path / ".other_sr.mrc.abc.tmp", tmp_path / "m_sr.mrc"]
    for p in orphans + keep:
        p.write_bytes(b"x")
    assert sorted(remove_stale_temps(task)) == sorted(orphans)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in orphans)


def test_bad_options_fail_before_any_work(movie_dir, tmp_path):
    tasks = make_tasks(movie_dir, tmp_path, 2)
    with pytest.raises(InputError, match="workers"):
        run_movie_tasks(tasks, CONFIG, workers=0, progress=False)
    with pytest.raises(InputError, match="not both"):
        run_movie_tasks(tasks, CONFIG, scheduler="tcp://x:1", cluster=ClusterConfig("slurm"), progress=False)
    clash = [tasks[0], MovieTask(tasks[1].movie_path, tasks[0].out_path, ACQ)]
    with pytest.raises(InputError, match="two movies"):
        run_movie_tasks(clash, CONFIG, progress=False)
    with pytest.raises(InputError, match="names one GPU"):
        run_movie_tasks(tasks, CONFIG, device_spec="cuda:1", workers=2, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cluster_config_validation_and_jobqueue_kwargs():
    slurm = jobqueue_kwargs(ClusterConfig("slurm", gpus_per_job=4, cores=32, memory="256GB", queue="gpu"))
    assert slurm["job_extra_directives"] == ["--gres=gpu:4"]
    assert (slurm["processes"], slurm["cores"], slurm["job_cpu"]) == (4, 4, 32)  # 1 thread per GPU worker
    pbs = jobqueue_kwargs(ClusterConfig("pbs", gpus_per_job=2, cores=16, memory="64GB"))
    assert pbs["resource_spec"] == "select=1:ncpus=16:mem=64GB:ngpus=2"
    lsf = jobqueue_kwargs(ClusterConfig("lsf", gpus_per_job=0, cores=8))
    assert (lsf["ncpus"], lsf["processes"], lsf["job_extra_directives"]) == (8, 1, [])
    with pytest.raises(InputError, match="--cluster 'sge'"):
        ClusterConfig("sge")
    with pytest.raises(InputError, match="walltime"):
        ClusterConfig("slurm", walltime="2h")


def test_slurm_job_script_requests_gpus_and_one_worker_per_gpu():
    pytest.importorskip("dask_jobqueue")
    config = ClusterConfig(
        "slurm", jobs=2, queue="gpu", walltime="04:00:00", cores=16, memory="128GB", gpus_per_job=2, account="cryo"
    )
    cluster = make_jobqueue_cluster(config)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -A cryo", "#SBATCH --cpus-per-task=16", "#SBATCH -t 04:00:00"):
        assert line in script
    assert "#SBATCH --gres=gpu:2" in script
    assert "--nworkers 2" in script and "--nthreads 1" in script


def test_missing_dask_jobqueue_gives_install_hint(movie_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails as if not installed
    with pytest.raises(InputError, match="pip install dask-jobqueue"):
        run_movie_tasks(make_tasks(movie_dir, tmp_path, 1), CONFIG, cluster=ClusterConfig("slurm"), progress=False)


def test_gpu_pinning_plugin_picks_one_gpu_per_worker():
    from cryosr.core.batch.gpu_pinning import PinGPUPlugin, local_worker_index

    assert [local_worker_index(n) for n in (0, 3, "SLURMCluster-2-1", "tcp://x")] == [0, 3, 1, 0]
    assert [PinGPUPlugin(["4", "5"]).choose(i, None) for i in range(3)] == ["4", "5", "4"]
    assert PinGPUPlugin().choose("SLURMCluster-0-1", "2,3") == "3"  # the job's own allocation
    assert PinGPUPlugin().choose(0, None) is None


def test_prefetcher_reads_whole_files(tmp_path):
    data = np.random.default_rng(0).bytes(3 * 1024 * 1024 + 17)
    (tmp_path / "m.mrcs").write_bytes(data)
    (tmp_path / "gain.mrc").write_bytes(b"g" * 100)
    assert read_ahead([tmp_path / "m.mrcs", tmp_path / "missing"]) == len(data)
    p = Prefetcher()
    p.start(MovieTask(tmp_path / "m.mrcs", tmp_path / "o.mrc", ACQ, gain_path=tmp_path / "gain.mrc"))
    p.wait()
    assert p.n_bytes == len(data) + 100


@pytest.fixture(scope="module")
def cli_dataset_runs(movie_dir, tmp_path_factory):
    """``cryosr superres --mode dataset --method zssr`` on 3 movies: in this process, and with --workers 2."""
    pytest.importorskip("distributed")
    from cryosr.core.cli.main import main

    root = tmp_path_factory.mktemp("cli")
    movies = [str(movie_dir / f"movie_{i:04d}.mrcs") for i in range(3)]
    common = ["superres", *movies, "--dose-per-frame", "1", "--device", "cpu", "--method", "zssr",
              "--mode", "dataset", "--train-movies", "1", "--train-iterations", "4", "--iterations", "3", "--zssr-tile", "0"]  # fmt: skip
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as each single-threaded worker (conv reductions depend on the thread count)
    try:
        assert main([*common, "--out", str(root / "one")]) == 0
    finally:
        torch.set_num_threads(n)
    assert main([*common, "--out", str(root / "two"), "--workers", "2"]) == 0
    return root / "one", root / "two"


def test_cli_workers_dataset_mode_matches_one_process(cli_dataset_runs):
    one, two = cli_dataset_runs
    w1 = torch.load(one / "zssr_dataset.pt", weights_only=True)
    w2 = torch.load(two / "zssr_dataset.pt", weights_only=True)  # trained once, on a worker
    assert w1.keys() == w2.keys() and all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)
    j1, j2 = (json.loads((d / "superres.json").read_text()) for d in (one, two))
    assert len(j1["dataset_training"]) == len(j2["dataset_training"]) == 1
    assert j2["dataset_training"][0]["info"]["train_iterations"] == 4
    assert "--workers 2" in j2["command"]
    assert [r["movie"] for r in j2["movies"]] == [r["movie"] for r in j1["movies"]]  # input order
    for r1, r2 in zip(j1["movies"], j2["movies"], strict=True):
        assert r2["info"]["init"] == "given weights"  # every movie started from the broadcast weights
        assert r2["config"]["iterations"] == 3  # and was fine-tuned briefly
        name = Path(r1["output"]).name
        for f in (name, name.replace(".mrc", "_lr_sum.mrc")):
            a, b = read_micrograph(one / f).data, read_micrograph(two / f).data
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max())), f
    assert list(two.glob(".*.tmp")) == []


def test_cli_reports_a_bad_movie_and_finishes_the_others(movie_dir, tmp_path, capsys):
    """A movie whose data turn out bad fails alone (the others finish); an unreadable header fails before any output."""
    from cryosr.core.cli.main import main

    out = tmp_path / "sr"
    good = movie_dir / "movie_0000.mrcs"
    truncated = tmp_path / "truncated.mrcs"  # a readable header that promises more frames than the file holds
    truncated.write_bytes(good.read_bytes()[: 1024 + 3 * SIZE * SIZE * 4])
    base = ["--out", str(out), "--dose-per-frame", "1", "--method", "fourier", "--device", "cpu"]
    assert main(["superres", str(movie_dir / "movie_0005.mrcs"), str(good), *base]) == 2
    assert "movie_0005.mrcs: not a readable MRC file" in capsys.readouterr().err
    assert not out.exists()
    assert main(["superres", str(truncated), str(good), *base]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 movie(s) failed" in err and "truncated.mrcs" in err
    assert (out / "movie_0000.mrc").exists() and not (out / "truncated.mrc").exists()
    records = json.loads((out / "superres.json").read_text())["movies"]
    assert records[0]["input_error"] and records[0]["attempts"] == 1 and "error" not in records[1]


def test_cli_scale_options_build_the_cluster(tmp_path):
    from cryosr.core.cli.main import build_parser
    from cryosr.core.cli.options import runner_kwargs

    args = build_parser().parse_args([
        "superres", "m.mrcs", "--out", str(tmp_path), "--device", "cuda", "--cluster", "slurm",
        "--cluster-jobs", "4", "--cluster-queue", "gpu", "--cluster-gpus", "4", "--cluster-cores", "32",
        "--cluster-memory", "256GB", "--cluster-walltime", "08:00:00", "--cluster-account", "cryoem",
        "--cluster-directive=--constraint=h100", "--cluster-prologue", "source venv/bin/activate",
    ])  # fmt: skip
    kw = runner_kwargs(args)
    assert kw["cluster"] == ClusterConfig(
        "slurm", jobs=4, queue="gpu", walltime="08:00:00", cores=32, memory="256GB", gpus_per_job=4,
        account="cryoem", job_extra_directives=("--constraint=h100",), job_script_prologue=("source venv/bin/activate",),
    )  # fmt: skip
    assert (kw["workers"], kw["scheduler"], kw["device_spec"]) == (1, None, "cuda")
    assert jobqueue_kwargs(kw["cluster"])["job_extra_directives"] == ["--gres=gpu:4", "--constraint=h100"]
    bad = build_parser().parse_args(["superres", "m.mrcs", "--out", str(tmp_path), "--cluster", "pbs",
                                     "--cluster-walltime", "2h"])  # fmt: skip
    with pytest.raises(InputError, match="walltime"):
        runner_kwargs(bad)


def test_inference_autocast_is_a_no_op_on_cpu_unless_forced():
    from cryosr.core.device import inference_autocast, to_channels_last

    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with inference_autocast("cpu"):  # auto: full precision off CUDA
            assert conv(x).dtype == torch.float32
        with inference_autocast(torch.device("cpu"), "bf16"):  # forced: the precision loss can be measured here
            low = conv(x)
        assert low.dtype == torch.bfloat16
        assert torch.allclose(low.float(), conv(x), atol=0.05) and not torch.equal(low.float(), conv(x))
    assert to_channels_last(x) is x and to_channels_last(conv) is conv
    assert conv.weight.is_contiguous()  # the CPU module keeps its layout
    with pytest.raises(InputError, match="precision"):
        inference_autocast("cpu", "int8")


def test_channels_last_layout_of_the_shipped_networks_keeps_their_outputs():
    """The NHWC conversion used on CUDA, run on the CPU: the enhancement net holds a Conv3d (5-D weight)."""
    from cryosr.core.device import channels_last_module
    from cryosr.core.enhance.checkpoint import load_checkpoint
    from cryosr.core.superres.zssr import ZssrConfig, make_net

    model, _ = load_checkpoint("default", "cpu")
    zssr = make_net(ZssrConfig())
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, model.config.frames, 24, 24, generator=g) + 0.5
    xz = torch.randn(1, ZssrConfig().in_channels, 24, 24, generator=g)
    with torch.no_grad():
        want = model(x, scale=2), zssr(xz)
        fusion = [p for p in model.parameters() if p.dim() == 5]
        assert channels_last_module(model) is model and channels_last_module(zssr) is zssr
        convs = [p for p in (*model.parameters(), *zssr.parameters()) if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
        assert fusion and all(p.is_contiguous() for p in fusion)
        xc = x.contiguous(memory_format=torch.channels_last)
        got = model(xc, scale=2), zssr(xz.contiguous(memory_format=torch.channels_last))
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-5 * float(b.abs().max()))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_inference_uses_fp16_and_channels_last_within_tolerance():
    from cryosr.core.device import inference_autocast, to_channels_last

    conv = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 1, 3, padding=1))
    x = torch.rand(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = conv(x)
        net = to_channels_last(conv.cuda())
        xc = to_channels_last(x.cuda())
        assert xc.is_contiguous(memory_format=torch.channels_last)
        with inference_autocast(xc.device):
            got = net(xc)
    assert got.dtype == torch.float16
    assert torch.allclose(got.float().cpu(), want, atol=1e-2 * float(want.abs().max()))


def test_existing_scheduler_runs_the_movies(movie_dir, in_process_run, tmp_path):
    """``--scheduler ADDRESS``: a cluster started elsewhere (here: in-process threads) runs the tasks."""
    distributed = pytest.importorskip("distributed")
    ref_tasks, ref_records = in_process_run
    tasks = make_tasks(movie_dir, tmp_path, 2)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as lc:
        records = run_movie_tasks(tasks, CONFIG, device_spec="cpu", scheduler=lc.scheduler_address, progress=False)
    for task, record, ref in zip(tasks, records, ref_records, strict=False):
        assert "error" not in record and record["output"] == str(task.out_path)
        assert np.allclose(record["shifts_yx_px"], ref["shifts_yx_px"], atol=1e-4)
        assert torch.allclose(read_micrograph(task.out_path).data, read_micrograph(Path(ref["output"])).data, atol=1e-3)
