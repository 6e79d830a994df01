"""The cryosr command line, in process."""

import pytest

from cryosr.core.cli.main import SUBCOMMANDS, build_parser, main
from cryosr.core.device import resolve_device
from cryosr.core.errors import InputError


def test_help_lists_subcommands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    help_text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in help_text and name in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "cryosr" in capsys.readouterr().out


def test_unknown_subcommand_is_rejected():
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_device_resolution_fails_loudly_without_cuda():
    import torch

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            resolve_device("cuda:0")
    with pytest.raises(InputError, match="not a device"):
        resolve_device("tpu7")
