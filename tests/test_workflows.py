"""Example workflows: UI and API generated from one source, same graph, valid widget values; converter."""
import copy
import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT
from safecut import contract as C
from safecut.app import workflows as W

NAMES = sorted(W.GRAPHS)


def _load(folder, name):
    with open(os.path.join(ROOT, folder, name + ".json")) as f:
        return json.load(f)


def test_three_workflows_in_both_formats_with_thumbnails():
    assert NAMES == ["safecut_cpu_fast", "safecut_cpu_full", "safecut_gpu_full"]
    for n in NAMES:
        assert os.path.isfile(os.path.join(ROOT, "example_workflows", n + ".jpg"))
    # API files never sit in example_workflows/ (the UI would try to load them as UI workflows)
    for f in os.listdir(os.path.join(ROOT, "example_workflows")):
        if f.endswith(".json"):
            assert W.is_ui(json.load(open(os.path.join(ROOT, "example_workflows", f))))


@pytest.mark.parametrize("name", NAMES)
def test_committed_files_are_what_the_source_generates(name):
    g = W.GRAPHS[name]
    assert _load("example_workflows", name) == json.loads(json.dumps(W.to_ui(g)))
    assert _load("api_workflows", name) == json.loads(json.dumps(W.to_api(g)))


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_opens_with_everything_in_view_at_a_readable_zoom(name):
    """extra.ds: the frontend draws text only from ~0.6 zoom; the whole graph (note included) fits a
    1920x1080 window's canvas, clear of the side and top bars, without nodes overlapping."""
    ui = _load("example_workflows", name)
    ds = ui["extra"]["ds"]
    assert 0.6 <= ds["scale"] <= 1.0
    (cw, ch), (left, top, right, bottom) = W.VIEW_CANVAS, W.VIEW_MARGIN
    boxes = []
    for n in ui["nodes"]:
        x0 = (n["pos"][0] + ds["offset"][0]) * ds["scale"]
        y0 = (n["pos"][1] - 30 + ds["offset"][1]) * ds["scale"]
        x1, y1 = x0 + n["size"][0] * ds["scale"], y0 + (n["size"][1] + 30) * ds["scale"]
        assert x0 >= left - 1 and y0 >= top - 1 and x1 <= cw - right + 1 and y1 <= ch - bottom + 1, n["title"]
        boxes.append((n["title"], x0, y0, x1, y1))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]), (a[0], b[0])


@pytest.mark.parametrize("name", NAMES)
def test_ui_and_api_describe_the_same_graph(name):
    ui, api = _load("example_workflows", name), _load("api_workflows", name)
    assert W.ui_to_api(ui) == api
    assert ui["version"] == 0.4 and any(n["type"] == "MarkdownNote" for n in ui["nodes"])
    ids = {n["id"] for n in ui["nodes"]}
    for link in ui["links"]:
        lid, src, slot, dst, dslot, typ = link
        assert src in ids and dst in ids
        src_node = next(n for n in ui["nodes"] if n["id"] == src)
        dst_node = next(n for n in ui["nodes"] if n["id"] == dst)
        assert lid in src_node["outputs"][slot]["links"] and dst_node["inputs"][dslot]["link"] == lid
        assert src_node["outputs"][slot]["type"] == typ


@pytest.mark.parametrize("name", NAMES)
def test_every_widget_value_is_valid_for_the_live_nodes(pack, name):
    api = _load("api_workflows", name)
    assert W.validate_api(api) == []
    for nid, node in api.items():
        it = pack.NODE_CLASS_MAPPINGS[node["class_type"]].INPUT_TYPES()
        spec = {**it.get("required", {}), **it.get("optional", {})}
        for k, v in node["inputs"].items():
            if isinstance(v, list):
                continue
            typ, opts = spec[k][0], (spec[k][1] if len(spec[k]) > 1 else {})
            if isinstance(typ, list):
                assert v in typ, f"node {nid} {k}={v!r} not offered by the live dropdown"
            if "min" in opts:
                assert opts["min"] <= v <= opts.get("max", v)


def test_validation_catches_bad_values():
    api = copy.deepcopy(_load("api_workflows", "safecut_cpu_full"))
    ben = next(n for n in api.values() if n["class_type"] == "SafeCutBEN2RemoveBackground")
    ben["inputs"]["provider"] = "TPU"
    ben["inputs"]["threads"] = "four"
    gate = next(n for n in api.values() if n["class_type"] == "SafeCutKeywordGate")
    del gate["inputs"]["captions"]
    errors = W.validate_api(api)
    assert any("provider" in e for e in errors) and any("threads" in e for e in errors)
    assert any("captions" in e and "missing" in e for e in errors)


@pytest.mark.parametrize("fmt", ["example_workflows", "api_workflows"])
def test_converter_round_trips(fmt):
    cpu = _load(fmt, "safecut_cpu_full")
    gpu = W.convert(cpu, "gpu")
    back = W.convert(gpu, "cpu")
    assert back == W.convert(cpu, "cpu")
    api = W.ui_to_api(gpu) if fmt == "example_workflows" else gpu
    by_type = {n["class_type"]: n["inputs"] for n in api.values()}
    assert by_type["SafeCutBEN2RemoveBackground"]["provider"] == "CUDA"
    assert by_type["SafeCutFlorence2Caption"]["precision"] == "fp16"
    assert by_type["SafeCutLlamaSafetyClassifier"]["n_gpu_layers"] == -1
    assert W.validate_api(api) == []
    api_back = W.ui_to_api(back) if fmt == "example_workflows" else back
    assert {n["class_type"]: n["inputs"] for n in api_back.values()}["SafeCutBEN2RemoveBackground"]["provider"] == "CPU"


def test_converter_cli(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, "-m", "safecut", "workflow", "to-gpu",
                        os.path.join(ROOT, "example_workflows", "safecut_cpu_fast.json"), str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    ui = json.loads(out.read_text())
    ben = next(n for n in ui["nodes"] if n["type"] == "SafeCutBEN2RemoveBackground")
    names = [w["name"] for w in C.widgets(C.load(), "SafeCutBEN2RemoveBackground")]
    assert ben["widgets_values"][names.index("provider")] == "CUDA"


def test_converter_leaves_foreign_nodes_alone():
    api = {"1": {"class_type": "KSampler", "inputs": {"threads": 3, "device": "x"}}}
    assert W.convert(api, "gpu") == api


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(NAMES), st.lists(st.sampled_from(["gpu", "cpu"]), min_size=1, max_size=5),
       st.sampled_from(["example_workflows", "api_workflows"]))
def test_fuzz_converter_is_idempotent_and_keeps_graphs_valid(name, targets, fmt):
    doc = _load(fmt, name)
    for t in targets:
        doc = W.convert(doc, t)
    assert W.convert(doc, targets[-1]) == doc
    api = W.ui_to_api(doc) if fmt == "example_workflows" else doc
    assert W.validate_api(api) == []


@pytest.mark.parametrize("name", NAMES)
def test_ready_worker_payloads_match_the_workflows(name):
    payload = json.load(open(os.path.join(ROOT, "deploy", "payloads", name + ".json")))
    wf = payload["input"]["workflow"]
    names = [i["name"] for i in payload["input"]["images"]]
    assert names == sorted(os.listdir(os.path.join(ROOT, "examples", "images")))
    loader = next(n for n in wf.values() if n["class_type"] == "SafeCutLoadImageBatch")
    assert loader["inputs"]["uploads"] == ", ".join(names)
    loader["inputs"]["uploads"] = ""
    assert wf == _load("api_workflows", name) and W.validate_api(wf) == []
    assert os.path.getsize(os.path.join(ROOT, "deploy", "payloads", name + ".json")) < 10 * 1024 * 1024  # /run limit


def test_workflows_read_their_own_input_folder_named_in_the_note():
    # not all of input/ (ComfyUI's example.png, earlier uploads); worker uploads are picked by 'uploads'
    for g in W.GRAPHS.values():
        loaders = [n for n in g.nodes if n.class_type == "SafeCutLoadImageBatch"]
        assert loaders and all(n.widgets["directory"] == W.INPUT_FOLDER == "safecut" for n in loaders), g.name
        assert f"`ComfyUI/input/{W.INPUT_FOLDER}/`" in g.note, g.name
