"""Example workflows from ONE source, in both formats, and the CPU<->GPU converter.

``GRAPHS`` describes each workflow once (nodes, widget values by name, links by output name). From it
``to_ui`` writes the UI format (schema 0.4, positional widgets_values, what you drag into ComfyUI) and
``to_api`` the API format (what /prompt and worker-comfyui take). Widget order comes from the frozen node
contract (contract.json), so the two formats cannot drift apart.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field

from .. import contract as C

# The workflows read this folder of ComfyUI's input/ (the loader node creates it on first use), not all of
# input/, which holds ComfyUI's example.png and every earlier upload.
INPUT_FOLDER = "safecut"

# ---- profiles: what differs between the CPU and the GPU variant --------------------------------------
PROFILE_VALUES = {
    "cpu": {"provider": "CPU", "device": "CPU", "precision": "fp32", "n_gpu_layers": 0, "threads": 0,
            "batch_size": 2},
    "gpu": {"provider": "CUDA", "device": "CUDA", "precision": "fp16", "n_gpu_layers": -1, "threads": 0,
            "batch_size": 8},
}


@dataclass
class N:
    id: int
    class_type: str
    widgets: dict = field(default_factory=dict)
    title: str = ""
    pos: tuple = (0, 0)
    size: tuple = (360, 420)


@dataclass
class Graph:
    name: str
    title: str
    note: str
    nodes: list
    links: list            # (src_id, output_name, dst_id, input_name)
    note_box: tuple = ((0, 540), (400, 540))   # the About note: pos, size


# What a user sees on opening: the whole graph at a zoom where ComfyUI draws text (below ~0.6 it draws only
# boxes and hides every text box, the note included). Laid out wide for a 1920x1080 window (canvas ~1856x1002
# after the side bar and menu). Node heights leave room for the result box js/safecut.js adds after a run.
# Newer frontends draw the canvas under the side bar and the top bar: leave them room (left, top, right, bottom).
VIEW_CANVAS = (1856, 1002)
VIEW_MARGIN = (64, 90, 24, 24)


# ---- the graphs -----------------------------------------------------------------------------------------
def _fast(profile: str) -> Graph:
    p = PROFILE_VALUES[profile]
    nodes = [
        N(1, "SafeCutLoadImageBatch", {"directory": INPUT_FOLDER, "mode": "list"}, "Load images", (0, 0), (400, 480)),
        N(2, "SafeCutBEN2RemoveBackground", {"model": "BEN2_Base.onnx", "provider": p["provider"],
                                             "threads": p["threads"], "batch_size": p["batch_size"]},
          "BEN2 cut-out", (440, 0), (360, 480)),
        N(3, "SafeCutSaveCutout", {"filename_prefix": "safecut/cutout"}, "Save cut-outs", (840, 0), (400, 640)),
    ]
    links = [(1, "image", 2, "image"), (2, "rgba", 3, "image"), (2, "mask", 3, "mask"), (1, "filenames", 3, "filenames")]
    return Graph(f"safecut_{profile}_fast", f"SafeCut {profile.upper()} fast: cut-outs only", NOTE_FAST, nodes, links)


def _full(profile: str) -> Graph:
    p = PROFILE_VALUES[profile]
    gpu = profile == "gpu"
    nodes = [
        N(1, "SafeCutLoadImageBatch", {"directory": INPUT_FOLDER, "mode": "list"}, "Load images", (0, 0), (400, 480)),
        N(2, "SafeCutBEN2RemoveBackground", {"model": "BEN2_Base.onnx", "provider": p["provider"],
                                             "threads": p["threads"], "batch_size": p["batch_size"]},
          "BEN2 cut-out", (440, 0), (360, 480)),
        N(3, "SafeCutFlorence2Caption", {"model": "Florence-2-large-ft" if gpu else "Florence-2-base-ft",
                                         "device": p["device"], "precision": p["precision"],
                                         "batch_size": p["batch_size"]}, "Florence-2 caption", (440, 540),
          (360, 460)),
        N(4, "SafeCutNudeNetDetector", {"device": p["device"], "threads": p["threads"]}, "NudeNet", (840, 0),
          (360, 520)),
        N(5, "SafeCutLlamaSafetyClassifier", {"model_family": "Llama-Guard-3-1B",
                                              "quantization": "Q8_0" if gpu else "Q4_K_M",
                                              "n_gpu_layers": p["n_gpu_layers"], "threads": p["threads"]},
          "Llama safety (runs only if needed)", (840, 580), (360, 500)),
        N(6, "SafeCutKeywordGate", {"policy": "review"}, "Keyword gate", (1240, 0), (420, 1050)),
        N(7, "SafeCutSaveCutout", {"filename_prefix": "safecut/cutout", "save_unsafe": False},
          "Save cut-outs + verdicts", (1700, 0), (400, 640)),
    ]
    links = [(1, "image", 2, "image"), (1, "image", 3, "image"), (1, "image", 4, "image"),
             (3, "caption", 6, "captions"), (4, "nudenet", 6, "nudenet"), (5, "classifier", 6, "classifier"),
             (1, "filenames", 6, "filenames"),
             (2, "rgba", 7, "image"), (2, "mask", 7, "mask"), (1, "filenames", 7, "filenames"), (6, "report", 7, "report")]
    return Graph(f"safecut_{profile}_full", f"SafeCut {profile.upper()} full: cut-out, caption, verdict",
                 NOTE_FULL_GPU if gpu else NOTE_FULL_CPU, nodes, links)


IMAGES_LINE = f"""* Put your images in `ComfyUI/input/{INPUT_FOLDER}/` (made on the first run), or set *directory* to another
  folder inside `input/` ('' = all of it). Through worker-comfyui the request's images land in `input/` itself
  and *uploads* (their names or a prefix) picks them instead of *directory*.
"""

NOTE_FAST = f"""# SafeCut — CPU fast
Cuts the subject out of every image in **input/{INPUT_FOLDER}/** and saves RGBA PNGs to **output/safecut/**.

{IMAGES_LINE}* Model: `models/ben2/BEN2_Base.onnx` (downloaded on first use when online;
  `python -m safecut models fetch BEN2_Base.onnx` fetches it by hand).
* The BEN2 node shows the device it really used. Switch to GPU with
  `python -m safecut workflow to-gpu this.json gpu.json`.
* BEN2 runs one image per model call: the published `BEN2_Base.onnx` has a static batch of 1, so
  *batch_size* only matters for a model with a dynamic batch dimension.
"""

NOTE_FULL_CPU = f"""# SafeCut — CPU full (cut-out + caption + verdict)
Load → **BEN2** cut-out → **Florence-2** caption (fp32 on CPU) → **Keyword Gate** (+ **NudeNet**) →
**Llama** classifier → **Save Cutout** with each verdict embedded in the PNG and in a JSON report.

{IMAGES_LINE}* The gate settles clear captions by keywords; the Llama node is a *lazy* input: it only runs (and its model
  only loads) when some caption is undecided, and only undecided captions reach it.
* NudeNet's bundled 320n weights are **AGPL-3.0** (NudeNet's code is MIT).
* Unsafe images are not saved (*save_unsafe* off) but are listed in the report.
* Models: `python -m safecut models fetch --profile cpu-full`.
* **What batch does**: Florence-2 gets the whole list in one run and captions *batch_size* images per
  generate call (×1.19 per image at 8 on 2 CPU cores; more on a GPU). NudeNet runs one image at a time:
  batching it measured no faster on CPU. BEN2 runs one image per call (static batch of 1).
"""

NOTE_FULL_GPU = f"""# SafeCut — GPU full
Same graph as *CPU full* on CUDA: BEN2 with the CUDA provider, Florence-2 large in fp16, Llama Guard with all
layers on the GPU (needs a CUDA build of llama-cpp-python), larger batches (Florence-2 captions the
whole list *batch_size* = 8 images per generate call).
Every model node reports the device it actually used; without a usable GPU it says so and runs on CPU.

{IMAGES_LINE}
Models: `python -m safecut models fetch --profile gpu-full`.
"""

GRAPHS = {g.name: g for g in (_fast("cpu"), _full("cpu"), _full("gpu"))}


# ---- builders -------------------------------------------------------------------------------------------
def _widget_values(ct: dict, node: N) -> list:
    ws = C.widgets(ct, node.class_type)
    unknown = set(node.widgets) - {w["name"] for w in ws}
    if unknown:
        raise KeyError(f"{node.class_type} has no widget(s) {sorted(unknown)}")
    return [node.widgets.get(w["name"], w.get("default")) for w in ws]


def to_api(g: Graph, ct: dict | None = None) -> dict:
    ct = ct or C.load()
    api = {}
    for n in g.nodes:
        inputs = {w["name"]: v for w, v in zip(C.widgets(ct, n.class_type), _widget_values(ct, n))}
        api[str(n.id)] = {"class_type": n.class_type, "inputs": inputs, "_meta": {"title": n.title or n.class_type}}
    for src, out, dst, inp in g.links:
        src_type = api[str(src)]["class_type"]
        api[str(dst)]["inputs"][inp] = [str(src), C.output_index(ct, src_type, out)]
    return api


def to_ui(g: Graph, ct: dict | None = None) -> dict:
    ct = ct or C.load()
    by_id = {n.id: n for n in g.nodes}
    links, out_links, in_links = [], {}, {}
    for i, (src, out, dst, inp) in enumerate(g.links, start=1):
        s_type = by_id[src].class_type
        slot = C.output_index(ct, s_type, out)
        d_sockets = [s["name"] for s in C.sockets(ct, by_id[dst].class_type)]
        if inp not in d_sockets:
            raise KeyError(f"{by_id[dst].class_type} has no input socket '{inp}' (sockets: {d_sockets})")
        typ = ct[s_type]["outputs"][slot]["type"]
        links.append([i, src, slot, dst, d_sockets.index(inp), typ])
        out_links.setdefault((src, slot), []).append(i)
        in_links[(dst, inp)] = i
    nodes = []
    order = {n.id: k for k, n in enumerate(g.nodes)}
    for n in g.nodes:
        spec = ct[n.class_type]
        nodes.append({
            "id": n.id, "type": n.class_type, "pos": list(n.pos), "size": list(n.size), "flags": {},
            "order": order[n.id], "mode": 0, "title": n.title or spec["display_name"],
            "inputs": [{"name": s["name"], "type": s["type"], "link": in_links.get((n.id, s["name"]))}
                       for s in C.sockets(ct, n.class_type)],
            "outputs": [{"name": o["name"], "type": o["type"], "links": out_links.get((n.id, k)) or None,
                         "slot_index": k} for k, o in enumerate(spec["outputs"])],
            "properties": {"Node name for S&R": n.class_type},
            "widgets_values": _widget_values(ct, n),
        })
    note_id = max(by_id) + 1
    (nx, ny), (nw, nh) = g.note_box
    nodes.append({"id": note_id, "type": "MarkdownNote", "pos": [nx, ny], "size": [nw, nh], "flags": {},
                  "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "title": "About this workflow",
                  "properties": {}, "widgets_values": [g.note]})
    return {"id": _uuid(g.name), "revision": 0, "last_node_id": note_id, "last_link_id": len(links),
            "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {"safecut": {"workflow": g.name}, "ds": _view(g)}, "version": 0.4}


def _view(g: Graph) -> dict:
    """extra.ds: the zoom and offset the frontend opens the workflow with (the whole graph, top-left aligned)."""
    title = 30  # node title bar, drawn above pos
    boxes = [(n.pos, n.size) for n in g.nodes] + [g.note_box]
    x0, y0 = min(p[0] for p, _ in boxes), min(p[1] for p, _ in boxes) - title
    x1, y1 = max(p[0] + s[0] for p, s in boxes), max(p[1] + s[1] for p, s in boxes)
    (cw, ch), (left, top, right, bottom) = VIEW_CANVAS, VIEW_MARGIN
    scale = round(min(1.0, (cw - left - right) / (x1 - x0), (ch - top - bottom) / (y1 - y0)), 3)
    return {"scale": scale, "offset": [round(left / scale - x0, 1), round(top / scale - y0, 1)]}


def _uuid(name: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"safecut/{name}"))


def ui_to_api(ui: dict, ct: dict | None = None) -> dict:
    """What the frontend's 'Export (API)' does for these graphs (bypassed/note nodes dropped)."""
    ct = ct or C.load()
    link_map = {l[0]: l for l in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        if node["type"] not in ct or node.get("mode", 0) == 4:
            continue
        inputs = {w["name"]: v for w, v in zip(C.widgets(ct, node["type"]), node.get("widgets_values", []))}
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                _, src, slot, _, _, _ = link_map[inp["link"]]
                inputs[inp["name"]] = [str(src), slot]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or node["type"]}}
    return api


# ---- validation -----------------------------------------------------------------------------------------
def validate_api(api: dict, ct: dict | None = None) -> list[str]:
    """Every node known, every required input present, every widget value valid for its INPUT_TYPES."""
    from ..models.registry import REGISTRY

    ct = ct or C.load()
    errors = []
    for nid, node in api.items():
        spec = ct.get(node["class_type"])
        if spec is None:
            errors.append(f"node {nid}: unknown class {node['class_type']}")
            continue
        for inp in spec["inputs"]:
            name, v = inp["name"], node["inputs"].get(inp["name"])
            if v is None:
                if not inp["optional"]:
                    errors.append(f"node {nid} {node['class_type']}: required input '{name}' missing")
                continue
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):  # a link
                src = api.get(v[0])
                if src is None:
                    errors.append(f"node {nid}: '{name}' links to missing node {v[0]}")
                    continue
                out = ct[src["class_type"]]["outputs"][v[1]]
                if inp["type"] not in ("*", out["type"]) and out["type"] != "*":
                    errors.append(f"node {nid}: '{name}' wants {inp['type']}, gets {out['type']}")
                continue
            if not inp["widget"]:
                errors.append(f"node {nid}: socket '{name}' has a value instead of a link")
                continue
            errors += [f"node {nid} {node['class_type']}: {e}" for e in _check_widget(inp, v, REGISTRY)]
    return errors


def _check_widget(inp: dict, v, registry) -> list[str]:
    t, name = inp["type"], inp["name"]
    if t == "COMBO":
        opts = inp.get("options")
        if opts is not None and v not in opts:
            return [f"'{name}'={v!r} not in {opts}"]
        if opts is None and not isinstance(v, str):
            return [f"'{name}' must be a string"]
        return []
    if t == "INT" and (not isinstance(v, int) or isinstance(v, bool)):
        return [f"'{name}'={v!r} is not an INT"]
    if t == "FLOAT" and not isinstance(v, (int, float)):
        return [f"'{name}'={v!r} is not a FLOAT"]
    if t == "BOOLEAN" and not isinstance(v, bool):
        return [f"'{name}'={v!r} is not a BOOLEAN"]
    if t == "STRING" and not isinstance(v, str):
        return [f"'{name}'={v!r} is not a STRING"]
    if t in ("INT", "FLOAT"):
        if "min" in inp and v < inp["min"] or "max" in inp and v > inp["max"]:
            return [f"'{name}'={v} outside [{inp.get('min')}, {inp.get('max')}]"]
    return []


# ---- converter --------------------------------------------------------------------------------------------
def is_ui(doc: dict) -> bool:
    return isinstance(doc.get("nodes"), list) and "links" in doc


def convert(doc: dict, target: str, ct: dict | None = None) -> dict:
    """CPU <-> GPU: provider/device, precision, n_gpu_layers, threads, batch size, on SafeCut nodes only."""
    if target not in PROFILE_VALUES:
        raise ValueError(f"target must be one of {list(PROFILE_VALUES)}")
    ct = ct or C.load()
    values = PROFILE_VALUES[target]
    out = copy.deepcopy(doc)
    if is_ui(out):
        for node in out["nodes"]:
            if node.get("type") not in ct:
                continue
            names = [w["name"] for w in C.widgets(ct, node["type"])]
            wv = node.get("widgets_values") or []
            for k, name in enumerate(names):
                if name in values and k < len(wv) and _convertible(ct, node["type"], name):
                    wv[k] = values[name]
    else:
        for node in out.values():
            if not isinstance(node, dict) or node.get("class_type") not in ct:
                continue
            for name, v in list(node.get("inputs", {}).items()):
                if name in values and not isinstance(v, list) and _convertible(ct, node["class_type"], name):
                    node["inputs"][name] = values[name]
    return out


def _convertible(ct, class_type, name) -> bool:
    if name == "precision":
        return any(w["name"] == "precision" for w in C.widgets(ct, class_type))
    return True


def thumbnail(g: Graph, path: str) -> str:
    """A small picture of the graph (the template browser shows <name>.jpg beside <name>.json)."""
    from PIL import Image, ImageDraw

    xs = [n.pos[0] for n in g.nodes]
    ys = [n.pos[1] for n in g.nodes]
    scale = 0.42
    w, h = int((max(xs) - min(xs) + 360) * scale) + 40, int((max(ys) - min(ys) + 200) * scale) + 70
    im = Image.new("RGB", (max(w, 400), max(h, 225)), (32, 34, 40))
    d = ImageDraw.Draw(im)
    d.text((12, 8), g.title, fill=(235, 235, 235))
    box = {}
    for n in g.nodes:
        x0 = int((n.pos[0] - min(xs)) * scale) + 16
        y0 = int((n.pos[1] - min(ys)) * scale) + 40
        box[n.id] = (x0, y0, x0 + 140, y0 + 44)
    for src, _out, dst, _inp in g.links:
        a, b = box[src], box[dst]
        d.line((a[2], (a[1] + a[3]) // 2, b[0], (b[1] + b[3]) // 2), fill=(120, 160, 220), width=2)
    for n in g.nodes:
        colour = (46, 125, 50) if "Gate" in n.class_type else (60, 64, 76)
        d.rounded_rectangle(box[n.id], radius=6, fill=colour, outline=(150, 150, 160))
        d.text((box[n.id][0] + 6, box[n.id][1] + 6), (n.title or n.class_type)[:22], fill=(245, 245, 245))
        d.text((box[n.id][0] + 6, box[n.id][1] + 24), n.class_type.replace("SafeCut", "")[:22], fill=(180, 180, 190))
    im.save(path, quality=88)
    return path


# ---- files and CLI ------------------------------------------------------------------------------------------
def write_all(root: str) -> list[str]:
    """example_workflows/<name>.json (UI) and api_workflows/<name>.json (API)."""
    ct = C.load()
    written = []
    for g in GRAPHS.values():
        for folder, doc in (("example_workflows", to_ui(g, ct)), ("api_workflows", to_api(g, ct))):
            path = os.path.join(root, folder, g.name + ".json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            written.append(path)
        written.append(thumbnail(g, os.path.join(root, "example_workflows", g.name + ".jpg")))
        written.append(_payload(g, ct, root))
    return written


def _payload(g: Graph, ct: dict, root: str) -> str:
    """deploy/payloads/<name>.json: a ready worker-comfyui request (test_input.json style) with the example images."""
    from .client import make_payload

    images = sorted(os.path.join(root, "examples", "images", f) for f in os.listdir(os.path.join(root, "examples", "images")))
    path = os.path.join(root, "deploy", "payloads", g.name + ".json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(make_payload(to_api(g, ct), images), f, indent=1)
        f.write("\n")
    return path


def _cmd(a) -> int:
    import sys

    if a.action == "generate":
        for p in write_all(a.root):
            print(p)
        return 0
    with open(a.input) as f:
        doc = json.load(f)
    out = convert(doc, "gpu" if a.action == "to-gpu" else "cpu")
    with open(a.output, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{a.input} -> {a.output} ({'UI' if is_ui(doc) else 'API'} format, {a.action})", file=sys.stderr)
    return 0


def add_cli(sub) -> None:
    w = sub.add_parser("workflow", help="convert workflows between CPU and GPU settings; regenerate examples")
    w.add_argument("action", choices=["to-gpu", "to-cpu", "generate"])
    w.add_argument("input", nargs="?")
    w.add_argument("output", nargs="?")
    w.add_argument("--root", default=os.getcwd(), help="generate: repository root")
    w.set_defaults(func=_cmd)
