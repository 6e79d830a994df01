"""Tests of the fake CryoSPARC v5 server itself (``tests.fakes.cryosparc_server``)."""

from __future__ import annotations

import pytest

from tests.helpers import IN_CI

if not IN_CI:  # in CI the extra is required: a missing cryosparc-tools is a collection error there, not a skip
    pytest.importorskip("cryosparc.tools", reason="cryosparc-tools (extra 'cryosparc') not installed")

import cryosparc.tools as cs_tools
from cryosparc.errors import APIError

from tests.fakes.cryosparc_server import FakeCryoSPARC, fake_client


@pytest.fixture
def fake(tmp_path, monkeypatch):
    server = FakeCryoSPARC(tmp_path / "P3")
    server.project_dir.mkdir()
    fake_client(monkeypatch, server)
    return server


def _connect():
    return cs_tools.CryoSPARC("http://cs.example:39000", host=None, base_port=None, email="ada@example.com", password="pw")  # fmt: skip


def test_fake_rejects_saving_unless_running_and_missing_fields(fake):
    cs = _connect()
    job = cs.find_project("P3").create_external_job("W1", title="t")
    dset = job.add_output("exposure", "mics", slots=[{"name": "micrograph_blob", "dtype": "micrograph_blob"}], alloc=3)
    assert len(dset) == 3 and "micrograph_blob/shape" in dset.fields()
    with pytest.raises(APIError, match="not running"):
        job.save_output("mics", dset)
    job.start("running")
    with pytest.raises(APIError, match="missing the following required fields"):
        job.save_output("mics", dset.copy().drop_fields(["micrograph_blob/psize_A"]))
    job.save_output("mics", dset)
    assert fake.saved[(job.uid, "mics")]["uid"].tolist() == dset["uid"].tolist()
    assert fake.calls[:4] == ["login", "users.me", "config.get_version", "projects.find_one"]


def test_fake_rejects_bad_passthrough_and_upload_overwrite(fake):
    cs = _connect()
    job = cs.find_project("P3").create_external_job("W1", title="t")
    job.add_input("exposure", "exps", slots=[{"name": "micrograph_blob", "dtype": "micrograph_blob"}])
    with pytest.raises(APIError, match="does not match output type"):
        job.add_output("particle", "parts", slots=[{"name": "micrograph_blob", "dtype": "micrograph_blob"}], passthrough="exps")  # fmt: skip
    with pytest.raises(APIError, match="does not exist"):
        job.add_output("exposure", "e2", slots=[{"name": "micrograph_blob", "dtype": "micrograph_blob"}], passthrough="nope")  # fmt: skip
    job.upload("a.bin", b"123")
    assert (fake.project_dir / job.uid / "a.bin").read_bytes() == b"123"
    assert cs.find_project("P3").list_files(job.uid) == [f"{job.uid}/a.bin"]  # relative to the project
    with pytest.raises(APIError, match="not found"):
        cs.find_project("P3").list_files(f"{job.uid}/nope")
    with pytest.raises(APIError, match="already exists"):
        job.upload("a.bin", b"456")
    with pytest.raises(APIError, match="not found"):
        cs.find_project("P4")
