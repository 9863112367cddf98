"""Node help pages (js/docs/<NodeClass>.md, what the frontend's node-help panel shows) and search aliases.

A page must name every input and output of its node, carry the sections a user looks for, and quote speed figures
only from README's Speed section. The browser half (the page really shows in the help panel, the aliases really
reach the node search) is in tests/test_frontend.py."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import load_pack

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "js" / "docs"
SECTIONS = ["## Inputs", "## Outputs", "## Example", "## Speed", "## Errors and fixes"]
PACK = load_pack()
IDS = sorted(PACK.NODE_CLASS_MAPPINGS)


def page(cid: str) -> str:
    return (DOCS / f"{cid}.md").read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    start = text.index(heading) + len(heading)
    nxt = text.find("\n## ", start)
    return text[start:] if nxt < 0 else text[start:nxt]


def readme_speed() -> str:
    """The README sections that publish measured figures: Speed, and Which CPU (per CPU class)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return section(text, "## Speed") + section(text, "## Which CPU")


def test_readme_install_section_points_at_the_help_pages():
    install = section((ROOT / "README.md").read_text(encoding="utf-8"), "## Install in ComfyUI")
    assert "help page" in install.lower() and "js/docs/<NodeClass>.md" in install


def test_web_directory_serves_the_docs_folder():
    assert PACK.WEB_DIRECTORY == "./js" and DOCS.is_dir()
    assert sorted(p.stem for p in DOCS.glob("*.md")) == IDS, "one page per node, named by class id, nothing else"


@pytest.mark.parametrize("cid", IDS)
def test_page_names_every_input_and_output(cid):
    cls = PACK.NODE_CLASS_MAPPINGS[cid]
    text = page(cid)
    assert text.startswith(f"# {PACK.NODE_DISPLAY_NAME_MAPPINGS[cid]}\n"), "the title is the node's display name"
    assert [s for s in SECTIONS if s in text] == SECTIONS
    it = cls.INPUT_TYPES()
    inputs = section(text, "## Inputs")
    for name in [*it.get("required", {}), *it.get("optional", {})]:
        assert re.search(rf"^- `{name}`[ :]", inputs, re.M), f"{cid}: input '{name}' has no entry on its help page"
    outputs = section(text, "## Outputs")
    for name in getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES):
        assert re.search(rf"^- `{name}`:", outputs, re.M), f"{cid}: output '{name}' has no entry on its help page"
    assert section(text, "## Errors and fixes").strip(), f"{cid}: no error section"


@pytest.mark.parametrize("cid", IDS)
def test_page_defaults_match_the_node(cid):
    """Each input's '(default: …)' says what the widget really starts at."""
    it = PACK.NODE_CLASS_MAPPINGS[cid].INPUT_TYPES()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^- `([a-z_0-9]+)` \(default: ([^)]*)\):", page(cid), re.M)}
    checked = 0
    for name, spec in [*it.get("required", {}).items(), *it.get("optional", {}).items()]:
        default = (spec[1] if len(spec) > 1 else {}).get("default")
        if default is None or isinstance(default, str) and ("\n" in default or not default):
            continue  # sockets, multi-line and empty defaults are described in words
        shown = rows[name]
        if isinstance(default, bool):
            assert shown.strip() == ("on" if default else "off"), f"{cid}.{name}: {shown!r} vs {default}"
        else:
            assert f"`{default}`" in shown, f"{cid}.{name}: the page says {shown!r}, the node defaults to {default!r}"
        checked += 1
    assert checked


@pytest.mark.parametrize("cid", IDS)
def test_speed_figures_come_from_the_readme(cid):
    speed = section(page(cid), "## Speed")
    published = readme_speed()
    for number in re.findall(r"\d+(?:\.\d+)?", speed):
        assert number in published, f"{cid}: speed figure {number} is not in README's Speed or Which CPU section"
    if re.search(r"\d (s|ms)\b", speed):
        assert "AMD EPYC" in speed, "name the CPU the figures were measured on"


def test_nudenet_page_explains_per_label_thresholds():
    text = page("SafeCutNudeNetDetector")
    assert "LABEL=score" in text and "FEMALE_BREAST_EXPOSED=0.4" in text
    assert "is not a NudeNet label" in section(text, "## Errors and fixes")
    from safecut.engines import nudenet

    assert all(f"`{label}`" in text for label in nudenet.LABELS)


def test_ben2_page_describes_the_cpu_runtime_choice():
    inputs = section(page("SafeCutBEN2RemoveBackground"), "## Inputs")
    row = next(line for line in inputs.splitlines() if line.startswith("- `cpu_runtime`"))
    for word in ("ONNX Runtime", "OpenVINO f32", "OpenVINO bf16", "AMX", "AVX-512", "CUDA"):
        assert word in row, word


# ---- search aliases ---------------------------------------------------------------------------------------
WANTED = {"SafeCutBEN2RemoveBackground": {"remove background", "rembg"},
          "SafeCutNudeNetDetector": {"nsfw", "moderation"},
          "SafeCutFlorence2Caption": {"caption"},
          "SafeCutLlamaSafetyClassifier": {"llama guard", "moderation"},
          "SafeCutKeywordGate": {"moderation"}}


@pytest.mark.parametrize("cid", IDS)
def test_every_node_has_search_aliases(cid):
    aliases = PACK.NODE_CLASS_MAPPINGS[cid].SEARCH_ALIASES
    assert isinstance(aliases, list) and aliases and len(set(aliases)) == len(aliases)
    assert all(isinstance(a, str) and a == a.strip().lower() and a for a in aliases)
    display = PACK.NODE_DISPLAY_NAME_MAPPINGS[cid].lower()
    assert not any(a == display for a in aliases), "an alias that repeats the display name adds nothing"
    assert WANTED.get(cid, set()) <= set(aliases)


def test_alias_route_serves_every_node_and_is_a_no_op_outside_comfyui():
    import sys

    hooks = sys.modules[PACK.__name__ + ".nodes.comfy_hooks"]
    served = hooks.search_aliases()
    assert served == {cid: list(cls.SEARCH_ALIASES) for cid, cls in PACK.NODE_CLASS_MAPPINGS.items()}
    assert hooks.add_alias_route() is False          # no ComfyUI server in this process: nothing registered


def test_alias_route_is_registered_on_comfyuis_server(monkeypatch):
    """With stand-ins for ComfyUI's server module and aiohttp: the route is added where custom nodes add routes
    (PromptServer.instance.routes) and answers every node's aliases."""
    import asyncio
    import sys
    import types

    hooks = sys.modules[PACK.__name__ + ".nodes.comfy_hooks"]
    added = {}

    class Routes:
        def get(self, path):
            return lambda handler: added.setdefault(path, handler)

    server = types.ModuleType("server")
    server.PromptServer = type("PromptServer", (), {"instance": types.SimpleNamespace(routes=Routes())})
    aiohttp = types.ModuleType("aiohttp")
    aiohttp.web = types.SimpleNamespace(json_response=lambda data: ("json", data))
    monkeypatch.setitem(sys.modules, "server", server)
    monkeypatch.setitem(sys.modules, "aiohttp", aiohttp)
    assert hooks.add_alias_route() is True and list(added) == ["/safecut/search_aliases"]
    kind, body = asyncio.run(added["/safecut/search_aliases"](None))
    assert kind == "json" and body["SafeCutBEN2RemoveBackground"][:3] == ["remove background", "background removal",
                                                                          "rembg"] and set(body) == set(IDS)


def test_frontend_extension_fills_aliases_only_where_the_server_sent_none():
    js = (ROOT / "js" / "safecut.js").read_text(encoding="utf-8")
    assert "addCustomNodeDefs: addSearchAliases" in js and '"/safecut/search_aliases"' in js
    assert "!(defs[n].search_aliases || []).length" in js   # a newer server's own aliases win
