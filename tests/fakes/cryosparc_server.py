"""An in-process fake of the CryoSPARC v5 HTTP API, for testing the adapter without a server.

The real cryosparc-tools 5.0 client code runs unchanged: it fetches ``/api/cmd/openapi.json``
from the fake and builds its methods from the operations listed there; requests go through an
``httpx.MockTransport``. Responses are real cryosparc-tools pydantic models serialised to JSON,
and datasets travel as CSDAT streams both ways. Server rules we know of are encoded (422 on a
missing required field, on saving while the job is not running/waiting, on a passthrough input
of another type or that does not exist, on an unknown slot dtype, on adding slots to a
completed job; 404 on unknown projects/jobs). The URL paths are made up: the client only
depends on the ``summary`` of each operation. Tests of the fake itself are in ``tests/cryosparc/test_fakeserver.py``.

Live sessions: ``add_session`` registers one, ``add_exposures`` makes exposure documents visible (tests
call it between polls: exposures "appear over time"), ``set_stage`` moves one on; ``exposures.find``
filters by project, session, stage and ``deleted`` and pages with ``limit``/``after`` (the ``_id`` of
the last exposure of the previous page), in ``_id`` order, as the v5 signature suggests.
"""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs

import pytest

from tests.helpers import IN_CI

if not IN_CI:  # in CI the extra is required: a missing cryosparc-tools is a collection error there, not a skip
    pytest.importorskip("cryosparc.tools", reason="cryosparc-tools (extra 'cryosparc') not installed")
import cryosparc.tools as cs_tools
import httpx
from cryosparc.dataset import Dataset
from cryosparc.models.asset import GridFSAsset
from cryosparc.models.auth import Token
from cryosparc.models.event import ImageEvent, TextEvent
from cryosparc.models.exposure import Exposure
from cryosparc.models.job import Job
from cryosparc.models.job_spec import JobSpec
from cryosparc.models.project import Project
from cryosparc.models.session import Session
from cryosparc.models.user import User
from cryosparc.models.workspace import Workspace

NOW = datetime(2026, 11, 21, tzinfo=timezone.utc)

# Field definitions per dtype, from cryosparc-tools' T20S fixtures and v5 exposure models.
FIELDS_BY_DTYPE = {
    "micrograph_blob": [
        ("path", "O"),
        ("idx", "<u4"),
        ("shape", "2u4"),
        ("psize_A", "<f4"),
        ("format", "O"),
        ("is_background_subtracted", "<u4"),
        ("vmin", "<f4"),
        ("vmax", "<f4"),
        ("import_sig", "<u8"),
    ],
    "movie_blob": [
        ("path", "O"),
        ("shape", "3u4"),
        ("psize_A", "<f4"),
        ("is_gain_corrected", "<u4"),
        ("format", "O"),
        ("has_defect_file", "<u4"),
        ("import_sig", "<u8"),
    ],
    "gain_ref_blob": [
        ("path", "O"),
        ("idx", "<u4"),
        ("shape", "2u4"),
        ("flip_x", "<u4"),
        ("flip_y", "<u4"),
        ("rotate_num", "<u4"),
    ],
    "mscope_params": [
        ("accel_kv", "<f4"),
        ("cs_mm", "<f4"),
        ("total_dose_e_per_A2", "<f4"),
        ("phase_plate", "<u4"),
        ("neg_stain", "<u4"),
        ("exp_group_id", "<u4"),
        ("defect_path", "O"),
    ],
    "motion": [
        ("type", "O"),
        ("path", "O"),
        ("idx", "<u4"),
        ("frame_start", "<u4"),
        ("frame_end", "<u4"),
        ("zero_shift_frame", "<u4"),
        ("psize_A", "<f4"),
    ],
    "stat_blob": [("path", "O"), ("idx", "<u4"), ("shape", "2u4"), ("psize_A", "<f4"), ("binfactor", "<u4")],
}

# (summary, method, path, query params [(name, required)], body: None|json|stream|form, response)
# response: a model name, "string", "list" (of strings), "pairs", "stream:<mime>" or None.
CSDAT = "application/x-cryosparc-dataset"
OCTET = "application/octet-stream"
OPERATIONS = [
    ("login", "post", "/login", [], "form", "Token"),
    ("users.me", "get", "/users/me", [], None, "User"),
    ("config.get_version", "get", "/config/version", [], None, "string"),
    ("projects.find_one", "get", "/projects/{project_uid}", [], None, "Project"),
    ("projects.get_directory", "get", "/projects/{project_uid}/directory", [], None, "string"),
    (
        "projects.mkdir",
        "post",
        "/projects/{project_uid}/mkdir",
        [("path", False), ("parents", False), ("exist_ok", False)],
        None,
        "string",
    ),  # fmt: skip
    (
        "projects.upload_file",
        "put",
        "/projects/{project_uid}/files",
        [("path", False), ("overwrite", False)],
        "stream:" + OCTET,
        "string",
    ),  # fmt: skip
    ("projects.download_file", "get", "/projects/{project_uid}/files", [("path", False)], None, "stream:" + OCTET),
    ("projects.ls", "get", "/projects/{project_uid}/ls", [("recursive", False), ("path", False)], None, "list"),
    ("workspaces.find_one", "get", "/projects/{project_uid}/workspaces/{workspace_uid}", [], None, "Workspace"),
    (
        "jobs.create",
        "post",
        "/projects/{project_uid}/workspaces/{workspace_uid}/jobs",
        [("type", True), ("title", False), ("description", False)],
        "json",
        "Job",
    ),  # fmt: skip
    ("jobs.find_one", "get", "/projects/{project_uid}/jobs/{job_uid}", [], None, "Job"),
    ("jobs.get_directory", "get", "/projects/{project_uid}/jobs/{job_uid}/directory", [], None, "string"),
    (
        "jobs.add_external_input",
        "post",
        "/projects/{project_uid}/jobs/{job_uid}/external/inputs/{input_name}",
        [],
        "json",
        "Job",
    ),  # fmt: skip
    (
        "jobs.add_external_output",
        "post",
        "/projects/{project_uid}/jobs/{job_uid}/external/outputs/{output_name}",
        [],
        "json",
        "Job",
    ),  # fmt: skip
    (
        "jobs.connect",
        "post",
        "/projects/{project_uid}/jobs/{job_uid}/connect/{input_name}",
        [("source_job_uid", True), ("source_output_name", True)],
        None,
        "Job",
    ),  # fmt: skip
    ("jobs.mark_running", "patch", "/projects/{project_uid}/jobs/{job_uid}/running", [("status", False)], None, "Job"),
    ("jobs.mark_completed", "patch", "/projects/{project_uid}/jobs/{job_uid}/completed", [], None, "Job"),
    ("jobs.mark_failed", "patch", "/projects/{project_uid}/jobs/{job_uid}/failed", [("error", False)], None, "Job"),
    ("jobs.clear", "post", "/projects/{project_uid}/jobs/{job_uid}/clear", [], None, "Job"),
    (
        "jobs.load_input",
        "get",
        "/projects/{project_uid}/jobs/{job_uid}/inputs/{input_name}/dataset",
        [("slots", False), ("force_join", False)],
        None,
        "stream:" + CSDAT,
    ),  # fmt: skip
    (
        "jobs.load_output",
        "get",
        "/projects/{project_uid}/jobs/{job_uid}/outputs/{output_name}/dataset",
        [("slots", False), ("version", False)],
        None,
        "stream:" + CSDAT,
    ),  # fmt: skip
    (
        "jobs.get_output_fields",
        "post",
        "/projects/{project_uid}/jobs/{job_uid}/outputs/{output_name}/fields",
        [],
        "json",
        "pairs",
    ),  # fmt: skip
    (
        "jobs.save_output",
        "post",
        "/projects/{project_uid}/jobs/{job_uid}/outputs/{output_name}/dataset",
        [("filename", False), ("version", False)],
        "stream:" + CSDAT,
        "Job",
    ),  # fmt: skip
    (
        "jobs.add_event_log",
        "post",
        "/projects/{project_uid}/jobs/{job_uid}/events",
        [("type", False)],
        "json",
        "TextEvent",
    ),  # fmt: skip
    (
        "jobs.update_event_log",
        "put",
        "/projects/{project_uid}/jobs/{job_uid}/events/{event_id}",
        [("type", False)],
        "json",
        "TextEvent",
    ),  # fmt: skip
    (
        "jobs.add_image_log",
        "post",
        "/projects/{project_uid}/jobs/{job_uid}/events/image",
        [("text", True), ("flags", False)],
        "json",
        "ImageEvent",
    ),  # fmt: skip
    ("sessions.find_one", "get", "/projects/{project_uid}/sessions/{session_uid}", [], None, "Session"),
    (
        "exposures.find",
        "get",
        "/exposures",
        [("order", False), ("after", False), ("limit", False), ("uid", False), ("session_uid", False),
         ("project_uid", False), ("stage", False), ("deleted", False)],
        None,
        "list:Exposure",
    ),  # fmt: skip
    (
        "assets.upload",
        "post",
        "/projects/{project_uid}/jobs/{job_uid}/assets",
        [("filename", False), ("format", False)],
        "stream:" + OCTET,
        "GridFSAsset",
    ),  # fmt: skip
]


def openapi_schema() -> dict:
    """The ``openapi.json`` the fake serves: one entry per operation in ``OPERATIONS``."""
    paths: dict = {}
    for summary, method, path, query, body, response in OPERATIONS:
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in re.findall(r"{(\w+)}", path)]  # fmt: skip
        params += [{"name": n, "in": "query", "required": req, "schema": {}} for n, req in query]
        op: dict = {"summary": summary, "parameters": params}
        if body == "json":
            op["requestBody"] = {"content": {"application/json": {"schema": {"title": "Body"}}}, "required": False}
        elif body == "form":
            op["requestBody"] = {"content": {"application/x-www-form-urlencoded": {"schema": {}}}, "required": True}
        elif body and body.startswith("stream:"):
            op["requestBody"] = {"content": {body[7:]: {"schema": {"title": "Stream"}}}, "required": True}
        if response is None:
            ok: dict = {"description": "ok"}
        elif response.startswith("stream:"):
            ok = {"description": "ok", "content": {response[7:]: {"schema": {}}}}
        elif response == "string":
            ok = {"description": "ok", "content": {"application/json": {"schema": {"type": "string"}}}}
        elif response == "list":
            ok = {"description": "ok", "content": {"application/json": {"schema": {"type": "array", "items": {"type": "string"}}}}}  # fmt: skip
        elif response.startswith("list:"):
            items = {"$ref": f"#/components/schemas/{response[5:]}"}
            ok = {"description": "ok", "content": {"application/json": {"schema": {"type": "array", "items": items}}}}
        elif response == "pairs":
            pair = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string"}]}
            ok = {"description": "ok", "content": {"application/json": {"schema": {"type": "array", "items": pair}}}}
        else:
            ok = {"description": "ok", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}}}  # fmt: skip
        err = {"description": "error", "content": {"application/json": {"schema": {}}}}
        op["responses"] = {"200": ok, "404": err, "422": err}
        paths.setdefault(path, {})[method] = op
    return {"openapi": "3.1.0", "info": {"title": "fake CryoSPARC", "version": "v5.0.3"}, "paths": paths, "components": {"schemas": {}}}  # fmt: skip


class HTTPProblem(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _fields_for(slots: list[dict]) -> list[tuple[str, str]]:
    out = []
    for slot in slots:
        if slot["dtype"] not in FIELDS_BY_DTYPE:
            raise HTTPProblem(422, f"Invalid slot {slot['name']!r}: unknown dtype {slot['dtype']!r}")
        out += [(f"{slot['name']}/{f}", t) for f, t in FIELDS_BY_DTYPE[slot["dtype"]]]
    return out


class FakeCryoSPARC:
    """State and request handler of the fake server.

    Parameters
    ----------
    project_dir : Path
        Real folder standing for project ``P3``'s directory (files are read/written there).
    reported_dir : str | None
        Directory the server reports (``projects.get_directory``); a path that does not exist here
        simulates a remote server (the client must then use HTTP uploads/downloads).
    version : str
        What ``config.get_version`` answers.
    """

    def __init__(self, project_dir: Path, *, reported_dir: str | None = None, version: str = "v5.0.3") -> None:
        self.project_dir = Path(project_dir)
        self.reported_dir = reported_dir or str(self.project_dir)
        self.version = version
        self.jobs: dict[str, dict] = {}
        self.saved: dict[tuple[str, str], Dataset] = {}
        self.calls: list[str] = []
        self.events: list[tuple[str, str, str]] = []
        self.uploads: list[str] = []
        self.sessions: dict[str, str] = {}  # uid -> status
        self.exposures: list[Exposure] = []
        self._next_job = 1
        self._next_event = 1
        self.schema = openapi_schema()
        self._routes = []
        for summary, method, path, *_ in OPERATIONS:
            rx = "^/api/cmd" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", path) + "$"
            self._routes.append((method.upper(), re.compile(rx), summary))

    # ---- setup helpers -------------------------------------------------------------------
    def add_source_job(self, dset: Dataset, *, output: str = "micrographs", dtypes: dict | None = None) -> str:
        """Register a completed job whose ``output`` holds ``dset`` (slot dtypes default to names)."""
        dtypes = dtypes or {}
        uid = self._new_job_uid()
        results = [
            {
                "name": p,
                "dtype": dtypes.get(p, p),
                "metafiles": [f"{uid}/{output}.cs"],
                "versions": [0],
                "num_items": [len(dset)],
            }  # fmt: skip
            for p in dset.prefixes()
        ]
        self.jobs[uid] = {
            "type": "patch_motion_correction_multi",
            "status": "completed",
            "title": "source",
            "inputs": {},
            "outputs": {output: {"type": "exposure", "title": output, "results": results, "num_items": len(dset)}},
        }
        self.saved[(uid, output)] = dset
        return uid

    def add_session(self, uid: str = "S1", status: str = "running") -> str:
        """Register a Live session of project P3."""
        self.sessions[uid] = status
        return uid

    def add_exposures(self, exposures: list[Exposure]) -> None:
        """Make exposure documents visible to ``exposures.find`` (their ``_id`` orders the pages)."""
        for e in exposures:
            self.exposures.append(e.model_copy(update={"id": f"{len(self.exposures) + 1:024x}"}))

    def set_stage(self, session_uid: str, uid: int, stage: str) -> None:
        """Move exposure ``uid`` of a session to another Live stage."""
        i = next(i for i, e in enumerate(self.exposures) if e.session_uid == session_uid and e.uid == uid)
        self.exposures[i] = self.exposures[i].model_copy(update={"stage": stage})

    def _new_job_uid(self) -> str:
        uid = f"J{self._next_job}"
        self._next_job += 1
        return uid

    # ---- models ----------------------------------------------------------------------------
    def job_model(self, uid: str) -> Job:
        j = self.jobs[uid]
        spec = JobSpec.model_validate(
            {
                "type": j["type"],
                "params": {},
                "inputs": j["inputs"],
                "outputs": j["outputs"],
                "ui_tile_width": 1,
                "ui_tile_height": 1,
                "resource_spec": {},
            }
        )
        return Job(
            uid=uid,
            project_uid="P3",
            workspace_uids=["W1"],
            spec=spec,
            job_dir=uid,
            job_dir_size_last_updated=NOW,
            uid_num=int(uid[1:]),
            project_uid_num=3,
            status=j["status"],
            status_num=0,
            build_errors=[],
            title=j["title"],
        )

    def _job(self, params: dict) -> dict:
        if params.get("project_uid") != "P3":
            raise HTTPProblem(404, f"Project {params.get('project_uid')} not found")
        uid = params.get("job_uid")
        if uid is not None and uid not in self.jobs:
            raise HTTPProblem(404, f"Job P3-{uid} not found")
        return self.jobs.get(uid)

    # ---- dispatch ---------------------------------------------------------------------------
    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/cmd/openapi.json":
            return httpx.Response(200, json=self.schema)
        for method, rx, summary in self._routes:  # noqa: B007 (summary used after the loop)
            m = rx.match(path)
            if m and method == request.method:
                break
        else:
            return httpx.Response(404, json={"detail": f"no route {request.method} {path}"})
        self.calls.append(summary)
        query = {k: (v if len(v) > 1 else v[0]) for k, v in parse_qs(request.url.query.decode()).items()}
        try:
            result = getattr(self, "op_" + summary.replace(".", "__"))(m.groupdict(), query, request)
        except HTTPProblem as exc:
            return httpx.Response(exc.status, json={"detail": exc.detail})
        if isinstance(result, httpx.Response):
            return result
        if hasattr(result, "model_dump"):
            return httpx.Response(200, json=result.model_dump(mode="json", by_alias=True))
        return httpx.Response(200, json=result)

    # ---- operations -------------------------------------------------------------------------
    def op_login(self, p, q, r):
        form = parse_qs(r.content.decode())
        if form.get("username") != ["ada@example.com"]:
            raise HTTPProblem(401, "Invalid credentials")
        return Token(access_token="tok", token_type="bearer")

    def op_users__me(self, p, q, r):
        return User(name="ada", first_name="Ada", last_name="L", email="ada@example.com")

    def op_config__get_version(self, p, q, r):
        return self.version

    def op_projects__find_one(self, p, q, r):
        self._job(p)
        return Project(uid="P3", project_dir=self.reported_dir, owner_user_id="u", title="T20S", size_last_updated=NOW, uid_num=3)  # fmt: skip

    def op_projects__get_directory(self, p, q, r):
        self._job(p)
        return self.reported_dir

    def _project_path(self, rel: str) -> Path:
        target = (self.project_dir / rel).resolve()
        if PurePosixPath(rel).is_absolute() or not target.is_relative_to(self.project_dir.resolve()):
            raise HTTPProblem(422, f"Invalid file path {rel}; must be in project directory for P3")
        return target

    def op_projects__mkdir(self, p, q, r):
        target = self._project_path(q["path"])
        target.mkdir(parents=q.get("parents") == "true", exist_ok=q.get("exist_ok") == "true")
        return str(target)

    def op_projects__upload_file(self, p, q, r):
        target = self._project_path(q["path"])
        if target.exists() and q.get("overwrite") != "true":
            raise HTTPProblem(422, f"File {q['path']} already exists")
        target.write_bytes(r.read())
        self.uploads.append(q["path"])
        return str(target)

    def op_projects__download_file(self, p, q, r):
        target = self._project_path(q["path"])
        if not target.is_file():
            raise HTTPProblem(404, f"File {q['path']} not found")
        return httpx.Response(200, content=target.read_bytes(), headers={"Content-Type": OCTET})

    def op_projects__ls(self, p, q, r):
        """Entries of one folder as paths relative to the project directory (the documented return)."""
        self._job(p)
        folder = self._project_path(q.get("path", ""))
        if not folder.is_dir():
            raise HTTPProblem(404, f"Directory {q.get('path', '')} not found")
        return sorted(str(e.relative_to(self.project_dir.resolve())) for e in folder.iterdir())

    def op_workspaces__find_one(self, p, q, r):
        self._job(p)
        if p["workspace_uid"] != "W1":
            raise HTTPProblem(404, f"Workspace P3-{p['workspace_uid']} not found")
        return Workspace(uid="W1", project_uid="P3", workspace_type="base", uid_num=1, project_uid_num=3)

    def op_jobs__create(self, p, q, r):
        self._job(p)
        if p["workspace_uid"] != "W1":
            raise HTTPProblem(404, f"Workspace P3-{p['workspace_uid']} not found")
        uid = self._new_job_uid()
        self.jobs[uid] = {"type": q["type"], "status": "building", "title": q.get("title", ""), "inputs": {}, "outputs": {}}  # fmt: skip
        (self.project_dir / uid).mkdir(parents=True, exist_ok=True)
        return self.job_model(uid)

    def op_jobs__find_one(self, p, q, r):
        self._job(p)
        return self.job_model(p["job_uid"])

    def op_jobs__get_directory(self, p, q, r):
        self._job(p)
        return f"{self.reported_dir}/{p['job_uid']}"

    def _external(self, p) -> dict:
        job = self._job(p)
        if job["type"] != "snowflake":
            raise HTTPProblem(422, f"Job P3-{p['job_uid']} is not an External job")
        return job

    def op_jobs__add_external_input(self, p, q, r):
        job = self._external(p)
        if job["status"] != "building":
            raise HTTPProblem(422, "Cannot add inputs to an External job that is not building; clear it first")
        spec = json.loads(r.content)
        for slot in spec["slots"]:
            if isinstance(slot, str) or "dtype" not in slot:
                raise HTTPProblem(422, f"Invalid slot spec {slot!r}")
            _fields_for([slot])
        job["inputs"][p["input_name"]] = {**spec, "connections": []}
        return self.job_model(p["job_uid"])

    def op_jobs__add_external_output(self, p, q, r):
        job = self._external(p)
        if job["status"] != "building":
            raise HTTPProblem(422, "Cannot add outputs to an External job that is not building; clear it first")
        spec = json.loads(r.content)
        _fields_for(spec["slots"])
        if spec.get("passthrough"):
            source = job["inputs"].get(spec["passthrough"])
            if source is None:
                raise HTTPProblem(
                    422, f"Invalid External Job Spec: passthrough input {spec['passthrough']} does not exist"
                )
            if source["type"] != spec["type"]:
                raise HTTPProblem(422, f"Invalid External Job Spec: passthrough input {spec['passthrough']} does not match output type")  # fmt: skip
        results = [{"name": s["name"], "dtype": s["dtype"]} for s in spec["slots"]]
        job["outputs"][p["output_name"]] = {"type": spec["type"], "title": spec["title"], "slots": spec["slots"], "passthrough": spec.get("passthrough"), "results": results}  # fmt: skip
        return self.job_model(p["job_uid"])

    def op_jobs__connect(self, p, q, r):
        job = self._external(p)
        inp = job["inputs"].get(p["input_name"])
        if inp is None:
            raise HTTPProblem(422, f"Job has no input {p['input_name']}")
        src = self.jobs.get(q["source_job_uid"])
        if src is None or q["source_output_name"] not in src["outputs"]:
            raise HTTPProblem(404, f"Output {q['source_job_uid']}.{q['source_output_name']} not found")
        out = src["outputs"][q["source_output_name"]]
        if out["type"] != inp["type"]:
            raise HTTPProblem(422, f"Cannot connect a {out['type']} output to a {inp['type']} input")
        have = {res["name"]: res["dtype"] for res in out["results"]}
        for slot in inp["slots"]:
            if slot.get("required") and have.get(slot["name"]) != slot["dtype"]:
                raise HTTPProblem(422, f"Source output lacks required slot {slot['name']} ({slot['dtype']})")
        results = [
            {
                "name": s["name"],
                "dtype": s["dtype"],
                "job_uid": q["source_job_uid"],
                "output": q["source_output_name"],
                "result": s["name"],
            }  # fmt: skip
            for s in inp["slots"]
            if s["name"] in have
        ]
        inp["connections"].append({"job_uid": q["source_job_uid"], "output": q["source_output_name"], "results": results})  # fmt: skip
        return self.job_model(p["job_uid"])

    def op_jobs__mark_running(self, p, q, r):
        job = self._external(p)
        for name, inp in job["inputs"].items():
            if len(inp["connections"]) < inp.get("count_min", 0):
                raise HTTPProblem(422, f"Input {name} is not connected")
        job["status"] = q.get("status", "running")
        return self.job_model(p["job_uid"])

    def op_jobs__mark_completed(self, p, q, r):
        self._external(p)["status"] = "completed"
        return self.job_model(p["job_uid"])

    def op_jobs__mark_failed(self, p, q, r):
        job = self._job(p)
        job["status"] = "failed"
        job["error"] = q.get("error", "")
        return self.job_model(p["job_uid"])

    def op_jobs__clear(self, p, q, r):
        job = self._job(p)
        job["status"] = "building"
        return self.job_model(p["job_uid"])

    @staticmethod
    def _csdat(dset: Dataset) -> httpx.Response:
        return httpx.Response(200, content=b"".join(dset.stream()), headers={"Content-Type": CSDAT})

    def op_jobs__load_input(self, p, q, r):
        job = self._job(p)
        inp = job["inputs"].get(p["input_name"])
        if inp is None or not inp["connections"]:
            raise HTTPProblem(422, f"Input {p['input_name']} has no connections")
        conn = inp["connections"][0]
        source = self.saved[(conn["job_uid"], conn["output"])]
        prefixes = [res["name"] for res in conn["results"]]
        return self._csdat(source.filter_prefixes(prefixes))

    def op_jobs__load_output(self, p, q, r):
        self._job(p)
        key = (p["job_uid"], p["output_name"])
        if key not in self.saved:
            raise HTTPProblem(422, f"Output {p['output_name']} has no saved dataset")
        return self._csdat(self.saved[key])

    def op_jobs__get_output_fields(self, p, q, r):
        job = self._job(p)
        out = job["outputs"].get(p["output_name"])
        if out is None:
            raise HTTPProblem(422, f"Job has no output {p['output_name']}")
        return [list(f) for f in _fields_for(out["slots"])]

    def op_jobs__save_output(self, p, q, r):
        job = self._external(p)
        if job["status"] not in ("running", "waiting"):
            raise HTTPProblem(422, f"Cannot save output: job status is {job['status']}, not running or waiting")
        out = job["outputs"].get(p["output_name"])
        if out is None:
            raise HTTPProblem(422, f"Job has no output {p['output_name']}")
        dset = Dataset.load(io.BytesIO(r.read()))
        names = set(dset.fields())
        missing = [f for f, _ in _fields_for(out["slots"]) if f not in names]
        if "uid" not in dset.fields() or missing:
            raise HTTPProblem(422, f"Invalid dataset; missing the following required fields: {missing}")
        self.saved[(p["job_uid"], p["output_name"])] = dset
        for res in out["results"]:
            res["metafiles"], res["versions"], res["num_items"] = [f"{p['job_uid']}/{p['output_name']}.cs"], [0], [len(dset)]  # fmt: skip
        out["num_items"] = len(dset)
        return self.job_model(p["job_uid"])

    def _event(self, p, q, r, kind: str):
        self._job(p)
        text = json.loads(r.content) if kind != "image" else q.get("text", "")
        level = q.get("type", "text") if kind != "image" else "image"
        eid = f"{self._next_event:024x}"
        self._next_event += 1
        self.events.append((level, p["job_uid"], text))
        model = ImageEvent if kind == "image" else TextEvent
        return model(id=eid, project_uid="P3", job_uid=p["job_uid"], type=level, text=text)

    def op_jobs__add_event_log(self, p, q, r):
        return self._event(p, q, r, "text")

    def op_jobs__update_event_log(self, p, q, r):
        return self._event(p, q, r, "text")

    def op_jobs__add_image_log(self, p, q, r):
        images = json.loads(r.content)
        if not images or not all("fileid" in a for a in images):
            raise HTTPProblem(422, "images must be uploaded assets")
        return self._event(p, q, r, "image")

    def op_sessions__find_one(self, p, q, r):
        self._job(p)
        uid = p["session_uid"]
        if uid not in self.sessions:
            raise HTTPProblem(404, f"Session P3-{uid} not found")
        return Session(uid=uid, project_uid="P3", workspace_type="live", session_uid=uid, session_dir=f"{uid}",
                       uid_num=int(uid[1:]), project_uid_num=3, session_uid_num=int(uid[1:]), errors=[],
                       status=self.sessions[uid])  # fmt: skip

    def op_exposures__find(self, p, q, r):
        def listed(name):
            value = q.get(name)
            return None if value is None else [value] if isinstance(value, str) else list(value)

        projects, sessions, stages = listed("project_uid"), listed("session_uid"), listed("stage")
        deleted = q.get("deleted", "false") == "true"
        found = [
            e for e in self.exposures
            if (projects is None or e.project_uid in projects) and (sessions is None or e.session_uid in sessions)
            and (stages is None or e.stage in stages) and e.deleted == deleted and e.id > q.get("after", "")
        ]  # fmt: skip
        limit = int(q.get("limit", 100))
        return [json.loads(e.model_dump_json(by_alias=True)) for e in found[:limit]]

    def op_assets__upload(self, p, q, r):
        data = r.read()
        if q.get("format") == "png" and not data.startswith(b"\x89PNG"):
            raise HTTPProblem(422, "not a PNG")
        return GridFSAsset(fileid=f"{len(self.events):024x}", filename=q.get("filename") or "plot", filetype=q.get("format", "png"))  # fmt: skip


def fake_client(monkeypatch, fake: FakeCryoSPARC) -> None:
    """Route every ``CryoSPARC(...)`` built from now on to ``fake`` (real client code, mock transport)."""

    class FakeTransportClient(cs_tools.APIClient):
        def __init__(self, base_url=None, **kwargs):
            super().__init__(http_client=httpx.Client(base_url=base_url, transport=httpx.MockTransport(fake.handler)), **kwargs)  # fmt: skip

    monkeypatch.setattr(cs_tools, "APIClient", FakeTransportClient)


# ---- tests of the fake (it must behave like the rules it claims) ----------------------------
