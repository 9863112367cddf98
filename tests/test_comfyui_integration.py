"""SafeCut inside a real ComfyUI, through its HTTP API (/object_info, /prompt, /history, /view, /free).

Opt-in (every test here skips with the reason when neither COMFYUI_DIR nor COMFYUI_DIRS is set; CI sets
COMFYUI_DIRS to 0.3.64 and 0.33.0, and every test runs once per ComfyUI):

    COMFYUI_DIR=/work/comfyui .venv/bin/python -m pytest tests/test_comfyui_integration.py -v

One ComfyUI at a time per module (tests/comfyui_harness.py): --cpu, 127.0.0.1, a free port, a temporary
--base-directory whose custom_nodes/comfyui-safecut links to this repository and whose models/ holds the tiny
test models (BEN2 ``tiny-ben2.onnx``, Florence-2 ``tiny-florence``, the Llama classifier as
``Llama-Guard-3-1B_<quant>.gguf``; NudeNet's bundled 320n). Every test reads its own input sub-folder, so no
node output is reused from another test's run unless the test wants it.
"""
from __future__ import annotations

import glob
import io
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import comfyui_harness as H
from safecut import contract as C

pytestmark = pytest.mark.comfyui

API_WORKFLOWS = sorted(glob.glob(str(H.ROOT / "api_workflows" / "*.json")))
MODULE = f"custom_nodes.{H.PACK_FOLDER}"
LOAD, BEN2, SAVE, FLORENCE = ("SafeCutLoadImageBatch", "SafeCutBEN2RemoveBackground", "SafeCutSaveCutout",
                              "SafeCutFlorence2Caption")
GATE, LLAMA, NUDENET, UNLOAD = ("SafeCutKeywordGate", "SafeCutLlamaSafetyClassifier", "SafeCutNudeNetDetector",
                                "SafeCutUnloadModels")
MODEL_NODES = (BEN2, FLORENCE, NUDENET)
IMAGES = ("shot_a.png", "shot_b.png")


@pytest.fixture(scope="module", params=H.comfyui_params())
def comfy(request, tmp_path_factory):
    H.skip_unless_runnable(request.param)
    base = tmp_path_factory.mktemp("comfy_integration")
    H.make_base(base)
    t0 = time.monotonic()
    H.build_tiny_models(base / "models", ben2=True, florence=True, gguf_quants=("Q4_K_M", "Q8_0"))
    built = time.monotonic() - t0
    with H.serving(base, request.param) as server:
        print(f"\ntiny models built in {built:.1f}s; ComfyUI {server.version} {server.url} answered after "
              f"{server.start_seconds:.1f}s (log {server.log_path})")
        yield server


@pytest.fixture(scope="module")
def object_info(comfy):
    return comfy.object_info()


def images_in(comfy: H.ComfyUI, folder: str, names=IMAGES) -> str:
    H.write_test_images(comfy.input_dir / folder, names)
    return folder


def with_folder(wf: dict, folder: str) -> dict:
    for nid in H.nodes_of(wf, LOAD):
        wf[nid]["inputs"]["directory"] = folder
        wf[nid]["inputs"]["uploads"] = ""
    return wf


def fast_workflow(folder: str) -> dict:
    return with_folder(H.tiny_api_workflow(H.load_api_workflow("safecut_cpu_fast")), folder)


def run_ok(comfy: H.ComfyUI, prompt: dict, what: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    entry = comfy.run(prompt)
    seconds = time.monotonic() - t0
    assert H.status_of(entry) == "success", f"{what}: {H.describe_failure(entry)}\n{comfy.log_tail()}"
    return entry, seconds


def read_png(comfy: H.ComfyUI, item: dict):
    from PIL import Image

    data = comfy.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def read_report(comfy: H.ComfyUI, ui: dict) -> tuple[dict, dict]:
    reports = [i for i in ui.get("images", []) if i["filename"].endswith("_report.json")]
    assert len(reports) == 1, f"Save Cutout must list exactly one JSON report in ui.images: {ui.get('images')}"
    assert reports[0]["type"] == "output"
    data = comfy.view(reports[0]["filename"], reports[0]["subfolder"], "output")
    return json.loads(data), reports[0]


# ---- 1. the node contract as ComfyUI serves it --------------------------------------------------------------
def test_object_info_lists_every_node_as_frozen(object_info):
    frozen = C.load()
    missing = sorted(set(frozen) - set(object_info))
    assert not missing, f"ComfyUI did not register: {missing}"
    for cid, spec in frozen.items():
        info = object_info[cid]
        assert info["python_module"] == MODULE, (cid, info["python_module"])
        assert info["display_name"] == spec["display_name"]
        assert info["category"] == "SafeCut"
        # input order: required then optional, exactly the frozen order (saved workflows depend on it)
        order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
        assert order == [i["name"] for i in spec["inputs"]], cid
        for inp in spec["inputs"]:
            section = "optional" if inp["optional"] else "required"
            served = info["input"][section][inp["name"]]
            typ, opts = served[0], (served[1] if len(served) > 1 else {})
            if inp["type"] == "COMBO":
                assert isinstance(typ, list) or typ == "COMBO", (cid, inp["name"], typ)
                options = typ if isinstance(typ, list) else opts.get("options")
                if inp.get("options") is not None:
                    assert options == inp["options"], (cid, inp["name"])
            else:
                assert typ == inp["type"], (cid, inp["name"], typ)
            if inp["widget"]:
                assert opts.get("default") == inp.get("default"), (cid, inp["name"])
            assert bool(opts.get("lazy")) == bool(inp.get("lazy")), (cid, inp["name"])
            assert opts.get("tooltip"), f"{cid}.{inp['name']} has no tooltip"
        assert info["output"] == [o["type"] for o in spec["outputs"]], cid
        assert info["output_name"] == [o["name"] for o in spec["outputs"]], cid
        assert info["output_is_list"] == [o["is_list"] for o in spec["outputs"]], cid
        assert info["output_node"] == spec["output_node"], cid


def test_model_dropdowns_list_the_models_on_disk(object_info):
    ben2 = object_info[BEN2]["input"]["required"]["model"][0]
    florence = object_info[FLORENCE]["input"]["required"]["model"][0]
    family = object_info[LLAMA]["input"]["required"]["model_family"][0]
    assert H.TINY_BEN2 in ben2 and "BEN2_Base.onnx" in ben2  # on disk first, fetchable registry entries after
    assert H.TINY_FLORENCE in florence
    assert "Llama-Guard-3-1B" in family and "custom: Llama-Guard-3-1B_Q4_K_M.gguf" in family
    assert "320n.onnx" in object_info[NUDENET]["input"]["required"]["model"][0]


def test_search_aliases_reach_the_frontend_once(comfy, object_info):
    """0.3.64's /object_info leaves V1 SEARCH_ALIASES out (the pack serves them for js/safecut.js to fill in);
    0.33's sends them itself, exactly the pack's list (js/safecut.js then adds nothing: no duplicates)."""
    served = comfy.get("/safecut/search_aliases")
    assert "rembg" in served[BEN2], served[BEN2]
    for cid, aliases in served.items():
        sent = object_info[cid].get("search_aliases")
        if comfy.version == "0.3.64":
            assert sent is None, (cid, sent)
        else:
            assert sent == aliases, (cid, sent, aliases)


# ---- 2. every API workflow runs -------------------------------------------------------------------------------
def check_outputs(comfy: H.ComfyUI, wf: dict, entry: dict, *, expect_all_saved: bool,
                  verdicts: list | None = None) -> dict:
    """Save Cutout's PNGs and report. ``verdicts``: the gate's, per image (from this run unless given)."""
    outputs = entry["outputs"]
    (save_id,) = H.nodes_of(wf, SAVE)
    ui = outputs[save_id]
    report, _ = read_report(comfy, ui)
    rows = report["images"]
    assert sorted(r["source"] for r in rows) == sorted(IMAGES), rows
    pngs = [i for i in ui["images"] if i["filename"].endswith(".png")]
    assert len(pngs) == sum(r["saved"] for r in rows) == report["summary"]["saved"]
    if expect_all_saved:
        assert len(pngs) == len(IMAGES), rows
    gate_ids = H.nodes_of(wf, GATE)
    if gate_ids and verdicts is None:
        verdicts = outputs[gate_ids[0]]["verdict"]
    for item in pngs:
        img = read_png(comfy, item)
        assert img.mode == "RGBA", (item, img.mode)
        alpha = img.getchannel("A")
        lo, hi = alpha.getextrema()
        assert lo < 128 < hi, f"{item['filename']}: alpha {lo}..{hi} is not a cut-out mask"
        meta = json.loads(img.text["safecut"])
        assert meta["source"] in IMAGES
        assert img.text.get("source_filename") == meta["source"]
        row = next(r for r in rows if r["source"] == meta["source"])
        assert row["filename"] == item["filename"] and row["saved"] is True
        if gate_ids:  # the verdict in the PNG is the gate's verdict for that image
            assert meta["verdict"] in ("SAFE", "UNSAFE")
            assert meta["verdict"] == verdicts[row["index"]]
            assert meta["caption"] == row["caption"]
    if gate_ids:
        for r in rows:  # only SAFE is written unless save_unsafe; nothing is silently dropped
            assert r["verdict"] in ("SAFE", "UNSAFE")
            assert r["decided_by"] in ("keywords", "classifier", "nudenet", "error")
            assert r["saved"] == (r["verdict"] == "SAFE" or report["save_unsafe"]), r
    return report


@pytest.mark.parametrize("path", API_WORKFLOWS, ids=[Path(p).stem for p in API_WORKFLOWS])
def test_api_workflow_runs(comfy, path):
    name = Path(path).stem
    folder = images_in(comfy, f"wf_{name}")
    wf = with_folder(H.tiny_api_workflow(json.loads(Path(path).read_text())), folder)
    entry, seconds = run_ok(comfy, wf, name)
    print(f"{name}: {seconds:.1f}s")
    outputs = entry["outputs"]
    check_outputs(comfy, wf, entry, expect_all_saved=not H.nodes_of(wf, GATE))

    # every model node says which device it really used; the GPU workflow on this CPU box says it fell back
    gpu = "gpu" in name
    for cls in MODEL_NODES:
        for nid in H.nodes_of(wf, cls):
            devices = outputs[nid]["device"]
            assert devices and all(d.startswith("CPU") for d in devices), (cls, devices)
            if gpu:
                assert all("CUDA unavailable" in d for d in devices), (cls, devices)
            assert all(d in t for d, t in zip(devices, outputs[nid]["text"])), outputs[nid]
    for nid in H.nodes_of(wf, FLORENCE):
        if gpu:
            assert all("fp16 requested: CPU runs fp32" in t for t in outputs[nid]["text"]), outputs[nid]["text"]
    for nid in H.nodes_of(wf, GATE):
        gate_ui = outputs[nid]
        assert len(gate_ui["verdict"]) == len(IMAGES)
        if any(d in ("classifier", "error") for d in gate_ui["decided_by"]):
            # the Llama model ran inside the gate (lazy path): the device it used is shown there
            assert gate_ui["device"] and gate_ui["device"][0].startswith("CPU"), gate_ui
    for nid in H.nodes_of(wf, LLAMA):
        if nid in outputs:
            assert outputs[nid]["text"][0].startswith("Llama-Guard-3-1B_"), outputs[nid]

    if H.nodes_of(wf, GATE):  # as shipped only SAFE images are written: also check the PNGs of UNSAFE ones
        for nid in H.nodes_of(wf, SAVE):
            wf[nid]["inputs"]["save_unsafe"] = True
        entry2, seconds2 = run_ok(comfy, wf, f"{name} (save_unsafe)")
        cached = H.messages(entry2, "execution_cached")[0]["nodes"]
        assert set(cached) >= set(wf) - set(H.nodes_of(wf, SAVE)) - set(H.nodes_of(wf, LLAMA)), cached
        report = check_outputs(comfy, wf, entry2, expect_all_saved=True,
                               verdicts=outputs[H.nodes_of(wf, GATE)[0]]["verdict"])
        assert report["save_unsafe"] is True
        print(f"{name} again with save_unsafe (upstream cached): {seconds2:.1f}s")


# ---- 3. lazy evaluation: the Llama node runs only for undecided captions ----------------------------------------
def gate_default(widget: str) -> str:
    return next(i["default"] for i in C.load()[GATE]["inputs"] if i["name"] == widget)


def lazy_graph(caption: str, policy: str = "review", tag: str = "") -> dict:
    return {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": caption}},
        "2": {"class_type": LLAMA, "inputs": {
            "model_family": "Llama-Guard-3-1B", "quantization": "Q4_K_M", "n_gpu_layers": 0, "threads": 0,
            "n_ctx": 1024, "threshold": 0.5, "keep_model_loaded": True,
            # a unique value: the node's output is never served from ComfyUI's cache of an earlier test
            "custom_categories": f"S1: Violence\nS2: Nudity\n# {tag or uuid.uuid4().hex}"}},
        "3": {"class_type": GATE, "inputs": {
            "captions": ["1", 0], "classifier": ["2", 0],
            "safe_keywords": gate_default("safe_keywords"), "unsafe_keywords": gate_default("unsafe_keywords"),
            "policy": policy, "block_unsafe": True}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 3]}},
    }


def unload_llama(comfy: H.ComfyUI) -> int:
    """Runs SafeCut Unload Models (kind llama) and returns how many Llama models it unloaded."""
    entry, _ = run_ok(comfy, {"1": {"class_type": UNLOAD, "inputs": {"kind": "llama"}},
                              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}, "unload llama")
    stats = json.loads(entry["outputs"]["2"]["text"][0])
    return stats["unloaded"]


def test_llama_node_runs_only_for_undecided_captions(comfy, object_info):
    if "PrimitiveString" not in object_info or "PreviewAny" not in object_info:
        pytest.skip("this ComfyUI has no core PrimitiveString / PreviewAny node")
    unload_llama(comfy)  # start with no Llama model resident (earlier tests may have loaded one)

    # a caption settled by safe keywords: the Llama node never executes, its model never loads
    entry, s_safe = run_ok(comfy, lazy_graph("a red mug on a wooden table"), "safe caption")
    out = entry["outputs"]
    assert "2" not in out, f"the Llama node executed although no caption needed it: {out.get('2')}"
    assert "2" not in H.messages(entry, "execution_cached")[0]["nodes"]
    assert out["3"]["verdict"] == ["SAFE"] and out["3"]["decided_by"] == ["keywords"]
    assert out["3"]["settled_by_keywords"] == [1] and "device" not in out["3"]
    assert json.loads(out["4"]["text"][0])["images"][0]["verdict"] == "SAFE"
    assert unload_llama(comfy) == 0, "a Llama model was loaded for a caption the keywords settled"

    # an unsafe keyword with the strict policy: decided UNSAFE by keywords, still no Llama
    entry, _ = run_ok(comfy, lazy_graph("a man holding a knife", policy="strict"), "strict unsafe caption")
    assert "2" not in entry["outputs"]
    assert entry["outputs"]["3"]["verdict"] == ["UNSAFE"] and entry["outputs"]["3"]["decided_by"] == ["keywords"]
    assert unload_llama(comfy) == 0

    # an undecided caption: ComfyUI evaluates the lazy input, the Llama node runs and its model loads
    entry, s_undecided = run_ok(comfy, lazy_graph("a zorblax quibbling beside the flurm"), "undecided caption")
    out = entry["outputs"]
    assert "2" in out, "the Llama node did not run for an undecided caption"
    assert "2" not in H.messages(entry, "execution_cached")[0]["nodes"]
    assert out["2"]["text"][0].startswith("Llama-Guard-3-1B_Q4_K_M.gguf")
    assert out["3"]["decided_by"] == ["classifier"], out["3"]
    assert out["3"]["verdict"][0] in ("SAFE", "UNSAFE") and out["3"]["settled_by_keywords"] == [0]
    assert out["3"]["device"][0].startswith("CPU · llama.cpp "), out["3"]   # the build's ISA is shown
    entry_report = json.loads(out["4"]["text"][0])["images"][0]
    assert entry_report["decided_by"] == "classifier" and 0.0 <= entry_report["p_unsafe"] <= 1.0
    assert unload_llama(comfy) == 1, "the Llama model did not load (or not through SafeCut's cache)"
    print(f"keywords-only run {s_safe:.1f}s, classifier run {s_undecided:.1f}s")


# ---- 4. bad requests and runtime errors -----------------------------------------------------------------------
def node_error_types(body: dict, node_id: str) -> list[str]:
    return [e["type"] for e in body["node_errors"][node_id]["errors"]]


def flagged_inputs(body: dict, node_id: str) -> list[str]:
    """The widgets the frontend marks red for a node's validation errors."""
    return [e["extra_info"].get("input_name") for e in body["node_errors"][node_id]["errors"]]


def test_bad_requests_come_back_as_node_errors(comfy):
    folder = images_in(comfy, "bad_requests")

    wf = fast_workflow(folder)
    wf["2"]["inputs"]["model"] = "no-such-model.onnx"
    status, body = comfy.post_prompt(wf)
    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation", body
    assert "value_not_in_list" in node_error_types(body, "2")
    assert "no-such-model.onnx" in json.dumps(body["node_errors"]["2"])

    wf = fast_workflow(folder)
    wf["2"]["inputs"]["provider"] = "TPU"
    status, body = comfy.post_prompt(wf)
    assert status == 400 and "value_not_in_list" in node_error_types(body, "2"), body

    wf = fast_workflow(folder)
    del wf["2"]["inputs"]["image"]
    status, body = comfy.post_prompt(wf)
    assert status == 400 and "required_input_missing" in node_error_types(body, "2"), body

    wf = fast_workflow("no_such_folder_here")  # a missing folder is caught before anything runs
    status, body = comfy.post_prompt(wf)
    assert status == 400 and "custom_validation_failed" in node_error_types(body, "1"), body
    assert "does not exist" in json.dumps(body["node_errors"]["1"])
    assert flagged_inputs(body, "1") == ["directory"], body  # only the widget at fault, not pattern/uploads

    wf = fast_workflow("../outside")  # and so is a path out of the input folder
    status, body = comfy.post_prompt(wf)
    assert status == 400 and "custom_validation_failed" in node_error_types(body, "1"), body
    assert flagged_inputs(body, "1") == ["directory"], body

    entry, _ = run_ok(comfy, fast_workflow(folder), "a good prompt after the bad ones")
    assert len([i for i in entry["outputs"]["3"]["images"] if i["filename"].endswith(".png")]) == len(IMAGES)


def test_runtime_errors_are_execution_errors_and_the_server_goes_on(comfy):
    broken = comfy.input_dir / "runtime_broken"
    images_in(comfy, "runtime_broken", ("good.png",))
    (broken / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    entry = comfy.run(fast_workflow("runtime_broken"))
    assert H.status_of(entry) == "error"
    err = H.execution_error(entry)
    assert err and err["node_id"] == "1" and err["node_type"] == LOAD, err
    assert "broken.png" in err["exception_message"], err["exception_message"]

    (comfy.input_dir / "runtime_empty").mkdir()
    entry = comfy.run(fast_workflow("runtime_empty"))
    assert H.status_of(entry) == "error"
    err = H.execution_error(entry)
    assert err["node_id"] == "1" and "no images" in err["exception_message"], err

    wf = fast_workflow("runtime_empty")  # a bad upload name is an execution error naming 'uploads'
    wf["1"]["inputs"]["uploads"] = "../escape.png"
    entry = comfy.run(wf)
    err = H.execution_error(entry)
    assert err["node_id"] == "1" and err["exception_message"].startswith("uploads entry '../escape.png'"), err

    assert comfy.alive()
    folder = images_in(comfy, "runtime_after")
    entry, _ = run_ok(comfy, fast_workflow(folder), "the next prompt after the errors")
    assert entry["outputs"]["3"]["safecut"][0]["saved"] == len(IMAGES)


# ---- 5. POST /free empties SafeCut's model cache ----------------------------------------------------------------
def cache_stats(comfy: H.ComfyUI) -> dict:
    """Cache statistics from SafeCut Unload Models with kind 'nudenet' (the fast workflow loads no NudeNet
    model, so nothing that matters here is unloaded by asking)."""
    entry, _ = run_ok(comfy, {"1": {"class_type": UNLOAD, "inputs": {"kind": "nudenet"}},
                              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}, "cache stats")
    return json.loads(entry["outputs"]["2"]["text"][0])


def test_comfyui_free_empties_the_safecut_cache(comfy, object_info):
    if "PreviewAny" not in object_info:
        pytest.skip("this ComfyUI has no core PreviewAny node")
    run_ok(comfy, fast_workflow(images_in(comfy, "free_before")), "fast workflow before /free")
    before = cache_stats(comfy)
    ben2_keys = [m["key"] for m in before["models"] if m["key"].startswith("ben2:")]
    assert ben2_keys and before["resident_models"] >= 1, before
    assert cache_stats(comfy)["resident_models"] == before["resident_models"]  # nothing else unloads it

    unload_line = re.compile(r"SafeCut: unloaded (\d+) model\(s\)$", re.M)
    seen = len(unload_line.findall(comfy.log_tail(10**9)))
    comfy.free(unload_models=True)
    deadline = time.monotonic() + 120  # /free only sets a flag: ComfyUI's worker thread acts on it when idle
    while True:
        found = unload_line.findall(comfy.log_tail(10**9))
        if len(found) > seen:
            break
        assert time.monotonic() < deadline, f"/free did not reach SafeCut's cache:\n{comfy.log_tail()}"
        time.sleep(0.25)
    assert int(found[-1]) == before["resident_models"], found

    after = cache_stats(comfy)
    assert after["resident_models"] == 0 and after["models"] == [], after

    # and the pack still works afterwards: the model loads again
    loads = comfy.log_tail(10**9).count("SafeCut: loaded ben2:")
    entry, _ = run_ok(comfy, fast_workflow(images_in(comfy, "free_after")), "fast workflow after /free")
    assert comfy.log_tail(10**9).count("SafeCut: loaded ben2:") == loads + 1
    assert entry["outputs"]["3"]["safecut"][0]["saved"] == len(IMAGES)


# ---- 6. ComfyUI's memory pressure reaches SafeCut's GPU models through this ComfyUI's free_memory ----------------
# Runs in ComfyUI's own Python against its real comfy.model_management, with the pack imported as ComfyUI does
# (which installs nodes/comfy_hooks.py's wrapper). A CPU box has no GPU, so free memory is faked at 0 bytes and the
# device is cuda:0 (ComfyUI's own free_memory only compares and looks it up: nothing touches CUDA). The keywords
# are those 0.33's load_models_gpu passes; on 0.33 pins_required > 0 makes the original call ensure_pin_budget,
# which shows the wrapper forwarded them.
FREE_MEMORY_PROBE = r"""
import importlib, importlib.util, inspect, json, sys, types
root = sys.argv[1]
sys.path.insert(0, ".")
sys.argv = ["main.py", "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.model_management as mm
spec = importlib.util.spec_from_file_location("safecut_pack", root + "/__init__.py", submodule_search_locations=[root])
pack = importlib.util.module_from_spec(spec)
sys.modules["safecut_pack"] = pack
spec.loader.exec_module(pack)
hooks = sys.modules["safecut_pack.nodes.comfy_hooks"]
cache_mod = importlib.import_module(hooks.get_cache.__module__)
params = list(inspect.signature(inspect.unwrap(mm.free_memory)).parameters)
calls = []
mm.get_free_memory = lambda dev=None, torch_free_too=False: (0, 0) if torch_free_too else 0
mm.ensure_pin_budget = lambda size, *a, **k: calls.append(["ensure_pin_budget", size])
mm.ensure_pin_registerable = lambda size, *a, **k: None
cache = hooks.get_cache()
for kind, dev in (("gpu-model", "cuda"), ("cpu-model", "cpu")):
    cache.get(cache_mod.ModelKey(kind, "/" + kind), lambda dev=dev: types.SimpleNamespace(torch_device=dev),
              closer=lambda m: None)
new = {"for_dynamic": False, "pins_required": 7 << 20, "ram_required": 1 << 20}
kwargs = {k: v for k, v in new.items() if k in params}
out = mm.free_memory(1 << 30, torch.device("cuda", 0), **kwargs)
print(json.dumps({"wrapped": bool(getattr(mm.free_memory, "_safecut_wrapped", False)), "params": params,
                  "kwargs": sorted(kwargs), "returned": type(out).__name__, "calls": calls,
                  "left": sorted(k.kind for k in cache.keys())}))
"""


def test_comfyui_memory_pressure_unloads_safecut_gpu_models(comfy, tmp_path):
    env = dict(os.environ, SAFECUT_OFFLINE="1", SAFECUT_MODELS_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.run([H.comfyui_python(comfy.comfyui), "-c", FREE_MEMORY_PROBE, str(H.ROOT)], cwd=comfy.comfyui,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"ComfyUI {comfy.version} free_memory{tuple(got['params'])}: {got}")
    assert got["wrapped"] and got["returned"] == "list", got
    assert got["left"] == ["cpu-model"], f"SafeCut's GPU model survived ComfyUI's memory pressure: {got}"
    if comfy.version != "0.3.64":  # the keyword arguments 0.33 added reach ComfyUI's own free_memory
        assert got["kwargs"] == ["for_dynamic", "pins_required", "ram_required"], got
        assert got["calls"] == [["ensure_pin_budget", 7 << 20]], got
