"""The External-job command line: RELION's plumbing flags, Params rows, bare flags, rejection of unknowns."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryosr.core.errors import InputError
from cryosr.relion_external.args import find_output_dir, parse_args, tokenize
from cryosr.relion_external.job import select_device, worker_devices


def test_tokenize_relion_command_line():
    # the exact shape of RelionJob::getCommandsExternalJob output, plus --pipeline_control and a stray "\"
    argv = ("--o External/job012/ --in_mics MotionCorr/job002/corrected_micrographs.star --method fourier "
            "--enhance --gpu -1 --scale=2 --j 4 --pipeline_control External/job012/ \\").split()  # fmt: skip
    flags, stray = tokenize(argv)
    assert flags == {
        "o": "External/job012/",
        "in_mics": "MotionCorr/job002/corrected_micrographs.star",
        "method": "fourier",
        "enhance": "",
        "gpu": "-1",
        "scale": "2",
        "j": "4",
        "pipeline_control": "External/job012/",
    }
    assert stray == []


def test_parse_args_values_and_defaults():
    args = parse_args("--o External/job003/ --in_movies movies.star --dose_per_frame 1.5 --enhance --j 3".split())
    assert args.out_dir == Path("External/job003")
    assert args.input_star == Path("movies.star") and args.input_kind == "movies"
    assert args.threads == 3 and args.dose_per_frame == 1.5
    assert args.enhance is True and args.overwrite is False and args.method is None and args.scale == 2
    assert parse_args("--o External/job003/ --in_mics m.star --enhance no --j 1".split()).enhance is False
    assert parse_args("--o External/job003/ --in_mics m.star --pipeline-control x --j 1".split()).ignored == (
        "pipeline_control",
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ("--o External/job003/ --in_mics m.star --bogus 3 --j 1", "--bogus"),
        ("--o External/job003/ --in_mics m.star stray --j 1", "'stray'"),
        ("--o External/job003/ --j 1", "exactly one of"),
        ("--o External/job003/ --in_mics m.star --in_movies v.star --j 1", "exactly one of"),
        ("--o External/job003/ --in_parts p.star --j 1", "--in_parts"),
        ("--o External/job003/ --in_mics m.star --j 0", "--j 0"),
        ("--o External/job003/ --in_mics m.star --scale 3 --j 1", "only 2x"),
        ("--o External/job003/ --in_mics m.star --enhance maybe --j 1", "--enhance 'maybe'"),
        ("--o External/job003/ --in_mics m.star --gain_rot 5 --j 1", "--gain_rot 5"),
        ("--o External/job003/ --in_mics m.star --mode batch --j 1", "--mode 'batch'"),
        ("--o External/job003/ --in_mics m.star --mode dataset --j 1", "give --method zssr"),
        ("--o External/job003/ --in_mics m.star --method zssr --mode dataset --train_movies 0 --j 1", "--train_movies"),
        ("--o results/ --in_mics m.star --j 1", "not a RELION job directory"),
        ("--o /abs/External/job003/ --in_mics m.star --j 1", "not a RELION job directory"),
    ],
)
def test_parse_args_rejects(argv, needle):
    with pytest.raises(InputError) as info:
        parse_args(argv.split())
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_unknown_flag_message_lists_accepted_labels():
    with pytest.raises(InputError, match="Params labels accepted: method, scale"):
        parse_args("--o External/job003/ --in_mics m.star --metod zssr --j 1".split())


def test_find_output_dir_only_for_job_dirs():
    assert find_output_dir(["--o", "External/job007/", "--bogus"]) == Path("External/job007")
    assert find_output_dir(["--o", "/tmp/x"]) is None
    assert find_output_dir(["--in_mics", "m.star"]) is None


@pytest.mark.parametrize(
    ("gpu", "device", "expected"),
    [(None, "auto", "auto"), (None, "cpu", "cpu"), ("", "auto", "cuda"), ("1", "auto", "cuda:1"),
     ("0:1", "auto", "cuda:0"), ("2,3", "cpu", "cuda:2"), ("-1", "auto", "cpu")],  # fmt: skip
)
def test_select_device(gpu, device, expected):
    assert select_device(gpu, device, visible="4,5") == expected


def test_select_device_rejects_garbage():
    with pytest.raises(InputError, match="--gpu 'a'"):
        select_device("a", "auto")


@pytest.mark.parametrize(
    ("gpu", "device", "visible", "expected"),
    [
        (None, "auto", None, ("auto", None)),
        (None, "cpu", "0,1", ("cpu", None)),
        ("-1", "auto", "0,1", ("cpu", None)),
        ("", "auto", "0,1", ("cuda", None)),  # bare --gpu: every visible GPU
        ("0:1", "auto", "4,5,6", ("cuda", "4,5")),  # ids index the scheduler's allocation
        ("2,0", "auto", "4,5,6", ("cuda", "6,4")),
        ("0,1", "auto", None, ("cuda", "0,1")),
        (None, "cuda:1", "4,5", ("cuda", "5")),
    ],
)
def test_worker_devices(gpu, device, visible, expected):
    assert worker_devices(gpu, device, visible) == expected


def test_worker_devices_rejects_ids_outside_the_allocation():
    with pytest.raises(InputError, match="id 2 is not among the 2 visible GPU"):
        worker_devices("0,2", "auto", "4,5")


def test_workers_param():
    assert parse_args("--o External/job003/ --in_mics m.star --workers 3 --j 6".split()).workers == 3
    with pytest.raises(InputError, match="--workers 0"):
        parse_args("--o External/job003/ --in_mics m.star --workers 0 --j 1".split())


def test_pipeliner_command_line_form():
    # ccpem-pipeliner's relion.external: inputs first, then --o, Params, no --j for one thread, --in_3Dref spelling
    args = parse_args("--in_mics m.star --o External/job001/ --method fourier".split())
    assert args.out_dir == Path("External/job001") and args.threads == 1 and args.method == "fourier"
    with pytest.raises(InputError, match="--in_3dref is not used"):
        parse_args("--in_mics m.star --in_3Dref ref.mrc --o External/job001/".split())
