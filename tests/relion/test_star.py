"""STAR rewriting on real RELION 3.1 and 5.0 files: everything copied, only the 2x fields changed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cryosr.core.errors import InputError
from cryosr.core.io import read_star, write_star
from cryosr.relion_external.nodes import detect_relion_version, output_nodes_blocks
from cryosr.relion_external.star_rewrite import output_blocks, output_name, plan_items, strip_job_prefix

DATA = Path(__file__).resolve().parents[1] / "data" / "relion"
CORRECTED = ["relion31tutorial__corrected_micrographs.star", "relion5__corrected_micrographs.star"]


def loop_tokens(path: Path) -> dict[str, dict[str, list[str]]]:
    """Raw text tokens of every loop table: block -> column -> tokens (an independent, byte-level view)."""
    tables: dict[str, dict[str, list[str]]] = {}
    block, columns, rows = None, [], []

    def flush():
        if block is not None and columns:
            tables[block] = {c: [r[i] for r in rows] for i, c in enumerate(columns)}

    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            flush()
            block, columns, rows = line[5:], [], []
        elif line.startswith("loop_"):
            continue
        elif line.startswith("_"):
            columns.append(line.split()[0][1:])
        elif columns:
            rows.append(line.split())
    flush()
    return tables


def test_strip_prefix_and_output_name():
    assert strip_job_prefix("MotionCorr/job002/Movies/x.mrc") == "Movies/x.mrc"
    assert strip_job_prefix("Movies/x.tiff") == "Movies/x.tiff"
    assert strip_job_prefix("/data/raw/x.tiff") == "x.tiff"
    assert strip_job_prefix("../raw/x.tiff") == "x.tiff"
    assert output_name("MotionCorr/job002/Movies/a/x.mrc", "External/job012/", "micrographs") == (
        "External/job012/Movies/a/x.mrc"
    )
    # movies follow MotionCorr's naming: extension replaced, other dots -> "_"
    assert output_name("Movies/x.y.tiff", "External/job012", "movies") == "External/job012/Movies/x_y.mrc"


@pytest.mark.parametrize("name", CORRECTED)
def test_real_corrected_micrographs_survive(tmp_path, name):
    src = DATA / name
    blocks = read_star(src)
    items = plan_items(blocks, "micrographs", "External/job012", star=name)
    assert len(items) == 24 and items[0].pixel_size_a == pytest.approx(0.885) and items[0].voltage_kv == 200.0
    assert items[0].metadata == "MotionCorr/job002/Movies/20170629_00021_frameImage.star"
    out = tmp_path / "micrographs.star"
    write_star(out, output_blocks(blocks, "micrographs", items))
    before, after = loop_tokens(src), loop_tokens(out)
    assert list(after) == ["optics", "micrographs"]
    # optics: same columns in the same order, every token identical except the halved micrograph pixel size
    assert list(after["optics"]) == list(before["optics"])
    for column, tokens in before["optics"].items():
        if column == "rlnMicrographPixelSize":
            assert after["optics"][column] == ["0.442500"]
        else:
            assert after["optics"][column] == tokens, column
    assert before["optics"]["rlnMicrographOriginalPixelSize"] == ["0.885000"]
    assert after["optics"]["rlnMtfFileName"] == ["mtf_k2_200kV.star"]
    # micrographs: every column kept (incl. power spectrum, metadata, motion), only the name changed
    assert list(after["micrographs"]) == list(before["micrographs"])
    for column, tokens in before["micrographs"].items():
        if column == "rlnMicrographName":
            assert after["micrographs"][column] == [
                t.replace("MotionCorr/job002/", "External/job012/") for t in tokens
            ]
        else:
            assert after["micrographs"][column] == tokens, column


def test_real_movies_star_gets_micrograph_pixel_size(tmp_path):
    blocks = read_star(DATA / "relion31tutorial__movies.star")
    items = plan_items(blocks, "movies", "External/job003")
    out = tmp_path / "m.star"
    write_star(out, output_blocks(blocks, "movies", items))
    after = loop_tokens(out)
    assert after["optics"]["rlnMicrographPixelSize"] == ["0.442500"]
    assert after["optics"]["rlnMicrographOriginalPixelSize"] == ["0.885000"]
    assert after["micrographs"]["rlnMicrographName"][0] == "External/job003/Movies/20170629_00021_frameImage.mrc"
    assert after["micrographs"]["rlnMicrographMovieName"][0] == "Movies/20170629_00021_frameImage.tiff"


def _two_groups() -> dict:
    optics = pd.DataFrame({"rlnOpticsGroupName": ["g1", "g2"], "rlnOpticsGroup": [1, 2],
                           "rlnMicrographOriginalPixelSize": [1.0, 1.3], "rlnMicrographPixelSize": [1.0, 1.3],
                           "rlnVoltage": [300.0, 200.0], "rlnAmplitudeContrast": [0.1, 0.07]})  # fmt: skip
    mics = pd.DataFrame({"rlnMicrographNameNoDW": ["MotionCorr/job002/a_noDW.mrc", "MotionCorr/job002/b_noDW.mrc"],
                         "rlnMicrographName": ["MotionCorr/job002/a.mrc", "MotionCorr/job002/b.mrc"],
                         "rlnOpticsGroup": [2, 1]})  # fmt: skip
    return {"optics": optics, "micrographs": mics}


def test_mixed_pixel_sizes_per_group_and_nodw_dropped():
    blocks = _two_groups()
    items = plan_items(blocks, "micrographs", "External/job004")
    assert [(it.pixel_size_a, it.voltage_kv, it.optics_group) for it in items] == [(1.3, 200.0, 2), (1.0, 300.0, 1)]
    out = output_blocks(blocks, "micrographs", items)
    assert out["optics"]["rlnMicrographPixelSize"].tolist() == [0.5, 0.65]
    assert out["optics"]["rlnMicrographOriginalPixelSize"].tolist() == [1.0, 1.3]
    assert out["micrographs"]["rlnOpticsGroup"].tolist() == [2, 1]
    assert "rlnMicrographNameNoDW" not in out["micrographs"].columns
    assert blocks["micrographs"]["rlnMicrographName"][0] == "MotionCorr/job002/a.mrc"  # input not modified


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda b: b.pop("optics"), "no data_optics table"),
        (lambda b: b["micrographs"].drop(columns=["rlnMicrographName"], inplace=True), "_rlnMicrographName"),
        (lambda b: b["optics"].drop(columns=["rlnMicrographPixelSize"], inplace=True), "_rlnMicrographPixelSize"),
        (lambda b: b["micrographs"].__setitem__("rlnOpticsGroup", [3, 1]), "optics group 3 is not in"),
        (lambda b: b["optics"].__setitem__("rlnMicrographPixelSize", [0.0, 1.3]), "is not positive"),
        (lambda b: b["micrographs"].__setitem__("rlnMicrographName", ["X/job001/a.mrc", "Y/job002/a.mrc"]),
         "would both be written"),
    ],
)
def test_plan_items_rejects_bad_tables(edit, needle):
    blocks = _two_groups()
    edit(blocks)
    with pytest.raises(InputError, match=needle):
        plan_items(blocks, "micrographs", "External/job004", star="in.star")


def test_detect_version_from_real_pipelines():
    assert detect_relion_version(read_star(DATA / "relion31tutorial__default_pipeline.star"), 30001) == "3.1"
    assert detect_relion_version(read_star(DATA / "relion5__default_pipeline.star"), 50001) == "5.0"
    assert detect_relion_version(read_star(DATA / "relion5__default_pipeline.star"), None) == "5.0"
    v4 = {"pipeline_nodes": pd.DataFrame({"rlnPipeLineNodeName": ["MotionCorr/job002/corrected_micrographs.star"],
                                          "rlnPipeLineNodeTypeLabel": ["MicrographsData.star.relion.motioncorr"]})}  # fmt: skip
    assert detect_relion_version(v4, 30001) == "4.0"
    assert detect_relion_version({"pipeline_general": {"rlnPipeLineJobCounter": 1}}, None) is None
    assert detect_relion_version(None, None) is None


def test_output_nodes_forms(tmp_path):
    node = [("External/job007/micrographs.star", "micrographs")]
    v31 = output_nodes_blocks(node, "3.1")["output_nodes"]
    assert v31.columns.tolist() == ["rlnPipeLineNodeName", "rlnPipeLineNodeType"] and v31.iloc[0, 1] == 1
    v4 = output_nodes_blocks(node, "4.0")["output_nodes"]
    assert v4["rlnPipeLineNodeTypeLabel"].tolist() == ["MicrographsData.star.relion"]
    v5 = output_nodes_blocks(node, "5.0")["output_nodes"]
    # same label spelling and depth as the RELION-5-written sample
    sample = read_star(DATA / "relion5__RELION_OUTPUT_NODES.star")["output_nodes"]
    assert v5["rlnPipeLineNodeTypeLabel"].tolist() == [sample["rlnPipeLineNodeTypeLabel"].iloc[0]]
    assert v5["rlnPipeLineNodeTypeLabelDepth"].tolist() == [1]
    both = output_nodes_blocks(node, None)["output_nodes"]
    assert both["rlnPipeLineNodeType"].tolist() == [1]
    assert both["rlnPipeLineNodeTypeLabel"].tolist() == ["MicrographGroupMetadata.star.relion"]
    write_star(tmp_path / "n.star", {"output_nodes": v31})
    assert loop_tokens(tmp_path / "n.star") == {
        "output_nodes": {"rlnPipeLineNodeName": ["External/job007/micrographs.star"], "rlnPipeLineNodeType": ["1"]}
    }
