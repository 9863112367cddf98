"""SafeCut in ComfyUI's real frontend: headless Chromium (playwright-core) against a running ComfyUI.

Opt-in, like the other ComfyUI tests:

    COMFYUI_DIR=/work/comfyui .venv/bin/python -m pytest tests/test_frontend.py -v

Needs node, a Chromium (``$CHROMIUM``, else chromium / chromium-browser / google-chrome on PATH) and the npm
package playwright-core (``$PLAYWRIGHT_CORE_DIR`` = the package folder or the node_modules holding it; else
``$COMFYUI_DIR/../pwtest/node_modules``, ``$COMFYUI_DIR/pwtest/node_modules``, ``./node_modules``,
``tests/frontend/node_modules``). Skips with the reason when any of them is missing.

For every example workflow (example_workflows/*.json, UI format) the driver (tests/frontend/drive_workflow.js)
loads it with ``app.loadGraphData``, checks that the frontend knows every node type (no missing-nodes notice),
points the model widgets at the tiny test models and the loader at its own input folder, queues it with
``app.queuePrompt`` (what the Run button does; its return value is no success flag, so the server's answer to
the POST /prompt is checked), waits for the run to finish and reads the result text that js/safecut.js puts on
the nodes, the nodes' sizes, the Save node's previews and the view the workflow opened with. Screenshots go to
a temporary folder (printed) and, when set, are copied to ``$SAFECUT_SCREENSHOT_DIR/comfyui-<v>_frontend-<v>/``.
Every test runs once per ComfyUI in ``COMFYUI_DIRS`` (CI: 0.3.64 with frontend 1.27.10, 0.33.0 with 1.49.6);
``COMFYUI_FRONTEND_ROOT`` runs them against another frontend build (CI: the newest on PyPI). The last test reads
the server's log: no deprecation warning (0.33 logs one for extensions importing ``/scripts/ui…``). Under
``CI=true`` nothing here may skip.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import comfyui_harness as H
from conftest import load_pack

pytestmark = pytest.mark.comfyui

EXAMPLES = sorted(glob.glob(str(H.ROOT / "example_workflows" / "*.json")))
DRIVER = H.ROOT / "tests" / "frontend" / "drive_workflow.js"
HELP_DRIVER = H.ROOT / "tests" / "frontend" / "node_help.js"
DRIVE_TIMEOUT_S = int(H.PROMPT_TIMEOUT_S)
RESULT_NODES = ("SafeCutBEN2RemoveBackground", "SafeCutKeywordGate", "SafeCutLlamaSafetyClassifier",
                "SafeCutSaveCutout")  # close-up screenshots of these
_RUNS: dict[tuple[str, str], dict] = {}  # (ComfyUI checkout, workflow name) -> driver report (layout checks)


# ---- tools ----------------------------------------------------------------------------------------------
def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM") or os.environ.get("CHROME_BIN")
    if env:
        return env if os.path.isfile(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


def find_playwright_node_path() -> str | None:
    """The node_modules folder from which require('playwright-core') resolves."""
    cands = []
    env = os.environ.get("PLAYWRIGHT_CORE_DIR")
    if env:
        cands.append(env)
    for cdir in H.comfyui_dirs():
        cands += [os.path.join(cdir, "..", "pwtest", "node_modules"), os.path.join(cdir, "pwtest", "node_modules")]
    cands += [str(H.ROOT / "node_modules"), str(H.ROOT / "tests" / "frontend" / "node_modules")]
    for c in cands:
        c = os.path.abspath(c)
        if os.path.isfile(os.path.join(c, "playwright-core", "package.json")):
            return c
        if os.path.basename(c) == "playwright-core" and os.path.isfile(os.path.join(c, "package.json")):
            return os.path.dirname(c)
    return None


def tools() -> dict:
    node = shutil.which("node")
    chromium = find_chromium()
    node_path = find_playwright_node_path()
    missing = [what for what, ok in (("node", node), ("chromium (set CHROMIUM)", chromium),
                                     ("playwright-core (set PLAYWRIGHT_CORE_DIR)", node_path)) if not ok]
    if missing:
        pytest.skip("frontend test needs " + ", ".join(missing))
    return {"node": node, "chromium": chromium, "node_path": node_path}


# ---- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser_tools():
    return tools()


@pytest.fixture(scope="module", params=H.comfyui_params())
def comfy(request, browser_tools, tmp_path_factory):
    H.skip_unless_runnable(request.param)
    base = tmp_path_factory.mktemp("comfy_frontend")
    H.make_base(base)
    H.build_tiny_models(base / "models", ben2=True, florence=True, gguf_quants=("Q4_K_M", "Q8_0"))
    for wf in EXAMPLES:  # each workflow reads its own folder, so no node output is reused from a previous run
        H.write_test_images(base / "input" / f"fe_{Path(wf).stem}", size=(192, 144))  # previews worth seeing
    with H.serving(base, request.param) as server:
        server.frontend = None  # the frontend version the page reports (run_driver fills it in)
        print(f"ComfyUI {server.version} {server.url} started in {server.start_seconds:.1f}s (log {server.log_path})")
        yield server


@pytest.fixture(scope="module")
def shots(comfy, tmp_path_factory):
    """This ComfyUI's screenshots; copied to $SAFECUT_SCREENSHOT_DIR/comfyui-<v>_frontend-<v>/ when set."""
    d = tmp_path_factory.mktemp("safecut_screenshots")
    yield d
    print(f"\nSafeCut frontend screenshots: {d}")
    dest = os.environ.get("SAFECUT_SCREENSHOT_DIR")
    if dest:
        dest = os.path.join(dest, f"comfyui-{comfy.version}_frontend-{comfy.frontend}")
        os.makedirs(dest, exist_ok=True)
        for p in d.glob("*.png"):
            shutil.copy2(p, os.path.join(dest, p.name))
        print(f"copied to {dest}")


def drive(browser_tools, comfy, shots, name: str, workflow: str, widgets: dict, run: bool = True) -> dict:
    return run_driver(browser_tools, comfy, shots, DRIVER, name,
                      {"workflow": workflow, "widgets": widgets, "run": run, "closeups": list(RESULT_NODES)})


def run_driver(browser_tools, comfy, shots, driver: Path, name: str, extra: dict) -> dict:
    """Runs a tests/frontend/*.js driver with its config; returns its JSON report (fails on a driver error)."""
    cfg_dir = shots / "driver"
    cfg_dir.mkdir(exist_ok=True)
    result_path = cfg_dir / f"{name}.result.json"
    cfg = {"url": comfy.url, "chromium": browser_tools["chromium"], "screenshot_dir": str(shots), "name": name,
           "timeout_ms": DRIVE_TIMEOUT_S * 1000, "result_path": str(result_path), **extra}
    cfg_path = cfg_dir / f"{name}.config.json"
    cfg_path.write_text(json.dumps(cfg))
    env = dict(os.environ, NODE_PATH=browser_tools["node_path"])
    t0 = time.monotonic()
    # own process group: on a timeout the driver and the Chromium it started are stopped together
    proc = subprocess.Popen([browser_tools["node"], str(driver), str(cfg_path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _out, err = proc.communicate(timeout=DRIVE_TIMEOUT_S + 120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the browser driver did not finish within {DRIVE_TIMEOUT_S + 120}s\n{comfy.log_tail()}")
    report = json.loads(result_path.read_text()) if result_path.is_file() else {}
    report["wall_s"] = round(time.monotonic() - t0, 1)
    comfy.frontend = report.get("frontend") or comfy.frontend
    if proc.returncode != 0 or "driver_error" in report:
        pytest.fail(f"browser driver failed (rc {proc.returncode}): {report.get('driver_error')}\n"
                    f"{err[-3000:]}\nComfyUI log:\n{comfy.log_tail()}")
    return report


def tiny_widgets(name: str) -> dict:
    widgets = {k: dict(v) for k, v in H.TINY_WIDGETS.items()}
    widgets["SafeCutLoadImageBatch"] = {"directory": f"fe_{name}"}
    # the tiny random classifier scores the two test captions 0.643 and 0.645: this threshold splits them, so the
    # screenshots show a SAFE image saved and previewed next to an UNSAFE one (the asserts hold either way)
    widgets["SafeCutLlamaSafetyClassifier"] = {"threshold": 0.644}
    return widgets


def by_type(results: list[dict], cls: str) -> list[dict]:
    return [r for r in results if r["type"] == cls]


# ---- tests ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workflow", EXAMPLES, ids=[Path(p).stem for p in EXAMPLES])
def test_example_workflow_runs_in_the_browser(browser_tools, comfy, shots, workflow):
    name = Path(workflow).stem
    rep = drive(browser_tools, comfy, shots, name, workflow, tiny_widgets(name))
    _RUNS[comfy.comfyui, name] = rep
    print(f"ComfyUI {comfy.version}, frontend {rep['frontend']}: {name}: {rep['timings']} (wall {rep['wall_s']}s); screenshots: {rep['screenshots']}")

    # loads: js/safecut.js is active, every node type is registered, no missing-nodes notice
    assert rep["extension_loaded"], "js/safecut.js did not load (window.safecutFormatResult missing)"
    assert rep["unregistered"] == [], f"node types unknown to the frontend: {rep['unregistered']}"
    assert rep["notice"] is None, f"the frontend reported missing nodes: {rep['notice']}"
    assert any(t.startswith("SafeCut") for t in rep["types"])

    # runs: queued through the frontend, finished successfully, the result box never reaches the prompt
    run = rep["run"]
    # app.queuePrompt's return value is no success flag (frontend 1.27: false on a clean run): the server's answer
    assert run["queued"] and run["queued"]["prompt_id"] and run["queued"]["node_errors"] == [], run["queued"]
    assert run["status"] == "success", f"{run}\nComfyUI log:\n{comfy.log_tail()}"
    assert run["leaked_into_prompt"] == [], "the safecut_result widget was sent to the server as an input"

    results = rep["results"]
    gpu = "gpu" in name
    ben2 = by_type(results, "SafeCutBEN2RemoveBackground")
    assert ben2 and all(r["result"] for r in ben2), ben2
    for r in ben2:
        assert "device: CPU" in r["result"], r["result"]
        if gpu:  # the GPU workflow on a CPU box: the fallback is shown, never silent
            assert "CUDA unavailable" in r["result"], r["result"]
        assert "time:" in r["result"]
    assert str(ben2[0]["id"]) in run["executed"], "the page never got BEN2's 'executed' message"

    for r in by_type(results, "SafeCutFlorence2Caption"):  # device, time and one caption per image
        assert "device: CPU" in r["result"] and "time:" in r["result"], r["result"]
        assert "#1: " in r["result"] and "#2: " in r["result"], r["result"]

    gates = by_type(results, "SafeCutKeywordGate")
    for r in gates:
        assert r["result"] and "verdict:" in r["result"] and "settled by keywords:" in r["result"], r
        assert r["bgcolor"], "the gate's verdict colour was not applied"
    if "full" in name:
        assert gates, f"{name} has no Keyword Gate"
    for r in gates:  # per image: verdict, decided_by, P(unsafe) when the classifier decided
        rows = [l for l in r["result"].splitlines() if l.startswith("#")]
        assert len(rows) == 2 and all(" by " in l for l in rows), r["result"]
        assert all("P(unsafe)" in l for l in rows if "by classifier" in l), r["result"]
    for r in by_type(results, "SafeCutLlamaSafetyClassifier"):  # shows what it did (or that it was not needed)
        asked = [l for g in gates for l in g["result"].splitlines() if " by classifier" in l or " by error" in l]
        if asked:  # the gate's undecided captions, with P(unsafe) or the reason the classifier failed
            assert "caption(s) from the gate" in r["result"] and "device:" in r["result"], r["result"]
            assert "time:" in r["result"], r["result"]
            for line in asked:
                assert line in r["result"], (line, r["result"])
        else:
            assert "not needed" in r["result"], r["result"]
    for r in by_type(results, "SafeCutSaveCutout"):
        assert r["result"] and r["result"].startswith("saved "), r
        # the node previews the cut-outs it saved. The JSON report is listed in ui.images too (worker-comfyui
        # returns only those files); frontend 1.49 keeps it in its preview list (it takes every "images" entry for
        # an image) but draws nothing for it, so only the report may be there besides the PNGs
        saved = int(r["result"].split()[1])
        pngs = [s for s in r["preview_srcs"] if ".png" in s]
        assert len(pngs) == saved, r["preview_srcs"]
        assert all(".png" in s or "_report.json" in s for s in r["preview_srcs"]), r["preview_srcs"]

    # nodes keep their size: never below what they had or what their widgets need; keyword lists keep lines
    before = {nid: (h, mh) for nid, h, mh in run["heights_before"]}
    for r in results:
        if r["id"] in before:
            assert r["size"][1] >= before[r["id"]][0] - 1, f"node {r['id']} {r['type']} shrank: {before[r['id']]} -> {r['size']}"
        assert r["size"][1] >= r["min_height"] - 1, f"node {r['id']} {r['type']} is smaller than its widgets"
        for m in r["multiline"]:
            assert m["height"] >= 45, f"node {r['id']} {r['type']}: '{m['name']}' shows under 3 lines ({m})"
        if r["result"] and "device:" in r["result"]:  # device and time sit above the scrolling text
            assert r["head_visible"] and "device:" in r["head_text"], r

    # what is shown is really on the page, and is never saved into the workflow's widgets_values
    loaded_counts = {n["id"]: n["widgets_values"] for n in rep["nodes"]}
    for r in results:
        if not r["type"].startswith("SafeCut") or not r["result"]:
            continue
        assert r["dom_visible"], f"node {r['id']} ({r['type']}): result box not visible"
        assert r["dom_text"] == r["result"] == r["widget_value"], r
        assert r["saved_widgets_values"] == loaded_counts[r["id"]], \
            f"node {r['id']} ({r['type']}): the result box leaked into widgets_values"

    problems = [e for e in rep["console_errors"] + rep["page_errors"] if "safecut" in e.lower()]
    assert not problems, problems
    for p in rep["screenshots"]:
        assert os.path.getsize(p) > 10_000, p


def browser_run(comfy, name: str) -> dict:
    rep = _RUNS.get((comfy.comfyui, name))
    if not rep:
        pytest.skip(f"{name} was not run in the browser on ComfyUI {comfy.version} in this session")
    return rep


@pytest.mark.parametrize("name", [Path(p).stem for p in EXAMPLES])
def test_example_workflow_opens_readable(comfy, name):
    """The workflow opens at a zoom where text is drawn (the frontend hides DOM text below ~0.6), with every
    node on screen (1920x1200) and the About note's text visible."""
    rep = browser_run(comfy, name)
    opened = rep["opened"]
    assert opened["scale"] >= 0.6, f"{name} opens at {opened['scale']:.0%} zoom"
    assert opened["outside"] == [], f"{name}: nodes outside the view when it opens: {opened['outside']}"
    assert opened["note_visible"] and "SafeCut" in (opened["note_text"] or ""), opened


def test_missing_node_type_is_detected(browser_tools, comfy, shots, tmp_path):
    """The check above is not vacuous: an unknown node type is reported by the frontend and by our probe."""
    with open(EXAMPLES[0]) as f:
        wf = json.load(f)
    victim = next(n for n in wf["nodes"] if n["type"].startswith("SafeCut"))
    victim["type"] = "SafeCutNoSuchNode"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(wf))
    rep = drive(browser_tools, comfy, shots, "missing_node_control", str(path), {}, run=False)
    assert rep["unregistered"] == ["SafeCutNoSuchNode"]
    assert rep["notice"] and "SafeCutNoSuchNode" in rep["notice"], rep["notice"]


@pytest.mark.parametrize("name", [Path(p).stem for p in EXAMPLES])
def test_example_workflow_nodes_do_not_overlap(comfy, name):
    rep = browser_run(comfy, name)
    title = 30
    boxes = [(r["id"], r["type"], r["pos"][0], r["pos"][1] - title, r["pos"][0] + r["size"][0],
              r["pos"][1] + r["size"][1]) for r in rep["results"]]
    overlaps = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a[2] < b[4] and b[2] < a[4] and a[3] < b[5] and b[3] < a[5]:
                overlaps.append(f"{a[0]} {a[1]} / {b[0]} {b[1]}")
    assert not overlaps, f"{name}: overlapping nodes after the run: {overlaps}"


def test_node_help_page_and_search_aliases_reach_the_frontend(browser_tools, comfy, shots):
    """The help panel shows js/docs/SafeCutNudeNetDetector.md (opened as a user does: the node library's help
    button on 1.27, the properties panel's Info tab on newer frontends), readable without sideways scrolling; the
    nodes' SEARCH_ALIASES reach the frontend's node definitions, and its node search finds a node by one."""
    pack = load_pack()
    ben2 = pack.NODE_CLASS_MAPPINGS["SafeCutBEN2RemoveBackground"]
    rep = run_driver(browser_tools, comfy, shots, HELP_DRIVER, "node_help",
                     {"node": "SafeCutNudeNetDetector", "display": "SafeCut NudeNet Detector", "alias": "rembg",
                      "alias_node": "SafeCutBEN2RemoveBackground", "alias_target": "SafeCut BEN2 Remove Background"})
    print(f"ComfyUI {comfy.version}, frontend {rep['frontend']}: help via {rep['opened_via']}, box {rep['help_box']}, "
          f"'rembg' lists BEN2 {rep['alias_hits']}x; screenshots {rep['screenshots']}")
    text = rep["help_text"]
    page = (H.ROOT / "js" / "docs" / "SafeCutNudeNetDetector.md").read_text(encoding="utf-8")
    # the page itself, not the frontend's fallback (description + input list) shown when no page is found
    for phrase in ("Errors and fixes", "label_thresholds", "LABEL=score", "is not a NudeNet label",
                   "FEMALE_BREAST_EXPOSED=0.4"):
        assert phrase in page and phrase in text, phrase
    box = rep["help_box"]
    assert box["width"] >= 200 and box["overflow_x"] <= 0 and box["scroller_overflow_x"] <= 0, box

    # ComfyUI 0.3.64 leaves SEARCH_ALIASES out of /object_info: the pack serves them and js/safecut.js fills them
    # in; 0.33 sends them itself and js/safecut.js adds nothing. Either way the definition has them once.
    assert rep["def_aliases"] == ben2.SEARCH_ALIASES
    if rep["frontend"].startswith("1.27."):  # its search reads name and display name only (README says so)
        assert rep["alias_hit"] is False, "the pinned frontend now searches aliases: update README 'Nodes'"
    else:
        assert rep["alias_hits"] == 1, f"the node search listed BEN2 {rep['alias_hits']}x for 'rembg'"
    problems = [e for e in rep["console_errors"] + rep["page_errors"] if "safecut" in e.lower()]
    assert not problems, problems


def test_server_logs_no_deprecation_warning(comfy):
    """After the browser ran every workflow and the help page: ComfyUI 0.33 warns once per deprecated path an
    extension imports (``/scripts/ui…``, ``/extensions/core/…``); SafeCut's JS imports none. Runs last in this
    module; then requests one such path itself to show the check would see the warning."""
    if not any(c == comfy.comfyui for c, _ in _RUNS):
        pytest.skip(f"no workflow ran in the browser on ComfyUI {comfy.version} in this session")
    warnings = [ln for ln in comfy.log_tail(10**9).splitlines() if "DEPRECATION" in ln.upper()]
    assert not warnings, "\n".join(warnings)
    if "[DEPRECATION WARNING]" in (Path(comfy.comfyui) / "server.py").read_text():  # 0.33 has the middleware
        comfy.request("GET", "/scripts/ui/components/button.js")
        deadline = time.monotonic() + 10
        while "[DEPRECATION WARNING]" not in comfy.log_tail(10**9):
            assert time.monotonic() < deadline, "the control import was not reported: is this check still valid?"
            time.sleep(0.2)
